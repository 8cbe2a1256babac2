"""The order lifecycle on every engine: paid, completed, refunded, cancelled.

Each hook is exactly once, refuses calls out of order and bad input without
writing anything, and sends its signal after commit with a documented payload.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import random
import types
import typing as t
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_loyalty import audit
from flask_loyalty import ConcurrencyError
from flask_loyalty import CurrencyMismatch
from flask_loyalty import IdempotencyConflict
from flask_loyalty import InvalidRequest
from flask_loyalty import InvalidState
from flask_loyalty import jobs
from flask_loyalty import Loyalty
from flask_loyalty import MemberNotFound
from flask_loyalty import members
from flask_loyalty import NotFound
from flask_loyalty import points
from flask_loyalty.adapters import OrderData
from flask_loyalty.order_store import ONE_STATEMENT_LINES
from flask_loyalty.orders import _refund_plan
from flask_loyalty.orders import order_cancelled
from flask_loyalty.orders import order_completed
from flask_loyalty.orders import order_paid
from flask_loyalty.orders import order_refunded
from flask_loyalty.orders import OrderOutcome
from flask_loyalty.rules import LineContext
from flask_loyalty.store import Balances

from .conftest import ledger_sum
from .conftest import run_together
from .conftest import START

# -- helpers ---------------------------------------------------------------------------


def line(sku: str, quantity: int, price: str, category: str | None = None) -> LineContext:
    """An order line."""
    return LineContext(sku, quantity, Decimal(price), category)


def order(reference: str, user: t.Any, *lines: LineContext, **amounts: str) -> OrderData:
    """An order whose total is its goods plus shipping and tax, less its discount.

    ``total`` in ``amounts`` overrides the computed total.
    """
    currency = amounts.pop("currency", "USD")
    money = {k: Decimal(v) for k, v in amounts.items()}
    goods = sum((ln.amount for ln in lines), Decimal(0))
    computed = goods - money.get("discount", 0) + money.get("shipping", 0) + money.get("tax", 0)
    total = money.pop("total", computed)
    return OrderData(reference, user, currency, total, tuple(lines), **money)


def classic(user: t.Any, reference: str = "1042") -> OrderData:
    """The classic order: 300.00 of goods, which earns 3,000 points."""
    return order(reference, user, line("TEA", 3, "60.00", "tea"), line("MUG", 1, "120.00", "kitchen"))


def bal(available: int = 0, pending: int = 0, reserved: int = 0, lifetime: int = 0) -> Balances:
    """Expected balances."""
    return Balances(available, pending, reserved, lifetime)


def dump(db: t.Any) -> dict[str, list[tuple[t.Any, ...]]]:
    """Every row of every loyalty table, read afresh: to show that nothing was written."""
    with db.engine.connect() as conn:
        return {
            table.name: [tuple(row) for row in conn.execute(sa.select(table).order_by(*table.primary_key))]
            for table in db.metadata.sorted_tables
        }


def order_row(db: t.Any, reference: str) -> t.Any:
    """The order row, read afresh."""
    table = db.metadata.tables["loyalty_order"]
    with db.engine.connect() as conn:
        return conn.execute(sa.select(table).where(table.c.reference == reference)).one()


def line_rows(db: t.Any, reference: str) -> list[tuple[str, int, int, int, int]]:
    """The order's lines as ``(sku, quantity, points, refunded_quantity, refunded_points)``."""
    o, ln = db.metadata.tables["loyalty_order"], db.metadata.tables["loyalty_order_line"]
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ln.c.sku, ln.c.quantity, ln.c.points, ln.c.refunded_quantity, ln.c.refunded_points)
            .join(o, o.c.id == ln.c.order_id)
            .where(o.c.reference == reference)
            .order_by(ln.c.id)
        ).all()
    return [tuple(r) for r in rows]


def entries(db: t.Any, member_id: int) -> list[tuple[str, int, int, int, int, str]]:
    """The member's entries as ``(kind, points, delta_available, delta_pending, shortfall, key)``."""
    e = db.metadata.tables["loyalty_ledger_entry"]
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                e.c.kind, e.c.points, e.c.delta_available, e.c.delta_pending, e.c.shortfall, e.c.source_key
            )
            .where(e.c.member_id == member_id)
            .order_by(e.c.id)
        ).all()
    return [tuple(r) for r in rows]


def check_ledger(db: t.Any, member_id: int) -> Balances:
    """The member's balances, after checking the cache against the ledger."""
    assert audit.verify() == []
    balances = members.balances(member_id)
    assert ledger_sum(db, member_id) == balances.available
    return balances


