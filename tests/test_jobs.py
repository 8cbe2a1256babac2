"""The background jobs: expiry, pending release and reservation time-outs."""

from __future__ import annotations

import datetime as dt
import threading
import typing as t

import pytest
import sqlalchemy as sa

from flask_loyalty import audit
from flask_loyalty import InvalidRequest
from flask_loyalty import jobs
from flask_loyalty import members
from flask_loyalty import points

from .conftest import ledger_sum
from .test_points import bal
from .test_points import count
from .test_points import lots

DAY = dt.timedelta(days=1)


def expire_entries(db: t.Any, member_id: int) -> list[tuple[int, int, str, str | None]]:
    """The member's expire entries as ``(points, available_after, reason, actor)``."""
    e = db.metadata.tables["loyalty_ledger_entry"]
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(e.c.points, e.c.available_after, e.c.reason, e.c.actor)
            .where(e.c.member_id == member_id, e.c.kind.in_(["expire", "activate"]))
            .order_by(e.c.id)
        ).all()
    return [tuple(r) for r in rows]


@pytest.fixture
def crowd(app_ctx: None, clock: t.Any) -> list[t.Any]:
    """Twelve members, each with 100 points expiring in 10 days, 50 in 20 days
    and 30 never; member ``i`` has redeemed ``10 * i`` (soonest expiry first)."""
    people = []
    for i in range(12):
        person = members.enroll(name=f"member {i}", email=f"m{i}@example.com")
        points.earn(person, 100, key="soon", expires_at=clock() + 10 * DAY)
        points.earn(person, 50, key="later", expires_at=clock() + 20 * DAY)
        points.earn(person, 30, key="never")
        if i:
            points.redeem(person, 10 * i, key="spend")
        people.append(person)
    return people


def test_expire_points_in_chunks(db, crowd, clock, signals):
    signals.sent.clear()
    assert jobs.expire_points() == 0
    clock.advance(days=10)
    progress: list[int] = []
    # Members 0..9 still have some of their soonest lot; 10 and 11 spent it all.
    assert jobs.expire_points(chunk_size=3, progress=progress.append) == 10
    assert progress == [3, 6, 9, 10]
    ids = [p.id for p in crowd]
    assert signals.of("points-expired") == [
        {"member_ids": ids[0:3], "count": 3},
        {"member_ids": ids[3:6], "count": 3},
        {"member_ids": ids[6:9], "count": 3},
        {"member_ids": ids[9:10], "count": 1},
    ]
    assert [members.balances(p).available for p in crowd] == [80] * 11 + [70]
    assert expire_entries(db, ids[3]) == [(-70, 80, "points expired", "job:expire")]
    assert lots(db, ids[3]) == [(100, 0, False, True), (50, 50, False, False), (30, 30, False, False)]
    assert lots(db, ids[10]) == [(100, 0, False, False), (50, 50, False, False), (30, 30, False, False)]
    # Idempotent: a second run finds nothing and says nothing.
    assert jobs.expire_points(chunk_size=3, progress=progress.append) == 0
    assert progress == [3, 6, 9, 10]
    assert len(signals.of("points-expired")) == 4
    clock.advance(days=10)
    assert jobs.expire_points(chunk_size=5) == 12
    assert [members.balances(p) for p in crowd] == [bal(30, lifetime=180)] * 12
    assert sum(ledger_sum(db, i) for i in ids) == 12 * 30
    assert jobs.expire_points() == 0
    assert audit.verify() == []


def test_expire_points_at_a_given_time(db, crowd, clock):
    assert jobs.expire_points(now=clock() + 10 * DAY - dt.timedelta(seconds=1)) == 0
    assert jobs.expire_points(now=clock() + 10 * DAY) == 10
    assert (
        jobs.expire_points(now=dt.datetime(2026, 1, 21, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))))
        == 12
    )
    assert [members.balances(p).available for p in crowd] == [30] * 12
    assert audit.verify() == []


