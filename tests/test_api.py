"""The JSON API: every endpoint's happy path and the route × role matrix."""

from __future__ import annotations

import datetime as dt
import typing as t

import pytest
from flask import Flask

from flask_loyalty import audit
from flask_loyalty import checkout
from flask_loyalty import Loyalty
from flask_loyalty import members
from flask_loyalty import rewards
from flask_loyalty.api import ENDPOINTS

from .api_support import ApiClient
from .api_support import enroll
from .api_support import error_of
from .api_support import install_login
from .api_support import make_reward
from .api_support import snapshot
from .conftest import make_app
from .conftest import START

pytestmark = pytest.mark.settings(
    LOYALTY_TIERS=({"name": "silver", "threshold": 0}, {"name": "gold", "threshold": 5000})
)


@pytest.fixture
def owner(api_app: Flask) -> ApiClient:
    """A member with 2,000 points, calling by token."""
    with api_app.app_context():
        return ApiClient(api_app, enroll("Owner", 2000))


@pytest.fixture
def other(api_app: Flask) -> ApiClient:
    """Another member with 2,000 points."""
    with api_app.app_context():
        return ApiClient(api_app, enroll("Other", 2000))


@pytest.fixture
def reward(api_app: Flask) -> rewards.Reward:
    with api_app.app_context():
        return make_reward("coffee", stock=10)


def test_balance(owner: ApiClient) -> None:
    response = owner.get("/balance")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["member_id"] == owner.member_id
    assert (body["available"], body["pending"], body["reserved"], body["lifetime_earned"]) == (
        2000,
        0,
        0,
        2000,
    )
    assert body["tier"]["next_tier"] == {"name": "gold", "minimum": 5000}
    assert body["expiring_soon"]["points"] == 0
    assert body["expiring_soon"]["until"].endswith("Z")


def test_history_pages_by_cursor_and_filters(api_app: Flask, owner: ApiClient, clock: t.Any) -> None:
    with api_app.app_context():
        from flask_loyalty import points

        for i in range(5):
            clock.advance(hours=1)
            points.earn(owner.member_id, 10 + i, key=f"extra:{i}")
    first = owner.get("/history?limit=2").get_json()
    assert [e["points"] for e in first["entries"]] == [14, 13]
    second = owner.get(f"/history?limit=2&cursor={first['next_cursor']}").get_json()
    assert [e["points"] for e in second["entries"]] == [12, 11]
    third = owner.get(f"/history?limit=2&cursor={second['next_cursor']}").get_json()
    assert [e["points"] for e in third["entries"]] == [10, 2000]
    assert third["next_cursor"] is None
    since = (START + dt.timedelta(hours=3)).isoformat() + "Z"
    recent = owner.get("/history", query_string={"since": since, "kind": ["earn", "redeem"]}).get_json()
    assert [e["points"] for e in recent["entries"]] == [14, 13, 12]
    until = (START + dt.timedelta(hours=2)).replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))
    old = owner.get("/history", query_string={"until": until.isoformat()}).get_json()
    assert old["entries"] == []  # 10:00 UTC, before every entry
    only_redeem = owner.get("/history?kind=redeem").get_json()
    assert only_redeem == {"entries": [], "next_cursor": None}


def test_one_entry(owner: ApiClient) -> None:
    entry = owner.get("/history").get_json()["entries"][0]
    response = owner.get(f"/history/{entry['id']}")
    assert response.status_code == 200
    assert response.get_json() == entry


def test_quote(owner: ApiClient) -> None:
    lines = [
        {"sku": "TEA", "quantity": 2, "unit_price": "4.50", "category": "drinks"},
        {"sku": "MUG", "quantity": 1, "unit_price": "12.00", "name": "Mug", "discount": "2.00"},
    ]
    response = owner.post("/quote", json={"lines": lines})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["points"] == 190
    assert [(ln["sku"], ln["basis"], ln["points"]) for ln in body["lines"]] == [
        ("TEA", "9.00", 90),
        ("MUG", "10.00", 100),
    ]
    assert body["vetoed"] is False


def test_rewards_and_availability(api_app: Flask, owner: ApiClient, reward: rewards.Reward) -> None:
    with api_app.app_context():
        make_reward("jacket", cost=50_000, amount="50.00")
        make_reward("gold-mug", cost=100, kind="free_product", amount=None, sku="MUG", tier="gold")
    listed = owner.get("/rewards").get_json()["rewards"]
    assert [r["slug"] for r in listed] == ["gold-mug", "coffee", "jacket"]
    by_slug = {r["slug"]: r for r in listed}
    assert by_slug["coffee"]["available"] and by_slug["coffee"]["affordable"]
    assert by_slug["coffee"]["amount"] == "5.00" and by_slug["coffee"]["stock"] == 10
    assert by_slug["jacket"]["available"] and not by_slug["jacket"]["affordable"]
    assert by_slug["gold-mug"]["unavailable_reason"] == "tier_required"
    assert "gold" in by_slug["gold-mug"]["unavailable_message"]
    assert owner.get("/rewards/coffee").get_json() == by_slug["coffee"]
    assert owner.get(f"/rewards/{reward.id}").get_json() == by_slug["coffee"]


