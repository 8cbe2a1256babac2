"""Membership tiers: who qualifies for which tier, and when members move.

``LOYALTY_TIERS`` lists the tiers from lowest to highest, each with the
threshold of the qualifying metric (``LOYALTY_TIER_METRIC``) that reaches it.
The metric is summed over the windows of ``LOYALTY_TIER_PERIOD`` (see
:func:`windows_at`); a member *qualifies* for the highest tier whose threshold
the largest of those sums reaches.

- **Upgrades apply at once.** :func:`~flask_loyalty.orders.order_paid` and
  :func:`~flask_loyalty.points.earn` call :func:`promote_within` in their own
  transaction, after the credit: a member who now qualifies for a higher tier
  moves up before the transaction commits. The order (or earn) that crosses
  the threshold was priced at the old tier's multiplier; the next one earns
  at the new tier's.
- **Downgrades wait for the period's end and the grace period.** A completed
  period keeps counting until its successor has ended and
  ``LOYALTY_TIER_GRACE_DAYS`` more days have passed, so the tier a member
  qualifies for only falls when a qualifying period drops out. The job
  :func:`evaluate_tiers` (``flask loyalty evaluate-tiers``) applies it.
- **Refunds lower the metric of the period the purchase counted in.** A
  refunded or cancelled purchase is taken out of the sums as if it had never
  been made; the next run of the job moves the member down if that took the
  qualification away.

Every change of tier sends :data:`~flask_loyalty.signals.tier_changed` after
its transaction commits. See ``docs/tiers.rst``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

import sqlalchemy as sa

from . import signals
from .config import config_value
from .errors import InvalidRequest
from .members import get as get_member
from .posting import member_id_of
from .posting import to_utc
from .proxies import get_state
from .signals import send
from .tier_config import configured_tiers
from .tier_config import grace_days
from .tier_config import Tier
from .tier_config import tier_metric
from .tier_config import tier_period

if t.TYPE_CHECKING:
    from .posting import Operation
    from .store import LoyaltyStore

#: Called after each chunk with the number of members whose tier changed so far.
Progress = t.Callable[[int], None]

# Timestamps have microsecond precision on every engine: a window that ends
# "at T, included" ends just before T plus one microsecond.
_TICK = dt.timedelta(microseconds=1)


@dataclasses.dataclass(frozen=True)
class Window:
    """A stretch of time over which the metric is summed: ``start <= at < end``."""

    #: The first instant counted; ``None`` for the beginning of time.
    start: dt.datetime | None
    #: The first instant not counted.
    end: dt.datetime

    def __contains__(self, at: dt.datetime) -> bool:
        return (self.start is None or self.start <= at) and at < self.end


@dataclasses.dataclass(frozen=True)
class Standing:
    """A member's tier and how far the member is from the next one."""

    member_id: int
    #: The member's tier now (``Member.tier``), or ``None``.
    tier: str | None
    #: When the member reached it.
    since: dt.datetime | None
    #: The metric in the current window (:func:`windows_at`'s first): points,
    #: or minor units of money.
    metric: int
    #: The tier the windows qualify the member for now, or ``None``.
    qualified: str | None
    #: The lowest tier above the member's, or ``None`` at the top.
    next_tier: Tier | None
    #: How much more of the metric in the current window reaches ``next_tier``.
    to_next: int | None


# -- qualification -------------------------------------------------------------


def _year_back(at: dt.datetime) -> dt.datetime:
    """The same instant twelve months earlier (29 February becomes the 28th)."""
    if at.month == 2 and at.day == 29:
        return at.replace(year=at.year - 1, day=28)
    return at.replace(year=at.year - 1)


