"""Write transactions: joining the host's transaction, retries, busy databases."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
import time
import typing as t
from decimal import Decimal

import pytest
import sqlalchemy as sa

from flask_loyalty import ConcurrencyError
from flask_loyalty import InsufficientPoints
from flask_loyalty import MemberClosed
from flask_loyalty import members
from flask_loyalty import orders
from flask_loyalty import points
from flask_loyalty.adapters import OrderData
from flask_loyalty.rules import LineContext
from flask_loyalty.transaction import is_retryable

from .conftest import close_app
from .conftest import engine_url
from .conftest import ledger_sum
from .conftest import make_app


@pytest.fixture
def host_note(app_ctx: None, db: t.Any) -> t.Iterator[t.Any]:
    """A model of the host shop's own, with its table created for the test."""

    class Note(db.Model):  # type: ignore[name-defined]
        __tablename__ = "host_note"
        id = sa.Column(sa.Integer, primary_key=True)
        text = sa.Column(sa.String(50))

    Note.__table__.drop(db.engine, checkfirst=True)
    Note.__table__.create(db.engine)
    yield Note
    db.session.remove()
    Note.__table__.drop(db.engine)


def _notes(db: t.Any) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT text FROM host_note ORDER BY id")).scalars())


def test_operation_commits_the_hosts_pending_writes_with_its_own(db, member, host_note):
    db.session.add(host_note(text="order 1042 paid"))
    posting = points.earn(member, 300, key="order:1042")
    assert _notes(db) == ["order 1042 paid"]
    assert ledger_sum(db, member.id) == 300 == posting.available_after


def test_failed_joined_operation_keeps_the_hosts_writes_pending(db, member, host_note):
    db.session.add(host_note(text="kept"))
    db.session.flush()
    with pytest.raises(InsufficientPoints):
        points.redeem(member, 10, key="r")
    # The host's write is still in its transaction: the host decides.
    assert [n.text for n in db.session.execute(sa.select(host_note)).scalars()] == ["kept"]
    db.session.commit()
    assert _notes(db) == ["kept"]
    assert ledger_sum(db, member.id) == 0


def test_credit_in_the_hosts_transaction_needs_no_savepoint(db, member, host_note, statements):
    """An earn makes its checks before it writes: its writes join the host's
    transaction without a savepoint, and the member is locked by the update of
    its balances."""
    db.session.add(host_note(text="order 7 paid"))
    db.session.flush()
    seen = statements()
    posting = points.earn(member, 40, key="order:7")
    assert "SAVEPOINT" not in seen and "RELEASE" not in seen
    assert seen.count("UPDATE") == 1 and seen.count("INSERT") == 2
    assert _notes(db) == ["order 7 paid"]
    assert ledger_sum(db, member.id) == 40 == posting.available_after


def test_refused_credit_keeps_the_hosts_writes_pending(db, member, host_note):
    """A credit to a closed member is refused by the update that would lock it,
    which writes nothing: the host's writes stay pending in its transaction."""
    members.close(member)
    db.session.add(host_note(text="kept"))
    db.session.flush()
    with pytest.raises(MemberClosed):
        points.earn(member, 10, key="order:8")
    db.session.commit()
    assert _notes(db) == ["kept"]
    assert ledger_sum(db, member.id) == 0


def test_failed_debit_in_the_hosts_transaction_undoes_its_writes(db, member, clock, host_note, statements):
    """A debit writes before its last check (it expires a due lot first): its
    writes run in a savepoint, which its refusal rolls back."""
    points.earn(member, 30, key="a", expires_at=clock() + dt.timedelta(days=1))
    clock.advance(days=2)
    db.session.add(host_note(text="kept"))
    db.session.flush()
    seen = statements()
    with pytest.raises(InsufficientPoints):
        points.redeem(member, 10, key="r")
    assert "SAVEPOINT" in seen
    db.session.commit()
    assert _notes(db) == ["kept"]
    assert members.balances(member).available == 30  # the expiry was undone with the refusal
    assert ledger_sum(db, member.id) == 30


def test_replay_in_the_hosts_transaction_writes_nothing(db, member, host_note, statements):
    points.earn(member, 40, key="order:9")
    db.session.add(host_note(text="again"))
    db.session.flush()
    seen = statements()
    assert points.earn(member, 40, key="order:9").replayed
    assert [s for s in seen if s in ("INSERT", "UPDATE", "DELETE", "SAVEPOINT")] == []
    db.session.commit()
    assert ledger_sum(db, member.id) == 40


def test_operation_after_host_reads_runs_in_its_own_transaction(db, member, host_note):
    db.session.execute(sa.select(host_note)).all()  # a read opens a transaction
    points.earn(member, 5, key="a")
    db.session.rollback()  # nothing of the host's to lose, nothing of ours undone
    assert ledger_sum(db, member.id) == 5


