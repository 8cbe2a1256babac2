"""Write transactions: per-member locking, retries and SQLite's write lock.

A ledger operation runs as one database transaction on the host's
Flask-SQLAlchemy session. :func:`run_atomic` begins it, runs the operation,
commits, and replays the whole operation when the database reports a deadlock,
a serialization failure or a busy lock, up to ``LOYALTY_LOCK_RETRIES`` times.

If the host has already written in the session's current transaction
(pending or flushed changes), the operation joins that transaction so that the
host's writes and the loyalty writes commit together. The operation's writes
run in a savepoint there, opened just before its first write (an operation
that fails before it writes has nothing to undo): if it fails, only its own
writes are undone. An operation that has made all its checks before it writes
(:func:`checks_passed`, e.g. an earn) needs no savepoint: a database error
during its writes rolls the whole transaction back. An operation inside the
host's transaction cannot be replayed, so a retryable failure rolls the whole
transaction back and raises :class:`~flask_loyalty.errors.ConcurrencyError`.

Inside the host's commit (lifecycle hooks that :mod:`flask_loyalty.autohooks`
runs while the host's session commits, flagged by :data:`IN_HOST_COMMIT` in
``session.info``), the operation runs in a savepoint of the transaction being
committed and is never committed by :func:`run_atomic`: the host's commit
commits it, or its rollback undoes it.

An operation that starts its own transaction and calls no code that could use
the session (see :meth:`~flask_loyalty.store.LoyaltyStore.atomic`) runs on a
connection of its own, checked out of the session's engine, instead of through
the session: the session's transaction bookkeeping (a transaction object, its
events, expiring what it holds) costs a fifth of a paid order's CPU time. The
session is left as it was, outside any transaction.

On SQLite, a write transaction starts with ``BEGIN IMMEDIATE``, which takes
the database's write lock at once, so two writers never interleave.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import random
import sqlite3
import time
import typing as t

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from .errors import ConcurrencyError
from .errors import LoyaltyError

T = t.TypeVar("T")

#: Set while :func:`run_atomic` begins a write transaction (``BEGIN IMMEDIATE`` on SQLite).
_WRITER: contextvars.ContextVar[bool] = contextvars.ContextVar("loyalty_writer", default=False)
_FLUSHED = "loyalty_host_flushed"
#: ``session.info`` keys: the operation running inside a host's transaction,
#: and the number of writes made through the store.
_JOINED = "loyalty_joined"
_WRITES = "loyalty_writes"
#: The ``session.info`` flag that is set while the session runs lifecycle hooks
#: inside its own commit (see :mod:`flask_loyalty.autohooks`); :func:`run_atomic`
#: then neither begins nor commits a transaction.
IN_HOST_COMMIT = "loyalty_in_host_commit"
_SQLITE_RETRY_STATES = ("database is locked", "database table is locked", "busy")
#: PostgreSQL SQLSTATEs: serialization_failure, deadlock_detected, lock_not_available.
_PG_RETRY_STATES = frozenset({"40001", "40P01", "55P03"})
#: MySQL/MariaDB errors: lock wait timeout, deadlock, record changed since last read.
_MYSQL_RETRY_CODES = frozenset({1205, 1213, 1020})


class KeyTaken(Exception):
    """A concurrent transaction committed an entry with the operation's source key.

    Raised by an insert that found the key taken after the operation had
    looked it up and found it free (see
    :meth:`~flask_loyalty.store.LoyaltyStore.insert_entry`). It is retryable:
    the replayed operation finds the other transaction's entry and returns it.
    """

    @classmethod
    def of_source_key(cls, key: str) -> KeyTaken:
        """The error for an entry whose source key ``key`` a concurrent transaction took."""
        return cls(f"Source key {key!r} was used by a concurrent transaction.")


class _Joined:
    """An operation running inside the host's transaction: when to open its savepoint."""

    __slots__ = ("session", "savepoint", "unguarded", "checked")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.savepoint: t.Any = None
        #: Whether the operation wrote outside a savepoint.
        self.unguarded = False
        #: Whether the operation declared its checks passed.
        self.checked = False

    def writing(self) -> None:
        if self.savepoint is None and not self.unguarded:
            if self.checked:
                self.unguarded = True
            else:
                self.savepoint = self.session.begin_nested()
                # Emit the SAVEPOINT now: the store runs the operation's
                # statements on the connection it looked up before.
                self.session.connection()


def note_write(session: Session) -> None:
    """Note that the store is about to write with ``session``.

    Counts the write (see :func:`write_count`); inside a host's transaction,
    the operation's first write opens its savepoint.
    """
    info = session.info
    info[_WRITES] = info.get(_WRITES, 0) + 1
    joined = info.get(_JOINED)
    if joined is not None:
        joined.writing()


def write_count(session: Session) -> int:
    """How many writes the store has made with ``session`` (a read is current while it is unchanged)."""
    return int(session.info.get(_WRITES, 0))


