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
import decimal
import typing as t
from decimal import Decimal

import sqlalchemy as sa
from flask import Flask

from . import signals
from .config import config_value
from .errors import InvalidRequest
from .members import get as get_member
from .money import decimals
from .posting import member_id_of
from .posting import to_utc
from .proxies import current_loyalty
from .signals import send

if t.TYPE_CHECKING:
    from .posting import Operation
    from .store import LoyaltyStore

#: The qualifying metrics accepted by ``LOYALTY_TIER_METRIC``.
TIER_METRICS = ("points_earned", "amount_spent")
#: The qualifying periods accepted by ``LOYALTY_TIER_PERIOD``.
TIER_PERIODS = ("lifetime", "rolling_12_months", "calendar_year")
#: The longest grace period, in days: a lagging window never leaves a gap.
MAX_GRACE_DAYS = 365
#: The longest tier name (the width of ``Member.tier``).
MAX_NAME_LENGTH = 32
#: The keys a ``LOYALTY_TIERS`` entry may have.
TIER_KEYS = ("name", "threshold", "multiplier", "benefits")

#: Called after each chunk with the number of members whose tier changed so far.
Progress = t.Callable[[int], None]

# Timestamps have microsecond precision on every engine: a window that ends
# "at T, included" ends just before T plus one microsecond.
_TICK = dt.timedelta(microseconds=1)


@dataclasses.dataclass(frozen=True)
class Tier:
    """One tier of ``LOYALTY_TIERS``, checked."""

    name: str
    #: The threshold as configured: points, or an amount of money.
    threshold: Decimal
    #: The earning multiplier (``1`` by default).
    multiplier: Decimal
    #: Free text describing the tier's benefits, for member pages.
    benefits: str
    #: The threshold in the metric's unit: points, or minor units of money.
    minimum: int


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


# -- configuration -------------------------------------------------------------


def _number(value: t.Any, what: str) -> Decimal:
    if isinstance(value, bool | float) or not isinstance(value, int | str | Decimal):
        raise ValueError(f"{what} must be a Decimal, int or str, not {value!r}.")
    try:
        number = Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"{what} must be a number, not {value!r}.") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{what} must be a finite number of at least 0, not {value!r}.")
    return number


def _minimum(value: t.Any, what: str, metric: str, places: int) -> tuple[Decimal, int]:
    """The threshold and its value in the metric's unit (points or minor units)."""
    number = _number(value, what)
    if metric == "points_earned":
        if number != number.to_integral_value():
            raise ValueError(f"{what} must be a whole number of points, not {value!r}.")
        return number, int(number)
    minor = number.scaleb(places)
    if minor != minor.to_integral_value():
        raise ValueError(f"{what} must be an amount with at most {places} decimal place(s), not {value!r}.")
    return number, int(minor)


def tier_metric(app: Flask | None = None) -> str:
    """The checked ``LOYALTY_TIER_METRIC``.

    :raises ValueError: for a value that is not one of :data:`TIER_METRICS`.
    """
    metric = config_value("TIER_METRIC", app)
    if metric not in TIER_METRICS:
        raise ValueError(f"LOYALTY_TIER_METRIC must be one of {TIER_METRICS}, not {metric!r}.")
    return t.cast(str, metric)


def tier_period(app: Flask | None = None) -> str:
    """The checked ``LOYALTY_TIER_PERIOD``.

    :raises ValueError: for a value that is not one of :data:`TIER_PERIODS`.
    """
    period = config_value("TIER_PERIOD", app)
    if period not in TIER_PERIODS:
        raise ValueError(f"LOYALTY_TIER_PERIOD must be one of {TIER_PERIODS}, not {period!r}.")
    return t.cast(str, period)


def grace_days(app: Flask | None = None) -> int:
    """The checked ``LOYALTY_TIER_GRACE_DAYS``.

    :raises ValueError: unless it is a whole number from 0 to :data:`MAX_GRACE_DAYS`.
    """
    days = config_value("TIER_GRACE_DAYS", app)
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_GRACE_DAYS:
        raise ValueError(
            f"LOYALTY_TIER_GRACE_DAYS must be a whole number from 0 to {MAX_GRACE_DAYS}, not {days!r}."
        )
    return days


def configured_tiers(app: Flask | None = None) -> tuple[Tier, ...]:
    """The tiers of ``LOYALTY_TIERS``, lowest first, checked.

    Each entry is a mapping with ``name`` (required, unique, at most
    :data:`MAX_NAME_LENGTH` characters), ``threshold`` (required: whole
    points for ``points_earned``, an amount of money for ``amount_spent``),
    ``multiplier`` (default 1) and ``benefits`` (text, default empty).
    Numbers are ints, strings or Decimals, never floats. Thresholds must
    strictly increase.

    :raises ValueError: naming ``LOYALTY_TIERS``, the entry and what is wrong.
    """
    raw = config_value("TIERS", app)
    if isinstance(raw, str | bytes | t.Mapping) or not isinstance(raw, t.Sequence):
        raise ValueError(f"LOYALTY_TIERS must be a list of mappings, not {raw!r}.")
    metric = tier_metric(app)
    places = decimals(app=app)
    tiers: list[Tier] = []
    for index, entry in enumerate(raw):
        where = f"LOYALTY_TIERS[{index}]"
        if not isinstance(entry, t.Mapping):
            raise ValueError(f"{where} must be a mapping with a name and a threshold, not {entry!r}.")
        unknown = sorted(set(entry) - set(TIER_KEYS), key=str)
        if unknown:
            raise ValueError(f"{where} has unknown key(s): {', '.join(map(str, unknown))}.")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise ValueError(
                f"{where}: name must be a text of 1 to {MAX_NAME_LENGTH} characters, not {name!r}."
            )
        where = f"{where} ({name!r})"
        if any(tier.name == name for tier in tiers):
            raise ValueError(f"{where}: tier names must be unique.")
        if "threshold" not in entry:
            raise ValueError(f"{where} needs a threshold.")
        threshold, minimum = _minimum(entry["threshold"], f"{where}: threshold", metric, places)
        if tiers and minimum <= tiers[-1].minimum:
            raise ValueError(
                f"{where}: thresholds must strictly increase; {threshold} does not exceed"
                f" {tiers[-1].threshold} of {tiers[-1].name!r}."
            )
        benefits = entry.get("benefits", "")
        if not isinstance(benefits, str):
            raise ValueError(f"{where}: benefits must be text, not {benefits!r}.")
        multiplier = _number(entry.get("multiplier", 1), f"{where}: multiplier")
        tiers.append(Tier(name, threshold, multiplier, benefits, minimum))
    return tuple(tiers)


def check_config(app: Flask) -> None:
    """Check every tier key of ``app``'s configuration (called by ``init_app``).

    :raises ValueError: naming the key whose value is not usable.
    """
    tier_period(app)
    grace_days(app)
    configured_tiers(app)


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
    state = current_loyalty
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
    state = current_loyalty
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
