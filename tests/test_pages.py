"""The member pages: rendering at any history length, overrides, redeeming through the form, CSRF."""

# ruff: noqa: F811 -- test arguments are the fixtures imported from pages_support

from __future__ import annotations

import datetime as dt
import typing as t

import pytest

from flask_loyalty import audit
from flask_loyalty import history
from flask_loyalty import members
from flask_loyalty import rewards

from .conftest import START
from .pages_support import bulk_history
from .pages_support import form_values
from .pages_support import other  # noqa: F401  (a fixture)
from .pages_support import owner  # noqa: F401  (a fixture)
from .pages_support import Pages
from .pages_support import pages  # noqa: F401  (a fixture)
from .pages_support import reward  # noqa: F401  (a fixture)
from .pages_support import statements


def page_urls(member_id: int, redemption_id: int, entry_id: int) -> list[str]:
    """Every GET page of the blueprint, for the member's own objects."""
    return [
        "/loyalty/",
        "/loyalty/history",
        "/loyalty/history?kind=earn&since=2025-01-01&until=2030-12-31",
        f"/loyalty/history/{entry_id}",
        "/loyalty/rewards",
        "/loyalty/rewards/five-off",
        "/loyalty/my-rewards",
        f"/loyalty/my-rewards/{redemption_id}",
        "/loyalty/checkout",
    ]


def test_every_page_renders_for_a_member_with_no_history(pages: Pages, reward: t.Any) -> None:
    member = members.enroll(name="New", email="new@example.com")
    client = pages.client(member)
    for url in page_urls(member.id, 0, 0)[:3] + ["/loyalty/rewards", "/loyalty/rewards/five-off",
                                                  "/loyalty/my-rewards", "/loyalty/checkout"]:  # fmt: skip
        response = client.get(url)
        assert response.status_code == 200, url
    body = client.get("/loyalty/").get_data(as_text=True)
    assert "No activity yet" in body
    assert "No points expire before" in body
    assert "You have no rewards yet." in client.get("/loyalty/my-rewards").get_data(as_text=True)


def test_statements_per_page_do_not_grow_with_history(
    pages: Pages, owner: t.Any, other: t.Any, reward: t.Any
) -> None:
    """Every page, for a member with 10 entries and one with 10,000: the same number of statements."""
    pages.orders[owner.id] = ("order-9", "80.00")
    pages.orders[other.id] = ("order-9", "80.00")
    bulk_history(pages.db, owner.id, 9, START)
    bulk_history(pages.db, other.id, 9_999, START)
    assert audit.verify() == []
    counts = {}
    for member in (owner, other):
        issued = rewards.redeem_reward(member, "five-off", key=f"k-{member.id}")
        entry_id = history.history(member, limit=1).entries[0].id
        client = pages.client(member)
        client.get("/loyalty/")  # warm up: user loading, first-use caches
        per_page = []
        for url in page_urls(member.id, issued.id, entry_id):
            with statements(pages.db) as seen:
                response = client.get(url)
            assert response.status_code == 200, (url, response.get_data(as_text=True)[-500:])
            per_page.append(len(seen))
        counts[member.id] = per_page
    assert members.balances(other).available == 5000 + 99_990 - 500
    assert counts[owner.id] == counts[other.id]


@pytest.mark.settings(LOYALTY_PAGE_SIZE=25)
def test_history_is_paginated_and_filtered(pages: Pages, owner: t.Any) -> None:
    bulk_history(pages.db, owner.id, 10_000, START)
    client = pages.client(owner)
    body = client.get("/loyalty/history").get_data(as_text=True)
    assert body.count("<tr>") == 26  # the header row and 25 entries
    older = body.split('href="')[-1]
    assert 'rel="next"' in body
    link = body[body.index('<a href="/loyalty/history?before=') + 9 :]
    link = link[: link.index('"')].replace("&amp;", "&")
    second = client.get(link).get_data(as_text=True)
    assert second.count("<tr>") == 26 and "Newest" in second
    assert older
    only_earn = client.get("/loyalty/history?kind=redeem").get_data(as_text=True)
    assert "No entries match." in only_earn
    window = client.get("/loyalty/history?since=2026-01-01&until=2026-01-01").get_data(as_text=True)
    assert window.count("<tr>") == 26
    empty = client.get("/loyalty/history?since=2030-01-01").get_data(as_text=True)
    assert "No entries match." in empty


def test_a_host_template_overrides_a_page(pages: Pages, owner: t.Any) -> None:
    pages.host_template(
        "loyalty/dashboard.html",
        "{% extends loyalty_base_template %}{% block content %}HOST DASHBOARD {{ balances.available }}"
        "{% endblock %}",
    )
    body = pages.client(owner).get("/loyalty/").get_data(as_text=True)
    assert "HOST DASHBOARD 5000" in body
    assert "Recent activity" not in body


@pytest.mark.settings(LOYALTY_BASE_TEMPLATE="shop/base.html")
def test_pages_extend_the_host_base_template(pages: Pages, owner: t.Any, reward: t.Any) -> None:
    pages.host_template(
        "shop/base.html",
        "<html><title>{% block title %}{% endblock %} | Shop</title><body>SHOP HEADER"
        "{% block content %}{% endblock %}SHOP FOOTER</body></html>",
    )
    client = pages.client(owner)
    for url in ("/loyalty/", "/loyalty/history", "/loyalty/rewards", "/loyalty/rewards/five-off",
                "/loyalty/my-rewards", "/loyalty/checkout"):  # fmt: skip
        body = client.get(url).get_data(as_text=True)
        assert "SHOP HEADER" in body and "SHOP FOOTER" in body, url
        assert "loyalty-skip" not in body  # the extension's own layout is not used
    assert "<title>My points | Shop</title>" in client.get("/loyalty/").get_data(as_text=True)


