"""Action points: points for things members do besides buying.

An action has a name, a number of points and an optional cap: at most
``cap`` awards per ``per`` (``day``, ``week``, ``month`` or ``year``, in UTC).
Actions come from ``LOYALTY_ACTIONS`` and from
:meth:`Loyalty.register_action <flask_loyalty.Loyalty.register_action>`.
Three names have built-in callers:

``signup``
    awarded by :func:`~flask_loyalty.members.enroll` to every new member;
``birthday``
    awarded by :func:`award_birthdays` (``flask loyalty birthdays``, daily)
    once per year; members born on 29 February get it on 28 February in
    other years;
``review``
    awarded by :func:`award_review`, which the shop calls for a review of a
    verified purchase.

:func:`award` is idempotent by action, member and key: the same key never
earns twice. Over the cap it raises
:class:`~flask_loyalty.errors.ActionCapReached` and writes nothing.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import typing as t

from . import signals
from .config import config_value
from .errors import ActionCapReached
from .errors import InvalidRequest
from .errors import InvalidState
from .member_lock import run_locked
from .members import member_for_user
from .points import credit
from .posting import digest
from .posting import Operation
from .posting import Posting
from .posting import to_utc
from .proxies import current_loyalty
from .proxies import get_state

__all__ = [
    "Action",
    "ActionAward",
    "actions",
    "configured_actions",
    "award",
    "award_review",
    "award_birthdays",
    "PERIODS",
]

#: Cap periods.
PERIODS = ("day", "week", "month", "year")


@dataclasses.dataclass(frozen=True)
class Action:
    """An action that earns points."""

    name: str
    points: int
    #: At most this many awards per :attr:`per`; ``None`` for no cap.
    cap: int | None = None
    #: The cap's period: ``day``, ``week`` (ISO weeks), ``month`` or ``year``.
    per: str | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or not self.name
            or len(self.name) > 64
            or not self.name.isidentifier()
        ):
            raise ValueError(
                f"An action name is a Python identifier of at most 64 characters, not {self.name!r}."
            )
        for value, what in ((self.points, "points"), (self.cap, "cap")):
            if value is None and what == "cap":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**9:
                raise ValueError(
                    f"Action {self.name!r}: {what} must be a whole number from 1, not {value!r}."
                )
        if (self.cap is None) != (self.per is None):
            raise ValueError(f"Action {self.name!r}: give both cap and per, or neither.")
        if self.per is not None and self.per not in PERIODS:
            raise ValueError(
                f"Action {self.name!r}: per must be one of {', '.join(PERIODS)}, not {self.per!r}."
            )


@dataclasses.dataclass(frozen=True)
class ActionAward:
    """What :func:`award` did."""

    member_id: int
    action: str
    key: str
    points: int
    #: The ledger entry (the first call's, for a repeat).
    posting: Posting | None
    replayed: bool = False


def configured_actions(app: t.Any = None) -> dict[str, Action]:
    """The actions of ``LOYALTY_ACTIONS``, by name.

    :raises ValueError: for a malformed ``LOYALTY_ACTIONS``.
    """
    configured = config_value("ACTIONS", app)
    if not isinstance(configured, t.Mapping):
        raise ValueError(f"LOYALTY_ACTIONS must be a mapping of names to settings, not {configured!r}.")
    found: dict[str, Action] = {}
    for name, values in configured.items():
        if not isinstance(values, t.Mapping) or set(values) - {"points", "cap", "per"}:
            raise ValueError(
                f"LOYALTY_ACTIONS[{name!r}] must be a mapping with points, cap and per, not {values!r}."
            )
        try:
            found[name] = Action(name, **values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"LOYALTY_ACTIONS[{name!r}]: {error}") from None
    return found


def actions() -> dict[str, Action]:
    """The configured and registered actions of the current app, by name."""
    return {**configured_actions(), **current_loyalty.extension.actions}


def period_of(per: str | None, at: dt.datetime) -> str:
    """The name of the cap period ``at`` falls in (``2026-11-24``, ``2026-W48``, ``2026-11``, ``2026``)."""
    if per == "day":
        return at.strftime("%Y-%m-%d")
    if per == "week":
        year, week, _ = at.isocalendar()
        return f"{year}-W{week:02d}"
    if per == "month":
        return at.strftime("%Y-%m")
    return at.strftime("%Y")


def _key(key: t.Any) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > 120:
        raise InvalidRequest(f"An action key is a non-empty string of at most 120 characters, not {key!r}.")
    return key


def award_within(op: Operation, action: Action, key: str) -> tuple[Posting | None, bool]:
    """Award ``action`` under ``key`` with ``op`` (the body of :func:`award`).

    :returns: the posting and whether it was a repeat.
    """
    store = op.store
    ledger_key = f"action:{action.name}:{key}"
    if store.find_award(op.member_id, action.name, key) is not None:
        prior = store.find_entry(op.member_id, "earn", ledger_key)
        return (Posting.from_row(prior, replayed=True) if prior is not None else None), True
    period = period_of(action.per, op.now)
    if action.cap is not None and store.count_awards(op.member_id, action.name, period) >= action.cap:
        raise ActionCapReached(
            f"{action.name} earns points at most {action.cap} time(s) a {action.per}.", action=action.name
        )
    op = op.then("earn", ledger_key, digest("earn", {"points": action.points, "action": action.name}))
    posting = credit(op, action.points, pending=False, lifetime=action.points, expires_at=_expiry(op.now),
                     available_from=op.now, actor=None, reason=f"action {action.name}")  # fmt: skip
    store.insert_award({"member_id": op.member_id, "action": action.name, "key": key, "period": period,
                        "points": action.points, "created_at": op.now})  # fmt: skip
    op.notify(signals.points_earned, member_id=op.member_id, entry=posting)
    op.notify(signals.action_awarded, after=True, member_id=op.member_id, action=action.name, key=key,
              entry=posting)  # fmt: skip
    return posting, False


def _expiry(now: dt.datetime) -> dt.datetime | None:
    days = config_value("POINTS_EXPIRY_DAYS")
    return None if days is None else now + dt.timedelta(days=int(days))


def award(member: t.Any, action: str, *, key: str) -> ActionAward:
    """Credit ``member`` the points of ``action``, once per ``key``.

    :param action: the action's name.
    :param key: what makes this award unique for the member and action: a
        review id, a year, ``"once"``.
    :raises InvalidRequest: for an unknown action or a malformed key.
    :raises ActionCapReached: if the member reached the action's cap for
        the current period (nothing is written).
    """
    spec = actions().get(action) if isinstance(action, str) else None
    if spec is None:
        raise InvalidRequest(f"There is no action {action!r}; configure it in LOYALTY_ACTIONS.")
    checked = _key(key)
    member_id = member_for_user(member)

    def work(op: Operation) -> ActionAward:
        posting, replayed = award_within(op, spec, checked)
        return ActionAward(member_id, spec.name, checked, spec.points, posting, replayed)

    return run_locked(member_id, work, replayed=lambda a: a.replayed)


def award_review(member: t.Any, review_id: t.Any, *, verified_purchase: bool) -> ActionAward:
    """Award the ``review`` action for review ``review_id``, once per review.

    :param verified_purchase: whether the shop verified that the member
        bought the product; only such reviews earn points.
    :raises InvalidState: for a review of an unverified purchase.
    """
    if verified_purchase is not True:
        raise InvalidState("Only reviews of verified purchases earn points.")
    return award(member, "review", key=f"review:{review_id}")


def birthday_days(day: dt.date) -> list[int]:
    """The birth days of month ``day.month`` whose birthday is celebrated on ``day``.

    29 February is celebrated on 28 February in years without one.
    """
    days = [day.day]
    if day.month == 2 and day.day == 28 and not calendar.isleap(day.year):
        days.append(29)
    return days


def award_birthdays(*, now: dt.datetime | None = None, chunk_size: int | None = None) -> int:
    """Award the ``birthday`` action to every member whose birthday is today (UTC).

    Once per member and year, however often it runs and from however many
    processes. Does nothing when no ``birthday`` action is configured.

    :returns: the number of members awarded.
    """
    spec = actions().get("birthday")
    if spec is None:
        return 0
    state = get_state()
    when = to_utc(now, "now") or state.now()
    size = chunk_size or int(config_value("JOB_CHUNK_SIZE"))
    today = when.date()
    days = birthday_days(today)

    def celebrate(op: Operation) -> bool:
        op.now = when
        return not award_within(op, spec, str(today.year))[1]

    def chunk(after: int) -> list[int]:
        return state.store.atomic(lambda: state.store.birthday_members(today.month, days, after, size))

    total = 0
    ids = chunk(0)
    while ids:
        for member_id in ids:
            total += run_locked(member_id, celebrate, replayed=lambda done: not done)
        ids = chunk(ids[-1])
    return total