def windows_at(at: dt.datetime, *, period: str | None = None, grace: int | None = None) -> tuple[Window, ...]:
    """The windows whose sums qualify a member at ``at``; the current one first.

    - ``lifetime``: everything up to ``at``.
    - ``calendar_year`` (UTC years): this year up to ``at``, and last year;
      during the first ``grace`` days of this year, the year before last too.
      A year's qualification so keeps counting to the end of the next year
      plus the grace period: it is gone at exactly 1 January, 00:00, plus
      ``grace`` days, of the year after next.
    - ``rolling_12_months``: the twelve months up to ``at`` (after the same
      instant twelve months ago, up to ``at`` included), and with a grace
      period, the twelve months that ended ``grace`` days ago. An entry so
      counts until exactly twelve months plus ``grace`` days after it.

    :param period: ``LOYALTY_TIER_PERIOD`` by default.
    :param grace: ``LOYALTY_TIER_GRACE_DAYS`` by default.
    """
    period = tier_period() if period is None else period
    grace = grace_days() if grace is None else grace
    through = at + _TICK
    if period == "lifetime":
        return (Window(None, through),)
    if period == "rolling_12_months":
        windows = [Window(_year_back(at) + _TICK, through)]
        if grace:
            lagged = at - dt.timedelta(days=grace)
            windows.append(Window(_year_back(lagged) + _TICK, lagged + _TICK))
        return tuple(windows)
    year = dt.datetime(at.year, 1, 1)
    last = year.replace(year=at.year - 1)
    windows = [Window(year, through), Window(last, year)]
    if at < year + dt.timedelta(days=grace):
        windows.append(Window(last.replace(year=at.year - 2), last))
    return tuple(windows)


def qualified_for(tiers: t.Sequence[Tier], value: int) -> Tier | None:
    """The highest of ``tiers`` whose threshold ``value`` reaches, or ``None``."""
    best = None
    for tier in tiers:
        if value >= tier.minimum:
            best = tier
    return best


def _rank(tiers: t.Sequence[Tier], name: str | None) -> int:
    """The position of tier ``name``; -1 for no tier or one no longer configured."""
    return next((i for i, tier in enumerate(tiers) if tier.name == name), -1)


def _in(at: t.Any, window: Window) -> sa.ColumnElement[bool]:
    if window.start is None:
        return t.cast(sa.ColumnElement[bool], at < window.end)
    return sa.and_(at >= window.start, at < window.end)


def _earliest(windows: t.Sequence[Window]) -> dt.datetime | None:
    starts = [w.start for w in windows]
    return None if None in starts else min(t.cast(list[dt.datetime], starts))


def _sums_query(store: LoyaltyStore, members: t.Any, windows: t.Sequence[Window], metric: str) -> t.Any:
    """One aggregate query: per member, the metric summed over each window.

    ``members`` turns a member-id column into the condition selecting the
    members. Earned points count at the time of their earn entry, less the
    reversals of that earn (a refund or cancellation, whenever it happened);
    money counts at the time its order was paid, less what was refunded of
    that order; cancelled orders do not count.
    """
    earliest = _earliest(windows)
    if metric == "points_earned":
        e, orig = store.entry, store.entry.alias("earned")
        counted = sa.or_(e.c.kind == "earn", orig.c.kind == "earn")
        at: t.Any = sa.case((e.c.kind == "earn", e.c.created_at), else_=orig.c.created_at)
        query = (
            sa.select(
                e.c.member_id,
                *(sa.func.sum(sa.case((sa.and_(counted, _in(at, w)), e.c.points), else_=0)) for w in windows),
            )
            .outerjoin(orig, orig.c.id == e.c.reverses_id)
            .where(members(e.c.member_id), e.c.kind.in_(("earn", "reverse")))
            .group_by(e.c.member_id)
        )
        # A reversal never precedes its earn: entries older than every window
        # cannot count, whatever they reverse.
        return query if earliest is None else query.where(e.c.created_at >= earliest)
    o = store.models.Order.__table__
    paid = o.c.total_minor - o.c.points_value_minor - o.c.refunded_minor
    query = (
        sa.select(
            o.c.member_id, *(sa.func.sum(sa.case((_in(o.c.paid_at, w), paid), else_=0)) for w in windows)
        )
        .where(members(o.c.member_id), o.c.paid_at.is_not(None), o.c.status != "cancelled")
        .group_by(o.c.member_id)
    )
    return query if earliest is None else query.where(o.c.paid_at >= earliest)


def _sums(
    store: LoyaltyStore, member_ids: t.Sequence[int], windows: t.Sequence[Window]
) -> dict[int, list[int]]:
    """Per member, the metric in each window (members with nothing are left out)."""
    if len(member_ids) == 1:
        only = member_ids[0]

        def members(column: t.Any) -> t.Any:
            return column == only
    else:

        def members(column: t.Any) -> t.Any:
            return column.in_(member_ids)

    query = store.fresh(_sums_query(store, members, windows, tier_metric()))
    return {int(row[0]): [int(v or 0) for v in row[1:]] for row in store.execute(query).all()}


