"""The ledger operations: exactly once, never overdrawn, lots and expiry."""

from __future__ import annotations

import datetime as dt

import pytest

from flask_loyalty import IdempotencyConflict
from flask_loyalty import InsufficientPoints
from flask_loyalty import audit
from flask_loyalty import jobs
from flask_loyalty import members
from flask_loyalty import points

from .conftest import ledger_sum


def test_same_order_paid_five_times_earns_once(db, member, signals):
    results = [points.earn(member, 3000, key="order:1") for _ in range(5)]
    assert [r.replayed for r in results] == [False, True, True, True, True]
    assert len({r.id for r in results}) == 1
    assert members.balances(member).available == 3000
    assert ledger_sum(db, member.id) == 3000
    assert signals.names().count("points-earned") == 1


def test_same_key_other_amount_raises_and_writes_nothing(db, member):
    points.earn(member, 3000, key="order:1")
    with pytest.raises(IdempotencyConflict):
        points.earn(member, 2999, key="order:1")
    assert members.balances(member).available == 3000
    assert ledger_sum(db, member.id) == 3000


def test_redeem_beyond_balance_is_refused(db, member):
    points.earn(member, 100, key="o")
    with pytest.raises(InsufficientPoints) as info:
        points.redeem(member, 101, key="r")
    assert info.value.available == 100
    assert members.balances(member).available == 100
    assert audit.verify() == []


def test_lots_spent_soonest_expiry_first_and_expired_once(db, member, clock):
    later = clock() + dt.timedelta(days=60)
    sooner = clock() + dt.timedelta(days=10)
    points.earn(member, 100, key="a", expires_at=later)
    points.earn(member, 100, key="b", expires_at=sooner)
    points.earn(member, 100, key="c")
    points.redeem(member, 150, key="r")  # all of b, then 50 of a
    clock.advance(days=11)
    assert jobs.expire_points() == 0
    clock.advance(days=50)
    assert jobs.expire_points() == 1
    assert jobs.expire_points() == 0
    assert members.balances(member).available == 100
    assert audit.verify() == []
