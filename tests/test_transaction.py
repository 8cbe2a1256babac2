"""Write transactions: joining the host's transaction, retries, busy databases."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
import typing as t

import pytest
import sqlalchemy as sa

from flask_loyalty import ConcurrencyError
from flask_loyalty import InsufficientPoints
from flask_loyalty import MemberClosed
from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty.transaction import is_retryable

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


def _sqlite_app(tmp_path: t.Any, clock: t.Any, retries: int) -> tuple[t.Any, t.Any]:
    return make_app(
        engine_url("sqlite", tmp_path),
        clock,
        {
            "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"timeout": 0.05}},
            "LOYALTY_LOCK_RETRIES": retries,
            "LOYALTY_LOCK_RETRY_DELAY": 0.05,
        },
    )


def test_busy_database_is_retried_then_reported(tmp_path, clock):
    app, db = _sqlite_app(tmp_path, clock, retries=2)
    with app.app_context():
        db.create_all()
        member = members.enroll(name="m").id
    blocker = sqlite3.connect(tmp_path / "loyalty.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with app.app_context(), pytest.raises(ConcurrencyError, match="after 3 attempt"):
            points.earn(member, 10, key="k")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with app.app_context():
        assert ledger_sum(db, member) == 0
        assert points.earn(member, 10, key="k").replayed is False
        db.session.remove()
        db.engine.dispose()


def test_busy_database_succeeds_once_the_lock_is_gone(tmp_path, clock):
    app, db = _sqlite_app(tmp_path, clock, retries=8)
    with app.app_context():
        db.create_all()
        member = members.enroll(name="m").id
    blocker = sqlite3.connect(tmp_path / "loyalty.sqlite", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")

    def unblock() -> None:
        time.sleep(0.2)
        blocker.execute("ROLLBACK")

    thread = threading.Thread(target=unblock)
    thread.start()
    with app.app_context():
        assert points.earn(member, 10, key="k").available_after == 10
        db.session.remove()
        db.engine.dispose()
    thread.join()
    blocker.close()


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