def test_redeem_list_show_and_cancel(api_app: Flask, owner: ApiClient, reward: rewards.Reward) -> None:
    response = owner.post("/redemptions", json={"reward": "coffee"})
    assert response.status_code == 201, response.get_json()
    made = response.get_json()
    assert (made["reward_slug"], made["points"], made["status"], made["amount"]) == (
        "coffee",
        500,
        "issued",
        "5.00",
    )
    assert len(made["code"]) == 12
    assert owner.get("/balance").get_json()["available"] == 1500
    second = owner.post("/redemptions", json={"reward": str(reward.id)}).get_json()
    page = owner.get("/redemptions?limit=1").get_json()
    assert [r["id"] for r in page["redemptions"]] == [second["id"]]
    rest = owner.get(f"/redemptions?limit=1&cursor={page['next_cursor']}").get_json()
    assert [r["id"] for r in rest["redemptions"]] == [made["id"]] and rest["next_cursor"] is None
    assert owner.get(f"/redemptions/{made['id']}").get_json() == made
    cancelled = owner.post(f"/redemptions/{made['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.get_json()["status"] == "cancelled"
    assert owner.get("/balance").get_json()["available"] == 1500
    again = owner.post(f"/redemptions/{made['id']}/cancel", json={})
    assert again.status_code == 200 and again.get_json()["status"] == "cancelled"
    assert owner.get("/balance").get_json()["available"] == 1500  # returned once
    with api_app.app_context():
        assert audit.verify() == []


def test_checkout_reservation_offer_apply_show_remove(api_app: Flask, owner: ApiClient) -> None:
    offer = owner.get("/reservations/A-1/offer?payable_total=30.00").get_json()
    assert offer == {
        "payable": "30.00",
        "currency": "USD",
        "available": 2000,
        "minimum": 100,
        "maximum": 1500,
        "step": 100,
        "point_value": "0.01",
        "applied": 0,
        "usable": True,
        "max_discount": "15.00",
    }
    response = owner.post("/reservations/A-1", json={"points": 1000, "payable_total": "30.00"})
    assert response.status_code == 201, response.get_json()
    held = response.get_json()
    assert (held["points"], held["discount"], held["status"]) == (1000, "10.00", "held")
    assert held["expires_at"] == (START + dt.timedelta(seconds=1800)).isoformat() + "Z"
    same = owner.post("/reservations/A-1", json={"points": 1000, "payable_total": "30.00"})
    assert same.status_code == 200 and same.get_json() == held
    assert owner.get("/reservations/A-1").get_json() == held
    assert owner.get("/balance").get_json()["reserved"] == 1000
    removed = owner.delete("/reservations/A-1")
    assert removed.status_code == 200 and removed.get_json()["status"] == "released"
    assert owner.get("/reservations/A-1").status_code == 404
    assert owner.get("/balance").get_json()["available"] == 2000
    with api_app.app_context():
        assert checkout.applied_points(owner.member_id, reference="A-1") is None


def test_csrf_token_endpoint(owner: ApiClient) -> None:
    token = owner.get("/csrf-token").get_json()["csrf_token"]
    assert isinstance(token, str) and len(token) > 20


def test_a_logged_in_user_of_the_host_is_enrolled_on_first_call(tmp_path: t.Any, clock: t.Any) -> None:
    from flask_login import LoginManager
    from flask_login import UserMixin

    class User(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id
            self.name = f"User {user_id}"
            self.email = f"user{user_id}@example.com"

    app, db = make_app(f"sqlite:///{tmp_path / 'host.sqlite'}", clock)
    manager = LoginManager(app)
    manager.user_loader(User)
    manager.request_loader(
        lambda request: User(request.headers["X-User"]) if "X-User" in request.headers else None
    )
    with app.app_context():
        db.create_all()
    client = app.test_client()
    body = client.get("/loyalty/api/balance", headers={"X-User": "77"}).get_json()
    assert body["available"] == 0
    assert (
        client.get("/loyalty/api/balance", headers={"X-User": "77"}).get_json()["member_id"]
        == body["member_id"]
    )
    with app.app_context():
        make_reward("coffee", cost=1)
        members.close(body["member_id"])
    response = client.post("/loyalty/api/redemptions", json={"reward": "coffee"}, headers={"X-User": "77"})
    assert response.status_code == 403 and error_of(response)["code"] == "member_closed"


@pytest.mark.settings(LOYALTY_AUTO_ENROLL_ENABLED=False, LOYALTY_USER_MODEL=None)
def test_a_user_who_is_not_a_member_gets_403(api_app: Flask) -> None:
    from flask_login import UserMixin

    class Stranger(UserMixin):
        id = "stranger"

    api_app.login_manager.request_loader(lambda request: Stranger())
    error = error_of(api_app.test_client().get("/loyalty/api/balance"))
    assert error["code"] == "member_not_found"


def test_a_closed_member_is_logged_out(api_app: Flask, owner: ApiClient) -> None:
    from flask_loyalty import members

    with api_app.app_context():
        members.close(owner.member_id)
    assert error_of(owner.get("/balance"))["code"] == "unauthenticated"


def test_the_api_can_be_left_unregistered_or_moved(tmp_path: t.Any, clock: t.Any) -> None:
    off, _ = make_app(f"sqlite:///{tmp_path / 'a.sqlite'}", clock, {"LOYALTY_API_ENABLED": False})
    assert "loyalty_api" not in off.blueprints
    moved, _ = make_app(
        f"sqlite:///{tmp_path / 'b.sqlite'}",
        clock,
        {"LOYALTY_API_URL_PREFIX": "/v2/points", "LOYALTY_API_BLUEPRINT_NAME": "points_api"},
    )
    assert "points_api" in moved.blueprints
    document = moved.test_client().get("/v2/points/openapi.json").get_json()
    assert "/v2/points/balance" in document["paths"]
    assert moved.test_client().get("/v2/points/balance").status_code == 401


def test_two_apps_share_one_extension(tmp_path: t.Any, clock: t.Any) -> None:
    from flask_sqlalchemy import SQLAlchemy

    loyalty = Loyalty(clock=clock)
    for name in ("one", "two"):
        app = Flask(name)
        app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / name}.sqlite", SECRET_KEY="x")
        SQLAlchemy(app)
        loyalty.init_app(app)
        install_login(app)
        assert app.test_client().get("/loyalty/api/openapi.json").status_code == 200


# -- the route × role matrix ------------------------------------------------------------


def _routes(redemption_id: int, entry_id: int) -> list[tuple[str, str, t.Any, bool]]:
    """(method, path, body, owned): owned routes name one of the owner's things."""
    return [
        ("GET", "/balance", None, False),
        ("GET", "/history", None, False),
        ("GET", f"/history/{entry_id}", None, True),
        ("POST", "/quote", {"lines": [{"sku": "A", "quantity": 1, "unit_price": "1.00"}]}, False),
        ("GET", "/rewards", None, False),
        ("GET", "/rewards/coffee", None, False),
        ("GET", "/redemptions", None, False),
        ("GET", f"/redemptions/{redemption_id}", None, True),
        ("POST", f"/redemptions/{redemption_id}/cancel", None, True),
        ("GET", "/reservations/R-1/offer?payable_total=10.00", None, False),
        ("GET", "/reservations/R-1", None, True),
        ("DELETE", "/reservations/R-1", None, True),
        ("POST", "/redemptions", {"reward": "coffee"}, False),
        ("POST", "/reservations/R-2", {"points": 100, "payable_total": "10.00"}, False),
        ("GET", "/csrf-token", None, False),
    ]


def _call(client: ApiClient, method: str, path: str, body: t.Any) -> t.Any:
    if method == "GET":
        return client.get(path)
    if method == "DELETE":
        return client.delete(path)
    return client.post(path, json=body)


def test_every_route_by_every_role(api_app: Flask, owner: ApiClient, other: ApiClient, reward: t.Any) -> None:
    redemption = owner.post("/redemptions", json={"reward": "coffee"}).get_json()
    owner.post("/reservations/R-1", json={"points": 100, "payable_total": "10.00"})
    entry_id = owner.get("/history").get_json()["entries"][0]["id"]
    routes = _routes(redemption["id"], entry_id)
    documented = {(e.method, e.rule) for e in ENDPOINTS if not e.public}
    assert len(documented) == len(routes)  # every operation is in the matrix
    anonymous = ApiClient(api_app, None)
    before = snapshot(api_app)
    for method, path, body, _ in routes:
        response = _call(anonymous, method, path, body)
        assert response.status_code == 401, (method, path)
        assert error_of(response)["code"] == "unauthenticated"
    assert snapshot(api_app) == before
    for method, path, body, owned in routes:
        response = _call(other, method, path, body)
        if owned:
            assert response.status_code == 404, (method, path, response.get_json())
            assert error_of(response)["code"] == "not_found"
        else:
            assert response.status_code in (200, 201), (method, path, response.get_json())
    after_other = snapshot(api_app)
    assert [row for row in after_other["balances"] if row[0] == owner.member_id] == [
        row for row in before["balances"] if row[0] == owner.member_id
    ]
    for method, path, body, _ in routes:
        response = _call(owner, method, path, body)
        assert response.status_code in (200, 201), (method, path, response.get_json())
    assert anonymous.get("/openapi.json").status_code == 200
    with api_app.app_context():
        assert audit.verify() == []