@functools.cache
def bare_app() -> Flask:
    """An app with the extension and no database, for the pure parts of the lifecycle."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    Loyalty(app, db=SQLAlchemy(app))
    return app


def test_the_classic_order_earns_3000_points(app, db, member, signals):
    outcome = order_paid(classic(member))
    assert (outcome.reference, outcome.member_id, outcome.status, outcome.points) == (
        "1042",
        member.id,
        "paid",
        3000,
    )
    assert not outcome.replayed
    (posting,) = outcome.postings
    assert (posting.kind, posting.points, posting.delta_available, posting.source_key) == (
        "earn",
        3000,
        3000,
        "order:1042",
    )
    assert posting.reason == "order 1042"
    assert outcome.quote is not None and [ln.points for ln in outcome.quote.lines] == [1800, 1200]
    assert check_ledger(db, member.id) == bal(3000, lifetime=3000)
    row = order_row(db, "1042")
    assert (row.status, row.points, row.total_minor, row.currency, row.paid_at) == (
        "paid",
        3000,
        30000,
        "USD",
        START,
    )
    assert line_rows(db, "1042") == [("TEA", 3, 1800, 0, 0), ("MUG", 1, 1200, 0, 0)]
    assert signals.names() == ["points-earned", "order-recorded"]
    assert signals.of("points-earned") == [{"member_id": member.id, "entry": posting}]
    assert signals.of("order-recorded") == [{"member_id": member.id, "order": outcome}]
    assert all(sender is app for _, sender, _ in signals.sent)


def test_paying_a_new_order_locks_reads_one_row_and_writes_it(db, member, statements):
    """A first payment with no checkout hold and no stored campaign locks the
    member and reads, in the same statement, that the order is new, nothing
    is held and no campaign is on; then it writes the order, its lines, the
    balances, the lot and the entry. MySQL and MariaDB lock the member, then
    read the order, holds, tier and campaigns one by one, with locking reads.
    PostgreSQL writes the order with its lines in one statement, and the
    balances, the lot and the entry in another."""
    member_id = member.id
    seen = statements()
    assert order_paid(classic(member_id)).points == 3000
    kinds = [s for s in seen if s in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")]
    dialect = db.engine.dialect.name
    reads = 5 if dialect in ("mysql", "mariadb") else 1
    writes = (
        ["WITH", "WITH"] if dialect == "postgresql" else ["INSERT", "INSERT", "UPDATE", "INSERT", "INSERT"]
    )
    assert kinds == ["SELECT"] * reads + writes
    assert [r[0] for r in line_rows(db, "1042")] == ["TEA", "MUG"]


@pytest.mark.parametrize("owed", [0, 1000, 5000])
def test_a_paid_orders_posting_and_lot_are_what_was_stored(db, member, owed):
    """The posting a payment returns is the entry it wrote (as a repeat reads it
    back), and its lot holds what is left after a negative balance is paid back."""
    member_id = member.id
    if owed:
        points.adjust(member_id, -owed, key="owed", actor="staff", reason="clawback", allow_negative=True)
    paid = order_paid(classic(member_id))
    (posting,) = paid.postings
    (stored,) = order_paid(classic(member_id)).postings
    assert stored.replayed
    assert dataclasses.replace(stored, replayed=False) == posting
    assert posting.available_after == 3000 - owed
    assert posting.lot_id is not None
    lots = db.metadata.tables["loyalty_points_lot"]
    with db.engine.connect() as conn:
        lot = conn.execute(sa.select(lots).where(lots.c.id == posting.lot_id)).one()
    assert (lot.member_id, lot.points, lot.remaining, lot.pending) == (
        member_id,
        3000,
        max(0, 3000 - owed),
        False,
    )
    assert check_ledger(db, member_id) == bal(3000 - owed, lifetime=3000)


@pytest.mark.parametrize("count", [1, 3, ONE_STATEMENT_LINES, ONE_STATEMENT_LINES + 1])
def test_paid_orders_keep_every_line_in_order(db, member, count):
    """PostgreSQL writes an order with up to ``ONE_STATEMENT_LINES`` lines in one
    statement, longer ones in two; every engine keeps the lines in order."""
    lines = [line(f"SKU-{i:02}", i + 1, f"{i + 1}.00") for i in range(count)]
    outcome = order_paid(order("1042", member.id, *lines))
    expected = [(f"SKU-{i:02}", i + 1, (i + 1) ** 2 * 10, 0, 0) for i in range(count)]
    assert line_rows(db, "1042") == expected
    assert outcome.points == sum(points for *_, points, _, _ in expected)
    assert order_paid(order("1042", member.id, *lines)).replayed


def test_an_order_recorded_meanwhile_writes_none_of_its_lines(app, db, member, engine):
    """PostgreSQL: the order's reference taken meanwhile skips the order and its
    lines, and the operation is rolled back and replayed, as for a separate insert."""
    if engine != "postgresql":
        pytest.skip("an order and its lines are one statement on PostgreSQL only")
    store = app.extensions["loyalty"].store
    order_paid(classic(member.id))
    before = dump(db)
    values = {"member_id": member.id, "reference": "1042", "currency": "USD", "total_minor": 100,
              "status": "paid", "params_hash": "", "created_at": START}  # fmt: skip
    lines = [{"sku": "TEA", "name": "", "category": None, "quantity": 1, "unit_price_minor": 100}]
    with pytest.raises(ConcurrencyError):
        store.atomic(lambda: store.insert_paid_order(values, lines))
    assert dump(db) == before


def test_a_one_statement_credit_whose_key_is_taken_writes_nothing(app, db, member, clock, engine):
    """On PostgreSQL a locked member's credit is one statement; a source key
    taken meanwhile skips the entry, and the operation is rolled back and
    replayed, as for a separate insert."""
    if engine != "postgresql":
        pytest.skip("a credit is one statement on PostgreSQL only")
    store = app.extensions["loyalty"].store
    member_id = member.id
    first = points.earn(member_id, 10, key="taken")

    def credit_again() -> None:
        after = store.lock_member(member_id).after(available=5, lifetime=5)
        lot = {"member_id": member_id, "points": 5, "remaining": 5, "pending": False, "expired": False,
               "available_from": clock(), "expires_at": None, "created_at": clock()}  # fmt: skip
        entry = {**dataclasses.asdict(first), "params_hash": "", "available_after": 15}
        del entry["id"], entry["replayed"]
        store.credit_locked(member_id, after, lot, entry)

    with pytest.raises(ConcurrencyError):
        store.atomic(credit_again)
    assert members.balances(member_id) == bal(available=10, lifetime=10)
    assert ledger_sum(db, member_id) == 10
    with db.engine.connect() as conn:
        lots = db.metadata.tables["loyalty_points_lot"]
        assert conn.execute(sa.select(sa.func.count()).select_from(lots)).scalar_one() == 1


def test_paying_finds_a_hold_and_a_campaign_the_probe_reports(app, db, member, clock):
    """What the first read reports is then read in full: the order's hold is
    captured and a stored campaign in force applies."""
    campaigns = db.metadata.tables["loyalty_campaign"]
    with db.engine.begin() as conn:
        conn.execute(campaigns.insert().values(name="Double", multiplier="2", active=True))
    points.earn(member, 500, key="gift")
    points.reserve(member, 200, key="order:1042")
    outcome = order_paid(classic(member))
    assert outcome.points == 6000
    assert [p.kind for p in outcome.postings] == ["capture", "earn"]
    assert members.balances(member) == bal(available=6300, lifetime=6500)


def test_paying_again_earns_nothing_more(db, member, signals):
    first = order_paid(classic(member))
    again = order_paid(classic(member))
    assert again.replayed
    assert (again.status, again.points) == ("paid", 3000)
    assert [(p.id, p.replayed) for p in again.postings] == [(first.postings[0].id, True)]
    assert check_ledger(db, member.id) == bal(3000, lifetime=3000)
    assert signals.names() == ["points-earned", "order-recorded"]


def test_paying_again_with_other_amounts_is_a_conflict(db, member):
    order_paid(classic(member))
    before = dump(db)
    changed = order("1042", member, line("TEA", 3, "60.00", "tea"), line("MUG", 1, "120.01", "kitchen"))
    with pytest.raises(IdempotencyConflict, match="Order '1042' was paid before with other amounts"):
        order_paid(changed)
    assert dump(db) == before


def test_paying_another_members_order_is_refused(db, member):
    order_paid(classic(member))
    other = members.enroll(name="Other")
    before = dump(db)
    with pytest.raises(InvalidRequest, match="Order '1042' belongs to another member"):
        order_paid(classic(other))
    with pytest.raises(InvalidRequest, match="belongs to another member"):
        order_refunded(classic(other), key="R-1")
    assert dump(db) == before


def test_a_shopper_is_enrolled_on_the_first_paid_order(db, app_ctx):
    shopper = types.SimpleNamespace(id=501, name="Ada Lovelace", email="ada@example.com")
    outcome = order_paid(classic(shopper))
    member = members.get(outcome.member_id)
    assert (member.user_id, member.name, member.email) == ("501", "Ada Lovelace", "ada@example.com")
    assert check_ledger(db, member.id) == bal(3000, lifetime=3000)


@pytest.mark.settings(LOYALTY_AUTO_ENROLL_ENABLED=False)
def test_without_auto_enrolment_a_shopper_must_be_enrolled_first(db, app_ctx):
    shopper = types.SimpleNamespace(id=502, name="Ada Lovelace", email="ada@example.com")
    before = dump(db)
    with pytest.raises(MemberNotFound, match="User 502 is not a member"):
        order_paid(classic(shopper))
    assert dump(db) == before
    member = members.enroll(name="Ada Lovelace", user_id=502)
    assert order_paid(classic(shopper)).member_id == member.id


@pytest.mark.settings(LOYALTY_POINTS_EXPIRY_DAYS=365)
def test_earned_points_expire_after_the_configured_days(db, member):
    outcome = order_paid(classic(member))
    lot = db.metadata.tables["loyalty_points_lot"]
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(lot).where(lot.c.id == outcome.postings[0].lot_id)).one()
    assert (row.available_from, row.expires_at, bool(row.pending)) == (
        START,
        START + dt.timedelta(days=365),
        False,
    )


def test_the_paid_time_decides_the_campaign_and_is_stored(app, db, member, clock):
    app.config["LOYALTY_CAMPAIGNS"] = [{"name": "Launch", "multiplier": 2, "ends_at": START}]
    before = START - dt.timedelta(minutes=5)
    outcome = order_paid(classic(member), at=before)
    assert outcome.points == 6000
    assert order_row(db, "1042").paid_at == before
    assert order_paid(classic(member, "1043")).points == 3000


@pytest.mark.parametrize("rounds", [4])
def test_an_order_paid_twice_at_the_same_moment_by_two_threads_earns_once(app, db, rounds):
    with app.app_context():
        member_id = int(members.enroll(name="Li Wei").id)
    for i in range(rounds):
        # An enrolled member, and a shopper who is enrolled by the first payment.
        for user in (member_id, types.SimpleNamespace(id=900 + i, name="Shopper", email=None)):
            data = classic(user, f"T-{i}-{type(user).__name__}")
            outcomes = run_together(app, [lambda data=data: order_paid(data)] * 2)
            assert all(isinstance(o, OrderOutcome) for o in outcomes), outcomes
            assert sorted(o.replayed for o in outcomes) == [False, True]
            assert [o.points for o in outcomes] == [3000, 3000]
            assert outcomes[0].member_id == outcomes[1].member_id
    with app.app_context():
        assert check_ledger(db, member_id) == bal(3000 * rounds, lifetime=3000 * rounds)
        e = db.metadata.tables["loyalty_ledger_entry"]
        with db.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(e)).scalar_one() == 2 * rounds
        m = db.metadata.tables["loyalty_member"]
        with db.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(m)).scalar_one() == 1 + rounds


def test_a_refund_and_a_cancellation_delivered_twice_at_once_apply_once(app, db):
    with app.app_context():
        member_id = int(members.enroll(name="Li Wei").id)
        points.earn(member_id, 500, key="welcome")
        points.reserve(member_id, 200, key="order:T-2")
        order_paid(classic(member_id, "T-1"))
        order_paid(classic(member_id, "T-2"))
    refund = classic(member_id, "T-1")
    outcomes = run_together(app, [lambda: order_refunded(refund, key="R-1", amount="100.00")] * 2)
    assert sorted((o.replayed, o.points) for o in outcomes) == [(False, 1000), (True, 1000)]
    cancel = classic(member_id, "T-2")
    outcomes = run_together(app, [lambda: order_cancelled(cancel)] * 2)
    assert sorted((o.replayed, o.points) for o in outcomes) == [(False, 3000), (True, 0)]
    with app.app_context():
        assert check_ledger(db, member_id) == bal(2500, lifetime=2500)


# -- completed --------------------------------------------------------------------------


@pytest.mark.settings(LOYALTY_PENDING_DAYS=14)
def test_completing_an_order_makes_its_pending_points_available_at_once(db, member, signals, clock):
    paid = order_paid(classic(member))
    assert paid.postings[0].delta_pending == 3000
    assert check_ledger(db, member.id) == bal(0, pending=3000, lifetime=3000)
    clock.advance(days=2)
    signals.sent.clear()
    done = order_completed(classic(member))
    assert done == OrderOutcome("1042", member.id, "completed", 0)
    assert check_ledger(db, member.id) == bal(3000, lifetime=3000)
    assert order_row(db, "1042").completed_at == START + dt.timedelta(days=2)
    assert signals.names() == ["points-activated", "order-completed"]
    assert signals.of("points-activated") == [{"member_ids": [member.id], "count": 1}]
    assert signals.of("order-completed") == [{"member_id": member.id, "order": done}]
    # The release job has nothing more to do, then or at the end of the window.
    before = dump(db)
    assert jobs.release_pending(now=clock()) == 0
    assert jobs.release_pending(now=START + dt.timedelta(days=30)) == 0
    assert dump(db) == before
    # Completing again changes nothing.
    assert order_completed(classic(member)).replayed
    assert dump(db) == before
    assert [e[0] for e in entries(db, member.id)] == ["earn", "activate"]


@pytest.mark.settings(LOYALTY_PENDING_DAYS=14)
def test_pending_points_of_an_order_not_completed_wait_for_the_release_job(db, member):
    order_paid(classic(member))
    assert jobs.release_pending(now=START + dt.timedelta(days=14) - dt.timedelta(microseconds=1)) == 0
    assert jobs.release_pending(now=START + dt.timedelta(days=14)) == 1
    assert check_ledger(db, member.id) == bal(3000, lifetime=3000)
    before = dump(db)
    assert order_completed(classic(member)).status == "completed"
    after = dump(db)
    assert after["loyalty_ledger_entry"] == before["loyalty_ledger_entry"]
    assert members.balances(member) == bal(3000, lifetime=3000)


# -- refunds -------------------------------------------------------------------------------


def test_refund_by_lines_quantity_by_quantity(db, member, signals):
    # 7 × 1.43 = 10.01 earns 100 of the order's 300; the mug 200.
    data = order("L-1", member, line("TEA", 7, "1.43"), line("MUG", 1, "20.00"))
    assert order_paid(data).points == 300
    assert line_rows(db, "L-1") == [("TEA", 7, 100, 0, 0), ("MUG", 1, 200, 0, 0)]
    reversed_each = []
    for unit in range(7):
        outcome = order_refunded(data, key=f"R-{unit}", lines={"TEA": 1})
        reversed_each.append(outcome.points)
        assert sum(reversed_each) == 100 * (unit + 1) // 7
        assert outcome.status == "paid"
    assert reversed_each == [14, 14, 14, 15, 14, 14, 15]
    assert line_rows(db, "L-1") == [("TEA", 7, 100, 7, 100), ("MUG", 1, 200, 0, 0)]
    with pytest.raises(InvalidRequest, match="Only 0 of 'TEA' are left to refund"):
        order_refunded(data, key="R-more", lines={"TEA": 1})
    last = order_refunded(data, key="R-mug", lines={"MUG": 1})
    assert (last.points, last.status) == (200, "refunded")
    assert check_ledger(db, member.id) == bal(0, lifetime=0)
    row = order_row(db, "L-1")
    assert (row.refunded_minor, row.status) == (3001, "refunded")
    refunds = signals.of("order-refunded")
    assert len(refunds) == 8
    assert refunds[-1] == {"member_id": member.id, "order": last}
    (posting,) = last.postings
    assert (posting.kind, posting.points, posting.source_key) == ("reverse", -200, "refund:L-1:R-mug")
    assert signals.of("points-reversed")[-1] == {
        "member_id": member.id,
        "entry": posting,
        "original": ("earn", "order:L-1"),
    }
    with pytest.raises(InvalidState, match="Order 'L-1' is refunded; only a paid order can be refunded"):
        order_refunded(data, key="R-again", lines={"MUG": 1})


def test_a_line_refund_returns_the_money_paid_for_the_line(db, member):
    # A 100.00 coupon and 50.00 paid with points, shared over the lines by amount.
    data = order(
        "D-1",
        member,
        line("A", 1, "150.00"),
        line("B", 2, "25.00"),
        discount="100.00",
        paid_with_points="50.00",
    )
    assert order_paid(data).points == 500
    assert line_rows(db, "D-1") == [("A", 1, 375, 0, 0), ("B", 2, 125, 0, 0)]
    first = order_refunded(data, key="R-A", lines={"A": 1})
    assert (first.points, first.status, order_row(db, "D-1").refunded_minor) == (375, "paid", 3750)
    second = order_refunded(data, key="R-B1", lines={"B": 1})
    assert (second.points, second.status, order_row(db, "D-1").refunded_minor) == (62, "paid", 4375)
    last = order_refunded(data, key="R-B2", lines={"B": 1})
    assert (last.points, last.status, order_row(db, "D-1").refunded_minor) == (63, "refunded", 5000)
    assert check_ledger(db, member.id) == bal(0, lifetime=0)


def test_refunds_by_amount_then_by_lines_never_reverse_more_than_was_earned(db, member):
    data = order("M-1", member, line("TEA", 4, "25.00"), line("MUG", 1, "10.00"), shipping="5.00")
    assert order_paid(data).points == 1100
    assert order_refunded(data, key="R-1", amount="30.00").points == 286  # 1100 × 30.00 / 115.00
    assert line_rows(db, "M-1") == [("TEA", 4, 1000, 0, 260), ("MUG", 1, 100, 0, 26)]
    # A unit of tea reverses nothing more: the amount refund already took more than a quarter of it.
    assert order_refunded(data, key="R-2", lines={"TEA": 1}).points == 0
    assert order_refunded(data, key="R-3", lines={"TEA": 2}).points == 490
    assert line_rows(db, "M-1") == [("TEA", 4, 1000, 3, 750), ("MUG", 1, 100, 0, 26)]
    assert order_row(db, "M-1").refunded_minor == 10500
    # The last unit of tea refunds all the money that is left: everything is reversed.
    last = order_refunded(data, key="R-4", lines={"TEA": 1})
    assert (last.points, last.status) == (324, "refunded")
    assert line_rows(db, "M-1") == [("TEA", 4, 1000, 4, 1000), ("MUG", 1, 100, 0, 100)]
    assert check_ledger(db, member.id) == bal(0, lifetime=0)


@st.composite
def refund_plans(draw: st.DrawFn) -> tuple[list[types.SimpleNamespace], int, int, list[t.Any]]:
    """Order lines, order discount, points value, and a sequence of refunds by lines or amounts."""
    lines = [
        types.SimpleNamespace(
            id=i,
            sku=f"S{i}",
            quantity=draw(st.integers(1, 9)),
            unit_price_minor=draw(st.integers(0, 5000)),
            discount_minor=0,
            points=draw(st.integers(0, 3000)),
            refunded_quantity=0,
            refunded_points=0,
        )
        for i in range(draw(st.integers(1, 4)))
    ]
    goods = sum(ln.quantity * ln.unit_price_minor for ln in lines)
    discount = draw(st.integers(0, goods))
    with_points = draw(st.integers(0, goods - discount))
    refund = st.one_of(
        st.builds(lambda i, q: {f"S{i}": q}, st.integers(0, len(lines) - 1), st.integers(1, 4)),
        st.integers(1, max(1, goods // 3)),
    )
    return lines, discount, with_points, draw(st.lists(refund, max_size=12))


@settings(max_examples=300, deadline=None)
@given(plan=refund_plans())
def test_no_sequence_of_refunds_reverses_more_than_was_earned(plan: t.Any) -> None:
    """Refunds by lines and by odd amounts, in any mix: each line's reversals only grow,
    never pass what it earned, and reach it once all the money paid is refunded."""
    lines, discount, with_points, refunds = plan
    goods = sum(ln.quantity * ln.unit_price_minor for ln in lines)
    row = types.SimpleNamespace(
        reference="H-1",
        total_minor=goods - discount,
        points_value_minor=with_points,
        discount_minor=discount,
        refunded_minor=0,
        points=sum(ln.points for ln in lines),
    )
    paid = row.total_minor - with_points
    with bare_app().app_context():
        for refund in refunds:
            quantities = refund if isinstance(refund, dict) else None
            amount = None if quantities is not None else Decimal(refund).scaleb(-2)
            try:
                minor, changes = _refund_plan(row, lines, quantities, amount)
            except InvalidRequest:
                continue
            assert 0 <= minor <= paid - row.refunded_minor
            row.refunded_minor += minor
            for change in changes:
                ln = lines[change["id"]]
                assert ln.refunded_points <= change["refunded_points"] <= ln.points
                assert ln.refunded_quantity <= change["refunded_quantity"] <= ln.quantity
                ln.refunded_points, ln.refunded_quantity = (
                    change["refunded_points"],
                    change["refunded_quantity"],
                )
            if paid and row.refunded_minor == paid:
                assert [ln.refunded_points for ln in lines] == [ln.points for ln in lines]
            if all(ln.refunded_quantity == ln.quantity for ln in lines):
                assert [ln.refunded_points for ln in lines] == [ln.points for ln in lines]


def test_a_refund_key_is_used_once(db, member):
    data = classic(member)
    order_paid(data)
    first = order_refunded(data, key="R-1", lines={"TEA": 1})
    assert first.points == 600
    before = dump(db)
    again = order_refunded(data, key="R-1", lines={"TEA": 1})
    assert again.replayed and again.points == 600
    with pytest.raises(IdempotencyConflict, match="Refund 'R-1' of order '1042' was recorded differently"):
        order_refunded(data, key="R-1", lines={"TEA": 2})
    with pytest.raises(IdempotencyConflict):
        order_refunded(data, key="R-1", amount="1.00")
    assert dump(db) == before


def test_partial_refunds_in_odd_cent_steps_never_reverse_more_than_was_earned(db, member):
    # 123.45 of goods and 6.78 of shipping earn 1234 points; 130.23 is refundable.
    data = order("O-1", member, line("TEA", 5, "20.69"), line("JAM", 1, "20.00"), shipping="6.78")
    assert order_paid(data).points == 1234
    paid, refunded, reversed_total = 13023, 0, 0
    steps = random.Random(20260101)
    key = 0
    while refunded < paid:
        cents = min(paid - refunded, steps.randrange(1, 400, 2))
        outcome = order_refunded(data, key=f"R-{key}", amount=str(Decimal(cents).scaleb(-2)))
        key += 1
        refunded += cents
        reversed_total += outcome.points
        assert reversed_total == 1234 * refunded // paid <= 1234
    assert key > 50
    assert reversed_total == 1234
    assert order_row(db, "O-1").status == "refunded"
    assert sum(r[4] for r in line_rows(db, "O-1")) == 1234
    assert check_ledger(db, member.id) == bal(0, lifetime=0)


def test_a_full_refund_by_default_reverses_what_is_left(db, member):
    data = classic(member)
    order_paid(data)
    assert order_refunded(data, key="R-1", amount="100.01").points == 1000
    last = order_refunded(data, key="R-2")
    assert (last.points, last.status) == (2000, "refunded")
    assert line_rows(db, "1042") == [("TEA", 3, 1800, 0, 1800), ("MUG", 1, 1200, 0, 1200)]
    assert check_ledger(db, member.id) == bal(0, lifetime=0)


def test_a_completed_order_can_be_refunded(db, member):
    data = classic(member)
    order_paid(data)
    order_completed(data)
    outcome = order_refunded(data, key="R-1", lines={"MUG": 1})
    assert (outcome.points, outcome.status) == (1200, "completed")
    assert order_refunded(data, key="R-2").status == "refunded"


@pytest.mark.parametrize(
    ("policy", "available", "shortfall"),
    [("allow_negative", -2500, 0), ("clamp_to_zero", 0, 2500)],
)
def test_a_refund_after_the_points_were_spent(app, db, member, policy, available, shortfall):
    app.config["LOYALTY_CLAWBACK_POLICY"] = policy
    data = classic(member)
    order_paid(data)
    points.redeem(member, 2500, key="reward:1")
    outcome = order_refunded(data, key="R-1")
    (posting,) = outcome.postings
    assert (posting.points, posting.delta_available, posting.shortfall) == (
        -3000,
        -500 - (2500 - shortfall),
        shortfall,
    )
    assert check_ledger(db, member.id) == bal(available, lifetime=0)
    # The next points pay a negative balance back first.
    points.earn(member, 3000, key="later")
    assert members.balances(member).available == 3000 + available


def test_the_clawback_policy_can_be_given_per_refund(app, db, member):
    data = classic(member)
    order_paid(data)
    points.redeem(member, 3000, key="reward:1")
    outcome = order_refunded(data, key="R-1", lines={"MUG": 1}, policy="clamp_to_zero")
    assert outcome.postings[0].shortfall == 1200
    assert members.balances(member).available == 0
    before = dump(db)
    with pytest.raises(InvalidRequest, match="policy must be one of"):
        order_refunded(data, key="R-2", policy="forgive")
    with pytest.raises(InvalidRequest, match="policy must be one of"):
        order_cancelled(data, policy="forgive")
    assert dump(db) == before


# -- cancelled ------------------------------------------------------------------------------


@pytest.mark.parametrize("captured", [False, True])
def test_cancelling_an_order_that_used_points_returns_them_exactly_once(db, member, signals, captured):
    points.earn(member, 1000, key="welcome")
    points.reserve(member, 400, key="order:C-1")
    data = order("C-1", member, line("TEA", 1, "30.00"), paid_with_points="4.00")
    if captured:
        points.capture(member, key="order:C-1")
        assert order_paid(data).points == 260
        assert members.balances(member) == bal(860, lifetime=1260)
    else:
        assert members.balances(member) == bal(600, reserved=400, lifetime=1000)
    signals.sent.clear()
    first = order_cancelled(data)
    assert (first.status, first.points, first.replayed) == ("cancelled", 260 if captured else 0, False)
    assert check_ledger(db, member.id) == bal(1000, lifetime=1000)
    expected_kinds = ["reverse", "reverse"] if captured else ["release"]
    assert [p.kind for p in first.postings] == expected_kinds
    assert [p.delta_available for p in first.postings] == ([-260, 400] if captured else [400])
    assert signals.of("order-cancelled") == [{"member_id": member.id, "order": first}]
    if captured:
        assert [s["original"] for s in signals.of("points-reversed")] == [
            ("earn", "order:C-1"),
            ("capture", "order:C-1"),
        ]
    else:
        assert signals.of("points-released") == [{"member_id": member.id, "entry": first.postings[0]}]
    before = dump(db)
    signals.sent.clear()
    second = order_cancelled(data)
    assert second == OrderOutcome("C-1", member.id, "cancelled", 0, replayed=True)
    assert dump(db) == before
    assert signals.names() == []
    assert order_row(db, "C-1").cancelled_at == START


def test_cancelling_a_paid_order_reverses_what_is_left_after_refunds(db, member):
    data = classic(member)
    order_paid(data)
    order_refunded(data, key="R-1", lines={"TEA": 1})
    outcome = order_cancelled(data)
    assert outcome.points == 2400
    assert check_ledger(db, member.id) == bal(0, lifetime=0)


@pytest.mark.settings(LOYALTY_CLAWBACK_POLICY="clamp_to_zero")
def test_cancelling_after_the_points_were_spent_follows_the_policy(db, member):
    data = classic(member)
    order_paid(data)
    points.redeem(member, 1000, key="reward:1")
    outcome = order_cancelled(data)
    assert outcome.postings[0].shortfall == 1000
    assert check_ledger(db, member.id) == bal(0, lifetime=0)


# -- out of order ------------------------------------------------------------------------


def placed_order(app: Flask, db: t.Any, member: t.Any, reference: str = "P-1") -> t.Any:
    """An order of the extension's own model, placed but not paid."""
    models = app.extensions["loyalty"].models
    placed = models.Order(reference=reference, member_id=member.id, currency="USD", total_minor=30000)
    placed.lines = [models.OrderLine(sku="TEA", quantity=3, unit_price_minor=10000)]
    db.session.add(placed)
    db.session.commit()
    return placed