@pytest.mark.parametrize("chunk_size", [1, 2, 100])
def test_expiry_of_several_lots_of_one_member_keeps_running_balances(db, member, clock, chunk_size):
    for key, amount in (("a", 100), ("b", 50), ("c", 20)):
        points.earn(member, amount, key=key, expires_at=clock() + 5 * DAY)
    points.earn(member, 7, key="never")
    points.redeem(member, 30, key="r")  # 30 of lot a
    clock.advance(days=5)
    assert jobs.expire_points(chunk_size=chunk_size) == 3
    assert [(p, after) for p, after, _, _ in expire_entries(db, member.id)] == [
        (-70, 77),
        (-50, 27),
        (-20, 7),
    ]
    assert members.balances(member) == bal(7, lifetime=177)
    assert audit.verify() == []


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 100])
def test_expiry_chunks_follow_the_members(db, app_ctx, clock, signals, chunk_size):
    """Chunks hold the due lots of a few members (member by member, soonest expiry
    first), however the lots were interleaved when they were earned; a member
    whose lots fall in two chunks keeps exact running balances."""
    people = [members.enroll(name=f"m{i}", email=f"m{i}@example.com") for i in range(3)]
    for n in range(3):
        for i, person in enumerate(people):
            # Expiries tie within a member for n = 1, 2: the lot id breaks the tie.
            expires = clock() + (1 if n == 0 else 2) * DAY
            points.earn(person, 10 * (i + 1) + n, key=f"o{n}", expires_at=expires)
    points.earn(people[1], 5, key="later", expires_at=clock() + 30 * DAY)
    clock.advance(days=2)
    signals.sent.clear()
    assert jobs.expire_points(chunk_size=chunk_size) == 9
    ids = [p.id for p in people]
    chunks = {
        1: [[0], [0], [0], [1], [1], [1], [2], [2], [2]],
        2: [[0], [0, 1], [1], [2], [2]],
        4: [[0, 1], [1, 2], [2]],
        100: [[0, 1, 2]],
    }[chunk_size]
    assert [s["member_ids"] for s in signals.of("points-expired")] == [[ids[i] for i in c] for c in chunks]
    assert [(p, after) for p, after, _, _ in expire_entries(db, ids[1])] == [(-20, 48), (-21, 27), (-22, 5)]
    assert [members.balances(p).available for p in people] == [0, 5, 0]
    assert jobs.expire_points(chunk_size=chunk_size) == 0
    assert audit.verify() == []


def test_expiry_skips_spent_and_reserved_points(db, member, clock):
    points.earn(member, 100, key="a", expires_at=clock() + 5 * DAY)
    points.earn(member, 100, key="b", expires_at=clock() + 5 * DAY)
    points.redeem(member, 100, key="r")
    points.reserve(member, 60, key="cart")
    clock.advance(days=5)
    assert jobs.expire_points() == 1
    assert lots(db, member.id) == [(100, 0, False, False), (100, 0, False, True)]
    assert members.balances(member) == bal(0, reserved=60, lifetime=200)
    points.capture(member, key="cart")
    assert members.balances(member) == bal(0, lifetime=200)
    assert audit.verify() == []


@pytest.fixture
def waiting(app_ctx: None, clock: t.Any) -> list[t.Any]:
    """Seven members, each with 40 points available and ``10 * (i + 1)``
    pending for 14 days and 25 pending for 30 days."""
    people = []
    for i in range(7):
        person = members.enroll(name=f"member {i}")
        points.earn(person, 40, key="now")
        points.earn(person, 10 * (i + 1), key="order:1", available_from=clock() + 14 * DAY)
        points.earn(person, 25, key="order:2", available_from=clock() + 30 * DAY)
        people.append(person)
    return people


def test_release_pending_in_chunks(db, waiting, clock, signals):
    signals.sent.clear()
    assert jobs.release_pending() == 0
    expected = [bal(40, 10 * (i + 1) + 25, lifetime=75 + 10 * i) for i in range(7)]
    assert [members.balances(p) for p in waiting] == expected
    clock.advance(days=14)
    progress: list[int] = []
    assert jobs.release_pending(chunk_size=2, progress=progress.append) == 7
    assert progress == [2, 4, 6, 7]
    ids = [p.id for p in waiting]
    assert signals.of("points-activated") == [
        {"member_ids": ids[0:2], "count": 2},
        {"member_ids": ids[2:4], "count": 2},
        {"member_ids": ids[4:6], "count": 2},
        {"member_ids": ids[6:7], "count": 1},
    ]
    assert [members.balances(p) for p in waiting] == [
        bal(50 + 10 * i, 25, lifetime=75 + 10 * i) for i in range(7)
    ]
    assert expire_entries(db, ids[2]) == [(30, 70, "pending points became available", "job:release-pending")]
    assert lots(db, ids[2]) == [(40, 40, False, False), (30, 30, False, False), (25, 25, True, False)]
    assert jobs.release_pending(chunk_size=2, progress=progress.append) == 0
    assert progress == [2, 4, 6, 7]
    assert len(signals.of("points-activated")) == 4
    clock.advance(days=16)
    assert jobs.release_pending(chunk_size=3) == 7
    assert [members.balances(p) for p in waiting] == [
        bal(75 + 10 * i, 0, lifetime=75 + 10 * i) for i in range(7)
    ]
    assert jobs.release_pending() == 0
    assert audit.verify() == []


