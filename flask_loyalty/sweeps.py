"""Set-based statements that expire lots and make pending lots available.

Part of the store layer: each sweep of a chunk of lots is a handful of SQL
statements, whatever the chunk's size, never a statement per lot. A sweep
locks the chunk's members first (in id order, the same order every writer
uses), then re-checks each lot's state in every statement, so two processes
sweeping the same lots at once, or a sweep racing a redemption, change each
lot exactly once. The ``lot:<id>`` source key of the entries backs that up
with a unique constraint.

The running balance after each entry comes from a window function
(``SUM(...) OVER (PARTITION BY member ORDER BY lot)``), and the members'
balances are updated from a join (``UPDATE ... FROM``): SQLite 3.33+,
PostgreSQL, and MariaDB 10.2+/MySQL 8.
"""

from __future__ import annotations

import datetime as dt
import typing as t

import sqlalchemy as sa

if t.TYPE_CHECKING:
    from .store import LoyaltyStore

#: The reason recorded on entries written by sweeps.
EXPIRE_REASON = "points expired"
ACTIVATE_REASON = "pending points became available"


def _due_expiry(store: LoyaltyStore, now: dt.datetime | sa.BindParameter[t.Any]) -> sa.ColumnElement[bool]:
    lot = store.lot
    return sa.and_(
        lot.c.remaining > 0,
        lot.c.pending.is_(False),
        lot.c.expired.is_(False),
        lot.c.expires_at <= now,
    )


def _due_activation(
    store: LoyaltyStore, now: dt.datetime | sa.BindParameter[t.Any]
) -> sa.ColumnElement[bool]:
    lot = store.lot
    return sa.and_(lot.c.pending.is_(True), lot.c.available_from <= now)


def due_lots(
    store: LoyaltyStore,
    what: str,
    now: dt.datetime,
    limit: int,
    member_id: int | None = None,
    after: int = 0,
) -> list[t.Any]:
    """Up to ``limit`` ``(id, member_id)`` rows of lots due for ``what``, in id order.

    :param what: ``"expire"`` or ``"activate"``.
    :param member_id: restrict to one member's lots.
    :param after: only lots with a greater id. A job passes the last id of
        its previous chunk, so each chunk's scan starts where the previous one
        stopped instead of re-reading every lot before it.
    """
    lot = store.lot
    due = _due_expiry(store, now) if what == "expire" else _due_activation(store, now)
    query = sa.select(lot.c.id, lot.c.member_id).where(due)
    if member_id is not None:
        query = store.fresh(query.where(lot.c.member_id == member_id))
    if after:
        query = query.where(lot.c.id > after)
    return list(store.execute(query.order_by(lot.c.id).limit(limit)).all())


def member_has_due_lots(store: LoyaltyStore, member_id: int, now: dt.datetime) -> bool:
    """Whether the member has lots to expire or to make available.

    Every debit asks this first, so the statement is built once per store.
    """

    def build() -> sa.Select[t.Any]:
        lot = store.lot
        at = sa.bindparam("b_now", type_=lot.c.expires_at.type)
        query = (
            sa.select(lot.c.id)
            .where(
                lot.c.member_id == sa.bindparam("b_member"),
                sa.or_(_due_expiry(store, at), _due_activation(store, at)),
            )
            .limit(1)
        )
        return store.fresh(query)

    query = store.prepared("member_has_due_lots", build)
    return store.execute(query, {"b_member": member_id, "b_now": now}).first() is not None


def _lot_key(store: LoyaltyStore) -> sa.ColumnElement[str]:
    return sa.literal("lot:") + sa.cast(store.lot.c.id, sa.String)


def _running(store: LoyaltyStore) -> t.Any:
    lot = store.lot
    return sa.func.sum(lot.c.remaining).over(partition_by=lot.c.member_id, order_by=lot.c.id)


def _chunk_totals(store: LoyaltyStore, in_chunk: sa.ColumnElement[bool]) -> t.Any:
    """``(member_id, total)`` rows: the remaining points of the chunk's lots per member.

    The members' update joins this (``UPDATE ... FROM``; a multiple-table
    ``UPDATE`` on MySQL), so the chunk's lots are read once. A subquery
    correlated with each member would instead read all of that member's due
    lots, for every member of the chunk.
    """
    lot = store.lot
    return (
        sa.select(lot.c.member_id, sa.func.sum(lot.c.remaining).label("total"))
        .where(in_chunk)
        .group_by(lot.c.member_id)
        .subquery("chunk")
    )


