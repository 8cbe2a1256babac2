"""Checking cached balances and lots against the ledger, and repairing them."""

from __future__ import annotations

import datetime as dt
import typing as t

import pytest
import sqlalchemy as sa

from flask_loyalty import audit
from flask_loyalty import jobs
from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty.audit import Discrepancy

from .conftest import ledger_sum
from .conftest import START
from .test_points import bal
from .test_points import count
from .test_points import lots

DAY = dt.timedelta(days=1)


def tamper(db: t.Any, table: str, where: t.Any, **values: t.Any) -> None:
    """Change rows behind the ledger's back, on a connection of its own."""
    db.session.commit()  # no read transaction of the test may hold SQLite's lock
    target = db.metadata.tables[f"loyalty_{table}"]
    with db.engine.begin() as conn:
        conn.execute(target.update().where(where(target.c)).values(**values))


def repairs(db: t.Any) -> list[tuple[int, str, int, int, str | None, dt.datetime]]:
    """Every Repair row as ``(member_id, field, cached, ledger, actor, created_at)``."""
    r = db.metadata.tables["loyalty_repair"]
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                r.c.member_id, r.c.field, r.c.cached_value, r.c.ledger_value, r.c.actor, r.c.created_at
            ).order_by(r.c.id)
        ).all()
    return [tuple(row) for row in rows]


@pytest.fixture
def scenario(app_ctx: None, clock: t.Any) -> list[int]:
    """Three members who have done a bit of everything; returns their ids.

    Final balances: ``ana`` 430 available, 200 pending, 40 reserved, 800
    earned; ``ben`` -20 available after a clawback; ``eve`` none at all.
    """
    ana = members.enroll(name="Ana", email="ana@example.com").id
    ben = members.enroll(name="Ben", email="ben@example.com").id
    eve = members.enroll(name="Eve", email="eve@example.com").id
    now = clock()
    points.earn(ana, 500, key="order:1", expires_at=now + 30 * DAY)
    points.earn(ana, 100, key="order:2", expires_at=now + 5 * DAY)
    points.earn(ana, 200, key="order:3", available_from=now + 14 * DAY)
    points.earn(ana, 50, key="order:4")
    points.redeem(ana, 120, key="reward:1")  # 100 of order:2, 20 of order:1
    points.reserve(ana, 40, key="cart:1")
    points.reserve(ana, 90, key="cart:2")
    points.capture(ana, key="cart:2", points=60)  # 30 released to order:1's lot
    points.reverse(ana, key="refund:1", original=("earn", "order:4"), points=50)
    points.reverse(ana, key="cancel:1", original=("redeem", "reward:1"), points=110)  # 20 + 90
    points.adjust(ana, 30, key="adj:1", actor="admin", reason="goodwill")
    points.adjust(ana, -10, key="adj:2", actor="admin", reason="typo")  # from order:2's lot
    points.earn(ben, 100, key="order:9")
    points.redeem(ben, 100, key="reward:9")
    points.earn(ben, 80, key="order:10")
    points.reverse(ben, key="refund:9", original=("earn", "order:9"), policy="allow_negative")
    clock.advance(days=6)
    assert jobs.expire_points() == 1  # the 80 left of order:2
    return [ana, ben, eve]


def test_verify_is_empty_after_a_varied_scenario(db, scenario):
    ana, ben, eve = scenario
    assert members.balances(ana) == bal(430, 200, 40, 800)
    assert members.balances(ben) == bal(-20, lifetime=80)
    assert members.balances(eve) == bal()
    assert [ledger_sum(db, m) for m in scenario] == [430, -20, 0]
    assert lots(db, ana) == [
        (500, 400, False, False), (100, 0, False, True), (200, 200, True, False), (50, 0, False, False),
        (30, 30, False, False),
    ]  # fmt: skip
    entries = count(db, "ledger_entry")
    assert audit.verify() == []
    assert count(db, "ledger_entry") == entries
    assert audit.rebuild() == []
    assert repairs(db) == []


@pytest.mark.parametrize(
    ("field", "change"),
    [("available", 7), ("available", -400), ("pending", 1), ("reserved", -40), ("lifetime_earned", 1000)],
)
def test_corrupted_cached_balance_is_found_and_rebuilt(app, db, scenario, signals, field, change):
    ana, ben, eve = scenario
    good = members.balances(ana)
    expected = getattr(good, field)
    tamper(db, "member", lambda c: c.id == ana, **{field: expected + change})
    found = audit.verify()
    assert found == [Discrepancy(ana, field, expected + change, expected)]
    signals.sent.clear()
    assert audit.rebuild(actor="ops:lee") == found
    assert repairs(db) == [(ana, field, expected + change, expected, "ops:lee", START + 6 * DAY)]
    assert signals.sent == [("balances-rebuilt", app, {"repairs": found})]
    assert audit.verify() == []
    assert members.balances(ana) == good
    assert audit.rebuild() == []
    assert len(signals.sent) == 1
    assert len(repairs(db)) == 1


