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

import dataclasses
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


def keyset(store: LoyaltyStore, what: str, lot_id: int) -> tuple[t.Any, ...]:
    """The position of the lot ``lot_id`` in the order of :func:`due_lots` (``after`` of the next chunk)."""
    if what != "expire":
        return (lot_id,)
    lot = store.lot
    row = store.execute(sa.select(lot.c.member_id, lot.c.expires_at).where(lot.c.id == lot_id)).one()
    return (row.member_id, row.expires_at, lot_id)


def _order(store: LoyaltyStore, what: str) -> tuple[sa.ColumnElement[t.Any], ...]:
    lot = store.lot
    return (lot.c.member_id, lot.c.expires_at, lot.c.id) if what == "expire" else (lot.c.id,)


def _compare(
    columns: t.Sequence[sa.ColumnElement[t.Any]], values: t.Sequence[t.Any], upto: bool, dialect: str
) -> t.Any:
    """``columns > values``, or ``columns <= values`` if ``upto``, in the order of the columns."""
    bound = [
        sa.bindparam(None, value, type_=column.type) for column, value in zip(columns, values, strict=True)
    ]
    if dialect not in ("mysql", "mariadb"):
        return sa.tuple_(*columns) <= sa.tuple_(*bound) if upto else sa.tuple_(*columns) > sa.tuple_(*bound)
    # Spelled out: MariaDB's range optimizer does not use row comparisons.
    condition = columns[-1] <= bound[-1] if upto else columns[-1] > bound[-1]
    for column, value in zip(columns[-2::-1], bound[-2::-1], strict=True):
        condition = sa.or_(column < value if upto else column > value, sa.and_(column == value, condition))
    return condition


@dataclasses.dataclass(frozen=True)
class Span:
    """The lots due for ``what`` from just after ``after`` up to ``last``, in :func:`due_lots` order.

    ``after`` and ``last`` are :func:`keyset` positions; ``after`` is
    ``None`` for the first chunk.
    """

    what: str
    after: tuple[t.Any, ...] | None
    last: tuple[t.Any, ...]


#: Lots to sweep: their ids, or a :class:`Span`.
Lots: t.TypeAlias = "list[int] | Span"


def chunk_of(store: LoyaltyStore, rows: t.Sequence[t.Any], span: Span) -> Lots:
    """How a sweep's statements should name the lots ``rows`` of :func:`due_lots`.

    On SQLite, where one transaction writes at a time, the chunk's lots are
    exactly the due lots of its :class:`Span`, read in the same transaction:
    the statements select them by that range, instead of binding every id in
    each of them. Elsewhere a concurrent transaction may make more lots of
    the range due (lots of members this chunk has not locked): their ids.
    """
    return span if store.dialect == "sqlite" else [row.id for row in rows]


def _among(store: LoyaltyStore, lots: Lots) -> sa.ColumnElement[bool]:
    """The condition on the lots table that selects ``lots``."""
    if not isinstance(lots, Span):
        return store.among(store.lot.c.id, lots)
    order = _order(store, lots.what)
    upto = _compare(order, lots.last, True, store.dialect)
    return upto if lots.after is None else sa.and_(_compare(order, lots.after, False, store.dialect), upto)


def due_lots(
    store: LoyaltyStore,
    what: str,
    now: dt.datetime,
    limit: int,
    member_id: int | None = None,
    after: tuple[t.Any, ...] | None = None,
) -> list[t.Any]:
    """Up to ``limit`` ``(id, member_id)`` rows of lots due for ``what``.

    Lots due to expire come in ``(member_id, expires_at, id)`` order, the
    order of the index on the member and the expiry: a chunk of them holds
    the lots of a few members, so that a sweep locks and updates each member
    once for all its lots rather than once per chunk. Lots due to become
    available come in id order (a pending lot may have no expiry).

    :param what: ``"expire"`` or ``"activate"``.
    :param member_id: restrict to one member's lots.
    :param after: only lots after this position (:func:`keyset` of the last
        row of the previous chunk). A job passes it, so each chunk's scan
        starts where the previous one stopped instead of re-reading every lot
        before it.
    """
    lot = store.lot
    due = _due_expiry(store, now) if what == "expire" else _due_activation(store, now)
    order = _order(store, what)
    query = sa.select(lot.c.id, lot.c.member_id).where(due)
    if member_id is not None:
        query = store.fresh(query.where(lot.c.member_id == member_id))
    if after is not None:
        query = query.where(_compare(order, after, False, store.dialect))
    return list(store.execute(query.order_by(*order).limit(limit)).all())


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


def expire_lots(store: LoyaltyStore, lot_ids: Lots, now: dt.datetime, actor: str | None) -> int:
    """Expire the remainder of each due lot in ``lot_ids``; return the entries written.

    The caller has locked the lots' members.

    :param lot_ids: the lots' ids, or a :class:`Span` of them (see :func:`chunk_of`).
    """
    lot, m = store.lot, store.member
    in_chunk = sa.and_(_among(store, lot_ids), _due_expiry(store, now))
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
    store: LoyaltyStore, lot_ids: Lots, now: dt.datetime, actor: str | None, *, early: bool = False
) -> int:
    """Make each due pending lot in ``lot_ids`` available; return the entries written.

    A member whose available balance is negative (a clawback under
    ``allow_negative``) pays that debt first: the lot keeps only what is left
    after it. The caller has locked the lots' members.

    :param lot_ids: the lots' ids, or a :class:`Span` of them (see :func:`chunk_of`).
    :param early: make the lots available even before their ``available_from``
        (an order completed within its return window).
    """
    lot, m, e = store.lot, store.member, store.entry
    due = lot.c.pending.is_(True) if early else _due_activation(store, now)
    in_chunk = sa.and_(_among(store, lot_ids), due)
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