def checks_passed(session: Session) -> None:
    """Declare that the running operation has made all its checks.

    What is left of it only writes, and fails only if the database fails,
    or refuses (a :class:`~flask_loyalty.errors.LoyaltyError`) only with a
    statement that wrote nothing, such as a credit's update of a member that
    turns out to be closed. Inside a host's transaction its writes then need
    no savepoint: if they fail, the whole transaction is rolled back.
    Elsewhere this does nothing.
    """
    joined = session.info.get(_JOINED)
    if joined is not None:
        joined.checked = True


def install_sqlite_locking(engine: sa.engine.Engine) -> None:
    """Make ``engine`` (SQLite) begin transactions explicitly.

    Every transaction begins with ``BEGIN``, and a loyalty write transaction
    with ``BEGIN IMMEDIATE``. The pysqlite driver is put in autocommit mode so
    that it emits no ``BEGIN`` of its own, and the engine's dialect emits one
    when SQLAlchemy begins a transaction (its ``do_begin``, which does nothing
    for pysqlite). That is SQLAlchemy's documented recipe for SQLite
    transactions, without a ``begin`` listener: an engine with listeners of
    its own dispatches events for every connection and statement. Installing
    twice is harmless.
    """
    if engine.dialect.name != "sqlite" or getattr(engine, "_loyalty_locking", False):
        return
    engine._loyalty_locking = True  # type: ignore[attr-defined]

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: t.Any, record: t.Any) -> None:
        dbapi_connection.isolation_level = None

    def do_begin(dbapi_connection: t.Any) -> None:
        # Errors are SQLAlchemy's to raise: Connection.begin() wraps this call.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE" if _WRITER.get() else "BEGIN")
        finally:
            cursor.close()

    engine.dialect.do_begin = do_begin  # type: ignore[method-assign]
    # Connections opened before the listener existed are discarded.
    engine.pool.dispose()


def track_host_flushes(session_class: t.Any) -> None:
    """Record in ``session.info`` whether the current transaction has flushed.

    That is how :func:`run_atomic` tells a transaction the host has written in
    (which it must join) from one that has only read (which it may close).
    """
    if getattr(session_class, "_loyalty_tracked", False):
        return
    session_class._loyalty_tracked = True

    @event.listens_for(session_class, "after_flush")
    def _flushed(session: Session, context: t.Any) -> None:
        session.info[_FLUSHED] = True

    @event.listens_for(session_class, "after_transaction_end")
    def _ended(session: Session, transaction: t.Any) -> None:
        if transaction.parent is None:
            session.info.pop(_FLUSHED, None)


