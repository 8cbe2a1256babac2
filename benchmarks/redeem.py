"""Concurrent redemption: 16 threads spend the points of a few members at once.

Each of ``members`` members starts with points in four lots of different
expiry, 80% of what the threads will try to spend from them, so the balances
run out while the threads are still going: that is where a double spend would
happen. Thread ``t``'s ``i``-th attempt redeems one point of member
``(t + i) % members + 1``; every thread has its own connection, and all are
released together by a barrier.

*Ours* is :func:`flask_loyalty.points.redeem` (a lock on the member's row, or
``BEGIN IMMEDIATE`` on SQLite; lots spent soonest expiry first).

*The floor* is raw DB-API code doing the same writes: ``SELECT ... FOR UPDATE``
of the member (``BEGIN IMMEDIATE`` on SQLite) and its live lots, a conditional
``UPDATE ... WHERE available >= n``, the lot update, the allocation and the
ledger entry.

Afterwards each side's members are checked: the points spent never exceed the
points there were (``double_spends`` counts the excess), and the cached
balances, the ledger, the lots and the successes the threads counted agree.

Metric: successful redemptions per second; target: ours >= 0.5 x the floor,
with 0 double spends.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import sqlite3
import threading
import time
import typing as t

from flask_loyalty import ConcurrencyError
from flask_loyalty import InsufficientPoints
from flask_loyalty import points

from .harness import Bench
from .harness import ENTRY_COLUMNS
from .harness import log
from .harness import median
from .harness import Raw
from .harness import Result
from .harness import utcnow

#: Target: ours >= TARGET x the floor's successful redemptions per second.
TARGET = 0.5
#: Lots each member's points are split over.
LOTS_PER_MEMBER = 4
#: The share of the attempted points that the members have.
FUNDED = 0.8


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Threads, attempts per thread, members they share, and repeats."""

    threads: int
    attempts: int
    members: int
    rounds: int

    @property
    def initial(self) -> int:
        """Points each member starts with."""
        per_member = self.threads * self.attempts // self.members
        return int(per_member * FUNDED) // LOTS_PER_MEMBER * LOTS_PER_MEMBER


@dataclasses.dataclass
class Outcome:
    """What one side's threads did."""

    seconds: float
    succeeded: collections.Counter[int]
    refused: int
    errors: int

    @property
    def rate(self) -> float:
        """Successful redemptions per second."""
        return sum(self.succeeded.values()) / self.seconds


def _load(bench: Bench, sizes: Sizes) -> None:
    """Fresh tables with the members and their lots (and the earn entries)."""
    bench.reset_schema()
    now = utcnow()
    each = sizes.initial // LOTS_PER_MEMBER
    raw = bench.raw()
    try:
        raw.begin()
        statement, params = bench.load_members(sizes.members, sizes.initial, now - dt.timedelta(days=1))
        raw.run(statement, params)
        lots = [
            (
                member_id,
                each,
                each,
                False,
                False,
                bench.ts(now),
                bench.ts(now + dt.timedelta(days=30 + k)),
                bench.ts(now),
            )  # fmt: skip
            for member_id in range(1, sizes.members + 1)
            for k in range(LOTS_PER_MEMBER)
        ]
        raw.many(
            bench.insert(
                "lot",
                "member_id, points, remaining, pending, expired, available_from, expires_at, created_at",
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?{defaults})",
            ),
            lots,
        )
        raw.run(
            bench.insert(
                "entry",
                ENTRY_COLUMNS + ", lot_id, created_at",
                "SELECT member_id, 'earn', points, points, 0, 0,"
                " points * ROW_NUMBER() OVER (PARTITION BY member_id ORDER BY id), 0, 0,"
                " 'order:' || CAST(id AS VARCHAR(20)), '', id, created_at{defaults} FROM {lot} ORDER BY id",
            )
        )
        raw.commit()
    finally:
        raw.close()