def test_redeeming_through_the_form(pages: Pages, owner: t.Any, reward: t.Any, signals: t.Any) -> None:
    client = pages.client(owner)
    fields = form_values(client.get("/loyalty/rewards/five-off").get_data(as_text=True))
    assert fields["confirm"] == ""
    review = client.post("/loyalty/rewards/five-off/redeem", data=fields)
    assert review.status_code == 200
    body = review.get_data(as_text=True)
    assert "Spend 500 points on 5 off?" in body and "You will have 4,500 points left." in body
    assert members.balances(owner).available == 5000  # nothing yet
    confirm = form_values(body)
    assert confirm["confirm"] == "yes" and confirm["token"] == fields["token"]
    first = client.post("/loyalty/rewards/five-off/redeem", data=confirm)
    again = client.post("/loyalty/rewards/five-off/redeem", data=confirm)  # a double submit
    assert first.status_code == again.status_code == 303
    assert first.headers["Location"] == again.headers["Location"]
    mine = rewards.member_redemptions(owner)
    assert len(mine) == 1 and mine[0].status == "issued"
    assert members.balances(owner).available == 4500
    assert first.headers["Location"] == f"/loyalty/my-rewards/{mine[0].id}"
    page = client.get(first.headers["Location"]).get_data(as_text=True)
    assert mine[0].code in page and "You redeemed 5 off." in page
    assert len(signals.of("reward-redeemed")) == 1
    # Cancelling through the form returns the points once.
    cancel = form_values(page)
    assert client.post(f"/loyalty/my-rewards/{mine[0].id}/cancel", data=cancel).status_code == 303
    assert client.post(f"/loyalty/my-rewards/{mine[0].id}/cancel", data=cancel).status_code == 303
    assert members.balances(owner).available == 5000
    assert rewards.get_redemption(owner, mine[0].id).status == "cancelled"


@pytest.mark.settings(WTF_CSRF_ENABLED=True)
def test_a_missing_or_invalid_csrf_token_is_refused(pages: Pages, owner: t.Any, reward: t.Any) -> None:
    pages.orders[owner.id] = ("order-1", "80.00")
    client = pages.client(owner)
    issued = rewards.redeem_reward(owner, "five-off", key="csrf-test")
    fields = form_values(client.get("/loyalty/rewards/five-off").get_data(as_text=True))
    assert fields["csrf_token"]
    before = pages.count()
    posts = [
        ("/loyalty/rewards/five-off/redeem", {"token": fields["token"], "confirm": "yes"}),
        (f"/loyalty/my-rewards/{issued.id}/cancel", {}),
        ("/loyalty/checkout/apply", {"points": "500"}),
        ("/loyalty/checkout/remove", {}),
    ]
    for url, data in posts:
        for token in (None, "not-a-token", fields["csrf_token"] + "x"):
            sent = dict(data) if token is None else {**data, "csrf_token": token}
            response = client.post(url, data=sent)
            assert response.status_code == 400, (url, token)
            assert "The form has expired or was not sent by this site" in response.get_data(as_text=True)
    assert pages.count() == before
    # With the token, the same post works.
    ok = client.post("/loyalty/rewards/five-off/redeem", data={**fields, "confirm": "yes"})
    assert ok.status_code == 303
    assert pages.count() != before


def test_anonymous_visitors_are_sent_to_the_login_view(app: t.Any, tmp_path: t.Any, owner: t.Any) -> None:
    from .pages_support import make_pages

    pages = make_pages(app, tmp_path, login_view="login")
    response = pages.client().get("/loyalty/rewards")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_pages_without_a_login_manager_answer_401(app: t.Any, owner: t.Any) -> None:
    response = app.test_client().get("/loyalty/")
    assert response.status_code == 401


@pytest.mark.settings(LOYALTY_BLUEPRINT_ENABLED=False)
def test_the_blueprint_can_be_left_unregistered(app: t.Any) -> None:
    assert "loyalty" not in app.blueprints
    assert app.test_client().get("/loyalty/").status_code == 404


@pytest.mark.settings(LOYALTY_BLUEPRINT_NAME="points", LOYALTY_URL_PREFIX="/club")
def test_name_and_prefix_come_from_the_configuration(pages: Pages, owner: t.Any) -> None:
    assert "points" in pages.app.blueprints
    body = pages.client(owner).get("/club/").get_data(as_text=True)
    assert 'href="/club/history"' in body


def test_a_user_who_cannot_be_a_member_gets_403(pages: Pages, app_ctx: None) -> None:
    member = members.enroll(name="Gone", email="gone@example.com")
    client = pages.client(member)
    members.close(member)
    assert client.get("/loyalty/").status_code in (401, 403)


def test_expiry_shows_on_the_dashboard(pages: Pages, owner: t.Any, clock: t.Any) -> None:
    body = pages.client(owner).get("/loyalty/").get_data(as_text=True)
    assert "5,000 points expire by" in body
    clock.set(dt.datetime(2026, 1, 21))
    body = pages.client(owner).get("/loyalty/").get_data(as_text=True)
    assert "No points expire before" in body