def test_a_placed_order_of_the_extensions_model_is_paid_in_place(app, db, member):
    placed = placed_order(app, db, member)
    line_id = placed.lines[0].id
    outcome = order_paid(placed)
    assert (outcome.status, outcome.points) == ("paid", 3000)
    lines = db.metadata.tables["loyalty_order_line"]
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(lines.c.id, lines.c.points)).all() == [(line_id, 3000)]
    assert order_row(db, "P-1").status == "paid"


def test_a_refund_before_payment_is_refused(app, db, member):
    placed = placed_order(app, db, member)
    before = dump(db)
    with pytest.raises(InvalidState, match="Order 'P-1' is placed; only a paid order can be refunded"):
        order_refunded(placed, key="R-1")
    assert dump(db) == before


def test_completion_before_payment_is_refused(app, db, member):
    placed = placed_order(app, db, member)
    before = dump(db)
    with pytest.raises(InvalidState, match="Order 'P-1' is placed; only a paid order can complete"):
        order_completed(placed)
    assert dump(db) == before


def test_payment_after_cancellation_is_refused(db, member):
    order_cancelled(classic(member))
    before = dump(db)
    with pytest.raises(InvalidState, match="Order '1042' was cancelled; it cannot be paid"):
        order_paid(classic(member))
    with pytest.raises(InvalidState, match="is cancelled; only a paid order can be refunded"):
        order_refunded(classic(member), key="R-1")
    with pytest.raises(InvalidState, match="is cancelled; only a paid order can complete"):
        order_completed(classic(member))
    assert dump(db) == before


