"""The example shop's growth features: referral sign-up, birthdays, review points, reminders."""

from __future__ import annotations

import datetime as dt
import re
import typing as t

import sqlalchemy as sa
from flask import Flask

from example_shop.demo import DEMO_MEMBER
from example_shop.demo import OWNER
from example_shop.extensions import db
from example_shop.extensions import loyalty
from example_shop.models import Review
from example_shop.models import SentReminder
from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty import referrals

from .test_example_shop import add_products
from .test_example_shop import balances
from .test_example_shop import checkout
from .test_example_shop import login
from .test_example_shop import seeded  # noqa: F401  (a fixture)
from .test_example_shop import shop  # noqa: F401  (a fixture)
from .test_example_shop import verify


def member_id(app: Flask, email: str) -> int:
    with app.app_context():
        m = loyalty.models
        return int(db.session.scalars(sa.select(m.Member.id).where(m.Member.email == email)).one())


def sign_up(client: t.Any, name: str, email: str, **extra: str) -> t.Any:
    data = {"name": name, "email": email, "password": "s3cret-pass", **extra}
    return client.post("/auth/signup", data=data, follow_redirects=True)


def owner_client(app: Flask) -> t.Any:
    client = app.test_client()
    login(client, OWNER[1], OWNER[2])
    return client


def run_jobs(owner: t.Any) -> str:
    response = owner.post("/admin/growth/run", follow_redirects=True)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def buy(client: t.Any, sku: str, quantity: int = 1) -> str:
    """Order and pay for ``sku``; returns the order's reference."""
    client.post(f"/cart/add/{sku}", data={"quantity": str(quantity)})
    reference = checkout(client)
    assert client.post(f"/checkout/pay/{reference}").status_code == 302
    return reference


def test_a_friend_joins_with_the_link_and_both_earn_once(shop: Flask) -> None:  # noqa: F811
    add_products(shop)
    ada = shop.test_client()
    sign_up(ada, "Ada", "ada@example.com")
    dashboard = ada.get("/loyalty/").get_data(as_text=True)
    link = re.search(r'value="(http://localhost/auth/signup\?ref=(\w+))"', dashboard)
    assert link is not None, "the share link is on the member's dashboard"
    code = link.group(2)

    bob = shop.test_client()
    page = bob.get(link.group(1).replace("http://localhost", "")).get_data(as_text=True)
    assert "You were invited with the referral code" in page and f'value="{code}"' in page
    joined = sign_up(bob, "Bob", "bob@example.com", ref=code).get_data(as_text=True)
    assert "You joined with Ada&#39;s link" in joined
    own = bob.get("/loyalty/").get_data(as_text=True)
    assert "Your own referral" in own and "Pending" in own
    assert "Bob" in ada.get("/loyalty/").get_data(as_text=True)

    reference = buy(bob, "WARE-TEAPOT")  # 32.00: above the 20.00 minimum
    owner = owner_client(shop)
    assert "0 rewarded" in run_jobs(owner)  # still inside the return window
    owner.post(f"/admin/orders/{reference}/complete")
    assert "1 rewarded" in run_jobs(owner)
    assert "0 rewarded" in run_jobs(owner)  # once
    assert balances(shop, "ada@example.com")[0] == 500 + 500  # signup + referrer bonus
    assert balances(shop, "bob@example.com")[0] == 500 + 300 + 320  # signup + referee bonus + the order
    assert "You both earned your bonus." in ada.get("/loyalty/").get_data(as_text=True)
    admin = owner.get("/admin/growth/").get_data(as_text=True)
    assert "Bob" in admin and "Rewarded" in admin and reference in admin
    verify(shop)