def _race(sizes: Sizes, attempt: t.Callable[[t.Any, int, str], bool], setup: t.Callable[[], t.Any],
          teardown: t.Callable[[t.Any], None]) -> Outcome:  # fmt: skip
    """Run ``attempt(state, member_id, key)`` from every thread at once.

    ``setup`` makes each thread's state (its connection), ``teardown`` ends it.
    ``attempt`` returns whether the redemption succeeded.
    """
    barrier = threading.Barrier(sizes.threads + 1)
    succeeded: collections.Counter[int] = collections.Counter()
    counts = {"refused": 0, "errors": 0}
    lock = threading.Lock()

    def worker(index: int) -> None:
        try:
            state = setup()
        except BaseException:
            barrier.abort()
            raise
        mine: collections.Counter[int] = collections.Counter()
        refused = errors = 0
        try:
            barrier.wait()
            for i in range(sizes.attempts):
                member_id = (index + i) % sizes.members + 1
                try:
                    if attempt(state, member_id, f"redeem:{index}:{i}"):
                        mine[member_id] += 1
                    else:
                        refused += 1
                except ConcurrencyError:
                    errors += 1
        finally:
            teardown(state)
            with lock:
                succeeded.update(mine)
                counts["refused"] += refused
                counts["errors"] += errors

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(sizes.threads)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return Outcome(time.perf_counter() - started, succeeded, counts["refused"], counts["errors"])


def _ours(bench: Bench, sizes: Sizes) -> Outcome:
    """Race :func:`points.redeem` from every thread."""

    def setup() -> t.Any:
        context = bench.app.app_context()
        context.push()
        return context

    def attempt(state: t.Any, member_id: int, key: str) -> bool:
        try:
            points.redeem(member_id, 1, key=key)
        except InsufficientPoints:
            return False
        return True

    def teardown(context: t.Any) -> None:
        context.pop()

    return _race(sizes, attempt, setup, teardown)