@pytest.mark.parametrize("chunk_size", [1, 10])
def test_activation_pays_a_negative_balance_first(db, member, clock, chunk_size):
    points.earn(member, 100, key="o1")
    points.earn(member, 60, key="o2", available_from=clock() + 14 * DAY)
    points.earn(member, 70, key="o3", available_from=clock() + 14 * DAY)
    points.redeem(member, 100, key="r")
    points.reverse(member, key="refund", original=("earn", "o1"), policy="allow_negative")
    assert members.balances(member) == bal(-100, 130, lifetime=130)
    clock.advance(days=14)
    assert jobs.release_pending(chunk_size=chunk_size) == 2
    assert [(p, after) for p, after, _, _ in expire_entries(db, member.id)] == [(60, -40), (70, 30)]
    # The first lot went entirely to the debt, the second keeps what is left.
    assert lots(db, member.id) == [(100, 0, False, False), (60, 0, False, False), (70, 30, False, False)]
    assert members.balances(member) == bal(30, 0, lifetime=130)
    assert ledger_sum(db, member.id) == 30
    assert audit.verify() == []


def test_activation_inside_a_debit_pays_a_negative_balance_first(db, member, clock):
    points.earn(member, 100, key="o1")
    points.earn(member, 150, key="o2", available_from=clock() + 14 * DAY)
    points.redeem(member, 100, key="r")
    points.reverse(member, key="refund", original=("earn", "o1"))
    clock.advance(days=14)
    points.redeem(member, 20, key="r2")  # settles the due lot inline first
    assert lots(db, member.id) == [(100, 0, False, False), (150, 30, False, False)]
    assert members.balances(member) == bal(30, 0, lifetime=150)
    assert jobs.release_pending() == 0
    assert audit.verify() == []


def test_sweeps_write_nothing_when_nothing_is_due(db, member, signals):
    points.earn(member, 10, key="o")
    signals.sent.clear()
    entries = count(db, "ledger_entry")
    progress: list[int] = []
    assert jobs.expire_points(progress=progress.append) == 0
    assert jobs.release_pending(progress=progress.append) == 0
    assert jobs.release_reservations(progress=progress.append) == 0
    assert progress == []
    assert count(db, "ledger_entry") == entries
    assert signals.sent == []


def test_two_sweeps_at_once_expire_each_lot_once(app, db, clock):
    with app.app_context():
        people = [members.enroll(name=f"m{i}").id for i in range(20)]
        for person in people:
            for j in range(5):
                points.earn(person, 10 + j, key=f"o{j}", expires_at=clock() + DAY)
    clock.advance(days=1)
    barrier = threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            with app.app_context():
                barrier.wait()
                results.append(jobs.expire_points(chunk_size=7))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(results) == 100
    with app.app_context():
        assert count(db, "ledger_entry") == 200
        assert [members.balances(p).available for p in people] == [0] * 20
        assert audit.verify() == []


@pytest.mark.parametrize("job", ["expire_points", "release_pending"])
def test_a_chunk_runs_as_many_statements_for_40_lots_as_for_one(db, app_ctx, clock, statements, job):
    """Set-based: a chunk's statements do not grow with its lots or members."""
    seen = statements()
    when = "expires_at" if job == "expire_points" else "available_from"

    def sweep(people: int, each: int) -> tuple[int, int]:
        for i in range(people):
            person = members.enroll(name=f"{people} {i}")
            for j in range(each):
                points.earn(person, 10 + j, key=f"o{j}", **{when: clock() + DAY})
        clock.advance(days=1)
        seen.clear()
        done = getattr(jobs, job)(chunk_size=100)
        return done, len(seen)

    one, few = sweep(1, 1)
    forty, more = sweep(8, 5)
    assert (one, forty) == (1, 40)
    assert more == few
    assert audit.verify() == []


def test_expiry_in_the_hosts_transaction_after_its_own_entries(db, member, clock, signals):
    """A run inside a transaction the host has written in joins it, and tells
    the entries of its chunks from those written earlier in that transaction."""
    points.earn(member, 100, key="a", expires_at=clock() + DAY)
    clock.advance(days=2)
    member.name = "renamed by the host"
    db.session.flush()
    points.earn(member, 5, key="bonus")  # joins the host's transaction
    signals.sent.clear()
    assert jobs.expire_points() == 1
    db.session.commit()
    assert signals.of("points-expired") == [{"member_ids": [member.id], "count": 1}]
    assert expire_entries(db, member.id) == [(-100, 5, "points expired", "job:expire")]
    assert members.balances(member) == bal(5, lifetime=105)
    assert audit.verify() == []