def _sqlite_app(tmp_path: t.Any, clock: t.Any, retries: int, *, own: bool = True) -> tuple[t.Any, t.Any]:
    return make_app(
        engine_url("sqlite", tmp_path),
        clock,
        {
            "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"timeout": 0.05}},
            "LOYALTY_LOCK_RETRIES": retries,
            "LOYALTY_LOCK_RETRY_DELAY": 0.05,
            "LOYALTY_OWN_CONNECTION_ENABLED": own,
        },
    )


def _enrolled(app: t.Any, db: t.Any) -> int:
    """Create the tables and enrol a member; return its id."""
    with app.app_context():
        db.create_all()
        return int(members.enroll(name="m").id)


@contextlib.contextmanager
def _raw_lock(tmp_path: t.Any, *statements: str) -> t.Iterator[sqlite3.Connection]:
    """A raw connection to the test database, holding the lock that ``statements`` take."""
    conn = sqlite3.connect(tmp_path / "loyalty.sqlite", isolation_level=None, check_same_thread=False)
    try:
        for statement in statements:
            conn.execute(statement).fetchall()
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def test_busy_database_is_retried_then_reported(tmp_path, clock):
    app, db = _sqlite_app(tmp_path, clock, retries=2)
    member = _enrolled(app, db)
    with _raw_lock(tmp_path, "BEGIN IMMEDIATE"):
        with app.app_context(), pytest.raises(ConcurrencyError, match="after 3 attempt"):
            points.earn(member, 10, key="k")
    with app.app_context():
        assert ledger_sum(db, member) == 0
        assert points.earn(member, 10, key="k").replayed is False
    close_app(app)


@pytest.mark.parametrize("own", [True, False], ids=["own connection", "session"])
def test_a_commit_kept_waiting_by_a_reader_is_retried_then_reported(tmp_path, clock, own):
    """SQLite's COMMIT waits for readers; when it gives up, its transaction must not linger."""
    app, db = _sqlite_app(tmp_path, clock, retries=1, own=own)
    member = _enrolled(app, db)
    # The reader's read lock lasts until its transaction ends.
    with _raw_lock(tmp_path, "BEGIN", "SELECT * FROM loyalty_member"):
        with app.app_context(), pytest.raises(ConcurrencyError, match="after 2 attempt"):
            points.earn(member, 10, key="k")
    with app.app_context():
        # The connection that failed to commit went back to the pool with its
        # transaction rolled back: the next operations begin on it as usual.
        assert points.earn(member, 10, key="k").replayed is False
        assert points.earn(member, 5, key="l").available_after == 15
        assert ledger_sum(db, member) == 15
    close_app(app)


def test_busy_database_succeeds_once_the_lock_is_gone(tmp_path, clock):
    app, db = _sqlite_app(tmp_path, clock, retries=8)
    member = _enrolled(app, db)
    with _raw_lock(tmp_path, "BEGIN IMMEDIATE") as blocker:

        def unblock() -> None:
            time.sleep(0.2)
            blocker.execute("ROLLBACK")

        thread = threading.Thread(target=unblock)
        thread.start()
        with app.app_context():
            assert points.earn(member, 10, key="k").available_after == 10
        thread.join()
    close_app(app)


def test_lock_timeouts_are_recognised_as_retryable(app, db, engine):
    """A real lock conflict on each engine is classified as retryable."""
    with app.app_context():
        member = members.enroll(name="m").id
        table = db.metadata.tables["loyalty_member"]
        holder = db.engine.connect()
        holder.begin()
        holder.execute(sa.select(table).where(table.c.id == member).with_for_update())
        waiter = db.engine.connect()
        waiter.begin()
        try:
            if engine == "postgresql":
                statement = sa.select(table).where(table.c.id == member).with_for_update(nowait=True)
            elif engine == "mysql":
                waiter.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 1"))
                statement = sa.select(table).where(table.c.id == member).with_for_update()
            else:
                holder.execute(table.update().values(name="held"))
                waiter.execute(sa.text("PRAGMA busy_timeout = 10"))
                statement = table.update().values(name="waiting")
            with pytest.raises(sa.exc.DBAPIError) as info:
                waiter.execute(statement)
            assert is_retryable(info.value)
        finally:
            waiter.rollback()
            waiter.close()
            holder.rollback()
            holder.close()


# -- standalone operations: a connection of their own ---------------------------


def _session_begins(db: t.Any) -> list[str]:
    """Record each transaction the app context's session begins from now on."""
    begun: list[str] = []
    sa.event.listen(db.session(), "after_begin", lambda session, transaction, conn: begun.append("begin"))
    return begun


def _paid(reference: str, member_id: int, amount: str) -> OrderData:
    price = Decimal(amount)
    return OrderData(reference, member_id, "USD", price, (LineContext("TEA", 1, price),))


