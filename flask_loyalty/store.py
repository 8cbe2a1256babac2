"""The store: the only code of the extension that uses the database session.

:class:`LoyaltyStore` is built by :class:`~flask_loyalty.Loyalty` from the host's
``db`` and the model classes. Services call it for every read and write; it
owns transactions, per-member locks and retries (see
:mod:`flask_loyalty.transaction`). Writes on the hot paths are Core statements
against the models' tables: one round trip each, no unit-of-work overhead.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import functools
import typing as t

import sqlalchemy as sa
from flask import Flask

from .api_store import ApiResponseQueries
from .config import config_value
from .credit_store import CreditQueries
from .driver import Driver
from .driver import watched as driver_watched
from .errors import MemberClosed
from .errors import MemberNotFound
from .growth_store import GrowthQueries
from .history_store import HistoryQueries
from .lot_store import LotQueries
from .models import Models
from .order_store import OrderQueries
from .reward_store import RewardQueries
from .transaction import KeyTaken
from .transaction import note_write
from .transaction import run_atomic
from .transaction import write_count

T = t.TypeVar("T")

#: The execution option that marks a statement as a write (see :func:`writes`).
WRITES_OPTION = "loyalty_writes"


def writes(statement: T) -> T:
    """Mark ``statement`` as a write: a ``SELECT`` whose ``WITH`` inserts or updates.

    :meth:`LoyaltyStore.execute` notes a write before it runs one (inside a
    host's transaction, that opens the operation's savepoint); it tells an
    ``INSERT``, ``UPDATE`` or ``DELETE`` apart by itself, but not a
    ``SELECT`` whose common table expressions write.
    """
    return t.cast(T, t.cast(t.Any, statement).execution_options(**{WRITES_OPTION: True}))


class _Bound:
    """The running operation's session, and its connection once the first statement has run."""

    __slots__ = ("session", "conn", "drive", "standalone", "_cursor")

    def __init__(self, session: t.Any) -> None:
        self.session = session
        self.conn: sa.Connection | None = None
        #: Whether the hot statements run on the driver's cursor.
        self.drive = False
        #: Whether the operation runs on a connection of its own, not the session's.
        self.standalone = False
        self._cursor: t.Any = None

    def cursor(self) -> t.Any:
        """The DB-API cursor of :attr:`conn` that the operation's hot statements share."""
        if self._cursor is None:
            assert self.conn is not None, "the connection is looked up first"
            self._cursor = self.conn.connection.cursor()
        return self._cursor

    def close(self) -> None:
        """Close the operation's cursor, if it opened one."""
        if self._cursor is not None:
            cursor, self._cursor = self._cursor, None
            # A connection lost during the operation takes its cursors with it.
            with contextlib.suppress(Exception):
                cursor.close()


#: The operation running in this context (see :meth:`LoyaltyStore.atomic`).
_BOUND: contextvars.ContextVar[_Bound | None] = contextvars.ContextVar("loyalty_bound", default=None)


@dataclasses.dataclass(frozen=True)
class Balances:
    """A member's cached balances at one moment."""

    available: int
    pending: int
    reserved: int
    lifetime_earned: int

    def after(self, available: int = 0, pending: int = 0, reserved: int = 0, lifetime: int = 0) -> Balances:
        """The balances after applying the given deltas."""
        return Balances(
            self.available + available,
            self.pending + pending,
            self.reserved + reserved,
            self.lifetime_earned + lifetime,
        )


