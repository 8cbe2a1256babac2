"""Checking the cached balances and lots against the ledger, and repairing them.

The ledger is the truth. :func:`verify` compares, for every member, the
cached ``available``, ``pending``, ``reserved`` and ``lifetime_earned`` with
the sums of the ledger, the live lots with the available balance
(``max(available, 0)``), the pending lots with the pending balance, and held
reservations with the reserved balance. :func:`rebuild` makes the cache and
the lots agree with the ledger again and records each change as a
:class:`Repair` row.
"""

from __future__ import annotations

import dataclasses
import functools
import typing as t

import sqlalchemy as sa

from . import signals
from .config import config_value
from .proxies import current_loyalty
from .proxies import get_state
from .signals import send

#: Called after each chunk of members with the number of members checked.
Progress = t.Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class Discrepancy:
    """One disagreement between a member's cache (or lots) and the ledger.

    ``field`` is a cached balance (``available``, ``pending``, ``reserved``,
    ``lifetime_earned``) or a lot total (``lots`` for live lots, ``pending_lots``).
    """

    member_id: int
    field: str
    cached: int
    ledger: int


def _ledger_sums(store: t.Any, low: int, high: int) -> t.Any:
    e, orig = store.entry, store.entry.alias("orig")
    earned = sa.case(
        (e.c.kind == "earn", e.c.points),
        (sa.and_(e.c.kind == "reverse", orig.c.kind == "earn"), e.c.points),
        else_=0,
    )
    return (
        sa.select(
            e.c.member_id,
            sa.func.sum(e.c.delta_available).label("available"),
            sa.func.sum(e.c.delta_pending).label("pending"),
            sa.func.sum(e.c.delta_reserved).label("reserved"),
            sa.func.sum(earned).label("lifetime_earned"),
        )
        .outerjoin(orig, orig.c.id == e.c.reverses_id)
        .where(e.c.member_id.between(low, high))
        .group_by(e.c.member_id)
        .subquery()
    )


def _lot_sums(store: t.Any, low: int, high: int) -> t.Any:
    lot = store.lot
    live = sa.and_(lot.c.pending.is_(False), lot.c.expired.is_(False))
    return (
        sa.select(
            lot.c.member_id,
            sa.func.sum(sa.case((live, lot.c.remaining), else_=0)).label("lots"),
            sa.func.sum(sa.case((lot.c.pending.is_(True), lot.c.remaining), else_=0)).label("pending_lots"),
        )
        .where(lot.c.member_id.between(low, high))
        .group_by(lot.c.member_id)
        .subquery()
    )


def _held_sums(store: t.Any, low: int, high: int) -> t.Any:
    r = store.reservation
    return (
        sa.select(r.c.member_id, sa.func.sum(r.c.points).label("held"))
        .where(r.c.member_id.between(low, high), r.c.status == "held")
        .group_by(r.c.member_id)
        .subquery()
    )


def _check_chunk(store: t.Any, low: int, high: int) -> list[Discrepancy]:
    m = store.member
    led, lots, held = (
        _ledger_sums(store, low, high),
        _lot_sums(store, low, high),
        _held_sums(store, low, high),
    )

    def zero(column: t.Any) -> t.Any:
        return sa.func.coalesce(column, 0)

    rows = store.execute(
        sa.select(
            m.c.id,
            m.c.available,
            m.c.pending,
            m.c.reserved,
            m.c.lifetime_earned,
            zero(led.c.available).label("l_available"),
            zero(led.c.pending).label("l_pending"),
            zero(led.c.reserved).label("l_reserved"),
            zero(led.c.lifetime_earned).label("l_lifetime"),
            zero(lots.c.lots).label("lots"),
            zero(lots.c.pending_lots).label("pending_lots"),
            zero(held.c.held).label("held"),
        )  # fmt: skip
        .outerjoin(led, led.c.member_id == m.c.id)
        .outerjoin(lots, lots.c.member_id == m.c.id)
        .outerjoin(held, held.c.member_id == m.c.id)
        .where(m.c.id.between(low, high))
        .order_by(m.c.id)
    ).all()
    found: list[Discrepancy] = []
    for row in rows:
        checks = [
            ("available", row.available, row.l_available),
            ("pending", row.pending, row.l_pending),
            ("reserved", row.reserved, row.l_reserved),
            ("lifetime_earned", row.lifetime_earned, row.l_lifetime),
            ("lots", row.lots, max(int(row.l_available), 0)),
            ("pending_lots", row.pending_lots, row.l_pending),
            ("reservations", row.held, row.l_reserved),
        ]
        found += [Discrepancy(row.id, f, int(c), int(v)) for f, c, v in checks if int(c) != int(v)]
    return found


