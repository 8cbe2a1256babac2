"""Concurrency: the ledger is never overdrawn and never applies an operation twice.

Every test runs on each engine. Each worker thread runs in its own
application context, so it has its own session and its own database
connection, and a :class:`threading.Barrier` releases the workers together.
Setup and checks also run in application contexts of their own, so that no
transaction of the test thread is open while the workers write.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import random
import threading
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_loyalty import audit
from flask_loyalty import InsufficientPoints
from flask_loyalty import InvalidState
from flask_loyalty import jobs
from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty import signals as loyalty_signals
from flask_loyalty.posting import Posting

from .conftest import ledger_sum
from .conftest import run_together

T = t.TypeVar("T")

#: Enough pooled connections for every worker to hold its own at once.
POOL = {"pool_size": 40, "max_overflow": 0, "pool_timeout": 60}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.settings(SQLALCHEMY_ENGINE_OPTIONS=POOL),
]


# -- helpers -----------------------------------------------------------------


def in_context(app: Flask, call: t.Callable[[], T]) -> T:
    """Run ``call`` in a fresh application context (its own session)."""
    with app.app_context():
        return call()


def warm_pool(app: Flask, db: t.Any, size: int) -> None:
    """Open ``size`` connections and return them to the pool.

    The workers then find a connection ready when the barrier releases them,
    instead of connecting one after another.
    """
    with app.app_context():
        connections = [db.engine.connect() for _ in range(size)]
        for connection in connections:
            connection.close()


def split(outcomes: t.Sequence[t.Any], *expected: type[Exception]) -> tuple[list[t.Any], list[Exception]]:
    """Split outcomes into results and expected errors; re-raise any other error."""
    for outcome in outcomes:
        if isinstance(outcome, Exception) and not isinstance(outcome, expected):
            raise outcome
    errors = [o for o in outcomes if isinstance(o, Exception)]
    return [o for o in outcomes if not isinstance(o, Exception)], errors


def enroll(app: Flask, count: int = 1) -> list[int]:
    """Enroll ``count`` members and return their ids."""

    def work() -> list[int]:
        return [int(members.enroll(name=f"Member {i}").id) for i in range(count)]

    return in_context(app, work)


def checked_balances(app: Flask, db: t.Any, member_ids: t.Sequence[int]) -> list[int]:
    """The members' cached available balances, checked against the ledger.

    Asserts that :func:`audit.verify` finds nothing wrong with any member and
    that each member's ledger sum equals its cached balance.
    """

    def work() -> list[int]:
        assert audit.verify() == []
        cached = [members.balances(member_id).available for member_id in member_ids]
        assert [ledger_sum(db, member_id) for member_id in member_ids] == cached
        return cached

    return in_context(app, work)


def checked_available(app: Flask, db: t.Any, member_id: int) -> int:
    """The member's cached available balance, checked as by :func:`checked_balances`."""
    return checked_balances(app, db, [member_id])[0]


def entries(app: Flask, db: t.Any, *where: t.Any) -> list[t.Any]:
    """Ledger entries matching ``where``, read on a fresh connection, in id order."""
    table = entry_table(db)
    with app.app_context(), db.engine.connect() as conn:
        return list(conn.execute(sa.select(table).where(*where).order_by(table.c.id)).all())


def entry_table(db: t.Any) -> sa.Table:
    """The ledger entry table."""
    return t.cast(sa.Table, db.metadata.tables["loyalty_ledger_entry"])


# -- 1. the last points, redeemed by 32 threads ---------------------------------


def test_last_points_redeemed_exactly_once_by_32_threads(app, db):
    """32 threads redeem a member's last 100 points at once, 20 rounds:
    exactly one wins each round, the other 31 are refused."""
    (member_id,) = enroll(app)
    sent: list[Posting] = []
    warm_pool(app, db, 32)
    for round_ in range(20):
        in_context(app, lambda r=round_: points.earn(member_id, 100, key=f"order:{r}"))
        calls = [
            functools.partial(points.redeem, member_id, 100, key=f"claim:{round_}:{i}") for i in range(32)
        ]
        with loyalty_signals.points_redeemed.connected_to(lambda _, entry, **kw: sent.append(entry)):
            won, lost = split(run_together(app, calls), InsufficientPoints)
        assert len(won) == 1, f"round {round_}: {len(won)} redemptions succeeded"
        assert len(lost) == 31
        assert won[0].available_after == 0
        assert all(error.requested == 100 and error.available == 0 for error in lost)
        assert checked_available(app, db, member_id) == 0
    table = entry_table(db)
    redeemed = entries(app, db, table.c.member_id == member_id, table.c.kind == "redeem")
    assert len(redeemed) == 20
    assert [e.available_after for e in redeemed] == [0] * 20
    assert [posting.id for posting in sent] == [entry.id for entry in redeemed]