def test_refused_referral_codes_are_explained(shop: Flask) -> None:  # noqa: F811
    add_products(shop)
    ada = shop.test_client()
    sign_up(ada, "Ada", "ada.lovelace@gmail.com")
    with shop.app_context():
        code = referrals.referral_code(member_id(shop, "ada.lovelace@gmail.com"))
    page = sign_up(shop.test_client(), "Ada again", "adalovelace+shop@gmail.com", ref=code)
    assert "Referral not used: That referral code belongs to your own email address." in page.get_data(
        as_text=True
    )
    page = sign_up(shop.test_client(), "Cy", "cy@example.com", ref="NOPE1234")
    assert "The referral code NOPE1234 does not exist" in page.get_data(as_text=True)
    with shop.app_context():
        assert referrals.list_referrals() == []
        # Both accounts were made all the same.
        assert member_id(shop, "adalovelace+shop@gmail.com") and member_id(shop, "cy@example.com")


def test_the_birthday_field_and_the_birthday_bonus(shop: Flask) -> None:  # noqa: F811
    add_products(shop)
    client = shop.test_client()
    for bad in ("2999-01-01", "31/12/1990", "1990-02-30"):
        response = client.post(
            "/auth/signup",
            data={"name": "Di", "email": "di@example.com", "password": "s3cret-pass", "birthday": bad},
        )
        assert response.status_code == 422, bad
    today = dt.datetime.now(dt.UTC).date()
    born = today.replace(year=1990) if (today.month, today.day) != (2, 29) else dt.date(1992, 2, 29)
    sign_up(client, "Di", "di@example.com", birthday=born.isoformat())
    with shop.app_context():
        assert members.get(member_id(shop, "di@example.com")).birthday == born
    assert "1 birthday bonus" in run_jobs(owner_client(shop))
    assert "0 birthday bonus" in run_jobs(owner_client(shop))  # once a year
    assert balances(shop, "di@example.com")[0] == 500 + 250
    verify(shop)


def test_reviews_of_things_bought_earn_points_up_to_the_cap(shop: Flask) -> None:  # noqa: F811
    add_products(shop)
    client = shop.test_client()
    sign_up(client, "Eve", "eve@example.com")
    form = client.get("/p/TEA-SENCHA").get_data(as_text=True)
    assert "Reviews of products you have bought earn 50 points (for up to 3 reviews a week)." in form
    page = client.post("/p/TEA-SENCHA/reviews", data={"rating": "4", "text": "Nice."}, follow_redirects=True)
    assert "Reviews earn points when you have bought the product." in page.get_data(as_text=True)
    assert balances(shop, "eve@example.com")[0] == 500

    for sku in ("COF-ETHIOPIA", "COF-COLOMBIA", "TEA-EARLGREY", "TREAT-CHOC"):
        client.post(f"/cart/add/{sku}", data={"quantity": "1"})
    buy(client, "TREAT-BISCOTTI")
    assert "You bought this: your review earns 50 points" in client.get("/p/TREAT-CHOC").get_data(
        as_text=True
    )
    messages = []
    for sku in ("COF-ETHIOPIA", "COF-COLOMBIA", "TEA-EARLGREY", "TREAT-CHOC"):
        page = client.post(
            f"/p/{sku}/reviews", data={"rating": "5", "text": "Lovely."}, follow_redirects=True
        )
        messages.append(page.get_data(as_text=True))
    assert all("It earned you 50 points." in m for m in messages[:3])
    assert "as often as a week allows" in messages[3]
    assert balances(shop, "eve@example.com")[1] > 0  # the order's own points are pending
    assert balances(shop, "eve@example.com")[0] == 500 + 150

    # Bad input and a second review of the same product write nothing.
    for data in ({"rating": "9", "text": "x"}, {"rating": "5", "text": ""}, {"rating": "x", "text": "y"}):
        assert client.post("/p/COF-ETHIOPIA/reviews", data=data).status_code in (302, 422)
    again = client.post("/p/COF-ETHIOPIA/reviews", data={"rating": "1", "text": "Changed my mind."})
    assert again.status_code == 302
    assert "Thank you for reviewing this product." in client.get("/p/COF-ETHIOPIA").get_data(as_text=True)
    assert (
        shop.test_client().post("/p/TEA-SENCHA/reviews", data={"rating": "5", "text": "Hi"}).status_code
        == 302
    )
    with shop.app_context():
        found = db.session.scalars(sa.select(Review).order_by(Review.id)).all()
        assert [(r.verified, r.points) for r in found] == [
            (False, 0),
            (True, 50),
            (True, 50),
            (True, 50),
            (True, 0),
        ]
    assert balances(shop, "eve@example.com")[0] == 500 + 150
    verify(shop)


