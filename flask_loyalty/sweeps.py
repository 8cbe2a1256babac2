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

A job sweeps them chunk by chunk (:mod:`flask_loyalty.chunks`).
"""

from __future__ import annotations

import datetime as dt
import typing as t

import sqlalchemy as sa
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression

from .store import writes

if t.TYPE_CHECKING:
    from .store import LoyaltyStore

#: The reason recorded on entries written by sweeps.
EXPIRE_REASON = "points expired"
ACTIVATE_REASON = "pending points became available"

#: A value, or the parameter a statement built once binds it to.
Bound: t.TypeAlias = "t.Any | sa.BindParameter[t.Any]"


def _unindexed(column: sa.ColumnElement[t.Any]) -> sa.ColumnElement[t.Any]:
    """``+column``: the column's value, which SQLite's planner will not look up in an index."""
    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


def due_expiry(store: LoyaltyStore, now: Bound, *, by_member: bool = False) -> sa.ColumnElement[bool]:
    """The condition of a lot due to expire.

    :param by_member: leave SQLite's planner no index but the one on
        ``(member_id, expires_at)`` for it. Without statistics (no
        ``ANALYZE``) it would otherwise read a chunk through the index on
        ``(expired, expires_at)``: every due lot, for every chunk.
    """
    lot = store.lot
    pending, expired = (
        (_unindexed(lot.c.pending), _unindexed(lot.c.expired))
        if by_member
        else (lot.c.pending, lot.c.expired)
    )
    return sa.and_(lot.c.remaining > 0, pending.is_(False), expired.is_(False), lot.c.expires_at <= now)


def due_activation(store: LoyaltyStore, now: Bound) -> sa.ColumnElement[bool]:
    """The condition of a pending lot due to become available."""
    lot = store.lot
    return sa.and_(lot.c.pending.is_(True), lot.c.available_from <= now)


def _due(store: LoyaltyStore, what: str, now: Bound) -> sa.ColumnElement[bool]:
    return due_expiry(store, now) if what == "expire" else due_activation(store, now)


def keyset(store: LoyaltyStore, what: str, lot_id: int) -> tuple[t.Any, ...]:
    """The position of the lot ``lot_id`` in the order of :func:`due_lots` (``after`` of the next chunk)."""
    if what != "expire":
        return (lot_id,)
    lot = store.lot
    row = store.execute(sa.select(lot.c.member_id, lot.c.expires_at).where(lot.c.id == lot_id)).one()
    return (row.member_id, row.expires_at, lot_id)


def sweep_order(store: LoyaltyStore, what: str) -> tuple[sa.ColumnElement[t.Any], ...]:
    """The columns a sweep for ``what`` goes through the lots in (see :func:`due_lots`)."""
    lot = store.lot
    return (lot.c.member_id, lot.c.expires_at, lot.c.id) if what == "expire" else (lot.c.id,)


def compare_keys(
    columns: t.Sequence[sa.ColumnElement[t.Any]],
    bound: t.Sequence[sa.ColumnElement[t.Any]],
    upto: bool,
    dialect: str,
) -> t.Any:
    """``columns > bound``, or ``columns <= bound`` if ``upto``, in the order of the columns."""
    if dialect not in ("mysql", "mariadb"):
        return sa.tuple_(*columns) <= sa.tuple_(*bound) if upto else sa.tuple_(*columns) > sa.tuple_(*bound)
    # Spelled out: MariaDB's range optimizer does not use row comparisons.
    condition = columns[-1] <= bound[-1] if upto else columns[-1] > bound[-1]
    for column, value in zip(columns[-2::-1], bound[-2::-1], strict=True):
        condition = sa.or_(column < value if upto else column > value, sa.and_(column == value, condition))
    return condition


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
    order = sweep_order(store, what)
    query = sa.select(lot.c.id, lot.c.member_id).where(_due(store, what, now))
    if member_id is not None:
        query = store.fresh(query.where(lot.c.member_id == member_id))
    if after is not None:
        bound = [sa.bindparam(None, value, type_=c.type) for c, value in zip(order, after, strict=True)]
        query = query.where(compare_keys(order, bound, False, store.dialect))
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


def _as_value(value: Bound, type_: t.Any) -> t.Any:
    return value if isinstance(value, sa.BindParameter) else sa.literal(value, type_)


def entries_insert(
    store: LoyaltyStore,
    what: str,
    in_chunk: sa.ColumnElement[bool],
    now: Bound,
    actor: Bound,
) -> t.Any:
    """The ``INSERT ... SELECT`` of one ``expire`` or ``activate`` entry per lot of the chunk.

    Each lot's remaining points move the available and the pending balances
    with the signs ``(-1, 0)`` to expire and ``(1, -1)`` to activate; the
    balances after each entry come from a running sum.
    """
    lot, m, e = store.lot, store.member, store.entry
    to_available, to_pending = (-1, 0) if what == "expire" else (1, -1)
    running = _running(store)
    select = (
        sa.select(
            lot.c.member_id,
            sa.literal(what),
            lot.c.remaining * to_available,
            lot.c.remaining * to_available,
            lot.c.remaining * to_pending,
            sa.literal(0),
            m.c.available + running * to_available,
            m.c.pending + running * to_pending if to_pending else m.c.pending,
            m.c.reserved,
            _lot_key(store),
            sa.literal(""),
            lot.c.id,
            sa.literal(0),
            _as_value(actor, sa.String()),
            sa.literal(EXPIRE_REASON if what == "expire" else ACTIVATE_REASON),
            _as_value(now, sa.DateTime()),
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
    return insert.execution_options(preserve_rowcount=True)


def _kept(available_after: t.Any, delta_available: t.Any) -> t.Any:
    """What an activated lot keeps, from its entry's balance after and change."""
    before = available_after - delta_available
    return sa.case((available_after <= 0, 0), (before >= 0, delta_available), else_=available_after)


