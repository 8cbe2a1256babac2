"""The example shop: its pages and flows with the test client, its demo data, its CLI."""

from __future__ import annotations

import contextlib
import re
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from flask import has_app_context

from example_shop import create_app
from example_shop.demo import DEMO_MEMBER
from example_shop.demo import OWNER
from example_shop.extensions import db
from example_shop.extensions import loyalty
from flask_loyalty import members
from flask_loyalty import rewards

from .conftest import close_app
from .conftest import engine_url
from .conftest import reset_schema


def shop_app(url: str, **config: t.Any) -> Flask:
    settings = {
        "TESTING": True,
        "SECRET_KEY": "test",
        "WTF_CSRF_ENABLED": False,
        "SQLALCHEMY_DATABASE_URI": url,
        "SHOP_DEMO_DATA": False,
    }
    settings.update(config)
    return create_app(settings)


@pytest.fixture
def shop(engine: str, tmp_path: t.Any) -> t.Iterator[Flask]:
    """The shop on the engine under test, with empty tables."""
    app = shop_app(engine_url(engine, tmp_path))
    reset_schema(app, db, engine)
    yield app
    close_app(app)


@pytest.fixture
def seeded(tmp_path: t.Any) -> t.Iterator[Flask]:
    """The shop on SQLite, filled with the demo data on its first run."""
    app = shop_app(f"sqlite:///{tmp_path / 'shop.sqlite'}", SHOP_DEMO_DATA=True)
    yield app
    close_app(app)


def verify(app: Flask) -> str:
    result = app.test_cli_runner().invoke(args=["loyalty", "verify"])
    assert result.exit_code == 0, result.output
    assert "Ledger consistent" in result.output
    return result.output


def login(client: t.Any, email: str, password: str) -> None:
    response = client.post("/auth/login", data={"email": email, "password": password})
    assert response.status_code == 303, response.data


def add_products(app: Flask) -> None:
    from example_shop.demo import CATALOGUE
    from example_shop.models import Category
    from example_shop.models import Product

    with app.app_context():
        for slug, name, description, products in CATALOGUE:
            category = Category(slug=slug, name=name, description=description)
            for sku, title, price, colour, text in products:
                db.session.add(
                    Product(
                        sku=sku,
                        name=title,
                        price_minor=price,
                        colour=colour,
                        description=text,
                        category=category,
                    )
                )
        db.session.commit()
        rewards.create_reward(slug="five-off", name="$5 off", kind="fixed_amount", amount="5.00", cost=500)
        members.enroll(name=OWNER[0], email=OWNER[1], password=OWNER[2])


def order_row(app: Flask, reference: str) -> t.Any:
    """The order; detached unless an app context is active already."""
    with contextlib.nullcontext() if has_app_context() else app.app_context():
        m = loyalty.models
        return db.session.scalars(sa.select(m.Order).where(m.Order.reference == reference)).one()


def balances(app: Flask, email: str) -> tuple[int, int, int]:
    with app.app_context():
        m = loyalty.models
        member = db.session.scalars(sa.select(m.Member).where(m.Member.email == email)).one()
        found = members.balances(member.id)
        return found.available, found.pending, found.reserved


# -- demo data ------------------------------------------------------------------