# -- 2. a redemption and the expiry of the same lot ---------------------------------


@dataclasses.dataclass
class ExpiryRace:
    """One round of a redemption racing the expiry job."""

    #: The redemption's posting, or ``None`` if it was refused for lack of points.
    redeemed: Posting | None
    #: The number of lots the job expired.
    expired_by_job: int
    #: The points of the member's ``expire`` entries (negative).
    expired: list[int]


def race_redeem_and_expiry(
    app: Flask, db: t.Any, member_id: int, spend: int, key: str, job_now: dt.datetime | None = None
) -> ExpiryRace:
    """Run ``redeem(spend)`` and ``expire_points(now=job_now)`` at the same moment."""
    redeemed, expired_by_job = run_together(
        app,
        [
            functools.partial(points.redeem, member_id, spend, key=key),
            functools.partial(jobs.expire_points, now=job_now, chunk_size=17),
        ],
    )
    split([redeemed, expired_by_job], InsufficientPoints)
    if isinstance(expired_by_job, Exception):
        raise expired_by_job
    table = entry_table(db)
    expired = [e.points for e in entries(app, db, table.c.member_id == member_id, table.c.kind == "expire")]
    return ExpiryRace(None if isinstance(redeemed, Exception) else redeemed, expired_by_job, expired)


def test_redeem_and_expiry_of_a_due_lot(app, db, clock):
    """The lot is past its expiry when both start: the redemption is refused,
    and the lot is expired exactly once (a refused redemption writes nothing,
    its inline expiry included, so the job always does it)."""
    for round_ in range(8):
        (member_id,) = enroll(app)
        expires = clock() + dt.timedelta(days=1)
        in_context(app, lambda m=member_id, e=expires: points.earn(m, 100, key="order", expires_at=e))
        clock.set(expires + dt.timedelta(seconds=1))
        race = race_redeem_and_expiry(app, db, member_id, 100, f"claim:{round_}")
        assert race.redeemed is None, f"round {round_}: an expired lot was spent"
        assert race.expired_by_job == 1
        assert race.expired == [-100]
        assert checked_available(app, db, member_id) == 0


def test_redeem_and_expiry_when_another_lot_pays(app, db, clock):
    """One lot is due and another pays the redemption: the due lot is expired
    exactly once, by the redemption's inline settle or by the job, never both."""
    for round_ in range(8):
        (member_id,) = enroll(app)
        due = clock() + dt.timedelta(days=1)
        later = clock() + dt.timedelta(days=30)

        def earn(m: int = member_id, d: dt.datetime = due, lt: dt.datetime = later) -> None:
            points.earn(m, 100, key="due", expires_at=d)
            points.earn(m, 70, key="later", expires_at=lt)

        in_context(app, earn)
        clock.set(due + dt.timedelta(seconds=1))
        race = race_redeem_and_expiry(app, db, member_id, 70, f"claim:{round_}")
        assert race.redeemed is not None
        assert race.redeemed.available_after == 0
        assert race.expired_by_job in (0, 1)
        assert race.expired == [-100]
        assert checked_available(app, db, member_id) == 0


@pytest.mark.parametrize("spend", [100, 60])
def test_redeem_and_expiry_at_the_same_moment(app, db, clock, spend):
    """The app's clock is a second before the lot's expiry and the job runs at
    it: either the redemption or the expiry takes the points, never both."""
    for round_ in range(8):
        (member_id,) = enroll(app)
        expires = clock() + dt.timedelta(days=1)
        in_context(app, lambda m=member_id, e=expires: points.earn(m, 100, key="order", expires_at=e))
        clock.set(expires - dt.timedelta(seconds=1))
        race = race_redeem_and_expiry(app, db, member_id, spend, f"claim:{round_}", expires)
        if race.redeemed is not None:
            # The redemption came first: the job expired only what it left.
            assert race.redeemed.points == -spend
            assert race.expired_by_job == (1 if spend < 100 else 0)
            assert race.expired == ([spend - 100] if spend < 100 else [])
        else:
            assert race.expired_by_job == 1
            assert race.expired == [-100]
        assert checked_available(app, db, member_id) == 0
        clock.set(expires + dt.timedelta(seconds=1))


# -- 3. one earn key delivered by 8 threads -------------------------------------------