def _insert_entries(
    store: LoyaltyStore,
    kind: str,
    moves: tuple[int, int],
    in_chunk: sa.ColumnElement[bool],
    now: dt.datetime,
    actor: str | None,
    reason: str,
) -> int:
    """Append one ``kind`` entry per lot of the chunk with one ``INSERT ... SELECT``.

    :param moves: the signs with which each lot's remaining points move the
        available and the pending balances (``(-1, 0)`` to expire, ``(1, -1)``
        to activate); the balances after each entry come from a running sum.
    """
    lot, m, e = store.lot, store.member, store.entry
    to_available, to_pending = moves
    running = _running(store)
    select = (
        sa.select(
            lot.c.member_id,
            sa.literal(kind),
            lot.c.remaining * to_available,
            lot.c.remaining * to_available,
            lot.c.remaining * to_pending,
            sa.literal(0),
            m.c.available + running * to_available,
            m.c.pending + running * to_pending,
            m.c.reserved,
            _lot_key(store),
            sa.literal(""),
            lot.c.id,
            sa.literal(0),
            sa.literal(actor, sa.String),
            sa.literal(reason),
            sa.literal(now, sa.DateTime),
        )
        .join(m, m.c.id == lot.c.member_id)
        .where(in_chunk)
    )
    columns = [
        "member_id", "kind", "points", "delta_available", "delta_pending", "delta_reserved",
        "available_after", "pending_after", "reserved_after", "source_key", "params_hash",
        "lot_id", "shortfall", "actor", "reason", "created_at",
    ]  # fmt: skip
    insert = e.insert().from_select([e.c[name] for name in columns], select)
    result = store.execute(insert.execution_options(preserve_rowcount=True))
    return int(result.rowcount or 0)


def expire_lots(store: LoyaltyStore, lot_ids: list[int], now: dt.datetime, actor: str | None) -> int:
    """Expire the remainder of each due lot in ``lot_ids``; return the entries written.

    The caller has locked the lots' members.
    """
    lot, m = store.lot, store.member
    in_chunk = sa.and_(lot.c.id.in_(lot_ids), _due_expiry(store, now))
    written = _insert_entries(store, "expire", (-1, 0), in_chunk, now, actor, EXPIRE_REASON)
    if not written:
        return 0
    expiring = _chunk_totals(store, in_chunk)
    store.execute(
        m.update().where(m.c.id == expiring.c.member_id).values(available=m.c.available - expiring.c.total)
    )
    store.execute(lot.update().where(in_chunk).values(remaining=0, expired=True))
    return written


def activate_lots(
    store: LoyaltyStore, lot_ids: list[int], now: dt.datetime, actor: str | None, *, early: bool = False
) -> int:
    """Make each due pending lot in ``lot_ids`` available; return the entries written.

    A member whose available balance is negative (a clawback under
    ``allow_negative``) pays that debt first: the lot keeps only what is left
    after it. The caller has locked the lots' members.

    :param early: make the lots available even before their ``available_from``
        (an order completed within its return window).
    """
    lot, m, e = store.lot, store.member, store.entry
    due = lot.c.pending.is_(True) if early else _due_activation(store, now)
    in_chunk = sa.and_(lot.c.id.in_(lot_ids), due)
    written = _insert_entries(store, "activate", (1, -1), in_chunk, now, actor, ACTIVATE_REASON)
    if not written:
        return 0
    activating = _chunk_totals(store, in_chunk)
    store.execute(
        m.update()
        .where(m.c.id == activating.c.member_id)
        .values(available=m.c.available + activating.c.total, pending=m.c.pending - activating.c.total)
    )
    # What the lot keeps: max(0, balance after) - max(0, balance before).
    before = e.c.available_after - e.c.delta_available
    kept = (
        sa.select(
            sa.case(
                (e.c.available_after <= 0, 0),
                (before >= 0, e.c.delta_available),
                else_=e.c.available_after,
            )
        )
        .where(e.c.lot_id == lot.c.id, e.c.kind == "activate")
        .scalar_subquery()
    )
    store.execute(lot.update().where(in_chunk).values(remaining=kept, pending=False))
    return written
