"""The JSON API under concurrent calls: no reward is oversold, no point spent twice."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_loyalty import audit

from .api_support import ApiClient
from .api_support import enroll
from .api_support import error_of
from .api_support import make_reward
from .conftest import ledger_sum
from .conftest import run_together

pytestmark = pytest.mark.slow


def test_twenty_members_redeem_a_reward_with_five_in_stock(api_app: Flask) -> None:
    with api_app.app_context():
        clients = [ApiClient(api_app, enroll(f"Member {i}", 1000)) for i in range(20)]
        reward = make_reward("limited", stock=5)
    calls = [
        (lambda c=c: c.post("/redemptions", json={"reward": "limited"}, headers={"Idempotency-Key": "mine"}))
        for c in clients
    ]
    responses = run_together(api_app, calls)
    assert not [r for r in responses if isinstance(r, Exception)], responses
    made = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert len(made) == 5
    assert len(refused) == 15
    for response in refused:
        assert response.status_code == 409
        error = error_of(response)
        assert (error["code"], error["reason"]) == ("reward_unavailable", "out_of_stock")
    db = api_app.extensions["sqlalchemy"]
    with api_app.app_context():
        table = db.metadata.tables["loyalty_reward"]
        with db.engine.connect() as conn:
            assert conn.execute(sa.select(table.c.stock).where(table.c.id == reward.id)).scalar_one() == 0
        assert audit.verify() == []
        winners = {_owner(api_app, r.get_json()["id"]) for r in made}
        assert len(winners) == 5
        for client in clients:
            assert ledger_sum(db, client.member_id) == (500 if client.member_id in winners else 1000)
    assert len({r.get_json()["code"] for r in made}) == 5


def _owner(app: Flask, redemption_id: int) -> int:
    db = app.extensions["sqlalchemy"]
    table = db.metadata.tables["loyalty_redemption"]
    with db.engine.connect() as conn:
        return int(conn.execute(sa.select(table.c.member_id).where(table.c.id == redemption_id)).scalar_one())


@pytest.mark.parametrize("round_", range(3))
def test_a_checkout_hold_and_a_redemption_at_once_on_points_for_one(api_app: Flask, round_: int) -> None:
    with api_app.app_context():
        client = ApiClient(api_app, enroll("Member", 500))
        make_reward("coffee", stock=10)
    calls = [
        lambda: client.post("/reservations/ORDER-1", json={"points": 500, "payable_total": "100.00"}),
        lambda: client.post("/redemptions", json={"reward": "coffee"}),
    ]
    if round_ % 2:
        calls.reverse()
    responses = run_together(api_app, calls)
    assert not [r for r in responses if isinstance(r, Exception)], responses
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] in (201,) and statuses[1] in (409, 422), [r.get_json() for r in responses]
    loser = error_of(next(r for r in responses if r.status_code != 201))
    assert loser["code"] in ("insufficient_points", "invalid_request")
    balance = client.get("/balance").get_json()
    assert balance["available"] == 0 and balance["available"] + balance["reserved"] in (0, 500)
    with api_app.app_context():
        assert audit.verify() == []
