"""Balance read: is a member's balance as cheap with 10^6 ledger entries as with 10^2?

Two members are loaded with bulk SQL: one with ``small`` ledger entries (and
the lots they made), one with ``large``. *Ours* is
:func:`flask_loyalty.members.balances` in a fresh session each time (as each
request of a shop has), alternating between the two members read by read;
``ours`` is the median read with ``large`` entries and ``floor`` the median
read with ``small``. The extension
reads the cached balances on the member row, so the history's length should
not matter.

Metric: microseconds per read; target: time(large) / time(small) <= 1.2. The
same read with raw DB-API code is reported as ``dbapi_us`` for scale.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import typing as t

from flask_loyalty import members

from .harness import Bench
from .harness import ENTRY_COLUMNS
from .harness import log
from .harness import median
from .harness import Result
from .harness import utcnow

#: Target: time(large) <= TARGET x time(small).
TARGET = 1.2
#: Members 1 (small history) and 2 (large history).
SMALL, LARGE = 1, 2


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Ledger entries of the two members, and reads of each."""

    small: int
    large: int
    reads: int


def _load_history(bench: Bench, member_id: int, entries: int, now: dt.datetime) -> list[tuple[str, t.Any]]:
    """Statements giving ``member_id`` ``entries`` earn entries of one point, one lot each.

    The lots are the member's live points, so the cached balance, the ledger
    and the lots agree as they would after that many earns.
    """
    created = bench.shifted("?", f"s.i - {entries}")
    return [
        (
            bench.insert(
                "lot",
                "member_id, points, remaining, pending, expired, available_from, expires_at, created_at",
                f"SELECT ?, 1, 1, false, false, {created}, NULL, {created}{{defaults}} FROM s",
                prefix=bench.numbers(entries),
            ),
            (member_id, bench.ts(now), bench.ts(now)),
        ),
        (
            bench.insert(
                "entry",
                ENTRY_COLUMNS + ", lot_id, created_at",
                "SELECT member_id, 'earn', 1, 1, 0, 0, ROW_NUMBER() OVER (ORDER BY id), 0, 0,"
                " 'order:' || CAST(id AS VARCHAR(20)), '', id, created_at{defaults}"
                " FROM {lot} WHERE member_id = ?",
            ),
            (member_id,),
        ),
        (
            bench.sql("UPDATE {member} SET available = ?, lifetime_earned = ? WHERE id = ?"),
            (entries, entries, member_id),
        ),
    ]


def _ours(bench: Bench, reads: int, expected: dict[int, int]) -> dict[int, list[float]]:
    """Time :func:`members.balances` of both members, read by read, in turn.

    Each read runs in a fresh session (as each request of a shop has) and is
    timed on its own, alternating the members read for read, so that a busy
    moment of the machine hits both alike. Returns the microseconds of every
    read by member.
    """
    times: dict[int, list[float]] = {member_id: [] for member_id in expected}
    order = list(expected)
    with bench.app.app_context():
        session = bench.db.session
        for i in range(reads):
            for member_id in order if i % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                available = members.balances(member_id).available
                session.remove()
                times[member_id].append((time.perf_counter() - started) * 1e6)
                if available != expected[member_id]:
                    raise AssertionError(
                        f"member {member_id} has {available} points, not {expected[member_id]}"
                    )
    return times


def _dbapi(bench: Bench, member_id: int, reads: int) -> float:
    """Microseconds per raw read of the cached balances (the median read)."""
    raw = bench.raw()
    query = bench.sql("SELECT available, pending, reserved, lifetime_earned FROM {member} WHERE id = ?")
    times = []
    try:
        for _ in range(reads):
            started = time.perf_counter()
            raw.run(query, (member_id,)).fetchone()
            raw.rollback()
            times.append((time.perf_counter() - started) * 1e6)
        return median(times)
    finally:
        raw.close()


def run(bench: Bench, sizes: Sizes) -> Result:
    """Run the balance-read workload on ``bench``."""
    bench.reset_schema()
    now = utcnow()
    statements = [bench.load_members(2, 0, now - dt.timedelta(days=1))]
    statements += _load_history(bench, SMALL, sizes.small, now)
    statements += _load_history(bench, LARGE, sizes.large, now)
    seconds = bench.load(statements)
    count = bench.scalar(bench.sql("SELECT COUNT(*) FROM {entry} WHERE member_id = ?"), (LARGE,))
    log(f"  loaded {sizes.small} + {count} entries in {seconds:.1f}s")
    expected = {SMALL: sizes.small, LARGE: sizes.large}
    _ours(bench, 50, expected)
    times = _ours(bench, sizes.reads, expected)
    log(f"  balance: {sizes.large} entries {median(times[LARGE]):.0f}us, {sizes.small} entries "
        f"{median(times[SMALL]):.0f}us (median of {sizes.reads} reads each)")  # fmt: skip
    return Result(
        "balance",
        bench.engine,
        median(times[LARGE]),
        median(times[SMALL]),
        TARGET,
        higher_is_better=False,
        extra={
            "unit": "us/read",
            "entries_small": sizes.small,
            "entries_large": int(count),
            "reads": sizes.reads,
            "dbapi_us_small": round(_dbapi(bench, SMALL, sizes.reads), 1),
            "dbapi_us_large": round(_dbapi(bench, LARGE, sizes.reads), 1),
        },
    )
