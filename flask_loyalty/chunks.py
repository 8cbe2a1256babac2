"""A job's chunk: the next lots due, their members locked, swept in one transaction.

A job (:mod:`flask_loyalty.jobs`) sweeps chunk by chunk with
:func:`sweep_chunk`, each chunk after the previous one's last lot (keyset
paging), with the set-based statements of :mod:`flask_loyalty.sweeps`.

On SQLite, where one transaction writes at a time (``BEGIN IMMEDIATE`` is
the lock of every member), a chunk is the range of due lots between two
keyset positions, found with one row read rather than by reading the ids of
its lots, and the entries it writes are the ledger's last rows: after the
insert of the entries, the members' and the lots' updates read those
entries (a range of the primary key, and the lots by primary key) instead
of finding the chunk's lots again through an index. These statements are
built once and executed with parameters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

import sqlalchemy as sa

from .sweeps import activate_lots
from .sweeps import compare_keys
from .sweeps import due_activation
from .sweeps import due_expiry
from .sweeps import due_lots
from .sweeps import entries_insert
from .sweeps import expire_lots
from .sweeps import kept_points
from .sweeps import keyset
from .sweeps import members_moved_by
from .sweeps import sweep_order
from .sweeps import sweep_statement

if t.TYPE_CHECKING:
    from .store import LoyaltyStore


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

    Runs in the caller's write transaction: finds the chunk, locks its
    members, writes one entry per lot and updates the members and the lots,
    a few statements whatever the chunk's size.

    :param what: ``"expire"`` or ``"activate"``.
    :param after: the ``end`` of the previous chunk; ``None`` for the first.
    """
    if store.dialect in ("sqlite", "postgresql"):
        build: t.Callable[[LoyaltyStore, str], _Plan]
        build = _sqlite_plan if store.dialect == "sqlite" else _postgresql_plan
        plan: _Plan = store.prepared(f"{store.dialect}_sweep_{what}", lambda: build(store, what))
        params: dict[str, t.Any] = {"now": now, "actor": actor}
        end = _chunk_end(store, what, plan.range, params, size, after)
        if end is None:
            return Chunk(0, [], None)
        return Chunk(*plan.run(store, params), end)
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
class _Range:
    """The statements that find a chunk as a range of keyset positions.

    Their parameters: ``now``, ``skip`` (the chunk's size less one), and the
    keyset positions ``a0``, ``a1``... (after which the chunk starts) and
    ``z0``, ``z1``... (its last lot).
    """

    #: The least member id (lot id) of any lot: the first chunk starts before it.
    start: t.Any
    #: The position of the chunk's last lot: the ``size``-th due after ``a``...
    end: t.Any
    #: ...or, when fewer are left, the last due lot's.
    last: t.Any
    #: The condition of a lot of the chunk.
    in_chunk: sa.ColumnElement[bool]


class _Plan(t.Protocol):
    """A chunk's statements, built once per engine and kind of sweep."""

    @property
    def range(self) -> _Range:
        """The statements that find the chunk."""

    def run(self, store: LoyaltyStore, params: dict[str, t.Any]) -> tuple[int, list[int]]:
        """Sweep the chunk's range; return the entries written and their members."""


def _range(store: LoyaltyStore, what: str, due: sa.ColumnElement[bool]) -> _Range:
    order = sweep_order(store, what)

    def bound(prefix: str) -> list[sa.BindParameter[t.Any]]:
        return [sa.bindparam(f"{prefix}{i}", type_=column.type) for i, column in enumerate(order)]

    after = compare_keys(order, bound("a"), False, store.dialect)
    following = sa.select(*order).where(due, after)
    return _Range(
        start=sa.select(sa.func.min(order[0])),
        end=following.order_by(*order).limit(1).offset(sa.bindparam("skip")),
        last=following.order_by(*(column.desc() for column in order)).limit(1),
        in_chunk=sa.and_(after, compare_keys(order, bound("z"), True, store.dialect), due),
    )


def _chunk_end(
    store: LoyaltyStore,
    what: str,
    plan: _Range,
    params: dict[str, t.Any],
    size: int,
    after: tuple[t.Any, ...] | None,
) -> tuple[t.Any, ...] | None:
    """Bind the chunk's range in ``params``; return its end, or ``None`` if no lot is due."""
    if after is None:
        # The first chunk starts after a position before every lot: the
        # least member id (lot id) less one, whatever the rest.
        least = store.execute(plan.start).scalar()
        if least is None:
            return None
        after = (least - 1, params["now"], 0) if what == "expire" else (least - 1,)
    params["skip"] = size - 1
    params.update({f"a{i}": value for i, value in enumerate(after)})
    end = store.execute(plan.end, params).first() or store.execute(plan.last, params).first()
    if end is None:
        return None
    params.update({f"z{i}": value for i, value in enumerate(end)})
    return tuple(end)