def kept_points(store: LoyaltyStore) -> t.Any:
    """What an activated lot keeps: max(0, balance after) - max(0, balance before).

    A member whose available balance is negative (a clawback under
    ``allow_negative``) pays that debt first. Read from the lot's ``activate``
    entry, found by its unique source key.
    """
    lot, e = store.lot, store.entry
    return (
        sa.select(_kept(e.c.available_after, e.c.delta_available))
        .where(
            e.c.member_id == lot.c.member_id,
            e.c.kind == "activate",
            e.c.source_key == _lot_key(store),
            e.c.lot_id == lot.c.id,
        )
        .scalar_subquery()
    )


def _sweep(store: LoyaltyStore, what: str, in_chunk: sa.ColumnElement[bool], now: Bound, actor: Bound) -> int:
    """Write an entry per lot ``in_chunk``, move its member's balances, mark the lot; return the entries.

    Three statements: the entries' insert, the members' update from the
    chunk's totals, the lots' update. On PostgreSQL, one (:func:`_sweep_in_one`).
    """
    if store.dialect == "postgresql":
        return _sweep_in_one(store, what, in_chunk, now, actor)
    lot, m = store.lot, store.member
    written = int(store.execute(entries_insert(store, what, in_chunk, now, actor)).rowcount or 0)
    if not written:
        return 0
    chunk = _chunk_totals(store, in_chunk)
    if what == "expire":
        balances = {"available": m.c.available - chunk.c.total}
        marked = {"remaining": 0, "expired": True}
    else:
        balances = {"available": m.c.available + chunk.c.total, "pending": m.c.pending - chunk.c.total}
        marked = {"remaining": kept_points(store), "pending": False}
    store.execute(m.update().where(m.c.id == chunk.c.member_id).values(balances))
    store.execute(lot.update().where(in_chunk).values(marked))
    return written


def members_moved_by(store: LoyaltyStore, written: t.Any, *extra: t.Any) -> tuple[t.Any, t.Any]:
    """The members' update by the sums of the entries ``written`` (rows with ``member_id``,
    ``delta_available`` and ``delta_pending``), and the sums it joins.

    :param extra: more columns of the sums, per member (``moved.c.<name>``).
    """
    m = store.member
    moved = (
        sa.select(
            written.c.member_id,
            sa.func.sum(written.c.delta_available).label("available"),
            sa.func.sum(written.c.delta_pending).label("pending"),
            *extra,
        )
        .group_by(written.c.member_id)
        .subquery("moved")
    )
    update = (
        m.update()
        .where(m.c.id == moved.c.member_id)
        .values(available=m.c.available + moved.c.available, pending=m.c.pending + moved.c.pending)
    )
    return update, moved


def _sweep_in_one(
    store: LoyaltyStore, what: str, in_chunk: sa.ColumnElement[bool], now: Bound, actor: Bound
) -> int:
    return int(store.execute(sweep_statement(store, what, in_chunk, now, actor)).scalar_one())


def sweep_statement(
    store: LoyaltyStore, what: str, in_chunk: sa.ColumnElement[bool], now: Bound, actor: Bound
) -> t.Any:
    """The sweep of the lots ``in_chunk`` as one statement on PostgreSQL; it returns the entries written.

    PostgreSQL's ``WITH`` takes data-modifying statements: ``WITH`` the
    entries' insert, which returns each entry's member, lot and changes; the
    members' update by the sums of those per member; the lots' update (an
    activated lot keeps what its entry says). The chunk's lots are read once,
    by the insert, and the sweep is one round trip. Every part of a ``WITH``
    reads the same snapshot, taken after the caller locked the members, so
    the lots the updates see are the ones the insert did.
    """
    lot, e = store.lot, store.entry
    written = (
        entries_insert(store, what, in_chunk, now, actor)
        .returning(e.c.member_id, e.c.lot_id, e.c.delta_available, e.c.delta_pending, e.c.available_after)
        .cte("written")
    )
    update, moved = members_moved_by(store, written, sa.func.count().label("entries"))
    members = update.returning(moved.c.entries).cte("members")
    if what == "expire":
        lots = lot.update().where(in_chunk).values(remaining=0, expired=True)
    else:
        lots = (
            lot.update()
            .where(lot.c.id == written.c.lot_id, in_chunk)
            .values(remaining=_kept(written.c.available_after, written.c.delta_available), pending=False)
        )
    return writes(sa.select(sa.func.coalesce(sa.func.sum(members.c.entries), 0)).add_cte(lots.cte("lots")))


def expire_lots(store: LoyaltyStore, lot_ids: t.Sequence[int], now: dt.datetime, actor: str | None) -> int:
    """Expire the remainder of each due lot in ``lot_ids``; return the entries written.

    The caller has locked the lots' members.
    """
    lot = store.lot
    return _sweep(
        store, "expire", sa.and_(store.among(lot.c.id, lot_ids), due_expiry(store, now)), now, actor
    )


def activate_lots(
    store: LoyaltyStore,
    lot_ids: t.Sequence[int],
    now: dt.datetime,
    actor: str | None,
    *,
    early: bool = False,
) -> int:
    """Make each due pending lot in ``lot_ids`` available; return the entries written.

    A member whose available balance is negative (a clawback under
    ``allow_negative``) pays that debt first: the lot keeps only what is left
    after it. The caller has locked the lots' members.

    :param early: make the lots available even before their ``available_from``
        (an order completed within its return window).
    """
    lot = store.lot
    due = lot.c.pending.is_(True) if early else due_activation(store, now)
    return _sweep(store, "activate", sa.and_(store.among(lot.c.id, lot_ids), due), now, actor)
