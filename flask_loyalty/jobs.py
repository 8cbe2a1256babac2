"""Background jobs: expiry, pending release and reservation time-outs.

Each job works in chunks of ``LOYALTY_JOB_CHUNK_SIZE``, one transaction per
chunk, a few set-based statements each (see :mod:`flask_loyalty.sweeps`).
They are idempotent and safe to run from cron on several hosts at once: a
second run, or a concurrent one, finds nothing left to do.
"""

from __future__ import annotations

import datetime as dt
import functools
import typing as t

from . import points
from . import signals
from .chunks import sweep_chunk
from .config import config_value
from .errors import InvalidRequest
from .errors import InvalidState
from .errors import MemberClosed
from .posting import to_utc
from .proxies import get_state
from .signals import send

#: Called after each chunk with the number of entries written so far.
Progress = t.Callable[[int], None]


def _chunk_size(chunk_size: int | None) -> int:
    size = int(config_value("JOB_CHUNK_SIZE")) if chunk_size is None else chunk_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidRequest(f"chunk_size must be a positive whole number, not {size!r}.")
    return size


def _sweep(
    what: str,
    signal: t.Any,
    now: dt.datetime | None,
    chunk_size: int | None,
    progress: Progress | None,
    actor: str,
) -> int:
    state = get_state()
    store = state.store
    when = to_utc(now, "now") or state.now()
    size = _chunk_size(chunk_size)
    total = 0
    after: tuple[t.Any, ...] | None = None
    while True:
        # Each chunk starts after the previous one's last lot (keyset paging),
        # so a run reads every lot once rather than once per chunk.
        # A chunk that wrote nothing was swept by another process in the
        # meantime; the next chunk goes on after it all the same.
        chunk = store.atomic(functools.partial(sweep_chunk, store, what, when, size, after, actor))
        if chunk.written:
            total += chunk.written
            send(signal, member_ids=chunk.member_ids, count=chunk.written)
            if progress is not None:
                progress(total)
        if chunk.end is None:
            return total
        after = chunk.end


def expire_points(
    *, now: dt.datetime | None = None, chunk_size: int | None = None, progress: Progress | None = None
) -> int:
    """Expire what is left of every lot whose expiry has passed.

    :param now: the time to expire at; the extension's clock by default.
    :param chunk_size: lots per transaction; ``LOYALTY_JOB_CHUNK_SIZE`` by default.
    :param progress: called after each chunk with the running total.
    :returns: the number of lots expired (one ``expire`` entry each).
    """
    return _sweep("expire", signals.points_expired, now, chunk_size, progress, "job:expire")


def release_pending(
    *, now: dt.datetime | None = None, chunk_size: int | None = None, progress: Progress | None = None
) -> int:
    """Make every pending lot whose ``available_from`` has passed available.

    :returns: the number of lots released (one ``activate`` entry each).
    """
    return _sweep("activate", signals.points_activated, now, chunk_size, progress, "job:release-pending")


def release_reservations(
    *, now: dt.datetime | None = None, chunk_size: int | None = None, progress: Progress | None = None
) -> int:
    """Release every held reservation whose ``expires_at`` has passed.

    Each release is its own exactly-once operation (a checkout that captures
    at the same moment wins or loses cleanly).

    :returns: the number of reservations released.
    """
    state = get_state()
    when = to_utc(now, "now") or state.now()
    size = _chunk_size(chunk_size)
    total = 0
    seen: set[tuple[int, str]] = set()
    while True:
        due = state.store.atomic(lambda: state.store.due_reservations(when, size))
        rows = [r for r in due if (r.member_id, r.source_key) not in seen]
        if not rows:
            return total
        for row in rows:
            seen.add((row.member_id, row.source_key))
            try:
                points.release(row.member_id, key=row.source_key, actor="job:release-reservations",
                               reason="reservation timed out")  # fmt: skip
            except (InvalidState, MemberClosed):
                continue
            total += 1
        if progress is not None:
            progress(total)
