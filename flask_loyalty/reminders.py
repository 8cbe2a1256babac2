"""Expiry reminders: telling members before their points expire.

:func:`remind` (``flask loyalty remind``, daily) looks at every live lot that
expires within one of ``LOYALTY_REMINDER_WINDOWS`` (days; ``(30, 7)`` by
default) and, per member and window, records a reminder for each such lot
and then sends :data:`~flask_loyalty.signals.points_expiring` and calls the
hook registered with :meth:`Loyalty.reminder_sender
<flask_loyalty.Loyalty.reminder_sender>`.

Each lot is reminded once per window: the record is committed before
anything is sent, under the member's lock, so running the job twice or from
two processes at once sends nothing twice (a failure while sending is
logged and not retried: a member may miss a reminder, never get two). A lot
first seen inside a smaller window gets only that window's reminder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import typing as t

from . import signals
from .config import config_value
from .member_lock import run_locked_members
from .members import member_for_user
from .posting import Operation
from .posting import to_utc
from .proxies import current_loyalty
from .proxies import get_state
from .signals import send

__all__ = ["Reminder", "remind", "reminders_of"]

log = logging.getLogger("flask_loyalty")


@dataclasses.dataclass(frozen=True)
class Reminder:
    """One reminder to one member: points of some lots that expire within a window."""

    member_id: int
    window_days: int
    points: int
    #: When the first of them expires.
    expires_at: dt.datetime


def _record(ops: dict[int, Operation], lots: list[t.Any], window: int, when: dt.datetime) -> list[Reminder]:
    """Record reminders for the lots not reminded yet (re-read under the members' locks)."""
    store = next(iter(ops.values())).store
    wanted = {lot.id for lot in lots}
    fresh = [
        lot for lot in store.lots_to_remind(window, when, min(wanted) - 1, len(lots)) if lot.id in wanted
    ]
    store.insert_reminders([
        {"member_id": lot.member_id, "lot_id": lot.id, "window_days": window, "points": lot.remaining,
         "expires_at": lot.expires_at, "created_at": when}
        for lot in fresh
    ])  # fmt: skip
    by_member: dict[int, list[t.Any]] = {}
    for lot in fresh:
        by_member.setdefault(lot.member_id, []).append(lot)
    return [
        Reminder(member_id, window, sum(lot.remaining for lot in group), min(lot.expires_at for lot in group))
        for member_id, group in sorted(by_member.items())
    ]


def _deliver(reminder: Reminder) -> None:
    payload = dataclasses.asdict(reminder)
    send(signals.points_expiring, **payload)
    hook = current_loyalty.extension.reminder_sender_hook
    if hook is None:
        return
    try:
        hook(**payload)
    except Exception:
        # Recorded already: the member may miss this reminder, but never gets it twice.
        log.exception(
            "The reminder hook failed for member %s (%s days).", reminder.member_id, reminder.window_days
        )


def remind(*, now: dt.datetime | None = None, chunk_size: int | None = None) -> list[Reminder]:
    """Record and send the expiry reminders that are due; return them.

    :param now: run as of this time; now by default.
    :param chunk_size: lots per transaction; ``LOYALTY_JOB_CHUNK_SIZE`` by default.
    """
    state = get_state()
    when = to_utc(now, "now") or state.now()
    size = chunk_size or int(config_value("JOB_CHUNK_SIZE"))
    sent: list[Reminder] = []
    for window in sorted(set(config_value("REMINDER_WINDOWS"))):
        after = 0
        while True:
            lots = state.store.atomic(
                functools.partial(state.store.lots_to_remind, window, when, after, size)
            )
            if not lots:
                break
            after = lots[-1].id
            members = sorted({lot.member_id for lot in lots})
            found = run_locked_members(
                members, functools.partial(_record, lots=lots, window=window, when=when)
            )
            for reminder in found:
                _deliver(reminder)
            sent.extend(found)
    return sent


def reminders_of(member: t.Any, *, limit: int = 20) -> list[Reminder]:
    """The reminders recorded for ``member``, newest first (one per lot)."""
    member_id = member_for_user(member)
    store = current_loyalty.store
    rows = store.atomic(lambda: store.member_reminders(member_id, limit))
    return [Reminder(int(r.member_id), int(r.window_days), int(r.points), r.expires_at) for r in rows]