def test_cancellation_after_completion_is_refused(db, member):
    order_paid(classic(member))
    order_completed(classic(member))
    before = dump(db)
    with pytest.raises(InvalidState, match="Order '1042' is completed; refund it instead of cancelling it"):
        order_cancelled(classic(member))
    assert dump(db) == before


def test_completion_after_a_full_refund_is_refused(db, member):
    order_paid(classic(member))
    order_refunded(classic(member), key="R-1")
    before = dump(db)
    with pytest.raises(InvalidState, match="is refunded; only a paid order can complete"):
        order_completed(classic(member))
    assert dump(db) == before


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "amounts", "error", "message"),
    [
        (
            [line("TEA", 1, "300.00")],
            {"currency": "EUR"},
            CurrencyMismatch,
            "'EUR' but this shop's loyalty currency",
        ),
        (
            [line("TEA", -1, "300.00")],
            {"total": "300.00"},
            InvalidRequest,
            "quantity of 'TEA' must be a positive",
        ),
        (
            [line("TEA", 0, "300.00")],
            {"total": "300.00"},
            InvalidRequest,
            "quantity of 'TEA' must be a positive",
        ),
        (
            [line("TEA", 2, "300.00")],
            {"total": "300.00"},
            InvalidRequest,
            "come to 600.00 after discounts, more than",
        ),
        ([line("TEA", 1, "-3.00")], {"total": "0"}, InvalidRequest, "line 'TEA' has a negative amount"),
        ([line("TEA", 1, "3.001")], {"total": "3.01"}, InvalidRequest, "more than 2 decimal place"),
        ([line("TEA", 1, "3.00")], {"paid_with_points": "3.01"}, InvalidRequest, "more was paid with points"),
        ([line("TEA", 1, "3.00")], {"shipping": "-1.00"}, InvalidRequest, "shipping must not be negative"),
        (
            [line("TEA", 1, "3.00")],
            {"discount": "3.01", "total": "0"},
            InvalidRequest,
            "discount exceeds its lines",
        ),
        ([line("T" * 65, 1, "3.00")], {}, InvalidRequest, "a sku is a string of 1 to 64 characters"),
        ([], {"total": "3.00"}, InvalidRequest, "has no lines"),
    ],
)
def test_bad_orders_are_refused_and_nothing_is_written(db, member, lines, amounts, error, message):
    shopper = types.SimpleNamespace(id=77, name="New", email=None)
    order_paid(classic(member, "OK-1"))
    before = dump(db)
    for user in (member, shopper):
        with pytest.raises(error, match=message):
            order_paid(order("B-1", user, *lines, **amounts))
    assert dump(db) == before


