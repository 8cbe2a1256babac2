"""Accrual: one paid order becomes an order row, a lot, a ledger entry and a balance.

*Ours* is what a shop does when an order is paid: it calls
:func:`flask_loyalty.orders.order_paid` with the order (here as
:class:`~flask_loyalty.adapters.OrderData` with one line). In one transaction
the extension locks the member and, in the same statement, checks that the
order is new and has no checkout hold, prices it with the earning rules (10 points per currency unit,
the default), records the order and its line, and credits the points: the
member's balances, a lot and a ledger entry.

*The floor* is raw DB-API code doing the same five writes and one commit:
insert the order and its line, update the member's cached balances
(``RETURNING`` the balances the entry records), insert the lot, insert the
entry. It reads nothing and prices nothing.

The shop has a history: before either side runs, its tables hold paid
orders (each with its line, lot and earn entry), loaded with bulk SQL and
analysed, as a live shop's tables are. On empty tables, PostgreSQL plans the
lookups and foreign-key checks a connection prepares as scans of tables it
believes empty, keeps those plans, and each side then slows down as the
tables grow, by how much depending on when its connection made them.

Metric: orders per second; target: ours >= 0.6 x the floor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import time
import typing as t
from decimal import Decimal

from flask_loyalty import orders
from flask_loyalty.adapters import OrderData
from flask_loyalty.rules import LineContext

from .harness import Bench
from .harness import ENTRY_COLUMNS
from .harness import log
from .harness import median
from .harness import Raw
from .harness import Result
from .harness import utcnow

#: Target: ours >= TARGET x the floor's orders per second.
TARGET = 0.6
#: Members the orders are spread over.
MEMBERS = 100
#: Points per currency unit (the classic rule, ``LOYALTY_EARN_RATE``'s default).
RATE = 10
#: The sku of every order's one line.
SKU = "TEA-100"


#: Points of each order of the history (a total of 10.00 at the default rate).
HISTORY_POINTS = 100


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How many orders per timed batch, how many batches each side runs, and
    how many paid orders the shop has before they start."""

    orders: int
    rounds: int
    history: int


def _order(n: int) -> tuple[str, int, int]:
    """Reference, member id and total (minor units) of order number ``n``."""
    return f"bench-{n}", n % MEMBERS + 1, 1000 + (n * 37) % 9000


def _ours(bench: Bench, first: int, count: int) -> float:
    """Pay ``count`` orders with :func:`orders.order_paid`; return orders/s."""
    with bench.app.app_context():
        started = time.perf_counter()
        for n in range(first, first + count):
            reference, member_id, total = _order(n)
            amount = Decimal(total).scaleb(-2)
            line = LineContext(sku=SKU, quantity=1, unit_price=amount)
            orders.order_paid(
                OrderData(reference=reference, user=member_id, currency="USD", total=amount, lines=(line,))
            )
        elapsed = time.perf_counter() - started
        bench.db.session.remove()
    return count / elapsed


def _floor(bench: Bench, raw: Raw, first: int, count: int) -> float:
    """Pay ``count`` orders with raw DB-API statements; return orders/s."""
    insert_order = bench.insert(
        "order",
        "reference, member_id, currency, total_minor, status, points, params_hash, created_at, paid_at",
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?{defaults}) RETURNING id",
    )
    insert_line = bench.insert(
        "line",
        "order_id, sku, name, quantity, unit_price_minor, points",
        "VALUES (?, ?, ?, ?, ?, ?{defaults})",
    )
    update_member = bench.sql(
        "UPDATE {member} SET available = available + ?, lifetime_earned = lifetime_earned + ?"
        " WHERE id = ? AND status = 'active' RETURNING available, pending, reserved"
    )
    insert_lot = bench.insert(
        "lot",
        "member_id, points, remaining, pending, expired, available_from, expires_at, created_at",
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?{defaults}) RETURNING id",
    )
    insert_entry = bench.insert(
        "entry",
        ENTRY_COLUMNS + ", lot_id, reason, created_at",
        "VALUES (?, 'earn', ?, ?, 0, 0, ?, ?, ?, ?, ?, ?, ?, ?{defaults})",
    )
    started = time.perf_counter()
    for n in range(first, first + count):
        reference, member_id, total = _order(n)
        pts = total * RATE // 100
        now = bench.ts(utcnow())
        key = f"order:{reference}"
        digest = hashlib.sha256(f"earn:{key}:{pts}".encode()).hexdigest()
        raw.begin()
        order_id = raw.run(
            insert_order, (reference, member_id, "USD", total, "paid", pts, digest, now, now)
        ).fetchone()[0]
        raw.run(insert_line, (order_id, SKU, "", 1, total, pts))
        available, pending, reserved = raw.run(update_member, (pts, pts, member_id)).fetchone()
        lot_id = raw.run(insert_lot, (member_id, pts, pts, False, False, now, None, now)).fetchone()[0]
        raw.run(
            insert_entry,
            (
                member_id,
                pts,
                pts,
                available,
                pending,
                reserved,
                key,
                digest,
                lot_id,
                f"order {reference}",
                now,
            ),
        )
        raw.commit()
    return count / (time.perf_counter() - started)