def test_several_discrepancies_of_several_members(db, scenario):
    ana, ben, eve = scenario
    tamper(db, "member", lambda c: c.id == ana, available=0, lifetime_earned=1)
    tamper(db, "member", lambda c: c.id == eve, pending=5)
    expected = [
        Discrepancy(ana, "available", 0, 430),
        Discrepancy(ana, "lifetime_earned", 1, 800),
        Discrepancy(eve, "pending", 5, 0),
    ]
    assert audit.verify() == expected
    assert audit.rebuild() == expected
    assert [r[:5] for r in repairs(db)] == [
        (ana, "available", 0, 430, "rebuild"),
        (ana, "lifetime_earned", 1, 800, "rebuild"),
        (eve, "pending", 5, 0, "rebuild"),
    ]
    assert audit.verify() == []
    assert members.balances(ana) == bal(430, 200, 40, 800)
    assert members.balances(eve) == bal()


def test_a_lot_with_too_few_points_is_topped_up(db, scenario, signals):
    ana = scenario[0]
    before = lots(db, ana)
    assert before[0] == (500, 400, False, False)
    lot = db.metadata.tables["loyalty_points_lot"]
    with db.engine.connect() as conn:
        first = conn.execute(sa.select(sa.func.min(lot.c.id)).where(lot.c.member_id == ana)).scalar_one()
    tamper(db, "points_lot", lambda c: c.id == first, remaining=390)
    found = audit.verify()
    assert found == [Discrepancy(ana, "lots", 420, 430)]
    signals.sent.clear()
    assert audit.rebuild(actor="ops") == found
    assert signals.of("balances-rebuilt") == [{"repairs": found}]
    assert repairs(db) == [(ana, "lots", 420, 430, "ops", START + 6 * DAY)]
    # The missing points come back as a never-expiring lot.
    assert lots(db, ana) == [(500, 390, False, False), *before[1:], (10, 10, False, False)]
    assert audit.verify() == []
    assert members.balances(ana).available == 430


def test_lots_with_too_many_points_are_trimmed_latest_expiry_first(db, scenario):
    ana = scenario[0]
    before = lots(db, ana)
    assert [remaining for _, remaining, _, _ in before] == [400, 0, 200, 0, 30]
    lot = db.metadata.tables["loyalty_points_lot"]
    with db.engine.connect() as conn:
        first = conn.execute(sa.select(sa.func.min(lot.c.id)).where(lot.c.member_id == ana)).scalar_one()
    tamper(db, "points_lot", lambda c: c.id == first, remaining=440)
    assert audit.verify() == [Discrepancy(ana, "lots", 470, 430)]
    assert len(audit.rebuild()) == 1
    # Never-expiring lots go first (the adjustment's 30), then the latest expiry.
    assert [remaining for _, remaining, _, _ in lots(db, ana)] == [430, 0, 200, 0, 0]
    assert audit.verify() == []


def test_a_negative_balance_must_have_empty_lots(db, scenario):
    ben = scenario[1]
    lot = db.metadata.tables["loyalty_points_lot"]
    with db.engine.connect() as conn:
        first = conn.execute(sa.select(sa.func.min(lot.c.id)).where(lot.c.member_id == ben)).scalar_one()
    tamper(db, "points_lot", lambda c: c.id == first, remaining=5)
    assert audit.verify() == [Discrepancy(ben, "lots", 5, 0)]
    assert audit.rebuild() == [Discrepancy(ben, "lots", 5, 0)]
    assert [remaining for _, remaining, _, _ in lots(db, ben)] == [0, 0]
    assert audit.verify() == []


def test_a_pending_lot_is_repaired(db, scenario):
    ana = scenario[0]
    tamper(db, "points_lot", lambda c: (c.member_id == ana) & c.pending.is_(True), remaining=150)
    assert audit.verify() == [Discrepancy(ana, "pending_lots", 150, 200)]
    assert audit.rebuild() == [Discrepancy(ana, "pending_lots", 150, 200)]
    assert [(p, r, pending) for p, r, pending, _ in lots(db, ana) if pending] == [
        (200, 150, True),
        (50, 50, True),
    ]
    assert audit.verify() == []


def test_a_reservation_mismatch_is_reported_but_left_to_a_person(db, scenario, signals):
    ana = scenario[0]
    tamper(db, "reservation", lambda c: (c.member_id == ana) & (c.source_key == "cart:1"), status="released")
    found = [Discrepancy(ana, "reservations", 0, 40)]
    assert audit.verify() == found
    signals.sent.clear()
    assert audit.rebuild() == []
    assert repairs(db) == []
    assert signals.sent == []
    assert audit.verify() == found


@pytest.mark.settings(LOYALTY_JOB_CHUNK_SIZE=2)
def test_verify_reads_members_in_chunks(db, app_ctx):
    ids = [members.enroll(name=f"m{i}").id for i in range(5)]
    for i, member_id in enumerate(ids):
        points.earn(member_id, 10 * (i + 1), key="o")
    tamper(db, "member", lambda c: c.id == ids[4], available=0)
    progress: list[int] = []
    assert audit.verify(progress=progress.append) == [Discrepancy(ids[4], "available", 0, 50)]
    assert progress == [1, 2, 3]
    progress.clear()
    assert audit.rebuild(progress=progress.append) == [Discrepancy(ids[4], "available", 0, 50)]
    assert progress == [1, 2, 3]
    assert audit.verify() == []


def test_verify_covers_closed_members(db, scenario):
    ana = scenario[0]
    members.close(ana)
    tamper(db, "member", lambda c: c.id == ana, available=1)
    assert audit.verify() == [Discrepancy(ana, "available", 1, 430)]
    assert audit.rebuild() == [Discrepancy(ana, "available", 1, 430)]
    assert audit.verify() == []