class _Floor:
    """The floor's redemption on one raw connection."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.raw: Raw = bench.raw()
        self.lock_member = bench.sql("SELECT status, available FROM {member} WHERE id = ? FOR UPDATE")
        self.live_lots = bench.sql(
            "SELECT id, remaining FROM {lot} WHERE member_id = ? AND remaining > 0 AND pending = false"
            " AND expired = false AND (expires_at IS NULL OR expires_at > ?)"
            " ORDER BY expires_at IS NULL, expires_at, id FOR UPDATE"
        )
        self.debit = bench.sql(
            "UPDATE {member} SET available = available - ? WHERE id = ? AND available >= ?"
            " RETURNING available, pending, reserved"
        )
        self.insert_entry = bench.insert(
            "entry",
            ENTRY_COLUMNS + ", created_at",
            "VALUES (?, 'redeem', ?, ?, 0, 0, ?, ?, ?, ?, ?, ?{defaults}) RETURNING id",
        )
        self.take = bench.sql("UPDATE {lot} SET remaining = remaining - ? WHERE id = ?")
        self.allocate = bench.insert("allocation", "entry_id, lot_id, points", "VALUES (?, ?, ?{defaults})")

    def redeem(self, member_id: int, amount: int, key: str) -> bool:
        """Spend ``amount`` points of ``member_id``; return whether there were enough."""
        while True:
            try:
                return self._redeem(member_id, amount, key)
            except sqlite3.OperationalError as error:
                # The write lock stayed busy past the timeout: try again, as ours does.
                self.raw.rollback()
                if "locked" not in str(error):
                    raise

    def _redeem(self, member_id: int, amount: int, key: str) -> bool:
        raw, now = self.raw, self.bench.ts(utcnow())
        raw.begin()
        status, available = raw.run(self.lock_member, (member_id,)).fetchone()
        if status != "active" or available < amount:
            raw.rollback()
            return False
        changes, left = [], amount
        for lot_id, remaining in raw.run(self.live_lots, (member_id, now)).fetchall():
            if left == 0:
                break
            used = min(left, remaining)
            changes.append((lot_id, used))
            left -= used
        row = raw.run(self.debit, (amount, member_id, amount)).fetchone()
        if row is None:
            raw.rollback()
            return False
        entry_id = raw.run(
            self.insert_entry, (member_id, -amount, -amount, row[0], row[1], row[2], key, "", now)
        ).fetchone()[0]
        raw.many(self.take, [(used, lot_id) for lot_id, used in changes])
        raw.many(self.allocate, [(entry_id, lot_id, used) for lot_id, used in changes])
        raw.commit()
        return True


def _floor(bench: Bench, sizes: Sizes) -> Outcome:
    """Race the raw DB-API redemption from every thread."""

    def attempt(state: _Floor, member_id: int, key: str) -> bool:
        return state.redeem(member_id, 1, key)

    return _race(sizes, attempt, lambda: _Floor(bench), lambda state: state.raw.close())


def _audit(bench: Bench, sizes: Sizes, outcome: Outcome) -> tuple[int, bool]:
    """``(double spends, consistent)`` of the members after a race.

    A double spend is a point spent beyond what a member had, by any count:
    the threads' successes, the ``redeem`` entries, or the fall of the cached
    balance. Consistent means those three agree, every point was spent, and the
    ledger and the live lots both equal the cached balance.
    """
    raw = bench.raw()
    try:
        rows = raw.run(
            bench.sql(
                "SELECT m.id, m.available,"
                " (SELECT COUNT(*) FROM {entry} e WHERE e.member_id = m.id AND e.kind = 'redeem'),"
                " (SELECT SUM(e.delta_available) FROM {entry} e WHERE e.member_id = m.id),"
                " (SELECT SUM(l.remaining) FROM {lot} l WHERE l.member_id = m.id)"
                " FROM {member} m ORDER BY m.id"
            )
        ).fetchall()
        raw.rollback()
    finally:
        raw.close()
    double_spends, consistent = 0, True
    for member_id, available, entries, ledger, lots in rows:
        counted = outcome.succeeded[member_id]
        spent = max(counted, int(entries), sizes.initial - int(available))
        double_spends += max(0, spent - sizes.initial)
        consistent = consistent and (
            counted == int(entries) == sizes.initial - int(available) == sizes.initial
            and int(ledger) == int(lots) == int(available)
        )
    return double_spends, consistent


def run(bench: Bench, sizes: Sizes) -> Result:
    """Run the concurrent-redemption workload on ``bench``, ours and the floor alternating."""
    ours: list[float] = []
    floor: list[float] = []
    double_spends = {"ours": 0, "floor": 0}
    consistent = True
    errors = 0
    for round_ in range(sizes.rounds):
        for side in ("ours", "floor") if round_ % 2 == 0 else ("floor", "ours"):
            _load(bench, sizes)
            outcome = _ours(bench, sizes) if side == "ours" else _floor(bench, sizes)
            (ours if side == "ours" else floor).append(outcome.rate)
            spent, ok = _audit(bench, sizes, outcome)
            double_spends[side] += spent
            consistent = consistent and ok
            errors += outcome.errors
        log(f"  redeem round {round_ + 1}: ours {ours[-1]:.0f}/s, floor {floor[-1]:.0f}/s")
    return Result(
        "redeem",
        bench.engine,
        median(ours),
        median(floor),
        TARGET,
        higher_is_better=True,
        conditions={"no_double_spends": double_spends["ours"] == 0, "consistent": consistent},
        extra={
            "unit": "successful redemptions/s",
            "double_spends": double_spends["ours"],
            "floor_double_spends": double_spends["floor"],
            "concurrency_errors": errors,
            "threads": sizes.threads,
            "members": sizes.members,
            "attempts": sizes.threads * sizes.attempts,
            "successes": sizes.initial * sizes.members,
            "rounds": sizes.rounds,
            "ours_rounds": [round(v, 1) for v in ours],
            "floor_rounds": [round(v, 1) for v in floor],
        },
    )