def test_first_run_seeds_an_empty_database_once(seeded: Flask, tmp_path: t.Any) -> None:
    with seeded.app_context():
        m = loyalty.models
        statuses = set(db.session.scalars(sa.select(m.Order.status)))
        assert statuses == {"placed", "paid", "completed", "refunded", "cancelled"}
        campaigns = db.session.scalars(sa.select(m.Campaign)).all()
        assert [c.name for c in campaigns] == ["Tea fortnight: double points on tea"]
        assert {r.slug for r in rewards.list_rewards()} >= {"five-off", "free-shipping", "tea-taster"}
        demo = db.session.scalars(sa.select(m.Member).where(m.Member.email == DEMO_MEMBER[1])).one()
        oldest = db.session.scalar(sa.select(sa.func.min(m.LedgerEntry.created_at)))
        newest = db.session.scalar(sa.select(sa.func.max(m.LedgerEntry.created_at)))
        assert (newest - oldest).days >= 330  # a year of history
        kinds = set(
            db.session.scalars(sa.select(m.LedgerEntry.kind).where(m.LedgerEntry.member_id == demo.id))
        )
        assert {"earn", "activate", "redeem", "capture", "reverse"} <= kinds
        balance = members.balances(demo.id)
        assert balance.available > 0 and balance.pending > 0
        orders = db.session.scalar(sa.select(sa.func.count()).select_from(m.Order))
    verify(seeded)
    again = shop_app(f"sqlite:///{tmp_path / 'shop.sqlite'}", SHOP_DEMO_DATA=True)
    with again.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(loyalty.models.Order)) == orders


def test_seed_command_starts_again(seeded: Flask) -> None:
    result = seeded.test_cli_runner().invoke(args=["seed"])
    assert result.exit_code == 0, result.output
    assert "Log in as demo@example.com / demo-password" in result.output
    with seeded.app_context():
        emails = db.session.scalars(sa.select(loyalty.models.Member.email)).all()
        assert sorted(emails).count(DEMO_MEMBER[1]) == 1
    verify(seeded)