def _chunks(store: t.Any, size: int) -> t.Iterator[tuple[int, int]]:
    m = store.member
    last = 0
    while True:
        ids = (
            store.execute(sa.select(m.c.id).where(m.c.id > last).order_by(m.c.id).limit(size)).scalars().all()
        )
        if not ids:
            return
        yield ids[0], ids[-1]
        last = ids[-1]


def verify(*, progress: Progress | None = None) -> list[Discrepancy]:
    """List every disagreement between cached balances, lots and the ledger.

    Reads in chunks of ``LOYALTY_JOB_CHUNK_SIZE`` members; writes nothing.
    """
    store = current_loyalty.store
    found: list[Discrepancy] = []
    checked = 0
    size = int(config_value("JOB_CHUNK_SIZE"))
    for low, high in store.atomic(lambda: list(_chunks(store, size))):
        found += store.atomic(functools.partial(_check_chunk, store, low, high))
        checked += 1
        if progress is not None:
            progress(checked)
    return found


def _repair_lots(store: t.Any, member_id: int, pending: bool, change: int, now: t.Any) -> None:
    """Add ``change`` points to the member's live (or pending) lots."""
    if change > 0:
        store.insert_lot(
            {
                "member_id": member_id,
                "points": change,
                "remaining": change,
                "pending": pending,
                "expired": False,
                "available_from": now,
                "expires_at": None,
                "created_at": now,
            }  # fmt: skip
        )
        return
    lot = store.lot
    rows = store.execute(
        sa.select(lot.c.id, lot.c.remaining)
        .where(
            lot.c.member_id == member_id,
            lot.c.pending.is_(pending),
            lot.c.expired.is_(False),
            lot.c.remaining > 0,
        )  # fmt: skip
        .order_by(lot.c.expires_at.is_(None).desc(), lot.c.expires_at.desc(), lot.c.id.desc())
        .with_for_update()
    ).all()
    left = -change
    for row in rows:
        used = min(left, row.remaining)
        store.execute(lot.update().where(lot.c.id == row.id).values(remaining=row.remaining - used))
        left -= used
        if not left:
            return


def rebuild(*, actor: str = "rebuild", progress: Progress | None = None) -> list[Discrepancy]:
    """Repair every discrepancy :func:`verify` finds, member by member.

    Cached balances are set to the ledger's sums; lots are topped up with a
    never-expiring lot, or trimmed latest expiry first, to match the balance.
    Each repaired field is recorded as a ``Repair`` row with ``actor``. A
    mismatch between held reservations and the reserved balance is reported
    by :func:`verify` but left for a person to resolve.

    :returns: the discrepancies that were repaired.
    """
    state = get_state()
    store = state.store
    repaired: list[Discrepancy] = []
    for found in verify(progress=progress):

        def work(d: Discrepancy = found) -> bool:
            cached = store.lock_member(d.member_id, active=False)
            # Re-check under the lock: a concurrent operation may have moved it.
            current = [x for x in _check_chunk(store, d.member_id, d.member_id) if x.field == d.field]
            if not current:
                return False
            d = current[0]
            now = state.now()
            if d.field == "reservations":
                return False  # which reservation is wrong is for a person to decide
            if d.field in ("lots", "pending_lots"):
                _repair_lots(store, d.member_id, d.field == "pending_lots", d.ledger - d.cached, now)
            else:
                store.set_balances(d.member_id, dataclasses.replace(cached, **{d.field: d.ledger}))
            store.execute(store.repair.insert().values(
                member_id=d.member_id, field=d.field, cached_value=d.cached, ledger_value=d.ledger,
                actor=actor, created_at=now))  # fmt: skip
            return True

        if store.atomic(work):
            repaired.append(found)
    if repaired:
        send(signals.balances_rebuilt, repairs=repaired)
    return repaired
