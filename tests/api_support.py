"""Fixtures and helpers shared by the JSON API's tests.

The test app logs members in with Flask-Login: by the session cookie
(``user_loader``), or by an ``Authorization: Bearer member-<id>`` header
(``request_loader``), the way a shop's token authentication would.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager

from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty import rewards

API = "/loyalty/api"
#: The tables whose rows an API call may write.
WRITTEN_TABLES = (
    "member",
    "ledger_entry",
    "points_lot",
    "reservation",
    "redemption",
    "reward",
    "api_response",
)


def install_login(app: Flask) -> LoginManager:
    """Give ``app`` Flask-Login with the extension's Member as the user model."""
    manager = LoginManager(app)
    db = app.extensions["sqlalchemy"]
    model = app.extensions["loyalty"].models.Member

    @manager.user_loader
    def load_user(user_id: str) -> t.Any:
        return db.session.get(model, int(user_id))

    @manager.request_loader
    def load_from_token(request: t.Any) -> t.Any:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer member-") and header[14:].isdigit():
            return db.session.get(model, int(header[14:]))
        return None

    return manager


class ApiClient:
    """A test client that calls the API as one member, by token (no CSRF needed)."""

    def __init__(self, app: Flask, member_id: int | None) -> None:
        self.client = app.test_client()
        self.member_id = member_id

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {} if self.member_id is None else {"Authorization": f"Bearer member-{self.member_id}"}
        headers.update(extra or {})
        return headers

    def get(self, path: str, **kw: t.Any) -> t.Any:
        return self.client.get(API + path, headers=self.headers(kw.pop("headers", None)), **kw)

    def post(self, path: str, json: t.Any = None, **kw: t.Any) -> t.Any:
        if json is not None:
            kw["json"] = json
        return self.client.post(API + path, headers=self.headers(kw.pop("headers", None)), **kw)

    def delete(self, path: str, **kw: t.Any) -> t.Any:
        return self.client.delete(API + path, headers=self.headers(kw.pop("headers", None)), **kw)


def enroll(name: str, earned: int = 0) -> int:
    """Enrol a member with ``earned`` available points; return the id."""
    member = members.enroll(name=name)
    if earned:
        points.earn(member.id, earned, key=f"seed:{member.id}")
    return int(member.id)


def make_reward(slug: str = "coffee", **values: t.Any) -> rewards.Reward:
    """A fixed-amount coupon reward (500 points for 5.00 by default)."""
    values = {"name": slug.title(), "kind": "fixed_amount", "cost": 500, "amount": "5.00", **values}
    return rewards.create_reward(slug=slug, **values)


def snapshot(app: Flask) -> dict[str, t.Any]:
    """Row counts of every table an API call may write, and every member's balances."""
    db = app.extensions["sqlalchemy"]
    prefix = app.config["LOYALTY_TABLE_PREFIX"]
    out: dict[str, t.Any] = {}
    with app.app_context(), db.engine.connect() as conn:
        for name in WRITTEN_TABLES:
            table = db.metadata.tables[prefix + name]
            out[name] = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        member = db.metadata.tables[prefix + "member"]
        reward = db.metadata.tables[prefix + "reward"]
        out["balances"] = conn.execute(
            sa.select(member.c.id, member.c.available, member.c.reserved).order_by(member.c.id)
        ).all()
        out["stock"] = conn.execute(sa.select(reward.c.id, reward.c.stock).order_by(reward.c.id)).all()
    return out


def error_of(response: t.Any) -> dict[str, t.Any]:
    """The ``error`` object of a JSON error response (asserting its shape)."""
    assert response.mimetype == "application/json", response.get_data(as_text=True)[:200]
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return t.cast(dict[str, t.Any], body["error"])