def test_demo_member_sees_every_page(seeded: Flask) -> None:
    client = seeded.test_client()
    login(client, DEMO_MEMBER[1], DEMO_MEMBER[2])
    for path in ("/", "/c/tea", "/p/TEA-SENCHA", "/cart/", "/orders/", "/loyalty/", "/loyalty/history",
                 "/loyalty/rewards", "/loyalty/my-rewards"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 200, path
        assert b"Leaf &amp; Bean" in response.data, path  # the shop's own layout
    page = client.get("/orders/").get_data(as_text=True)
    reference = re.search(r"/orders/(LB-\w+)", page).group(1)
    assert client.get(f"/orders/{reference}").status_code == 200


def test_campaign_doubles_the_points_shown_for_tea(seeded: Flask) -> None:
    client = seeded.test_client()
    tea = client.get("/p/TEA-SENCHA").get_data(as_text=True)  # 12.50, tea: 125 × 2
    coffee = client.get("/p/COF-COLOMBIA").get_data(as_text=True)  # 13.50: 135
    assert "Earn 250 points" in tea
    assert "Earn 135 points" in coffee


# -- the shop's flows -----------------------------------------------------------


def checkout(client: t.Any, **form: str) -> str:
    """Place the cart as an order; returns its reference."""
    data = {"shipping": "standard", "coupon": "", "place": "Continue to payment", **form}
    response = client.post("/checkout/", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.location.rsplit("/", 1)[1]


def test_full_scenario(shop: Flask) -> None:
    """Sign up, pay partly with points, complete, redeem, use the coupon, refund a line."""
    add_products(shop)
    client = shop.test_client()
    response = client.post(
        "/auth/signup", data={"name": "Ada", "email": "ada@example.com", "password": "s3cret-pass"}
    )
    assert response.status_code == 303
    assert balances(shop, "ada@example.com")[0] == 500  # the welcome points

    client.post("/cart/add/WARE-TEAPOT", data={"quantity": "1"})  # 32.00
    client.post("/cart/add/COF-COLOMBIA", data={"quantity": "2"})  # 27.00
    assert "This order earns 590 points" in client.get("/cart/").get_data(as_text=True)
    first = checkout(client)
    page = client.get(f"/checkout/pay/{first}").get_data(as_text=True)
    assert "Pay with points" in page and "$63.95" in page
    response = client.post(
        "/loyalty/checkout/apply", data={"points": "300", "next": f"/checkout/pay/{first}"}
    )
    assert response.status_code == 303
    page = client.get(f"/checkout/pay/{first}").get_data(as_text=True)
    assert "$60.95" in page  # 63.95 less 3.00 of points
    assert client.post(f"/checkout/pay/{first}").status_code == 302
    order = order_row(shop, first)
    # The 3.00 paid with points earns nothing: 560 points, not 590.
    assert (order.status, order.points_value_minor, order.points) == ("paid", 300, 560)
    assert balances(shop, "ada@example.com") == (200, 560, 0)
    detail = client.get(f"/orders/{first}").get_data(as_text=True)
    assert "Points earned" in detail and "560" in detail and "300 (captured)" in detail

    owner = shop.test_client()
    login(owner, OWNER[1], OWNER[2])
    assert owner.post(f"/admin/orders/{first}/complete").status_code == 302
    assert balances(shop, "ada@example.com") == (760, 0, 0)

    response = client.post("/loyalty/rewards/five-off/redeem", data={"token": "t" * 20, "confirm": "yes"})
    assert response.status_code == 303
    with shop.app_context():
        ada = db.session.scalars(
            sa.select(loyalty.models.Member).where(loyalty.models.Member.email == "ada@example.com")
        )
        code = rewards.member_redemptions(ada.one())[0].code
    client.post("/cart/add/TEA-SENCHA", data={"quantity": "2"})  # 25.00
    client.post("/cart/add/TREAT-CHOC", data={"quantity": "1"})  # 4.80
    second = checkout(client, coupon=code, shipping="pickup")
    order = order_row(shop, second)
    assert (order.total_minor, order.discount_minor, order.shipping_minor) == (2480, 500, 0)
    client.post(f"/checkout/pay/{second}")
    assert order_row(shop, second).status == "paid"
    with shop.app_context():
        assert rewards.check_code.__name__  # the code is used now:
        with pytest.raises(Exception, match="used"):
            rewards.check_code(code)

    refund = owner.post(f"/admin/orders/{second}/refund", data={"key": "refund-key-1", "qty-TREAT-CHOC": "1"})
    assert refund.status_code == 302
    with shop.app_context():
        line = next(ln for ln in order_row(shop, second).lines if ln.sku == "TREAT-CHOC")
        assert line.refunded_quantity == 1 and line.refunded_points > 0
    history = client.get("/loyalty/history").get_data(as_text=True)
    assert "Reversed" in history
    verify(shop)


def test_bad_input_writes_nothing(shop: Flask) -> None:
    add_products(shop)
    client = shop.test_client()
    client.post("/auth/signup", data={"name": "Bo", "email": "bo@example.com", "password": "s3cret-pass"})
    for quantity in ("0", "21", "-1", "many"):
        client.post("/cart/add/TEA-SENCHA", data={"quantity": quantity})
    assert "Your cart is empty" in client.get("/cart/").get_data(as_text=True)
    assert client.post("/cart/add/NOPE", data={"quantity": "1"}).status_code == 404
    client.post("/cart/add/TEA-SENCHA", data={"quantity": "1"})
    for form in ({"coupon": "NOT-A-CODE"}, {"shipping": "drone"}):
        data = {"shipping": "standard", "place": "Continue to payment", **form}
        assert client.post("/checkout/", data=data).status_code == 422
    reference = checkout(client)
    for points in ("50", "-100", "abc", "99999999"):
        client.post("/loyalty/checkout/apply", data={"points": points})
    with shop.app_context():
        m = loyalty.models
        assert db.session.scalar(sa.select(sa.func.count()).select_from(m.Order)) == 1
        assert db.session.scalar(sa.select(sa.func.count()).select_from(m.Reservation)) == 0
    assert balances(shop, "bo@example.com")[0] == 500

    owner = shop.test_client()
    login(owner, OWNER[1], OWNER[2])
    # Refunding an unpaid order, or more units than it has, changes nothing.
    owner.post(f"/admin/orders/{reference}/refund", data={"key": "refund-key-2", "qty-TEA-SENCHA": "1"})
    client.post(f"/checkout/pay/{reference}")
    owner.post(f"/admin/orders/{reference}/refund", data={"key": "refund-key-3", "qty-TEA-SENCHA": "2"})
    owner.post(f"/admin/orders/{reference}/refund", data={"key": "refund-key-4", "qty-TEA-SENCHA": "x"})
    assert order_row(shop, reference).refunded_minor == 0
    assert owner.post(f"/admin/orders/{reference}/nope").status_code == 404
    # A paid order cannot be cancelled by its member.
    client.post(f"/orders/{reference}/cancel")
    assert order_row(shop, reference).status == "paid"
    verify(shop)


def test_pages_of_others_and_the_owner_are_closed(shop: Flask) -> None:
    add_products(shop)
    alice, bob = shop.test_client(), shop.test_client()
    alice.post("/auth/signup", data={"name": "Al", "email": "al@example.com", "password": "s3cret-pass"})
    bob.post("/auth/signup", data={"name": "Bo", "email": "bo@example.com", "password": "s3cret-pass"})
    alice.post("/cart/add/TEA-SENCHA", data={"quantity": "1"})
    reference = checkout(alice)
    assert bob.get(f"/orders/{reference}").status_code == 404
    assert bob.get(f"/checkout/pay/{reference}").status_code == 404
    assert bob.post(f"/checkout/pay/{reference}").status_code == 404
    assert bob.post(f"/orders/{reference}/cancel").status_code == 404
    assert bob.get("/admin/").status_code == 404
    assert bob.post(f"/admin/orders/{reference}/cancel").status_code == 404
    anonymous = shop.test_client()
    assert anonymous.get("/admin/").status_code == 302
    assert anonymous.get("/cart/").location.startswith("/auth/login")
    assert order_row(shop, reference).status == "placed"


def test_member_cancels_an_unpaid_order(shop: Flask) -> None:
    add_products(shop)
    client = shop.test_client()
    client.post("/auth/signup", data={"name": "Al", "email": "al@example.com", "password": "s3cret-pass"})
    client.post("/cart/add/WARE-TEAPOT", data={"quantity": "1"})
    reference = checkout(client)
    client.get(f"/checkout/pay/{reference}")
    client.post("/loyalty/checkout/apply", data={"points": "200"})
    assert balances(shop, "al@example.com") == (300, 0, 200)
    client.post(f"/orders/{reference}/cancel")
    assert order_row(shop, reference).status == "cancelled"
    assert balances(shop, "al@example.com") == (500, 0, 0)
    verify(shop)


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example", "/\\evil.example", "javascript:x"]
)
def test_login_never_redirects_off_site(shop: Flask, target: str) -> None:
    add_products(shop)
    response = shop.test_client().post(
        "/auth/login", data={"email": OWNER[1], "password": OWNER[2], "next": target}
    )
    assert response.status_code == 303 and response.location == "/"


def test_forms_need_the_csrf_token(engine: str, tmp_path: t.Any) -> None:
    if engine != "sqlite":
        pytest.skip("one engine is enough for CSRF")
    app = shop_app(f"sqlite:///{tmp_path / 'shop.sqlite'}", WTF_CSRF_ENABLED=True)
    add_products(app)
    client = app.test_client()
    response = client.post(
        "/auth/signup", data={"name": "Al", "email": "al@example.com", "password": "s3cret-pass"}
    )
    assert response.status_code == 400
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(loyalty.models.Member)) == 1


def test_product_pictures_are_generated_locally(shop: Flask) -> None:
    add_products(shop)
    client = shop.test_client()
    first, again = client.get("/images/TEA-SENCHA.svg"), client.get("/images/TEA-SENCHA.svg")
    assert first.mimetype == "image/svg+xml" and first.data == again.data
    assert b"<svg" in first.data and b"http" not in first.data.replace(b"http://www.w3.org", b"")
    assert client.get("/images/NOPE.svg").status_code == 404