def test_a_refund_of_an_unknown_order_is_not_found_and_writes_nothing(db, member):
    order_paid(classic(member))
    before = dump(db)
    with pytest.raises(NotFound, match="There is no order 'NOPE'"):
        order_refunded(classic(member, "NOPE"), key="R-1")
    shopper = types.SimpleNamespace(id=78, name="New", email=None)
    with pytest.raises(NotFound, match="There is no order 'NOPE'"):
        order_refunded(classic(shopper, "NOPE"), key="R-1")
    with pytest.raises(NotFound, match="There is no order 'NOPE'"):
        order_completed(classic(shopper, "NOPE"))
    assert dump(db) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amount": "300.01"}, r"Only 30000 \(minor units\) of order '1042' are left to refund"),
        ({"amount": "0"}, "A refund amount must be positive"),
        ({"amount": "-5.00"}, "A refund amount must be positive"),
        ({"amount": "1.001"}, "more than 2 decimal place"),
        ({"amount": 1.5}, "Money must be a Decimal"),
        ({"lines": {"TEA": 4}}, "Only 3 of 'TEA' are left to refund"),
        ({"lines": {"TEA": -1}}, "Refund quantity of 'TEA' must be a positive whole number"),
        ({"lines": {"SPOON": 1}}, "Order '1042' has no line 'SPOON'"),
        ({"lines": {}}, "A refund by lines needs at least one line"),
        ({"lines": {"TEA": 1}, "amount": "1.00"}, "Refund either lines or an amount, not both"),
    ],
)
def test_a_bad_refund_is_refused_and_nothing_is_written(db, member, kwargs, message):
    order_paid(classic(member))
    before = dump(db)
    with pytest.raises(InvalidRequest, match=message):
        order_refunded(classic(member), key="R-1", **kwargs)
    assert dump(db) == before


def test_a_refund_larger_than_what_is_left_after_earlier_refunds(db, member):
    data = classic(member)
    order_paid(data)
    order_refunded(data, key="R-1", amount="250.00")
    before = dump(db)
    with pytest.raises(InvalidRequest, match=r"Only 5000 \(minor units\)"):
        order_refunded(data, key="R-2", amount="50.01")
    assert dump(db) == before
    assert order_refunded(data, key="R-2", amount="50.00").status == "refunded"
