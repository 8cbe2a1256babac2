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

A job sweeps chunk by chunk (:func:`sweep_chunk`). On SQLite, where one
transaction writes at a time (``BEGIN IMMEDIATE`` is the lock of every
member), a chunk is the range of due lots between two keyset positions,
found with one row read rather than by reading the ids of its lots, and
the entries it writes are the ledger's last rows: after the insert of the
entries, the members' and the lots' updates read those entries (a range of
the primary key, and the lots by primary key) instead of finding the
chunk's lots again through an index. These statements are built once and
executed with parameters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

import sqlalchemy as sa
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression

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


def _due_expiry(store: LoyaltyStore, now: Bound, *, by_member: bool = False) -> sa.ColumnElement[bool]:
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


def _due_activation(store: LoyaltyStore, now: Bound) -> sa.ColumnElement[bool]:
    lot = store.lot
    return sa.and_(lot.c.pending.is_(True), lot.c.available_from <= now)


def _due(store: LoyaltyStore, what: str, now: Bound) -> sa.ColumnElement[bool]:
    return _due_expiry(store, now) if what == "expire" else _due_activation(store, now)


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
    order = _order(store, what)
    query = sa.select(lot.c.id, lot.c.member_id).where(_due(store, what, now))
    if member_id is not None:
        query = store.fresh(query.where(lot.c.member_id == member_id))
    if after is not None:
        bound = [sa.bindparam(None, value, type_=c.type) for c, value in zip(order, after, strict=True)]
        query = query.where(_compare(order, bound, False, store.dialect))
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


