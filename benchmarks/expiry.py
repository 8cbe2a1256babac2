"""Expiry sweep: expire half of ``lots`` lots spread over ``members`` members.

The data is loaded with bulk SQL: ``lots`` lots of 10 points, each with the
earn entry that made it, every other lot past its expiry (at distinct times)
and the rest expiring in the future; the members' cached balances match.

*Ours* is :func:`flask_loyalty.jobs.expire_points` with the default chunk
size (``LOYALTY_JOB_CHUNK_SIZE``): chunks of lots, one transaction and a few
set-based statements each, safe to run from several processes at once.

*The floor* is set-based raw SQL doing the same writes in one transaction:
insert an ``expire`` entry per expired lot with the balance after it (a window
function), reduce the members' cached balances, zero the lots.

Each side runs on a freshly loaded copy of the data. Metric: seconds for the
sweep; target: ours <= 1.5 x the floor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import typing as t

from flask_loyalty import jobs

from .harness import Bench
from .harness import ENTRY_COLUMNS
from .harness import log
from .harness import median
from .harness import Raw
from .harness import Result

#: Target: ours <= TARGET x the floor's time.
TARGET = 1.5
#: Points in each lot.
LOT_POINTS = 10
#: The time the sweep runs at.
NOW = dt.datetime(2026, 1, 1, 12, 0, 0)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Lots (half of them expired), members they are spread over, and repeats."""

    lots: int
    members: int
    rounds: int