def test_reminders_show_in_the_owners_area_once(shop: Flask) -> None:  # noqa: F811
    add_products(shop)
    sign_up(shop.test_client(), "Fay", "fay@example.com")
    with shop.app_context():
        fay = member_id(shop, "fay@example.com")
        soon = loyalty.clock() + dt.timedelta(days=5)
        points.earn(fay, 120, key="promo", expires_at=soon)
    owner = owner_client(shop)
    assert "No reminders sent yet." in owner.get("/admin/growth/").get_data(as_text=True)
    assert "1 reminder(s) sent" in run_jobs(owner)
    assert "0 reminder(s) sent" in run_jobs(owner)
    page = owner.get("/admin/growth/").get_data(as_text=True)
    assert "fay@example.com" in page and "120" in page and "7 days" in page
    with shop.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(SentReminder)) == 1
    assert "When your points expire" in _fay_dashboard(shop)


def _fay_dashboard(app: Flask) -> str:
    client = app.test_client()
    login(client, "fay@example.com", "s3cret-pass")
    return client.get("/loyalty/").get_data(as_text=True)


def test_the_growth_page_is_the_owners_only(shop: Flask) -> None:  # noqa: F811
    add_products(shop)
    client = shop.test_client()
    sign_up(client, "Gus", "gus@example.com")
    assert client.get("/admin/growth/").status_code == 404
    assert client.post("/admin/growth/run").status_code == 404
    assert shop.test_client().get("/admin/growth/").status_code == 302  # to the login page


def test_demo_data_has_referrals_birthdays_reviews_and_reminders(seeded: Flask) -> None:  # noqa: F811
    with seeded.app_context():
        statuses = sorted(r.status for r in referrals.list_referrals())
        assert statuses == ["pending", "pending", "rejected", "rewarded", "rewarded"]
        assert db.session.scalar(sa.select(sa.func.count()).select_from(SentReminder)) > 0
        reviews = db.session.scalars(sa.select(Review)).all()
        assert {r.verified for r in reviews} == {True, False}
        m = loyalty.models
        assert db.session.scalar(sa.select(sa.func.count()).where(m.Member.birthday.is_not(None))) >= 5
        birthday = sa.select(sa.func.count()).where(m.LedgerEntry.source_key.like("action:birthday:%"))
        assert db.session.scalar(birthday) == 2  # Li Wei and Kai Jensen, born today
    verify(seeded)
    client = seeded.test_client()
    login(client, DEMO_MEMBER[1], DEMO_MEMBER[2])
    dashboard = client.get("/loyalty/").get_data(as_text=True)
    assert "/auth/signup?ref=" in dashboard and "Friends you referred" in dashboard
    for name in ("Li Wei", "Noor Haddad", "Omar Farouk", "Priya Shah", "Kai Jensen"):
        assert name in dashboard
    assert "When your points expire" in dashboard
    assert "Verified purchase" in client.get("/p/COF-ETHIOPIA").get_data(as_text=True)
    admin = owner_client(seeded).get("/admin/growth/").get_data(as_text=True)
    assert "li.wei@example.com" in admin and "30 days" in admin  # his welcome points expire soon
    assert "Dana Demo" in admin and "Priya Shah" in admin and "order refunded" in admin
