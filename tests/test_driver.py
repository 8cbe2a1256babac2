"""The ledger's hot statements on the DB-API cursor, on every engine.

They write exactly what SQLAlchemy would, read back the column types, raise
SQLAlchemy's exceptions, and step aside whenever the engine's statements are
watched.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import typing as t
from decimal import Decimal

import pytest
import sqlalchemy as sa

from flask_loyalty import InsufficientPoints
from flask_loyalty import jobs
from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty.adapters import OrderData
from flask_loyalty.driver import Driver
from flask_loyalty.driver import watched
from flask_loyalty.orders import order_paid
from flask_loyalty.orders import order_refunded
from flask_loyalty.proxies import current_loyalty
from flask_loyalty.rules import LineContext

from .conftest import ledger_sum


def _script(member_id: int, clock: t.Any) -> None:
    """A bit of everything the hot statements serve, for one member."""
    start = clock()
    points.earn(member_id, 500, key="welcome", expires_at=start + dt.timedelta(days=30))
    points.earn(member_id, 300, key="late", expires_at=start + dt.timedelta(days=10))
    points.earn(member_id, 200, key="pending", available_from=start + dt.timedelta(days=2))
    line = LineContext("TEA", 2, Decimal("12.50"), "tea")
    order = OrderData(f"{member_id}-A", member_id, "USD", Decimal("25.00"), (line,))
    order_paid(order)
    points.reserve(member_id, 120, key=f"order:{member_id}-B")
    points.capture(member_id, key=f"order:{member_id}-B", points=100)
    points.redeem(member_id, 350, key="gift")
    with pytest.raises(InsufficientPoints):
        points.redeem(member_id, 10_000, key="too-much")
    order_refunded(order, key="R-1", amount=Decimal("10.00"))
    clock.advance(days=3)
    jobs.release_pending()
    clock.advance(days=10)
    jobs.expire_points()
    points.adjust(member_id, -5, key="fix", actor="owner", reason="typo")


def _rows(db: t.Any, member_id: int) -> dict[str, list[tuple[t.Any, ...]]]:
    """The member's balances, entries and lots, without ids or what names the member."""
    tables = db.metadata.tables
    m, e, lot = tables["loyalty_member"], tables["loyalty_ledger_entry"], tables["loyalty_points_lot"]
    skip = {"id", "member_id", "lot_id", "reservation_id", "reverses_id", "name", "email", "referral_code"}
    # Order references (and the digests of orders) name the member; sweeps' keys name lots.
    skip.add("params_hash")
    own = f"{member_id}-"

    def plain(value: t.Any) -> t.Any:
        return re.sub(r"^lot:\d+$", "lot:#", value.replace(own, "#-")) if isinstance(value, str) else value

    wanted = (("member", m, m.c.id), ("entries", e, e.c.member_id), ("lots", lot, lot.c.member_id))
    with db.engine.connect() as conn:
        return {
            name: [
                tuple(plain(v) for k, v in row._mapping.items() if k not in skip)
                for row in conn.execute(sa.select(table).where(column == member_id).order_by(table.c.id))
            ]
            for name, table, column in wanted
        }


def test_the_cursor_writes_what_sqlalchemy_writes(app, db, app_ctx, clock):
    """The same operations, once on the cursor and once through SQLAlchemy,
    leave the same rows, timestamps included."""
    driven = members.enroll(name="Driven", email="driven@example.com").id
    plain = members.enroll(name="Plain", email="plain@example.com").id
    start = clock()
    _script(driven, clock)
    clock.set(start)
    app.config["LOYALTY_DRIVER_STATEMENTS_ENABLED"] = False
    _script(plain, clock)
    first, second = _rows(db, driven), _rows(db, plain)
    assert first["entries"] and first["lots"]
    assert first == second
    assert ledger_sum(db, driven) == members.balances(driven).available