def _expired_lots(sizes: Sizes) -> int:
    """How many of the lots are past their expiry (half, rounded up per member)."""
    return sizes.members * ((sizes.lots // sizes.members + 1) // 2)


def _load(bench: Bench, sizes: Sizes) -> float:
    """Load the lots, their earn entries and the members' balances; return seconds."""
    per_member = sizes.lots // sizes.members
    lots = per_member * sizes.members
    # Lot i is the k-th lot (k = (i - 1) / members) of member (i - 1) % members + 1;
    # each member's even-numbered lots expired before NOW, at distinct times.
    expires = bench.shifted(
        "?", f"CASE WHEN ((s.i - 1) / {sizes.members}) % 2 = 0 THEN -86400 - s.i ELSE 86400 * 30 + s.i END"
    )
    created = bench.shifted("?", f"-86400 * 400 + s.i - {lots}")
    statements: list[tuple[str, t.Any]] = [
        bench.load_members(sizes.members, per_member * LOT_POINTS, NOW - dt.timedelta(days=500)),
        (
            bench.insert(
                "lot",
                "id, member_id, points, remaining, pending, expired, available_from, expires_at, created_at",
                f"SELECT s.i, (s.i - 1) % {sizes.members} + 1, {LOT_POINTS}, {LOT_POINTS}, false, false,"
                f" {created}, {expires}, {created}{{defaults}} FROM s",
                prefix=bench.numbers(lots),
            ),
            (bench.ts(NOW), bench.ts(NOW), bench.ts(NOW)),
        ),
        (
            bench.insert(
                "entry",
                ENTRY_COLUMNS + ", lot_id, created_at",
                f"SELECT member_id, 'earn', {LOT_POINTS}, {LOT_POINTS}, 0, 0,"
                f" {LOT_POINTS} * ROW_NUMBER() OVER (PARTITION BY member_id ORDER BY id), 0, 0,"
                " 'order:' || CAST(id AS VARCHAR(20)), '', id, created_at{defaults} FROM {lot} ORDER BY id",
            ),
            (),
        ),
    ]
    if bench.engine == "postgresql":
        # Explicit ids were inserted; move the sequence past them as a live table's would be.
        statements.append(
            (bench.sql("SELECT setval(pg_get_serial_sequence('{lot}', 'id'), ?)"), (lots,)),
        )
    return bench.load(statements)


def _statements(bench: Bench, chunk: str = "") -> tuple[str, str, str]:
    """The floor's three statements; ``chunk`` narrows them to some lots (SQL on ``l``).

    Insert an ``expire`` entry per due lot with the balance after it, reduce the
    members' balances by their lots' total, zero the lots. The due time is the
    first parameter of each (after the entries' ``created_at``).
    """
    due = "l.remaining > 0 AND l.pending = false AND l.expired = false AND l.expires_at <= ?" + chunk
    insert = bench.insert(
        "entry",
        ENTRY_COLUMNS + ", lot_id, actor, reason, created_at",
        "SELECT l.member_id, 'expire', -l.remaining, -l.remaining, 0, 0,"
        " m.available - SUM(l.remaining) OVER (PARTITION BY l.member_id ORDER BY l.id),"
        " m.pending, m.reserved,"
        " 'lot:' || CAST(l.id AS VARCHAR(20)), '', l.id, 'floor', 'points expired', ?{defaults}"
        f" FROM {{lot}} l JOIN {{member}} m ON m.id = l.member_id WHERE {due}",
    )
    members = bench.sql(
        "UPDATE {member} SET available = available - x.total"
        " FROM (SELECT l.member_id, SUM(l.remaining) AS total"
        f" FROM {{lot}} l WHERE {due} GROUP BY l.member_id) x WHERE {{member}}.id = x.member_id"
    )
    lots = bench.sql("UPDATE {lot} SET remaining = 0, expired = true WHERE " + due.replace("l.", ""))
    return insert, members, lots


def _floor(raw: Raw, bench: Bench) -> float:
    """Expire every due lot with three set-based statements in one transaction; return seconds."""
    insert, members, lots = _statements(bench)
    now = bench.ts(NOW)
    started = time.perf_counter()
    raw.begin()
    raw.run(insert, (now, now))
    raw.run(members, (now,))
    raw.run(lots, (now,))
    raw.commit()
    return time.perf_counter() - started


def _floor_chunked(raw: Raw, bench: Bench, size: int) -> float:
    """The floor's statements chunk by chunk in lot-id order; return seconds.

    Each chunk is a transaction: select up to ``size`` due lots after the
    previous chunk in id order, lock their members in id order, then the three
    statements restricted to those lots. That is how the job chunked before it
    took the lots member by member: the difference to :func:`_floor` is the
    cost of chunking in that order.
    """
    select = bench.sql(
        "SELECT id, member_id FROM {lot} WHERE remaining > 0 AND pending = false AND expired = false"
        " AND expires_at <= ? AND id > ? ORDER BY id LIMIT ?"
    )
    now = bench.ts(NOW)
    last = 0
    started = time.perf_counter()
    while True:
        raw.begin()
        rows = raw.run(select, (now, last, size)).fetchall()
        if not rows:
            raw.commit()
            return time.perf_counter() - started
        ids = [row[0] for row in rows]
        member_ids = sorted({row[1] for row in rows})
        marks = ", ".join("?" * len(member_ids))
        raw.run(
            bench.sql(f"SELECT id FROM {{member}} WHERE id IN ({marks}) ORDER BY id FOR UPDATE"), member_ids
        )
        raw.cur.fetchall()
        insert, members, lots = _statements(bench, f" AND l.id IN ({', '.join('?' * len(ids))})")
        raw.run(insert, (now, now, *ids))
        raw.run(members, (now, *ids))
        raw.run(lots, (now, *ids))
        raw.commit()
        last = ids[-1]


def _ours(bench: Bench) -> float:
    """Run :func:`jobs.expire_points`; return seconds."""
    with bench.app.app_context():
        started = time.perf_counter()
        jobs.expire_points(now=NOW)
        elapsed = time.perf_counter() - started
        bench.db.session.remove()
    return elapsed


def _check(bench: Bench, sizes: Sizes) -> bool:
    """Half the lots expired once each, and the balances equal the ledger and the lots."""
    per_member = sizes.lots // sizes.members
    lots = per_member * sizes.members
    due = _expired_lots(sizes)
    expired = bench.scalar(bench.sql("SELECT COUNT(*) FROM {entry} WHERE kind = 'expire'"))
    cached = bench.scalar(bench.sql("SELECT SUM(available) FROM {member}"))
    ledger = bench.scalar(bench.sql("SELECT SUM(delta_available) FROM {entry}"))
    live = bench.scalar(bench.sql("SELECT SUM(remaining) FROM {lot}"))
    settled = bench.scalar(
        bench.sql(
            "SELECT COUNT(*) FROM {member} m WHERE m.available = (SELECT MIN(e.available_after)"
            " FROM {entry} e WHERE e.member_id = m.id AND e.kind = 'expire')"
        )
    )
    remaining = (lots - due) * LOT_POINTS
    return (
        int(expired) == due
        and int(cached) == int(ledger) == int(live) == remaining
        and int(settled) == sizes.members
    )


def run(bench: Bench, sizes: Sizes) -> Result:
    """Run the expiry workload on ``bench``: ours, the floor and the chunked floor in turn."""
    chunk_size = int(bench.app.config["LOYALTY_JOB_CHUNK_SIZE"])
    times: dict[str, list[float]] = {"ours": [], "floor": [], "floor_chunked": []}
    consistent = True
    for round_ in range(sizes.rounds):
        sides = list(times)
        for side in sides if round_ % 2 == 0 else sides[::-1]:
            bench.reset_schema()
            log(f"  loaded {sizes.lots} lots for {side} in {_load(bench, sizes):.1f}s")
            if side == "ours":
                times[side].append(_ours(bench))
            else:
                raw = bench.raw()
                try:
                    seconds = (
                        _floor(raw, bench) if side == "floor" else _floor_chunked(raw, bench, chunk_size)
                    )
                finally:
                    raw.close()
                times[side].append(seconds)
            consistent = consistent and _check(bench, sizes)
        log(
            "  expiry round {}: {}".format(
                round_ + 1, ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items())
            )
        )
    typical = {side: median(values) for side, values in times.items()}
    return Result(
        "expiry",
        bench.engine,
        typical["ours"],
        typical["floor"],
        TARGET,
        higher_is_better=False,
        conditions={"consistent": consistent},
        extra={
            "unit": "s",
            "lots": sizes.lots,
            "expired_lots": _expired_lots(sizes),
            "members": sizes.members,
            "chunk_size": chunk_size,
            "floor_chunked": round(typical["floor_chunked"], 3),
            "ratio_to_chunked": round(typical["ours"] / typical["floor_chunked"], 3),
            "rounds": sizes.rounds,
            **{f"{side}_rounds": [round(v, 2) for v in values] for side, values in times.items()},
        },
    )