def test_ledger_operations_leave_the_session_outside_a_transaction(db, member):
    member_id = member.id
    db.session.commit()
    begun = _session_begins(db)
    points.earn(member_id, 300, key="a")
    points.redeem(member_id, 100, key="b")
    outcome = orders.order_paid(_paid("1042", member_id, "12.00"))
    assert outcome.points == 120
    assert begun == []
    assert not db.session().in_transaction()
    assert db.engine.pool.checkedout() == 0
    assert ledger_sum(db, member_id) == 320 == members.balances(member_id).available


@pytest.mark.settings(LOYALTY_OWN_CONNECTION_ENABLED=False)
def test_with_own_connections_off_operations_run_through_the_session(db, member):
    member_id = member.id
    db.session.commit()
    begun = _session_begins(db)
    points.earn(member_id, 300, key="a")
    orders.order_paid(_paid("1042", member_id, "12.00"))
    assert begun == ["begin", "begin"]
    assert ledger_sum(db, member_id) == 420


@pytest.mark.parametrize("hook", ["earn_rule", "tier_multiplier"])
def test_hooks_that_read_through_the_session_run_in_the_operations_transaction(app, db, member, hook):
    """A callback's read through the session shares the operation's transaction.

    On a connection of its own, the operation's commit on SQLite would wait
    for the read lock that the callback's session holds.
    """
    member_id = member.id
    points.earn(member_id, 100, key="first")
    seen: list[int] = []
    table = db.metadata.tables["loyalty_member"]

    def read() -> None:
        seen.append(db.session.execute(sa.select(table.c.available).where(table.c.id == member_id)).scalar())

    extension = app.extensions["loyalty"].extension
    if hook == "earn_rule":
        extension.earn_rule(name="reads")(lambda context, draft: read())
    else:
        extension.tier_multiplier(lambda tier, member: read() or 1)
    db.session.commit()
    begun = _session_begins(db)
    assert orders.order_paid(_paid("1042", member_id, "12.00")).points == 120
    assert seen == [100]
    assert begun == ["begin"]
    assert ledger_sum(db, member_id) == 220
    assert not db.session().in_transaction()


@pytest.mark.parametrize("reads_first", [False, True])
def test_the_hosts_loaded_member_shows_the_operations_balances(db, member, reads_first):
    member_id = member.id
    db.session.commit()
    loaded = db.session.get(type(member), member_id)
    assert loaded.available == 0
    if not reads_first:
        db.session.commit()
    points.earn(member_id, 50, key="a")
    assert loaded.available == 50


@pytest.mark.parametrize("standalone", [True, False])
def test_an_atomic_call_inside_an_operation_is_part_of_it(app, db, member, clock, standalone):
    store = app.extensions["loyalty"].store
    member_id = member.id

    def work() -> None:
        store.atomic(lambda: store.close_member(member_id, clock()))
        raise RuntimeError("the operation fails after the inner write")

    with pytest.raises(RuntimeError, match="fails after"):
        store.atomic(work, standalone=standalone)
    assert points.earn(member_id, 5, key="still open").available_after == 5


def test_a_standalone_operation_refuses_the_orm(app, db, member):
    store = app.extensions["loyalty"].store
    member_id = member.id
    with pytest.raises(RuntimeError, match="cannot use the ORM"):
        store.atomic(lambda: store.get_member(member_id), standalone=True)
    assert store.atomic(lambda: store.get_member(member_id)).id == member_id
    assert db.engine.pool.checkedout() <= 1  # the session's own connection, if it holds one


@pytest.mark.parametrize("standalone", [True, False])
def test_mysql_operations_run_at_read_committed_and_leave_the_connection_as_it_was(
    app, db, engine, standalone
):
    if engine != "mysql":
        pytest.skip("the isolation level is set on MySQL and MariaDB only")
    store = app.extensions["loyalty"].store
    with app.app_context():
        level = store.atomic(
            lambda: store.execute(sa.text("SELECT @@tx_isolation")).scalar(), standalone=standalone
        )
        db.session.remove()
        with db.engine.connect() as conn:
            after = conn.execute(sa.text("SELECT @@tx_isolation")).scalar()
    assert level == "READ-COMMITTED"
    assert after == "REPEATABLE-READ"


def test_a_session_bound_to_an_outer_transaction_keeps_the_operation_in_it(db, member, monkeypatch):
    """A test suite's pattern: the session runs in a transaction that the suite rolls back."""
    member_id = member.id
    db.session.commit()
    outer = db.engine.connect()
    transaction = outer.begin()
    session = db.session()
    monkeypatch.setattr(session, "get_bind", lambda *args, **kwargs: outer)
    try:
        assert points.earn(member_id, 40, key="inside").available_after == 40
    finally:
        transaction.rollback()
        outer.close()
        monkeypatch.undo()
        db.session.remove()
    assert ledger_sum(db, member_id) == 0