def test_same_earn_key_from_8_threads_earns_once(app, db):
    """The same order paid by 8 threads at once earns once; the other calls
    replay the first one's entry."""
    (member_id,) = enroll(app)
    warm_pool(app, db, 8)
    sent: list[Posting] = []
    for round_ in range(5):
        calls = [functools.partial(points.earn, member_id, 250, key=f"order:{round_}") for _ in range(8)]
        with loyalty_signals.points_earned.connected_to(lambda _, entry, **kw: sent.append(entry)):
            results, _ = split(run_together(app, calls))
        fresh = [r for r in results if not r.replayed]
        assert len(fresh) == 1, f"round {round_}: {results}"
        assert {r.id for r in results} == {fresh[0].id}
        assert {(r.points, r.available_after, r.lot_id) for r in results} == {
            (250, 250 * (round_ + 1), fresh[0].lot_id)
        }
        assert checked_available(app, db, member_id) == 250 * (round_ + 1)
    table = entry_table(db)
    earned = entries(app, db, table.c.member_id == member_id)
    assert [(e.kind, e.points, e.source_key) for e in earned] == [
        ("earn", 250, f"order:{r}") for r in range(5)
    ]
    assert [posting.id for posting in sent] == [entry.id for entry in earned]


# -- 4. a reservation and a redemption on a balance covering one -----------------------


def test_reservation_and_redemption_at_the_same_moment(app, db):
    """A balance of 100 and a reservation and a redemption of 100 each at the
    same moment: exactly one succeeds; a won reservation is then captured."""
    (member_id,) = enroll(app)
    winners = []
    for round_ in range(10):
        in_context(app, lambda r=round_: points.earn(member_id, 100, key=f"order:{r}"))
        calls = [
            functools.partial(points.reserve, member_id, 100, key=f"checkout:{round_}"),
            functools.partial(points.redeem, member_id, 100, key=f"claim:{round_}"),
        ]
        (won,), (lost,) = split(run_together(app, calls), InsufficientPoints)
        assert won.available_after == 0
        assert lost.available == 0
        winners.append(won.kind)

        def settle(r: int = round_, kind: str = won.kind) -> tuple[int, int]:
            reserved = members.balances(member_id).reserved
            if kind == "reserve":
                points.capture(member_id, key=f"checkout:{r}")
            return reserved, members.balances(member_id).reserved

        assert in_context(app, settle) == ((100, 0) if won.kind == "reserve" else (0, 0))
        assert checked_available(app, db, member_id) == 0
    table = entry_table(db)
    spent = entries(app, db, table.c.member_id == member_id, table.c.kind.in_(["redeem", "reserve"]))
    assert [e.kind for e in spent] == winners


def test_capture_and_reservation_timeout_at_the_same_moment(app, db, clock):
    """A checkout captures a reservation just as the time-out job releases it:
    exactly one of them settles it."""
    (member_id,) = enroll(app)
    in_context(app, lambda: points.earn(member_id, 800, key="order"))
    captured = 0
    for round_ in range(8):
        key = f"checkout:{round_}"
        until = clock() + dt.timedelta(minutes=15)
        in_context(app, lambda k=key, u=until: points.reserve(member_id, 100, key=k, expires_at=u))
        clock.set(until)
        capture, released = run_together(
            app, [functools.partial(points.capture, member_id, key=key), jobs.release_reservations]
        )
        split([capture, released], InvalidState)
        if isinstance(capture, InvalidState):
            assert released == 1
            assert "already released" in str(capture)
        else:
            assert released == 0
            captured += 1
        table = entry_table(db)
        settled = entries(app, db, table.c.source_key == key, table.c.kind.in_(["capture", "release"]))
        assert len(settled) == 1
        assert checked_available(app, db, member_id) == 800 - 100 * captured
        assert in_context(app, lambda: members.balances(member_id).reserved) == 0


# -- 5. two sweeps at once ------------------------------------------------------------


@pytest.mark.settings(SQLALCHEMY_ENGINE_OPTIONS=POOL, LOYALTY_JOB_CHUNK_SIZE=17)
def test_two_sweeps_at_once_change_each_lot_once(app, db, clock):
    """Two release-pending sweeps, then two expiry sweeps, over 200 lots of
    40 members in chunks of 17: each lot is activated once and expired once."""
    member_ids = enroll(app, 40)
    start = clock()
    lots = [(member_ids[i % 40], 10 + i) for i in range(200)]

    def earn() -> None:
        for i, (member_id, amount) in enumerate(lots):
            points.earn(member_id, amount, key=f"order:{i}", available_from=start + dt.timedelta(days=1),
                        expires_at=start + dt.timedelta(days=30))  # fmt: skip
        for member_id in member_ids:  # lots that are neither pending nor due
            points.earn(member_id, 5, key="signup", expires_at=start + dt.timedelta(days=365))

    in_context(app, earn)
    expected = {m: sum(amount for owner, amount in lots if owner == m) for m in member_ids}
    table = entry_table(db)

    clock.set(start + dt.timedelta(days=2))
    released = split(run_together(app, [jobs.release_pending, jobs.release_pending]))[0]
    assert sum(released) == 200, released
    activated = entries(app, db, table.c.kind == "activate")
    assert len(activated) == 200
    assert len({e.lot_id for e in activated}) == 200
    assert sum(e.points for e in activated) == sum(expected.values())
    assert checked_balances(app, db, member_ids) == [expected[m] + 5 for m in member_ids]

    clock.set(start + dt.timedelta(days=31))
    swept = split(run_together(app, [jobs.expire_points, jobs.expire_points]))[0]
    assert sum(swept) == 200, swept
    expired = entries(app, db, table.c.kind == "expire")
    assert len(expired) == 200
    assert len({e.lot_id for e in expired}) == 200
    assert sum(e.points for e in expired) == -sum(expected.values())
    assert checked_balances(app, db, member_ids) == [5] * 40
    assert in_context(app, lambda: (jobs.expire_points(), jobs.release_pending())) == (0, 0)