def is_retryable(error: BaseException) -> bool:
    """Whether ``error`` is a deadlock, serialization failure, busy lock or :class:`KeyTaken`."""
    if isinstance(error, KeyTaken):
        return True
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    orig = error.orig
    if getattr(orig, "sqlstate", None) in _PG_RETRY_STATES:
        return True
    if isinstance(orig, sqlite3.OperationalError):
        return any(state in str(orig) for state in _SQLITE_RETRY_STATES)
    args: tuple[t.Any, ...] = getattr(orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _MYSQL_RETRY_CODES


def host_has_written(session: Session) -> bool:
    """Whether the session's transaction holds writes of the host's."""
    return bool(session.new or session.dirty or session.deleted or session.info.get(_FLUSHED))


def run_atomic(
    session: Session,
    work: t.Callable[[sa.Connection | None], T],
    *,
    retries: int,
    delay: float,
    isolation_level: str | None = None,
    engine: sa.Engine | None = None,
) -> T:
    """Run ``work`` in one write transaction and commit it.

    :param session: the host's session.
    :param work: the operation; it may run more than once, so it must do
        nothing but database work through the session. It is called with the
        connection of its own it runs on, or ``None`` when it runs through
        the session.
    :param retries: how many times a retryable failure is retried.
    :param delay: the base of the exponential back-off, in seconds.
    :param isolation_level: the isolation level of the transaction when the
        operation starts its own.
    :param engine: run the operation on a connection of this engine's when it
        starts its own transaction (``None``: through the session).
    :raises ConcurrencyError: when the retries are used up, or at once when the
        operation joined a host transaction or runs inside the host's commit.
    """
    if session.info.get(IN_HOST_COMMIT):
        return _run_in_commit(session, functools.partial(work, None))
    options = {"isolation_level": isolation_level} if isolation_level else None
    if host_has_written(session):
        if not session.in_transaction():
            # The host's writes are still unflushed: begin as a writer.
            _begin_writing(session, options)
        return _run_joined(session, functools.partial(work, None))
    if session.in_transaction():
        # A transaction that has only read: end it so that ours begins with
        # the write lock and can be replayed (and, on SQLite, so that the
        # session holds no read lock that our commit would wait for).
        session.commit()
    if engine is not None:
        return _retrying(functools.partial(_on_own_connection, engine, work, options), retries, delay)
    return _retrying(functools.partial(_through_session, session, work, options), retries, delay)


def _retrying(once: t.Callable[[], T], retries: int, delay: float) -> T:
    """Call ``once`` until it succeeds, retrying retryable failures with back-off.

    ``once`` runs a whole transaction and leaves nothing behind when it fails.
    """
    attempt = 0
    while True:
        try:
            return once()
        except BaseException as error:
            if not is_retryable(error):
                raise
            if attempt >= retries:
                raise ConcurrencyError(
                    "The database stayed busy (deadlock, serialization failure or lock "
                    f"timeout) after {attempt + 1} attempt(s); nothing was written."
                ) from error
            attempt += 1
            time.sleep(delay * (2 ** (attempt - 1)) * (0.5 + random.random()))


def _through_session(
    session: Session, work: t.Callable[[sa.Connection | None], T], options: dict[str, t.Any] | None
) -> T:
    """One attempt in the session's transaction: begin, run, commit (or roll back)."""
    try:
        _begin_writing(session, options)
        result = work(None)
        session.commit()
        return result
    except BaseException:
        session.rollback()
        raise


def _on_own_connection(
    engine: sa.Engine, work: t.Callable[[sa.Connection | None], T], options: dict[str, t.Any] | None
) -> T:
    """One attempt on a connection of its own: begin, run, commit; closing rolls back the rest."""
    conn = engine.connect()
    try:
        if options:
            conn.execution_options(**options)
        token = _WRITER.set(True)
        try:
            conn.begin()
        finally:
            _WRITER.reset(token)
        result = work(conn)
        conn.commit()
        return result
    except BaseException:
        # A COMMIT that failed may leave the transaction open (SQLite keeps it
        # after a busy COMMIT), though SQLAlchemy counts it as ended: rolling
        # back first makes the pool's reset end it before the connection is reused.
        # A rollback that fails too (a lost connection) must not hide the
        # error: closing then discards the connection.
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        conn.close()


def _begin_writing(session: Session, options: dict[str, t.Any] | None) -> None:
    """Begin the session's transaction as a write transaction."""
    token = _WRITER.set(True)
    try:
        session.connection(execution_options=options)
    finally:
        _WRITER.reset(token)


def _doomed(error: BaseException) -> bool:
    """Whether ``error``, raised out of a savepoint, is a deadlock or serialization failure.

    MySQL ends the whole transaction on a deadlock, so that rolling back to
    the savepoint fails too ("SAVEPOINT ... does not exist"): the deadlock is
    then that failure's context.
    """
    return is_retryable(error) or (error.__context__ is not None and is_retryable(error.__context__))


def _run_joined(session: Session, work: t.Callable[[], T]) -> T:
    """Run ``work`` inside the host's transaction, then commit both together.

    The operation's writes run in a savepoint, opened at its first write:
    when it fails (insufficient points, a conflict), only its own writes are
    undone and the host's stay pending in the host's transaction. A deadlock
    or serialization failure dooms the whole transaction, which cannot be
    replayed from here: it is rolled back and
    :class:`~flask_loyalty.errors.ConcurrencyError` raised. So is any failure
    that leaves writes of the operation that no savepoint covers (after
    :func:`checks_passed`), or a database error that may have aborted the
    transaction (PostgreSQL) with no savepoint to return to; the error is
    then re-raised as it is.
    """
    if session.new or session.dirty or session.deleted:
        # The host's pending writes go first, as they would before a savepoint.
        session.flush()
    outer = session.info.get(_JOINED)
    joined = session.info[_JOINED] = _Joined(session)
    try:
        result = work()
        if joined.savepoint is not None:
            joined.savepoint.commit()
    except BaseException as error:
        if _doomed(error):
            session.rollback()
            raise ConcurrencyError(
                "The database reported a deadlock or serialization failure inside the host's "
                "transaction; it was rolled back and nothing was written."
            ) from error
        if (joined.unguarded and not isinstance(error, LoyaltyError)) or (
            joined.savepoint is None and isinstance(error, sa_exc.DBAPIError)
        ):
            session.rollback()
        elif joined.savepoint is not None and joined.savepoint.is_active:
            joined.savepoint.rollback()
        raise
    finally:
        if outer is None:
            session.info.pop(_JOINED, None)
        else:
            session.info[_JOINED] = outer
    session.commit()
    return result


def _run_in_commit(session: Session, work: t.Callable[[], T]) -> T:
    """Run ``work`` inside the transaction that the host's session is committing.

    Nothing is committed here: the host's commit, which is running, commits the
    operation with the host's writes. The operation runs in a savepoint so that
    a failure (insufficient points, a lost race to enrol a user) undoes only
    its own writes and leaves the transaction usable. A deadlock or
    serialization failure cannot be replayed from inside a commit: it raises
    :class:`~flask_loyalty.errors.ConcurrencyError`, the host's commit fails,
    and the host rolls back.
    """
    try:
        with session.begin_nested():
            return work()
    except BaseException as error:
        if not _doomed(error):
            raise
        raise ConcurrencyError(
            "The database reported a deadlock or serialization failure while the host's "
            "transaction was committing; roll it back and try again."
        ) from error