class _Spy:
    """Counts the statements the store's driver ran on the cursor."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ran = 0
        driver = current_loyalty.store.driver
        real = driver.run

        def run(conn: t.Any, statement: t.Any, params: t.Any, cursor: t.Any = None) -> t.Any:
            result = real(conn, statement, params, cursor)
            self.ran += result is not None
            return result

        monkeypatch.setattr(driver, "run", run)


def test_hot_statements_run_on_the_cursor(db, member, monkeypatch):
    spy = _Spy(monkeypatch)
    points.earn(member, 40, key="a")
    points.redeem(member, 15, key="b")
    # The key lookups, the member's update, lots, entries and the allocation.
    assert spy.ran >= 8
    assert members.balances(member).available == 25


def test_watched_statements_run_through_sqlalchemy(db, member, monkeypatch, statements):
    spy = _Spy(monkeypatch)
    seen = statements()
    points.earn(member, 40, key="a")
    assert spy.ran == 0
    assert seen.count("UPDATE") == 1 and seen.count("INSERT") == 2


def test_echo_and_the_switch_send_statements_through_sqlalchemy(app, db, member, monkeypatch):
    spy = _Spy(monkeypatch)
    monkeypatch.setattr(db.engine, "echo", True)
    points.earn(member, 40, key="a")
    assert spy.ran == 0
    monkeypatch.setattr(db.engine, "echo", False)
    app.config["LOYALTY_DRIVER_STATEMENTS_ENABLED"] = False
    points.earn(member, 40, key="b")
    assert spy.ran == 0
    app.config["LOYALTY_DRIVER_STATEMENTS_ENABLED"] = True
    points.earn(member, 40, key="c")
    assert spy.ran > 0
    assert members.balances(member).available == 120


def test_watched_is_true_only_for_a_watched_engine(db, app_ctx, statements):
    conn = db.session.connection()
    assert not watched(conn)
    statements()
    assert watched(conn)
    db.session.rollback()


def test_results_carry_the_column_types(db, member, clock):
    """Timestamps and booleans read on the cursor come back as SQLAlchemy reads them."""
    expires = clock() + dt.timedelta(days=5, microseconds=123456)
    points.earn(member, 40, key="a", expires_at=expires)
    points.earn(member, 10, key="b", available_from=clock() + dt.timedelta(days=1))
    store = current_loyalty.store

    def read() -> tuple[t.Any, t.Any]:
        return store.spendable_lots(member.id, clock()), store.member_lots(member.id, clock())

    spendable, (live, due) = store.atomic(read)
    assert [(lot.remaining, lot.expires_at) for lot in spendable] == [(40, expires)]
    assert isinstance(spendable[0].expires_at, dt.datetime)
    assert due is False
    assert [lot.remaining for lot in live] == [40]


def test_a_driver_error_is_sqlalchemys_and_writes_nothing(db, member, clock):
    points.earn(member, 40, key="a")
    store = current_loyalty.store
    row = store.atomic(lambda: store.find_entry(member.id, "earn", "a"))
    values = {k: v for k, v in row._asdict().items() if k != "id"}
    with pytest.raises(sa.exc.IntegrityError):
        store.atomic(lambda: store.insert_entry(values))
    assert points.earn(member, 40, key="a").replayed
    assert ledger_sum(db, member.id) == 40 == members.balances(member).available


def test_a_statement_the_cursor_cannot_reproduce_runs_through_sqlalchemy(db, member, clock):
    """An insert that leaves a column with a Python-side default to SQLAlchemy
    is not run on the cursor."""
    store = current_loyalty.store
    conn = db.session.connection()
    lot = {"member_id": member.id, "points": 5, "remaining": 5, "pending": False, "expired": False}
    # created_at is left to its default.
    assert Driver().run(conn, store.lot.insert(), {**lot, "available_from": clock()}) is None
    assert Driver().run(conn, store.lot.insert(), []) is None
    db.session.rollback()


def test_parameters_are_bound_as_construct_params_binds_them(db, app_ctx, clock, monkeypatch):
    """The parameters of every hot statement, filled from its plan's slots,
    are the values that ``construct_params`` and the type processors give."""
    from flask_loyalty import driver as driver_module

    real = driver_module._bind
    compared: set[str] = set()

    def both(plan: t.Any, params: t.Any) -> t.Any:
        fast = real(plan, params)
        assert plan.slots is not None, plan.sql
        assert fast == real(dataclasses.replace(plan, slots=None, positions=None), params), plan.sql
        compared.add(plan.sql)
        return fast

    monkeypatch.setattr(driver_module, "_bind", both)
    _script(members.enroll(name="Bound", email="bound@example.com").id, clock)
    assert len(compared) >= 8
    plans = [plan for plan in current_loyalty.store.driver._compiled.values() if plan is not None]
    required = next(plan for plan in plans if any(s.default is driver_module._REQUIRED for s in plan.slots))
    with pytest.raises(sa.exc.InvalidRequestError, match="A value is required for bind parameter"):
        real(required, {})


def test_an_operations_statements_share_one_cursor_closed_at_its_end(db, member, monkeypatch):
    from flask_loyalty import store as store_module

    opened: list[t.Any] = []
    closed: list[t.Any] = []
    real_cursor, real_close = store_module._Bound.cursor, store_module._Bound.close

    def cursor(self: t.Any) -> t.Any:
        opened.append(real_cursor(self))
        return opened[-1]

    def close(self: t.Any) -> None:
        closed.append(self._cursor)
        real_close(self)
        assert self._cursor is None

    monkeypatch.setattr(store_module._Bound, "cursor", cursor)
    monkeypatch.setattr(store_module._Bound, "close", close)
    points.earn(member, 40, key="a")
    assert len(opened) >= 3 and len({id(c) for c in opened}) == 1
    assert closed == [opened[0]]
    assert members.balances(member).available == 40


def test_sqlite_timestamps_are_written_as_sqlalchemy_writes_them():
    """The driver's writer of SQLite DATETIME text agrees with SQLAlchemy's."""
    from sqlalchemy.dialects import sqlite

    from flask_loyalty.driver import _bind_processor

    dialect = sqlite.dialect()
    ours = _bind_processor(sa.DateTime(), dialect)
    theirs = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None and theirs is not None and ours is not theirs
    utc, east = dt.UTC, dt.timezone(dt.timedelta(hours=8))
    values = [
        dt.datetime(2026, 12, 2, 16, 56, 27, 464265),
        dt.datetime(2026, 1, 1),
        dt.datetime(1, 1, 1),
        dt.datetime(999, 9, 9, 9, 9, 9, 9),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        dt.datetime(2026, 6, 1, 12, 0, 0, 1, tzinfo=utc),
        dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=east),
        dt.datetime(2026, 3, 29, 1, 30, fold=1),
        dt.date(2026, 2, 3),
        None,
    ]
    assert [ours(v) for v in values] == [theirs(v) for v in values]
    # Another storage format, or another engine, keeps SQLAlchemy's own.
    truncated = _bind_processor(sqlite.DATETIME(truncate_microseconds=True), dialect)
    assert truncated is not None and truncated(values[0]) == "2026-12-02 16:56:27"
    assert _bind_processor(sa.Integer(), dialect) is None