class LoyaltyStore(
    LotQueries, OrderQueries, RewardQueries, HistoryQueries, ApiResponseQueries, GrowthQueries, CreditQueries
):
    """Reads and writes of the ledger, members and lots.

    :param db: the host's :class:`flask_sqlalchemy.SQLAlchemy` instance.
    :param models: the model classes for the app's table prefix.
    """

    def __init__(self, db: t.Any, models: Models) -> None:
        #: The host's Flask-SQLAlchemy extension.
        self.db = db
        #: The model classes.
        self.models = models
        self.member = models.Member.__table__
        self.entry = models.LedgerEntry.__table__
        self.lot = models.PointsLot.__table__
        self.allocation = models.LotAllocation.__table__
        self.reservation = models.Reservation.__table__
        self.repair = models.Repair.__table__
        # Every ledger operation runs these; built once and executed with
        # parameters, they skip constructing the statement and its bound
        # values on each call (a large share of an operation's CPU time).
        m, e = self.member, self.entry
        self._lock_member = (
            sa.select(m.c.status, m.c.available, m.c.pending, m.c.reserved, m.c.lifetime_earned)
            .where(m.c.id == sa.bindparam("b_member"))
            .with_for_update()
        )
        self._set_balances = m.update().where(m.c.id == sa.bindparam("b_member"))
        # A credit's lock and balance update in one statement (where the
        # engine has UPDATE ... RETURNING): the balances move by deltas.
        self._move_balances = (
            m.update()
            .where(m.c.id == sa.bindparam("b_member"), m.c.status == "active")
            .values(
                available=m.c.available + sa.bindparam("d_available"),
                pending=m.c.pending + sa.bindparam("d_pending"),
                reserved=m.c.reserved + sa.bindparam("d_reserved"),
                lifetime_earned=m.c.lifetime_earned + sa.bindparam("d_lifetime"),
            )
            .returning(m.c.available, m.c.pending, m.c.reserved, m.c.lifetime_earned)
        )
        self._find_entry = (
            sa.select(e)
            .where(
                e.c.member_id == sa.bindparam("b_member"),
                e.c.kind == sa.bindparam("b_kind"),
                e.c.source_key == sa.bindparam("b_key"),
            )
            .with_for_update()
        )
        self._seek_entry = sa.select(e).where(
            e.c.member_id == sa.bindparam("b_member"),
            e.c.kind == sa.bindparam("b_kind"),
            e.c.source_key == sa.bindparam("b_key"),
        )
        self._insert_entry = e.insert()
        self._prepared: dict[str, t.Any] = {}
        #: Runs the hot statements on the DB-API cursor (see :mod:`flask_loyalty.driver`).
        self.driver = Driver()
        self._driven = {
            id(statement)
            for statement in (
                self._lock_member, self._set_balances, self._move_balances, self._find_entry,
                self._seek_entry, self._insert_entry, *self._lot_statements(),
            )
        }  # fmt: skip

    @property
    def session(self) -> t.Any:
        """The host's session for the current app context."""
        return self.db.session()

    @functools.cached_property
    def dialect(self) -> str:
        """The name of the database dialect (``sqlite``, ``postgresql``, ``mysql``)."""
        return str(self.session.get_bind().dialect.name)

    @functools.cached_property
    def returning(self) -> bool:
        """Whether the engine has ``UPDATE ... RETURNING`` and ``INSERT ... ON CONFLICT DO NOTHING``.

        PostgreSQL and SQLite 3.35+ have both. There, a credit locks the member
        and moves its balances in one statement, and an operation looks its
        source key up before it takes the member's lock, with the unique key
        as the guard (see :meth:`add_balances` and :meth:`insert_entry`).
        Elsewhere (MySQL, MariaDB) the member is locked first.
        """
        dialect = self.session.get_bind().dialect
        return dialect.name in ("postgresql", "sqlite") and bool(dialect.update_returning)

    def atomic(self, work: t.Callable[[], T], app: Flask | None = None, *, standalone: bool = False) -> T:
        """Run ``work`` in one write transaction, retrying on lock conflicts.

        On MySQL/MariaDB the transaction runs at ``READ COMMITTED``: once the
        member's row lock is held, every statement sees the latest committed
        rows (``REPEATABLE READ`` would read a snapshot older than the lock)
        and no gap locks are taken.

        Called while an operation runs (from inside another ``work``), ``work``
        is part of that operation: it runs in the same transaction.

        :param standalone: ``work`` reads and writes only through the store's
            statements (no ORM, no host callbacks that could use the session).
            When it starts its own transaction it then runs on a connection
            of its own from the session's engine
            (``LOYALTY_OWN_CONNECTION_ENABLED``), leaving the session untouched.
        """
        if _BOUND.get() is not None:
            return work()
        session = self.session

        def bound(conn: sa.Connection | None) -> T:
            # The operation's statements share one look-up of the session and
            # its connection (see :meth:`execute`).
            bound = _Bound(session)
            if conn is not None:
                bound.conn, bound.drive, bound.standalone = conn, self._drives(conn), True
            token = _BOUND.set(bound)
            try:
                return work()
            finally:
                _BOUND.reset(token)
                bound.close()

        # A session bound to a connection (a test suite's outer transaction)
        # keeps the operation in that connection's transaction, at its level.
        bind = session.get_bind()
        on_engine = isinstance(bind, sa.Engine)
        return run_atomic(
            session,
            bound,
            retries=int(config_value("LOCK_RETRIES", app)),
            delay=float(config_value("LOCK_RETRY_DELAY", app)),
            isolation_level="READ COMMITTED" if on_engine and self.dialect in ("mysql", "mariadb") else None,
            engine=bind if on_engine and standalone and config_value("OWN_CONNECTION_ENABLED", app) else None,
        )

    @staticmethod
    def _drives(conn: sa.Connection) -> bool:
        """Whether the hot statements run on ``conn``'s DB-API cursor."""
        return bool(config_value("DRIVER_STATEMENTS_ENABLED")) and not driver_watched(conn)

    def fresh(self, query: T) -> T:
        """Make ``query`` read the latest committed rows inside a write transaction.

        On MySQL/MariaDB an operation that joined a host transaction keeps its
        ``REPEATABLE READ`` snapshot, which may predate the member's lock; a
        shared-lock read sees the latest rows instead. Other engines read the
        latest committed rows after the lock anyway.
        """
        if self.dialect in ("mysql", "mariadb"):
            return t.cast(T, query.with_for_update(read=True))  # type: ignore[attr-defined]
        return query

    def prepared(self, name: str, build: t.Callable[[], T], *, driven: bool = False) -> T:
        """The statement ``name``: built by ``build`` on first use, then reused.

        For statements on hot paths outside the store (the sweeps' checks),
        built with ``sa.bindparam`` and executed with values.

        :param driven: run it on the DB-API cursor when it can be (see
            :mod:`flask_loyalty.driver`). Its results then offer ``first()``,
            ``one()``, ``all()``, ``rowcount`` and ``inserted_primary_key``.
        """
        statement = self._prepared.get(name)
        if statement is None:
            statement = self._prepared[name] = build()
            if driven:
                self._driven.add(id(statement))
        return t.cast(T, statement)

    def execute(self, statement: t.Any, params: t.Any = None) -> t.Any:
        """Execute a Core statement in the running operation's transaction.

        The statement runs on the operation's connection (its own, or the
        session's; outside an operation, the session's), without the ORM's
        handling of a statement (Core statements on tables need none; it costs
        a tenth of a ledger operation's CPU time). The ledger's hot statements
        run on the connection's DB-API cursor unless the engine's statements
        are watched (see :mod:`flask_loyalty.driver`). Every write is noted first
        (:func:`~flask_loyalty.transaction.note_write`): inside a host's
        transaction that opens the operation's savepoint. A write is an
        ``INSERT``, ``UPDATE`` or ``DELETE``, or a statement marked
        :func:`writes` (a ``SELECT`` whose ``WITH`` writes).
        """
        bound = _BOUND.get()
        session = self.db.session() if bound is None else bound.session
        if statement.is_dml or statement.get_execution_options().get(WRITES_OPTION):
            note_write(session)
        if bound is not None and bound.conn is not None:
            conn, drive = bound.conn, bound.drive
        else:
            conn = session.connection()
            drive = self._drives(conn)
            if bound is not None:
                # Inside :meth:`atomic`: the transaction keeps this connection
                # (a savepoint is opened on it) until the operation ends.
                bound.conn, bound.drive = conn, drive
        if drive and id(statement) in self._driven:
            result = self.driver.run(conn, statement, params, None if bound is None else bound.cursor())
            if result is not None:
                return result
        return conn.execute(statement, params)

    def write_count(self) -> int:
        """How many writes the session's current operation has made so far.

        A read taken when the count was ``n`` is still current while it is ``n``.
        """
        return write_count(self.session)

    # -- members ---------------------------------------------------------------

    def add_member(self, **values: t.Any) -> t.Any:
        """Insert a member through the ORM and return it (flushed, not committed)."""
        session = self._orm_session()
        member = self.models.Member(**values)
        note_write(session)
        session.add(member)
        session.flush()
        return member

    def get_member(self, member_id: int) -> t.Any:
        """Return the ORM member with ``member_id``, or ``None``."""
        return self._orm_session().get(self.models.Member, member_id)

    def _orm_session(self) -> t.Any:
        """The session, for the store's ORM reads and writes.

        :raises RuntimeError: inside a standalone operation, whose transaction
            is not the session's.
        """
        bound = _BOUND.get()
        if bound is not None and bound.standalone:
            raise RuntimeError("A standalone operation (see LoyaltyStore.atomic) cannot use the ORM.")
        return self.session

    def lock_member(self, member_id: int, *, active: bool = True) -> Balances:
        """Lock the member's row for this transaction and return its balances.

        :raises MemberNotFound: if there is no such member.
        :raises MemberClosed: if ``active`` and the member is closed.
        """
        return self.balances_of(
            self.execute(self._lock_member, {"b_member": member_id}).first(), member_id, active=active
        )

    def balances_of(self, row: t.Any, member_id: int, *, active: bool = True) -> Balances:
        """The balances of a member's row read with its lock (``None``: no such member).

        :raises MemberNotFound: if ``row`` is ``None``.
        :raises MemberClosed: if ``active`` and the member is closed.
        """
        if row is None:
            raise MemberNotFound(f"No member has id {member_id}.")
        if active and row.status != "active":
            raise MemberClosed(f"Member {member_id} is closed.")
        return Balances(row.available, row.pending, row.reserved, row.lifetime_earned)

    def lock_members(self, member_ids: t.Iterable[int]) -> None:
        """Lock several members' rows in id order (a deadlock-free order)."""
        ids = sorted(set(member_ids))
        if ids:
            m = self.member
            self.execute(
                sa.select(m.c.id).where(self.among(m.c.id, ids)).order_by(m.c.id).with_for_update()
            ).all()

    def among(self, column: sa.ColumnElement[t.Any], ids: t.Sequence[int]) -> sa.ColumnElement[bool]:
        """``column IN ids``; on PostgreSQL ``column = ANY(:ids)``, the ids bound as one array.

        A chunk of a job binds thousands of ids in each of its statements:
        one array parameter costs far less than one parameter per id.
        """
        if self.dialect == "postgresql":
            return _any(column, sa.bindparam(None, self.ids_value(ids), type_=sa.Text()))
        return column.in_(ids)

    def among_bound(self, column: sa.ColumnElement[t.Any], name: str) -> sa.ColumnElement[bool]:
        """``column IN :name``, for a statement built once: bind :meth:`ids_value` to ``name``."""
        if self.dialect == "postgresql":
            return _any(column, sa.bindparam(name, type_=sa.Text()))
        return column.in_(sa.bindparam(name, expanding=True))

    def ids_value(self, ids: t.Iterable[int]) -> t.Any:
        """The value that binds ``ids`` to an :meth:`among_bound` parameter.

        On PostgreSQL the array's text (``{1,2,3}``), cast on the server: the
        driver's adaptation of a list, element by element, cost more CPU
        time than the statements it was bound to.
        """
        if self.dialect == "postgresql":
            return "{" + ",".join(map(str, map(int, ids))) + "}"
        return list(ids)

    def set_balances(self, member_id: int, balances: Balances) -> None:
        """Write the member's cached balances."""
        self.execute(
            self._set_balances,
            {
                "b_member": member_id,
                "available": balances.available,
                "pending": balances.pending,
                "reserved": balances.reserved,
                "lifetime_earned": balances.lifetime_earned,
            },
        )

    def add_balances(
        self, member_id: int, available: int = 0, pending: int = 0, reserved: int = 0, lifetime: int = 0
    ) -> Balances:
        """Lock an active member's row, move its balances by the deltas and return them.

        One ``UPDATE ... RETURNING`` where the engine has it (see
        :attr:`returning`), else a locking read and an update.

        :raises MemberNotFound: if there is no such member.
        :raises MemberClosed: if the member is closed (nothing is changed).
        """
        if not self.returning:
            after = self.lock_member(member_id).after(available, pending, reserved, lifetime)
            self.set_balances(member_id, after)
            return after
        row = self.execute(
            self._move_balances,
            {
                "b_member": member_id,
                "d_available": available,
                "d_pending": pending,
                "d_reserved": reserved,
                "d_lifetime": lifetime,
            },
        ).first()
        if row is None:
            self.lock_member(member_id)  # raises MemberNotFound or MemberClosed
            raise MemberClosed(f"Member {member_id} is closed.")  # pragma: no cover - defensive
        return Balances(row.available, row.pending, row.reserved, row.lifetime_earned)

    def close_member(self, member_id: int, now: dt.datetime) -> None:
        """Mark the member closed (a closed member keeps its first ``closed_at``)."""
        m = self.member
        self.execute(
            m.update()
            .where(m.c.id == member_id, m.c.status != "closed")
            .values(status="closed", closed_at=now)
        )

    # -- entries ---------------------------------------------------------------

    def find_entry(self, member_id: int, kind: str, key: str) -> t.Any:
        """The entry with this member, kind and source key, or ``None`` (locking read)."""
        return self.execute(self._find_entry, {"b_member": member_id, "b_kind": kind, "b_key": key}).first()

    def seek_entry(self, member_id: int, kind: str, key: str) -> t.Any:
        """The entry with this member, kind and source key, or ``None`` (a plain read).

        For engines with :attr:`returning`, where an operation looks its key up
        before it locks the member: the latest committed entry, or none, and
        :meth:`insert_entry` with ``unseen=True`` catches a concurrent one.
        """
        return self.execute(self._seek_entry, {"b_member": member_id, "b_kind": kind, "b_key": key}).first()

    def get_entry(self, entry_id: int) -> t.Any:
        """The entry row with ``entry_id``, or ``None``."""
        return self.execute(sa.select(self.entry).where(self.entry.c.id == entry_id)).first()

    def insert_entry(self, values: dict[str, t.Any], *, unseen: bool = False) -> int:
        """Append an entry and return its id.

        :param unseen: the entry's source key was looked up without the
            member's lock (:meth:`seek_entry`). The insert then skips a
            duplicate key (``ON CONFLICT DO NOTHING``, which leaves the
            transaction usable) and raises
            :class:`~flask_loyalty.transaction.KeyTaken` instead, so that the
            operation is replayed and finds the concurrent entry.
        """
        if not unseen:
            result = self.execute(self._insert_entry, values)
            return int(result.inserted_primary_key[0])
        return self.insert_unless_taken(self.entry, values, KeyTaken.of_source_key(values["source_key"]))

    def insert_unless_taken(self, table: sa.Table, values: dict[str, t.Any], taken: KeyTaken) -> int:
        """Insert a row into ``table`` and return its id, unless a unique key of it is taken.

        The insert skips a duplicate (``INSERT ... ON CONFLICT DO NOTHING``,
        PostgreSQL and SQLite), which leaves the transaction usable, and
        raises ``taken``, a :class:`~flask_loyalty.transaction.KeyTaken`
        saying what was taken: the operation is replayed and finds the row
        that took it.
        """

        def build() -> t.Any:
            from sqlalchemy.dialects import postgresql
            from sqlalchemy.dialects import sqlite

            insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
            return insert(table).on_conflict_do_nothing().returning(table.c.id)

        row = self.execute(
            self.prepared(f"insert_unless_taken:{table.name}", build, driven=True), values
        ).first()
        if row is None:
            raise taken
        return int(row[0])

    def reversed_points(self, entry_id: int) -> int:
        """The nominal points already reversed of the entry ``entry_id`` (positive)."""
        e = self.entry
        total = self.execute(
            self.fresh(
                sa.select(sa.func.coalesce(sa.func.sum(e.c.points), 0)).where(
                    e.c.reverses_id == entry_id, e.c.kind == "reverse"
                )
            )
        ).scalar_one()
        return abs(int(total))

    def history(self, member_id: int, *, limit: int = 50, before_id: int | None = None) -> list[t.Any]:
        """The member's most recent entries, newest first (keyset pagination)."""
        e = self.entry
        query = sa.select(e).where(e.c.member_id == member_id)
        if before_id is not None:
            query = query.where(e.c.id < before_id)
        return list(self.execute(query.order_by(e.c.id.desc()).limit(limit)).all())

    # -- reservations ----------------------------------------------------------

    def find_reservation(self, member_id: int, key: str) -> t.Any:
        """The reservation with this member and key (locking read), or ``None``."""
        r = self.reservation
        return self.execute(
            sa.select(r).where(r.c.member_id == member_id, r.c.source_key == key).with_for_update()
        ).first()

    def insert_reservation(self, values: dict[str, t.Any]) -> int:
        """Create a reservation and return its id."""
        return int(self.execute(self.reservation.insert().values(**values)).inserted_primary_key[0])

    def set_reservation_status(self, reservation_id: int, status: str) -> None:
        """Move a reservation to ``captured`` or ``released``."""
        r = self.reservation
        self.execute(r.update().where(r.c.id == reservation_id).values(status=status))

    def due_reservations(self, now: dt.datetime, limit: int) -> list[t.Any]:
        """Held reservations whose time-to-live has run out."""
        r = self.reservation
        return list(
            self.execute(
                sa.select(r.c.member_id, r.c.source_key)
                .where(r.c.status == "held", r.c.expires_at <= now)
                .order_by(r.c.id)
                .limit(limit)
            ).all()
        )


def _any(column: sa.ColumnElement[t.Any], text: sa.BindParameter[t.Any]) -> sa.ColumnElement[bool]:
    """``column = ANY(CAST(:text AS type[]))`` (PostgreSQL)."""
    from sqlalchemy.dialects.postgresql import ARRAY

    return column == sa.any_(sa.cast(text, ARRAY(column.type)))