@dataclasses.dataclass(frozen=True)
class _PostgreSQLPlan:
    """A chunk's statements on PostgreSQL, built once per kind of sweep.

    Besides the range's parameters, ``actor`` and ``members`` (the ids of
    the members locked).
    """

    range: _Range
    lock: t.Any
    sweep: t.Any

    def run(self, store: LoyaltyStore, params: dict[str, t.Any]) -> tuple[int, list[int]]:
        """Sweep the chunk's range; return the entries written and the members locked.

        The members with due lots in the range are locked, in id order, and
        one statement sweeps the due lots of the range whose member is one of
        them: a lot that became due meanwhile, of a member not locked, waits
        for the next run.
        """
        member_ids = list(store.execute(self.lock, params).scalars())
        if not member_ids:
            return 0, []
        params["members"] = store.ids_value(member_ids)
        return int(store.execute(self.sweep, params).scalar_one()), member_ids


def _postgresql_plan(store: LoyaltyStore, what: str) -> _PostgreSQLPlan:
    from sqlalchemy.dialects.postgresql import ARRAY

    lot, m = store.lot, store.member
    now = sa.bindparam("now", type_=sa.DateTime())
    due = due_expiry(store, now) if what == "expire" else due_activation(store, now)
    plan = _range(store, what, due)
    chunk_members = sa.select(sa.func.array_agg(lot.c.member_id)).where(plan.in_chunk).scalar_subquery()
    locked = sa.and_(plan.in_chunk, store.among_bound(lot.c.member_id, "members"))
    return _PostgreSQLPlan(
        range=plan,
        # ``id = ANY(CAST((SELECT array_agg(...)) AS ...))``: the chunk's
        # lots are read once, before the members. (With ``IN (SELECT ...)``
        # the planner may probe the lots once for every member of the shop.)
        lock=sa.select(m.c.id)
        .where(m.c.id == sa.any_(sa.cast(chunk_members, ARRAY(m.c.id.type))))
        .order_by(m.c.id)
        .with_for_update(),
        sweep=sweep_statement(store, what, locked, now, sa.bindparam("actor", type_=sa.String())),
    )


@dataclasses.dataclass(frozen=True)
class _SQLitePlan:
    """A chunk's statements on SQLite, built once per kind of sweep.

    Besides the range's parameters, ``actor`` and ``mark`` (the greatest
    entry id before the chunk's entries).
    """

    range: _Range
    mark: t.Any
    insert: t.Any
    members: t.Any
    lots: t.Any
    touched: t.Any

    def run(self, store: LoyaltyStore, params: dict[str, t.Any]) -> tuple[int, list[int]]:
        """Sweep the chunk's range; return the entries written and their members.

        The transaction holds the database's write lock: the lots of the
        range are the ones its statements change, as no other transaction
        can make more of them due meanwhile. The entries the insert writes
        are the ledger's last rows, after ``mark``; the members' balances
        move by their sums and the lots they name are marked.
        """
        params["mark"] = store.execute(self.mark).scalar() or 0
        written = int(store.execute(self.insert, params).rowcount or 0)
        if not written:
            return 0, []
        store.execute(self.members, params)
        store.execute(self.lots, params)
        return written, sorted(store.execute(self.touched, params).scalars())


def _sqlite_plan(store: LoyaltyStore, what: str) -> _SQLitePlan:
    lot, e = store.lot, store.entry
    now = sa.bindparam("now", type_=sa.DateTime())
    due = due_expiry(store, now, by_member=True) if what == "expire" else due_activation(store, now)
    plan = _range(store, what, due)
    # The chunk's entries in id order: a range of the primary key. (Grouped
    # by member without the order, SQLite may skip through the index on
    # (member_id, id) instead, seeking once per member of the ledger.)
    written = (
        sa.select(e.c.member_id, e.c.lot_id, e.c.delta_available, e.c.delta_pending)
        .where(e.c.id > sa.bindparam("mark"))
        .order_by(e.c.id)
        .subquery("written")
    )
    swept = sa.and_(lot.c.id.in_(sa.select(written.c.lot_id)), due)
    return _SQLitePlan(
        range=plan,
        mark=sa.select(sa.func.max(e.c.id)),
        insert=entries_insert(store, what, plan.in_chunk, now, sa.bindparam("actor", type_=sa.String())),
        members=members_moved_by(store, written)[0],
        lots=lot.update().where(swept).values(remaining=0, expired=True)
        if what == "expire"
        else lot.update().where(swept).values(remaining=kept_points(store), pending=False),
        touched=sa.select(written.c.member_id).distinct(),
    )