def promote_within(op: Operation, tier: str | None = None) -> str | None:
    """Move the operation's member up, at once, to the tier it now qualifies for.

    For services that credit inside a transaction of their own (paid orders,
    earns), after the credit: one aggregate query over the member's entries
    (or orders), with the member already locked. Never moves a member down.
    Sends :data:`~flask_loyalty.signals.tier_changed` after commit.

    :param tier: the member's tier as read in this transaction; read when omitted.
    :returns: the new tier's name, or ``None`` if the member stays.
    """
    tiers = configured_tiers()
    if not tiers:
        return None
    store = op.store
    current = store.member_tier(op.member_id)[0] if tier is None else tier
    values = _sums(store, [op.member_id], windows_at(op.now)).get(op.member_id, [0])
    best = qualified_for(tiers, max(values))
    if best is None or _rank(tiers, best.name) <= _rank(tiers, current):
        return None
    store.set_member_tier(op.member_id, best.name, op.now)
    op.notify(signals.tier_changed, after=True, member_id=op.member_id, old=current, new=best.name)
    return best.name


# -- the job -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TierChange:
    """One member's move from tier ``old`` to tier ``new`` (names or ``None``)."""

    member_id: int
    old: str | None
    new: str | None


def _chunk_size(chunk_size: int | None) -> int:
    size = config_value("JOB_CHUNK_SIZE") if chunk_size is None else chunk_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidRequest(f"chunk_size must be a positive whole number, not {size!r}.")
    return size


def evaluate_tiers(
    *, now: dt.datetime | None = None, chunk_size: int | None = None, progress: Progress | None = None
) -> int:
    """Move every active member to the tier the windows at ``now`` qualify it for.

    This applies upgrades that have not been applied yet and the downgrades
    that are due: a member whose qualifying period dropped out (after its
    successor's end plus the grace period), whose qualifying purchase was
    refunded, or whose tier is no longer configured. Members go in id order,
    ``chunk_size`` per transaction, each chunk locked before it is read, so
    the job is idempotent and two runs at once change each member once.

    :param now: the time to evaluate at; the extension's clock by default.
    :param chunk_size: members per transaction; ``LOYALTY_JOB_CHUNK_SIZE`` by default.
    :param progress: called after each chunk that changed a tier, with the running total.
    :returns: the number of members whose tier changed.
    :raises ValueError: if the tier configuration is not usable.
    """
    state = get_state()
    store = state.store
    when = to_utc(now, "now") or state.now()
    size = _chunk_size(chunk_size)
    tiers = configured_tiers()
    windows = windows_at(when)
    m = store.member
    total = 0
    last = 0

    def work() -> tuple[list[TierChange], int]:
        # Locked in id order, the order every writer locks members in.
        rows = store.execute(
            sa.select(m.c.id, m.c.tier)
            .where(m.c.id > last, m.c.status == "active")
            .order_by(m.c.id)
            .limit(size)
            .with_for_update()
        ).all()
        if not rows:
            return [], 0
        ids = [int(row.id) for row in rows]
        sums = _sums(store, ids, windows) if tiers else {}
        changes = []
        for row in rows:
            best = qualified_for(tiers, max(sums.get(row.id, [0])))
            new = None if best is None else best.name
            if new != row.tier:
                store.set_member_tier(row.id, new, when)
                changes.append(TierChange(row.id, row.tier, new))
        return changes, ids[-1]

    while True:
        changes, last = store.atomic(work)
        for change in changes:
            send(signals.tier_changed, member_id=change.member_id, old=change.old, new=change.new)
        if changes:
            total += len(changes)
            if progress is not None:
                progress(total)
        if not last:
            return total


# -- reading -------------------------------------------------------------------


def standing(member: t.Any, *, at: dt.datetime | None = None) -> Standing:
    """The member's tier, metric and distance to the next tier; writes nothing.

    :param member: a member or member id.
    :param at: the time to read the windows at; now by default.
    :raises MemberNotFound: if there is no such member.
    """
    state = get_state()
    member_id = member_id_of(get_member(member))
    when = to_utc(at, "at") or state.now()
    tiers = configured_tiers()
    tier, since = state.store.member_tier(member_id)
    values = _sums(state.store, [member_id], windows_at(when)).get(member_id, [0]) if tiers else [0]
    best = qualified_for(tiers, max(values))
    rank = _rank(tiers, tier)
    following = tiers[rank + 1] if rank + 1 < len(tiers) else None
    return Standing(
        member_id=member_id,
        tier=tier,
        since=since,
        metric=values[0],
        qualified=None if best is None else best.name,
        next_tier=following,
        to_next=None if following is None else max(0, following.minimum - values[0]),
    )
