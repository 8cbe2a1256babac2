"""What a member sees of their points: history pages and points about to expire."""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

from .config import config_value
from .errors import InvalidRequest
from .members import member_for_user
from .models import ENTRY_KINDS
from .posting import Posting
from .posting import to_utc
from .proxies import current_loyalty
from .proxies import get_state

__all__ = ["HistoryPage", "ExpiringPoints", "history", "expiring_soon", "expiry_schedule"]


@dataclasses.dataclass(frozen=True)
class HistoryPage:
    """One page of a member's ledger entries, newest first."""

    entries: tuple[Posting, ...]
    #: Pass as ``before`` for the next (older) page; ``None`` on the last page.
    next_before: int | None


@dataclasses.dataclass(frozen=True)
class ExpiringPoints:
    """Available points that expire soon."""

    points: int
    #: When the first of them expires, or ``None`` when none do.
    soonest: dt.datetime | None
    #: The end of the window looked at.
    until: dt.datetime


def history(
    member: t.Any,
    *,
    kinds: t.Iterable[str] = (),
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = None,
    before: int | None = None,
) -> HistoryPage:
    """A page of ``member``'s ledger entries, newest first, for history pages and the API.

    Pages are found by key (``before``, an entry id), so every page costs the
    same whatever the history's length.

    :param kinds: only entries of these kinds (see ``docs/ledger.rst``).
    :param since: only entries created at or after this time.
    :param until: only entries created before this time.
    :param limit: entries per page, 1 to 500; ``LOYALTY_PAGE_SIZE`` by default.
    :param before: the ``next_before`` of the previous page.
    :raises InvalidRequest: for an unknown kind, a bad limit or cursor, or
        ``until`` not after ``since``.
    """
    wanted = tuple(dict.fromkeys(kinds))
    unknown = [k for k in wanted if k not in ENTRY_KINDS]
    if unknown:
        raise InvalidRequest(f"Unknown entry kind(s): {', '.join(map(repr, unknown))}.")
    size = int(config_value("PAGE_SIZE")) if limit is None else limit
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 500:
        raise InvalidRequest(f"limit must be a whole number from 1 to 500, not {limit!r}.")
    if before is not None and (isinstance(before, bool) or not isinstance(before, int) or before < 1):
        raise InvalidRequest(f"{before!r} is not a history cursor.")
    start, end = to_utc(since, "since"), to_utc(until, "until")
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("until must be after since.")
    member_id = member_for_user(member)
    store = current_loyalty.store
    rows = store.atomic(
        lambda: store.entries_page(
            member_id, limit=size + 1, before_id=before, kinds=wanted, since=start, until=end
        )
    )
    page = tuple(Posting.from_row(row) for row in rows[:size])
    return HistoryPage(page, page[-1].id if len(rows) > size else None)


def expiring_soon(member: t.Any, *, days: int | None = None) -> ExpiringPoints:
    """The member's available points that expire within ``days`` (``LOYALTY_EXPIRING_SOON_DAYS``)."""
    span = int(config_value("EXPIRING_SOON_DAYS")) if days is None else days
    if isinstance(span, bool) or not isinstance(span, int) or span < 1:
        raise InvalidRequest(f"days must be a whole number of at least 1, not {days!r}.")
    member_id = member_for_user(member)
    state = get_state()
    now = state.now()
    until = now + dt.timedelta(days=span)
    points, soonest = state.store.atomic(lambda: state.store.expiring_points(member_id, now, until))
    return ExpiringPoints(points, soonest, until)


def expiry_schedule(member: t.Any, *, limit: int = 10) -> list[tuple[dt.datetime, int]]:
    """When the member's available points expire: ``(expires_at, points)``, soonest first.

    Points that never expire are left out. At most ``limit`` (1 to 100) dates.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise InvalidRequest(f"limit must be a whole number from 1 to 100, not {limit!r}.")
    member_id = member_for_user(member)
    state = get_state()
    now = state.now()
    rows = state.store.atomic(lambda: state.store.expiry_schedule(member_id, now, limit))
    return [(row.expires_at, int(row.points)) for row in rows]