def _load_history(bench: Bench, orders: int) -> float:
    """Load ``orders`` paid orders spread over the members, each with its line,
    lot and earn entry, and the members' balances; return seconds."""
    per_member = orders // MEMBERS
    orders = per_member * MEMBERS
    paid = utcnow() - dt.timedelta(days=30)
    when = bench.shifted("?", f"s.i - {orders}")
    member = f"(s.i - 1) % {MEMBERS} + 1"
    statements: list[tuple[str, t.Any]] = [
        bench.load_members(MEMBERS, per_member * HISTORY_POINTS, paid),
        (
            bench.insert(
                "order",
                "id, reference, member_id, currency, total_minor, status, points, params_hash,"
                " created_at, paid_at",
                f"SELECT s.i, 'history-' || CAST(s.i AS VARCHAR(20)), {member}, 'USD', 1000, 'paid',"
                f" {HISTORY_POINTS}, '', {when}, {when}{{defaults}} FROM s",
                prefix=bench.numbers(orders),
            ),
            (bench.ts(paid), bench.ts(paid)),
        ),
        (
            bench.insert(
                "line",
                "order_id, sku, name, quantity, unit_price_minor, points",
                f"SELECT id, '{SKU}', '', 1, total_minor, points{{defaults}} FROM {{order}} ORDER BY id",
            ),
            (),
        ),
        (
            bench.insert(
                "lot",
                "id, member_id, points, remaining, pending, expired, available_from, expires_at, created_at",
                "SELECT id, member_id, points, points, false, false, paid_at, NULL, paid_at{defaults}"
                " FROM {order} ORDER BY id",
            ),
            (),
        ),
        (
            bench.insert(
                "entry",
                ENTRY_COLUMNS + ", lot_id, reason, created_at",
                f"SELECT member_id, 'earn', points, points, 0, 0,"
                f" {HISTORY_POINTS} * ROW_NUMBER() OVER (PARTITION BY member_id ORDER BY id), 0, 0,"
                " 'order:history-' || CAST(id AS VARCHAR(20)), '', id,"
                " 'order history-' || CAST(id AS VARCHAR(20)), created_at{defaults} FROM {lot} ORDER BY id",
            ),
            (),
        ),
    ]
    if bench.engine == "postgresql":
        # Explicit ids were inserted; move the sequences past them as a live table's would be.
        for table in ("order", "lot"):
            statements.append(
                (bench.sql(f"SELECT setval(pg_get_serial_sequence('{{{table}}}', 'id'), ?)"), (orders,))
            )
    return bench.load(statements)


def _check(bench: Bench, orders: int) -> bool:
    """Every order has exactly one earn entry and the balances equal the ledger."""
    entries = bench.scalar(bench.sql("SELECT COUNT(*) FROM {entry} WHERE kind = 'earn'"))
    recorded = bench.scalar(bench.sql("SELECT COUNT(*) FROM {order} o JOIN {line} l ON l.order_id = o.id"))
    cached = bench.scalar(bench.sql("SELECT SUM(available) FROM {member}"))
    ledger = bench.scalar(bench.sql("SELECT SUM(delta_available) FROM {entry}"))
    lots = bench.scalar(bench.sql("SELECT SUM(remaining) FROM {lot}"))
    return int(entries) == int(recorded) == orders and int(cached) == int(ledger) == int(lots)


def run(bench: Bench, sizes: Sizes) -> Result:
    """Run the accrual workload on ``bench``, ours and the floor alternating."""
    bench.reset_schema()
    history = _load_history(bench, sizes.history)
    ours: list[float] = []
    floor: list[float] = []
    raw = bench.raw()
    n = 0
    try:
        # A short warm-up of both sides (imports, statement caches, pools).
        _ours(bench, n, 20)
        _floor(bench, raw, n + 20, 20)
        n += 40
        for round_ in range(sizes.rounds):
            for side in ("ours", "floor") if round_ % 2 == 0 else ("floor", "ours"):
                if side == "ours":
                    ours.append(_ours(bench, n, sizes.orders))
                else:
                    floor.append(_floor(bench, raw, n, sizes.orders))
                n += sizes.orders
            log(f"  accrual round {round_ + 1}: ours {ours[-1]:.0f}/s, floor {floor[-1]:.0f}/s")
    finally:
        raw.close()
    return Result(
        "accrual",
        bench.engine,
        median(ours),
        median(floor),
        TARGET,
        higher_is_better=True,
        conditions={"consistent": _check(bench, n + sizes.history // MEMBERS * MEMBERS)},
        extra={
            "unit": "orders/s",
            "orders_per_round": sizes.orders,
            "rounds": sizes.rounds,
            "history_orders": sizes.history // MEMBERS * MEMBERS,
            "history_load_s": round(history, 2),
            "ours_rounds": [round(v, 1) for v in ours],
            "floor_rounds": [round(v, 1) for v in floor],
        },
    )