def _entries(
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


def _kept(store: LoyaltyStore) -> t.Any:
    """What an activated lot keeps: max(0, balance after) - max(0, balance before).

    A member whose available balance is negative (a clawback under
    ``allow_negative``) pays that debt first. Read from the lot's ``activate``
    entry, found by its unique source key.
    """
    lot, e = store.lot, store.entry
    before = e.c.available_after - e.c.delta_available
    return (
        sa.select(
            sa.case(
                (e.c.available_after <= 0, 0),
                (before >= 0, e.c.delta_available),
                else_=e.c.available_after,
            )
        )
        .where(
            e.c.member_id == lot.c.member_id,
            e.c.kind == "activate",
            e.c.source_key == _lot_key(store),
            e.c.lot_id == lot.c.id,
        )
        .scalar_subquery()
    )


def expire_lots(store: LoyaltyStore, lot_ids: t.Sequence[int], now: dt.datetime, actor: str | None) -> int:
    """Expire the remainder of each due lot in ``lot_ids``; return the entries written.

    The caller has locked the lots' members.
    """
    lot, m = store.lot, store.member
    in_chunk = sa.and_(store.among(lot.c.id, lot_ids), _due_expiry(store, now))
    written = int(store.execute(_entries(store, "expire", in_chunk, now, actor)).rowcount or 0)
    if not written:
        return 0
    expiring = _chunk_totals(store, in_chunk)
    store.execute(
        m.update().where(m.c.id == expiring.c.member_id).values(available=m.c.available - expiring.c.total)
    )
    store.execute(lot.update().where(in_chunk).values(remaining=0, expired=True))
    return written


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
    lot, m = store.lot, store.member
    due = lot.c.pending.is_(True) if early else _due_activation(store, now)
    in_chunk = sa.and_(store.among(lot.c.id, lot_ids), due)
    written = int(store.execute(_entries(store, "activate", in_chunk, now, actor)).rowcount or 0)
    if not written:
        return 0
    activating = _chunk_totals(store, in_chunk)
    store.execute(
        m.update()
        .where(m.c.id == activating.c.member_id)
        .values(available=m.c.available + activating.c.total, pending=m.c.pending - activating.c.total)
    )
    store.execute(lot.update().where(in_chunk).values(remaining=_kept(store), pending=False))
    return written


@dataclasses.dataclass(frozen=True)
class Chunk:
    """What :func:`sweep_chunk` did."""

    #: The entries written (one per lot swept).
    written: int
    #: The members of those entries, in id order.
    member_ids: list[int]
    #: The :func:`keyset` position of the chunk's last lot (``after`` of the
    #: next chunk), or ``None`` when no lot was due.
    end: tuple[t.Any, ...] | None


def sweep_chunk(
    store: LoyaltyStore,
    what: str,
    now: dt.datetime,
    size: int,
    after: tuple[t.Any, ...] | None,
    actor: str | None,
) -> Chunk:
    """Sweep the next chunk of up to ``size`` lots due for ``what`` after ``after``.

    Runs in the caller's write transaction: selects the chunk, locks its
    members, writes one entry per lot and updates the members and the lots,
    a few statements whatever the chunk's size.

    :param what: ``"expire"`` or ``"activate"``.
    :param after: the ``end`` of the previous chunk; ``None`` for the first.
    """
    if store.dialect == "sqlite":
        return _sqlite_chunk(store, what, now, size, after, actor)
    rows = due_lots(store, what, now, size, after=after)
    if not rows:
        return Chunk(0, [], None)
    member_ids = sorted({row.member_id for row in rows})
    store.lock_members(member_ids)
    end = keyset(store, what, rows[-1].id)
    ids = [row.id for row in rows]
    sweep = expire_lots if what == "expire" else activate_lots
    return Chunk(sweep(store, ids, now, actor), member_ids, end)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A chunk's statements on SQLite, built once per kind of sweep.

    Their parameters: ``now``, ``skip`` (the chunk's size less one),
    ``actor``, ``mark`` (the greatest entry id before the chunk's entries),
    and the keyset positions ``a0``, ``a1``... (after which the chunk starts)
    and ``z0``, ``z1``... (its last lot).
    """

    start: t.Any
    end: t.Any
    last: t.Any
    mark: t.Any
    insert: t.Any
    members: t.Any
    lots: t.Any
    touched: t.Any


def _plan(store: LoyaltyStore, what: str) -> _Plan:
    lot, m, e = store.lot, store.member, store.entry
    order = _order(store, what)
    now = sa.bindparam("now", type_=sa.DateTime())
    due = _due_expiry(store, now, by_member=True) if what == "expire" else _due_activation(store, now)

    def bound(prefix: str) -> list[sa.BindParameter[t.Any]]:
        return [sa.bindparam(f"{prefix}{i}", type_=column.type) for i, column in enumerate(order)]

    after = _compare(order, bound("a"), False, "sqlite")
    following = sa.select(*order).where(due, after)
    in_chunk = sa.and_(after, _compare(order, bound("z"), True, "sqlite"), due)
    # The chunk's entries in id order: a range of the primary key. (Grouped
    # by member without the order, SQLite may skip through the index on
    # (member_id, id) instead, seeking once per member of the ledger.)
    written = (
        sa.select(e.c.member_id, e.c.lot_id, e.c.delta_available, e.c.delta_pending)
        .where(e.c.id > sa.bindparam("mark"))
        .order_by(e.c.id)
        .subquery("written")
    )
    moved = (
        sa.select(
            written.c.member_id,
            sa.func.sum(written.c.delta_available).label("available"),
            sa.func.sum(written.c.delta_pending).label("pending"),
        )
        .group_by(written.c.member_id)
        .subquery("moved")
    )
    swept = sa.and_(lot.c.id.in_(sa.select(written.c.lot_id)), due)
    return _Plan(
        start=sa.select(sa.func.min(order[0])),
        end=following.order_by(*order).limit(1).offset(sa.bindparam("skip")),
        last=following.order_by(*(column.desc() for column in order)).limit(1),
        mark=sa.select(sa.func.max(e.c.id)),
        insert=_entries(store, what, in_chunk, now, sa.bindparam("actor", type_=sa.String())),
        members=m.update()
        .where(m.c.id == moved.c.member_id)
        .values(available=m.c.available + moved.c.available, pending=m.c.pending + moved.c.pending),
        lots=lot.update().where(swept).values(remaining=0, expired=True)
        if what == "expire"
        else lot.update().where(swept).values(remaining=_kept(store), pending=False),
        touched=sa.select(written.c.member_id).distinct(),
    )


def _sqlite_chunk(
    store: LoyaltyStore,
    what: str,
    now: dt.datetime,
    size: int,
    after: tuple[t.Any, ...] | None,
    actor: str | None,
) -> Chunk:
    """:func:`sweep_chunk` on SQLite: the transaction holds the database's write lock.

    The chunk is the range of due lots up to the ``size``-th after ``after``
    (read as one row, not as ``size`` rows), and the lots of that range are
    the ones its statements change: no other transaction can make more of
    them due meanwhile. The entries the insert writes are the ledger's last
    rows, after ``mark``; the members' balances move by their sums and the
    lots they name are marked.
    """
    plan = store.prepared(f"sweep_{what}", lambda: _plan(store, what))
    if after is None:
        # The first chunk starts after a position before every lot: the
        # least member id (lot id) less one, whatever the rest.
        least = store.execute(plan.start).scalar()
        if least is None:
            return Chunk(0, [], None)
        after = (least - 1, now, 0) if what == "expire" else (least - 1,)
    params = {"now": now, "skip": size - 1, "actor": actor}
    params.update({f"a{i}": value for i, value in enumerate(after)})
    end = store.execute(plan.end, params).first() or store.execute(plan.last, params).first()
    if end is None:
        return Chunk(0, [], None)
    params.update({f"z{i}": value for i, value in enumerate(end)})
    params["mark"] = store.execute(plan.mark).scalar() or 0
    written = int(store.execute(plan.insert, params).rowcount or 0)
    if not written:
        return Chunk(0, [], tuple(end))
    store.execute(plan.members, params)
    store.execute(plan.lots, params)
    member_ids = sorted(store.execute(plan.touched, params).scalars())
    return Chunk(written, member_ids, tuple(end))