def test_release_reservations_skips_closed_members(db, member, clock):
    points.earn(member, 100, key="o")
    points.reserve(member, 40, key="cart", expires_at=clock() + dt.timedelta(minutes=5))
    members.close(member)
    clock.advance(minutes=5)
    assert jobs.release_reservations(chunk_size=1) == 0
    assert members.balances(member) == bal(60, reserved=40, lifetime=100)


@pytest.mark.parametrize("job", ["expire_points", "release_pending", "release_reservations"])
@pytest.mark.parametrize("chunk_size", [0, -1, True, 2.5, "10"])
def test_bad_chunk_size_is_refused(db, member, job, chunk_size):
    with pytest.raises(InvalidRequest, match="chunk_size must be a positive whole number"):
        getattr(jobs, job)(chunk_size=chunk_size)


@pytest.mark.parametrize("job", ["expire_points", "release_pending", "release_reservations"])
def test_bad_now_is_refused(db, member, job):
    with pytest.raises(InvalidRequest, match="now must be a datetime"):
        getattr(jobs, job)(now="2026-02-01")


@pytest.mark.settings(LOYALTY_JOB_CHUNK_SIZE=4)
def test_chunk_size_comes_from_config(db, crowd, clock):
    clock.advance(days=10)
    progress: list[int] = []
    assert jobs.expire_points(progress=progress.append) == 10
    assert progress == [4, 8, 10]


def test_expiry_writes_only_members_it_locked(app, db, clock, engine):
    """A lot that becomes due, meanwhile, in a chunk's range but of a member
    the chunk did not lock is left to the next run: a sweep writes only
    members it has locked.

    Member ``late`` sits between two members with lots to expire; its lot
    is still pending when the chunk locks its members, and is made available
    (by a second process) after the lock and before the sweep.
    """
    if engine == "sqlite":
        pytest.skip("on SQLite a sweep holds the database's write lock: nothing happens meanwhile")
    with app.app_context():
        first = members.enroll(name="first").id
        late = members.enroll(name="late").id
        last = members.enroll(name="last").id
        for person in (first, last):
            points.earn(person, 10, key="o", expires_at=clock() + DAY)
        points.earn(late, 30, key="o", available_from=clock() + DAY, expires_at=clock() + 2 * DAY)
    clock.advance(days=3)
    released: list[int] = []
    errors: list[BaseException] = []

    def release() -> None:
        try:
            with app.app_context():
                released.append(jobs.release_pending())
        except BaseException as error:  # reported below
            errors.append(error)

    main = threading.get_ident()

    def meanwhile(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if threading.get_ident() == main and "FOR UPDATE" in statement and not released:
            other = threading.Thread(target=release)
            other.start()
            other.join(timeout=30)
            assert not other.is_alive(), "the release waited for the sweep's locks"

    with app.app_context():
        sa.event.listen(db.engine, "after_cursor_execute", meanwhile)
        try:
            assert jobs.expire_points() == 2
        finally:
            sa.event.remove(db.engine, "after_cursor_execute", meanwhile)
        assert errors == [] and released == [1]
        # One entry each: first's and last's expiry, late's activation.
        assert [len(expire_entries(db, p)) for p in (first, late, last)] == [1, 1, 1]
        assert members.balances(late).available == 30
        assert audit.verify() == []
        assert jobs.expire_points() == 1
        assert [members.balances(p).available for p in (first, late, last)] == [0, 0, 0]
        assert audit.verify() == []


def test_a_chunk_on_postgresql_is_swept_in_one_statement(db, app_ctx, clock, statements, engine):
    """PostgreSQL: a chunk's entries, members and lots are written by one
    statement, after one read of the chunk's end and one lock of its members."""
    if engine != "postgresql":
        pytest.skip("a chunk is swept in one statement on PostgreSQL only")
    for i in range(3):
        person = members.enroll(name=f"m{i}")
        for j in range(3):
            points.earn(person, 10 + j, key=f"o{j}", expires_at=clock() + DAY)
    clock.advance(days=1)
    seen = statements()
    assert jobs.expire_points(chunk_size=4) == 9
    assert seen.count("WITH") == 3
    assert "INSERT" not in seen and "UPDATE" not in seen
    assert audit.verify() == []