# -- 6. mixed traffic ---------------------------------------------------------------------


@dataclasses.dataclass
class Call:
    """A ledger call a worker made, to replay later with the same parameters."""

    kind: str
    member_id: int
    points: int
    key: str
    expires_at: dt.datetime | None = None
    available_from: dt.datetime | None = None

    def __call__(self) -> Posting:
        """Make the call."""
        if self.kind == "earn":
            return points.earn(self.member_id, self.points, key=self.key, expires_at=self.expires_at,
                               available_from=self.available_from)  # fmt: skip
        return points.redeem(self.member_id, self.points, key=self.key)


def traffic(
    seed: int, member_ids: list[int], now: dt.datetime, ops: int, made: list[tuple[Call, Posting]]
) -> t.Callable[[], None]:
    """A worker's run of ``ops`` random earns, redemptions and replays.

    Successful first calls are appended to ``made``; a replay must return its
    first call's entry. A redemption the balance does not cover is refused.
    """
    rng = random.Random(seed)

    def run() -> None:
        own: list[tuple[Call, Posting]] = []
        for n in range(ops):
            roll = rng.random()
            if roll < 0.15 and own:
                call, first = rng.choice(own)
                again = call()
                assert again.replayed and again.id == first.id, (call, first, again)
                continue
            member_id = rng.choice(member_ids)
            if roll < 0.7:
                expires = now + dt.timedelta(hours=rng.randint(2, 4)) if rng.random() < 0.6 else None
                starts = now + dt.timedelta(hours=1) if rng.random() < 0.2 else None
                call = Call("earn", member_id, rng.randint(1, 60), f"w{seed}:e{n}", expires, starts)
            else:
                call = Call("redeem", member_id, rng.randint(1, 30), f"w{seed}:r{n}")
            try:
                posting = call()
            except InsufficientPoints:
                continue
            own.append((call, posting))
            made.append((call, posting))

    return run


def sweeper(stop: threading.Event) -> t.Callable[[], int]:
    """Run the expiry and pending-release jobs until ``stop`` is set (at least once)."""

    def run() -> int:
        total = 0
        while True:
            total += jobs.expire_points(chunk_size=3) + jobs.release_pending(chunk_size=3)
            if stop.wait(0.02):
                return total

    return run


def test_mixed_traffic_keeps_the_ledger_exact(app, db, clock):
    """Eight workers earn, redeem and replay on four members while two
    sweepers expire and release lots; the clock moves an hour between phases."""
    member_ids = enroll(app, 4)
    warm_pool(app, db, 12)
    made: list[tuple[Call, Posting]] = []
    for phase in range(6):
        stop = threading.Event()
        workers = [traffic(phase * 100 + w, member_ids, clock(), 12, made) for w in range(8)]

        def run_workers(stop: threading.Event = stop, workers: list[t.Callable[[], None]] = workers) -> None:
            try:
                split(run_together(app, workers))
            finally:
                stop.set()

        outcomes = run_together(app, [run_workers, sweeper(stop), sweeper(stop)])
        split(outcomes)
        clock.advance(hours=1)
    # Expire and release whatever the last phase left due, then check it all.
    in_context(app, lambda: (jobs.expire_points(), jobs.release_pending()))
    everything = entries(app, db)
    assert min(checked_balances(app, db, member_ids)) >= 0
    assert min(e.available_after for e in everything) >= 0, "a balance was overdrawn"
    written = {e.id: e for e in everything if e.kind in ("earn", "redeem")}
    assert sorted(written) == sorted(posting.id for _, posting in made)
    for call, posting in made:
        entry = written[posting.id]
        assert (entry.kind, entry.member_id, abs(entry.points), entry.source_key) == (
            call.kind, call.member_id, call.points, call.key
        )  # fmt: skip
    for kind in ("expire", "activate"):
        lot_ids = [e.lot_id for e in everything if e.kind == kind]
        assert len(lot_ids) == len(set(lot_ids)), f"a lot was given two {kind} entries"
    assert any(call.kind == "redeem" for call, _ in made)
    assert any(e.kind == "expire" for e in everything) and any(e.kind == "activate" for e in everything)
