"""The ledger service against a plain-Python model of its rules.

A hypothesis state machine drives the real service (:mod:`flask_loyalty.points`,
:mod:`~flask_loyalty.jobs`, :mod:`~flask_loyalty.members`) on each database
engine and, after every step, compares the members' cached balances, their lots,
the reservations and the ledger with :class:`Ledger`, a model that applies the
documented rules on its own:

* a credit is a lot; a negative available balance is paid back first, so the lot
  holds only ``max(0, balance after) - max(0, balance before)``;
* a pending lot (``available_from`` in the future) cannot be spent until it is
  activated: by ``release_pending``, or by the member's next debit or reversal,
  which first activates the member's due pending lots and then expires the
  member's due lots;
* debits take from live lots soonest expiry first, never-expiring lots last,
  older lots first among equals;
* expiry removes a lot's remainder once, at or after its time;
* a reservation holds points out of the available balance; capturing spends
  them (a partial capture releases the rest), releasing returns them;
* a reversal of a redeem or capture returns points to the lots they came from,
  newest allocation first; points whose lot has expired meanwhile go to a new
  lot with the same expiry;
* a reversal of an earn takes what is left of the earn's own lot; then counts
  what of that lot expired (gone already, so nothing more is taken for it);
  then takes from the member's other live lots soonest expiry first; what is
  still missing makes the balance negative (``allow_negative``) or is the
  entry's shortfall (``clamp_to_zero``);
* every operation is exactly once per member, kind and key; invalid input,
  unknown and closed members and overdraws raise a specific error and write
  nothing.

Select the amount of work with ``LOYALTY_LEDGER_MODEL_PROFILE``: ``ci`` (the
default when ``CI`` is set: a fixed, derandomized run of about 3,000 steps, at
least 2,000, per engine, which must reach every kind of outcome), ``dev`` (the
default otherwise: a quick random run of 240 steps) or ``soak`` (a long random
run of about 30,000 steps per engine).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime as dt
import os
import typing as t
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant
from hypothesis.stateful import precondition
from hypothesis.stateful import rule
from hypothesis.stateful import RuleBasedStateMachine
from hypothesis.stateful import run_state_machine_as_test

from flask_loyalty import audit
from flask_loyalty import IdempotencyConflict
from flask_loyalty import InsufficientPoints
from flask_loyalty import InvalidRequest
from flask_loyalty import InvalidState
from flask_loyalty import jobs
from flask_loyalty import LoyaltyError
from flask_loyalty import MemberClosed
from flask_loyalty import MemberNotFound
from flask_loyalty import members
from flask_loyalty import NotFound
from flask_loyalty import points
from flask_loyalty import Posting
from flask_loyalty.testing import FrozenClock

from .conftest import START

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# ``ci`` is derandomized: the same ~3,000 steps on every run and engine, so that a
# failure reproduces and the coverage check below is deterministic.
settings.register_profile(
    "ledger-model-ci",
    max_examples=60,
    stateful_step_count=50,
    derandomize=True,
    deadline=None,
    suppress_health_check=_HEALTH,
)
settings.register_profile(
    "ledger-model-dev", max_examples=6, stateful_step_count=40, deadline=None, suppress_health_check=_HEALTH
)
settings.register_profile(
    "ledger-model-soak",
    max_examples=400,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=_HEALTH,
)
#: The fewest steps each profile must run per engine.
MIN_STEPS = {"ci": 2000, "dev": 0, "soak": 20000}
#: ``(operation, outcome)`` pairs that a ``ci`` or ``soak`` run must reach
#: (``"any"``: some operation).
COVERAGE = {
    *[(op, "ok") for op in ("earn", "redeem", "reserve", "capture", "release", "reverse", "adjust", "close")],
    *[(op, "ok") for op in ("expire_points", "release_pending")],
    ("earn", "replayed"),
    ("redeem", "InsufficientPoints"),
    ("reverse", "InvalidState"),
    *[
        ("any", outcome)
        for outcome in (
            "replayed",
            "IdempotencyConflict",
            "InvalidRequest",
            "InsufficientPoints",
            "MemberClosed",
            "MemberNotFound",
            "NotFound",
            "InvalidState",
        )
    ],
}


#: The pytest-timeout of each profile, in seconds, with room for a failure to shrink.
TIMEOUTS = {"ci": 1200, "dev": 600, "soak": 7200}


def _profile() -> str:
    """The profile named by ``LOYALTY_LEDGER_MODEL_PROFILE``, or ``ci`` under CI, else ``dev``."""
    name = os.environ.get("LOYALTY_LEDGER_MODEL_PROFILE")
    if not name:
        name = "ci" if os.environ.get("CI", "").lower() not in ("", "0", "false", "no") else "dev"
    return name


# -- the model ---------------------------------------------------------------------------------------------


def net_credit(available: int, credit: int) -> int:
    """What a credit adds to lots: a negative balance is paid back first."""
    return max(0, available + credit) - max(0, available)


@dataclasses.dataclass
class Lot:
    """A model lot: one credit, what is left of it, and its times."""

    member: int
    points: int
    remaining: int
    pending: bool
    available_from: dt.datetime
    expires_at: dt.datetime | None
    expired: bool = False
    #: What expired of the lot, and how much of that reversals of its earn have counted since.
    expired_points: int = 0
    gone_counted: int = 0

    def row(self) -> tuple[t.Any, ...]:
        """The lot as the columns read back from the database."""
        return (self.member, self.points, self.remaining, self.pending, self.expired,
                self.available_from, self.expires_at)  # fmt: skip


@dataclasses.dataclass
class Debit:
    """What a redeem or reservation took from each lot, and what came back since."""

    taken: list[tuple[int, int]]
    returned: dict[int, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Hold:
    """A model reservation."""

    member: int
    key: str
    points: int
    expires_at: dt.datetime | None
    status: str = "held"

    def row(self) -> tuple[t.Any, ...]:
        """The reservation as the columns read back from the database."""
        return (self.member, self.key, self.points, self.status, self.expires_at)


@dataclasses.dataclass
class Account:
    """A model member: balances, the keys used, and what each entry did."""

    id: int
    available: int = 0
    pending: int = 0
    reserved: int = 0
    lifetime_earned: int = 0
    closed: bool = False
    entries: int = 0
    #: ``(kind, key)`` of every operation that wrote, with its parameters.
    used: dict[tuple[str, str], tuple[t.Any, ...]] = dataclasses.field(default_factory=dict)
    #: earn key -> (points, lot index).
    earned: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    #: ("redeem" | "reserve", key) -> what it took.
    debits: dict[tuple[str, str], Debit] = dataclasses.field(default_factory=dict)
    #: reservation key -> points captured.
    captured: dict[str, int] = dataclasses.field(default_factory=dict)
    #: (kind, key) of a reversed entry -> points reversed so far.
    reversed: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)

    def row(self) -> tuple[t.Any, ...]:
        """The cached balances and status as read back from the database."""
        status = "closed" if self.closed else "active"
        return (self.id, self.available, self.pending, self.reserved, self.lifetime_earned, status)


class Refused(Exception):
    """The model's verdict that a call raises ``error`` (with these attributes)."""

    def __init__(self, error: type[LoyaltyError], **attrs: t.Any) -> None:
        super().__init__(error.__name__, attrs)
        self.error = error
        self.attrs = attrs


@dataclasses.dataclass(frozen=True)
class Replay:
    """The model's verdict that a call repeats the earlier operation ``(member, kind, key)``."""

    ident: tuple[int, str, str]


#: What a successful call's posting must show (field -> value).
Expected = dict[str, t.Any]

POLICIES = ("allow_negative", "clamp_to_zero")
DEFAULT_POLICY = "allow_negative"


class Ledger:
    """A plain-Python ledger: balances, lots and reservations under the documented rules.

    Each method takes the same arguments as the service function of that name
    and returns the :data:`Expected` posting, a :class:`Replay`, or raises
    :class:`Refused`. A refused call may leave the model half changed: callers
    run it on a copy.
    """

    def __init__(self, member_ids: t.Sequence[int], now: dt.datetime) -> None:
        self.accounts = {mid: Account(mid) for mid in member_ids}
        self.lots: list[Lot] = []
        self.holds: list[Hold] = []
        self.now = now

    # -- validation and exactly-once

    @staticmethod
    def _points(value: t.Any, *, signed: bool = False) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Refused(InvalidRequest)
        if value == 0 or (value < 0 and not signed) or abs(value) > 10**15:
            raise Refused(InvalidRequest)
        return value

    @staticmethod
    def _member_id(member: t.Any) -> int:
        if isinstance(member, bool) or not isinstance(member, int) or member <= 0:
            raise Refused(InvalidRequest)
        return member

    def _member(self, member: t.Any, *, active: bool = True) -> Account:
        account = self.accounts.get(self._member_id(member))
        if account is None:
            raise Refused(MemberNotFound)
        if active and account.closed:
            raise Refused(MemberClosed)
        return account

    def _begin(
        self, member: t.Any, kind: str, key: t.Any, params: tuple[t.Any, ...]
    ) -> tuple[Account, Replay | None]:
        """Check the member and key (in that order), then look the key up."""
        self._member_id(member)
        if not isinstance(key, str) or not key.strip() or len(key) > 191:
            raise Refused(InvalidRequest)
        account = self._member(member)
        used = account.used.get((kind, key))
        if used is None:
            return account, None
        if used != params:
            raise Refused(IdempotencyConflict)
        return account, Replay((account.id, kind, key))

    def _write(
        self,
        account: Account,
        kind: str,
        key: str,
        amount: int,
        *,
        available: int = 0,
        pending: int = 0,
        reserved: int = 0,
        lifetime: int = 0,
    ) -> Expected:
        account.available += available
        account.pending += pending
        account.reserved += reserved
        account.lifetime_earned += lifetime
        account.entries += 1
        return {
            "member_id": account.id, "kind": kind, "source_key": key, "points": amount,
            "delta_available": available, "delta_pending": pending, "delta_reserved": reserved,
            "available_after": account.available, "pending_after": account.pending,
            "reserved_after": account.reserved, "created_at": self.now, "shortfall": 0,
        }  # fmt: skip

    # -- lots

    def _due_activation(self, lot: Lot) -> bool:
        return lot.pending and lot.available_from <= self.now

    def _due_expiry(self, lot: Lot) -> bool:
        return (lot.remaining > 0 and not lot.pending and not lot.expired
                and lot.expires_at is not None and lot.expires_at <= self.now)  # fmt: skip

    def _activate(self, lot: Lot) -> None:
        account = self.accounts[lot.member]
        before = account.available
        account.available += lot.remaining
        account.pending -= lot.remaining
        account.entries += 1
        lot.remaining = net_credit(before, lot.remaining)
        lot.pending = False

    def _expire(self, lot: Lot) -> None:
        account = self.accounts[lot.member]
        account.available -= lot.remaining
        account.entries += 1
        lot.expired_points = lot.remaining
        lot.remaining = 0
        lot.expired = True

    def _settle(self, account: Account) -> None:
        """Activate the member's due pending lots, then expire its due lots."""
        for lot in self.lots:
            if lot.member == account.id and self._due_activation(lot):
                self._activate(lot)
        for lot in self.lots:
            if lot.member == account.id and self._due_expiry(lot):
                self._expire(lot)

    def _take(
        self, account: Account, amount: int, exclude: int | None = None
    ) -> tuple[list[tuple[int, int]], int]:
        """Take up to ``amount`` from live lots, soonest expiry first; return (taken, shortfall)."""
        live = [
            i for i, lot in enumerate(self.lots)
            if lot.member == account.id and i != exclude and lot.remaining > 0 and not lot.pending
            and not lot.expired and (lot.expires_at is None or lot.expires_at > self.now)
        ]  # fmt: skip
        live.sort(key=lambda i: (self.lots[i].expires_at or dt.datetime.max, i))
        taken: list[tuple[int, int]] = []
        for i in live:
            if not amount:
                break
            used = min(amount, self.lots[i].remaining)
            self.lots[i].remaining -= used
            taken.append((i, used))
            amount -= used
        return taken, amount

    def _give_back(self, account: Account, debit: Debit, amount: int) -> None:
        """Return ``amount`` to the lots ``debit`` took from, newest allocation first."""
        keep = net_credit(account.available, amount)
        for i, took in reversed(debit.taken):
            back = min(keep, took - debit.returned.get(i, 0))
            if back <= 0:
                continue
            keep -= back
            debit.returned[i] = debit.returned.get(i, 0) + back
            lot = self.lots[i]
            if lot.expired or (lot.expires_at is not None and lot.expires_at <= self.now):
                self.lots.append(Lot(account.id, back, back, False, self.now, lot.expires_at))
            else:
                lot.remaining += back
        assert keep == 0, "the model returned fewer points to lots than it should"

    def _credit_lot(self, account: Account, amount: int, *, pending: bool, begins: dt.datetime,
                    expires_at: dt.datetime | None) -> int:  # fmt: skip
        remaining = amount if pending else net_credit(account.available, amount)
        self.lots.append(Lot(account.id, amount, remaining, pending, begins, expires_at))
        return len(self.lots) - 1

    # -- the operations

    def earn(self, member: t.Any, amount: t.Any, *, key: t.Any, available_from: dt.datetime | None = None,
             expires_at: dt.datetime | None = None) -> Expected | Replay:  # fmt: skip
        amount = self._points(amount)
        params = (amount, available_from, expires_at)
        account, replay = self._begin(member, "earn", key, params)
        if replay:
            return replay
        begins = max(available_from or self.now, self.now)
        if expires_at is not None and expires_at <= begins:
            raise Refused(InvalidRequest)
        pending = begins > self.now
        lot = self._credit_lot(account, amount, pending=pending, begins=begins, expires_at=expires_at)
        account.earned[key] = (amount, lot)
        account.used["earn", key] = params
        if pending:
            return self._write(account, "earn", key, amount, pending=amount, lifetime=amount)
        return self._write(account, "earn", key, amount, available=amount, lifetime=amount)

    def _debit(self, account: Account, amount: int) -> list[tuple[int, int]]:
        self._settle(account)
        if amount > account.available:
            raise Refused(InsufficientPoints, available=account.available, requested=amount)
        taken, short = self._take(account, amount)
        assert short == 0, "the model's lots do not cover its available balance"
        return taken

    def redeem(self, member: t.Any, amount: t.Any, *, key: t.Any) -> Expected | Replay:
        amount = self._points(amount)
        account, replay = self._begin(member, "redeem", key, (amount,))
        if replay:
            return replay
        account.debits["redeem", key] = Debit(self._debit(account, amount))
        account.used["redeem", key] = (amount,)
        return self._write(account, "redeem", key, -amount, available=-amount)

    def reserve(self, member: t.Any, amount: t.Any, *, key: t.Any,
                expires_at: dt.datetime | None = None) -> Expected | Replay:  # fmt: skip
        amount = self._points(amount)
        account, replay = self._begin(member, "reserve", key, (amount, expires_at))
        if replay:
            return replay
        account.debits["reserve", key] = Debit(self._debit(account, amount))
        self.holds.append(Hold(account.id, key, amount, expires_at))
        account.used["reserve", key] = (amount, expires_at)
        return self._write(account, "reserve", key, -amount, available=-amount, reserved=amount)

    def _held(self, account: Account, key: str) -> Hold:
        for hold in self.holds:
            if hold.member == account.id and hold.key == key:
                if hold.status != "held":
                    raise Refused(InvalidState)
                return hold
        raise Refused(NotFound)

    def _release(self, account: Account, hold: Hold, amount: int) -> Expected:
        self._give_back(account, account.debits["reserve", hold.key], amount)
        return self._write(account, "release", hold.key, 0, available=amount, reserved=-amount)

    def capture(self, member: t.Any, *, key: t.Any, points: t.Any = None) -> Expected | Replay:
        wanted = None if points is None else self._points(points)
        account, replay = self._begin(member, "capture", key, (wanted,))
        if replay:
            return replay
        hold = self._held(account, key)
        amount = hold.points if wanted is None else wanted
        if amount > hold.points:
            raise Refused(InvalidState)
        expected = self._write(account, "capture", key, -amount, reserved=-amount)
        if amount < hold.points:
            self._release(account, hold, hold.points - amount)
        hold.status = "captured"
        account.captured[key] = amount
        account.used["capture", key] = (wanted,)
        return expected

    def release(self, member: t.Any, *, key: t.Any) -> Expected | Replay:
        account, replay = self._begin(member, "release", key, ())
        if replay:
            return replay
        hold = self._held(account, key)
        expected = self._release(account, hold, hold.points)
        hold.status = "released"
        account.used["release", key] = ()
        return expected

    def reverse(self, member: t.Any, *, key: t.Any, original: tuple[str, str], points: t.Any = None,
                policy: str | None = None) -> Expected | Replay:  # fmt: skip
        kind, original_key = original
        if kind not in ("earn", "redeem", "capture"):
            raise Refused(InvalidRequest)
        wanted = None if points is None else self._points(points)
        if policy is not None and policy not in POLICIES:
            raise Refused(InvalidRequest)
        params = (kind, original_key, wanted, policy)
        account, replay = self._begin(member, "reverse", key, params)
        if replay:
            return replay
        self._settle(account)
        if kind == "earn":
            if original_key not in account.earned:
                raise Refused(NotFound)
            total = account.earned[original_key][0]
        elif kind == "redeem":
            if ("redeem", original_key) not in account.debits:
                raise Refused(NotFound)
            total = sum(took for _, took in account.debits["redeem", original_key].taken)
        else:
            if original_key not in account.captured:
                raise Refused(NotFound)
            total = account.captured[original_key]
        left = total - account.reversed.get((kind, original_key), 0)
        amount = left if wanted is None else wanted
        if amount > left or amount == 0:
            raise Refused(InvalidState)
        account.reversed[kind, original_key] = total - left + amount
        account.used["reverse", key] = params
        if kind != "earn":
            source = "redeem" if kind == "redeem" else "reserve"
            self._give_back(account, account.debits[source, original_key], amount)
            return self._write(account, "reverse", key, amount, available=amount)
        return self._claw_back(account, key, original_key, amount, policy or DEFAULT_POLICY)

    def _claw_back(self, account: Account, key: str, original_key: str, amount: int, policy: str) -> Expected:
        """Take back what is left of the earn's lot; then count what of it expired
        (gone already, nothing more is taken for it); then take from other lots;
        what is still missing goes negative or is the shortfall."""
        index = account.earned[original_key][1]
        lot = self.lots[index]
        own = 0 if lot.expired else min(amount, lot.remaining)
        gone = min(amount - own, lot.expired_points - lot.gone_counted) if lot.expired else 0
        lot.remaining -= own
        lot.gone_counted += gone
        _, short = self._take(account, amount - own - gone, exclude=index)
        shortfall = short if policy == "clamp_to_zero" else 0
        from_available = amount - own - gone - shortfall + (0 if lot.pending else own)
        expected = self._write(account, "reverse", key, -amount, available=-from_available,
                               pending=-own if lot.pending else 0, lifetime=-amount)  # fmt: skip
        expected["shortfall"] = shortfall
        return expected

    def adjust(
        self,
        member: t.Any,
        amount: t.Any,
        *,
        key: t.Any,
        actor: str,
        reason: str,
        expires_at: dt.datetime | None = None,
        allow_negative: bool = False,
    ) -> Expected | Replay:
        amount = self._points(amount, signed=True)
        if not actor or not reason:
            raise Refused(InvalidRequest)
        params = (amount, expires_at, allow_negative)
        account, replay = self._begin(member, "adjust", key, params)
        if replay:
            return replay
        if amount > 0:
            if expires_at is not None and expires_at <= self.now:
                raise Refused(InvalidRequest)
            self._credit_lot(account, amount, pending=False, begins=self.now, expires_at=expires_at)
        else:
            self._settle(account)
            if -amount > account.available and not allow_negative:
                raise Refused(InsufficientPoints, available=account.available, requested=-amount)
            self._take(account, -amount)
        account.used["adjust", key] = params
        return self._write(account, "adjust", key, amount, available=amount)

    def close(self, member: t.Any) -> None:
        self._member(member, active=False).closed = True

    # -- the jobs

    def expire_points(self) -> int:
        due = [lot for lot in self.lots if self._due_expiry(lot)]
        for lot in due:
            self._expire(lot)
        return len(due)

    def release_pending(self) -> int:
        due = [lot for lot in self.lots if self._due_activation(lot)]
        for lot in due:
            self._activate(lot)
        return len(due)

    def release_reservations(self) -> int:
        due = [
            h
            for h in self.holds
            if h.status == "held" and h.expires_at is not None and h.expires_at <= self.now
        ]
        released = 0
        for hold in due:
            try:
                self.release(hold.member, key=hold.key)
            except Refused as refused:
                assert refused.error is MemberClosed
                continue
            released += 1
        return released


# -- the machine -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a ledger operation, replayable on the model and the service."""

    op: str
    member: t.Any
    args: tuple[t.Any, ...] = ()
    kwargs: tuple[tuple[str, t.Any], ...] = ()

    def run(self, target: t.Any) -> t.Any:
        """Call the operation on ``target`` (the model, or the :mod:`points` module)."""
        return getattr(target, self.op)(self.member, *self.args, **dict(self.kwargs))

    def ident(self) -> tuple[int, str, str]:
        """``(member, kind, key)`` of the operation."""
        return (self.member, self.op, dict(self.kwargs)["key"])

    def but(self, *args: t.Any, **kwargs: t.Any) -> Call:
        """This call with other arguments."""
        merged = {**dict(self.kwargs), **kwargs}
        return dataclasses.replace(self, args=args or self.args, kwargs=tuple(merged.items()))


HOURS = dt.timedelta(hours=1)
#: A member index: one of the three enrolled members, or now and then (3) an unknown one.
MEMBER = st.sampled_from([0, 1, 2] * 3 + [3])
# Offsets in hours, from a small set so that lots share expiry times and the
# clock lands exactly on them.
EXPIRES = st.sampled_from([None, None, 1, 6, 24, 48, 72, 168])
AVAILABLE_FROM = st.sampled_from([-24, 0, 6, 24, 72])
HOLD_EXPIRES = st.sampled_from([1, 24, 72, None])
POLICY = st.sampled_from([None, *POLICIES])
BAD_POINTS = [0, -1, -250, 1.5, 2.0, "10", True, False, Decimal("5"), 10**15 + 1]
BAD_MEMBERS: list[t.Any] = [0, -3, "1", None, True, 1.0]
BAD_KEYS: list[t.Any] = ["", "   ", None, 42, "k" * 192]


class LedgerMachine(RuleBasedStateMachine):
    """Drives the ledger service and checks it against :class:`Ledger` after every step."""

    #: Rule steps run by every instance in this process.
    steps = 0
    #: How often each ``(operation, outcome)`` occurred in this process.
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()

    def __init__(self, app: t.Any, clock: FrozenClock) -> None:
        super().__init__()
        self.app = app
        self.clock = clock
        self.db = app.extensions["sqlalchemy"]
        self.store = app.extensions["loyalty"].store
        self.serial = 0
        self.db.session.remove()
        with self.db.engine.begin() as conn:
            for table in reversed(self.db.metadata.sorted_tables):
                # InnoDB checks a self-referencing foreign key (a reversal's
                # ``reverses_id``) row by row while deleting: clear it first.
                for fk in table.foreign_keys:
                    if fk.column.table is table:
                        conn.execute(table.update().values({fk.parent.name: None}))
                conn.execute(table.delete())
        clock.set(START)
        ids = [members.enroll(name=f"Member {i}", email=f"m{i}@example.com").id for i in range(3)]
        #: The members' ids, then one that no member has; the third member may be closed.
        self.ids = [*ids, ids[-1] + 1000]
        self.closable = ids[2]
        self.model = Ledger(ids, START)
        self.postings: dict[tuple[int, str, str], Posting] = {}
        self.calls: list[Call] = []

    def teardown(self) -> None:
        """End the session's transaction before the next example empties the tables."""
        self.db.session.remove()

    def _key(self, kind: str) -> str:
        self.serial += 1
        return f"{kind}-{self.serial}"

    def _at(self, hours: int | None) -> dt.datetime | None:
        return None if hours is None else self.model.now + hours * HOURS

    # -- performing a call on both sides

    def perform(self, call: Call) -> Posting | LoyaltyError | None:
        """Run ``call`` on a copy of the model and on the service; compare the outcomes.

        :returns: the posting, or the error raised (``None`` for closing a member).
        """
        trial = copy.deepcopy(self.model)
        verdict: Expected | Replay | Refused
        try:
            verdict = call.run(trial)
        except Refused as refused:
            verdict = refused
        try:
            posting: Posting | None = call.run(points if call.op != "close" else members)
            error: LoyaltyError | None = None
        except LoyaltyError as raised:
            posting, error = None, raised
        outcome = "replayed" if isinstance(verdict, Replay) else "ok"
        LedgerMachine.outcomes[call.op, type(error).__name__ if error else outcome] += 1
        LedgerMachine.outcomes["any", type(error).__name__ if error else outcome] += 1
        if isinstance(verdict, Refused):
            assert error is not None, (
                f"{call} succeeded with {posting}; the model expects {verdict.error.__name__}"
            )
            assert type(error) is verdict.error, (
                f"{call} raised {error!r}; the model expects {verdict.error.__name__}"
            )
            for name, value in verdict.attrs.items():
                assert getattr(error, name) == value, f"{call}: {name} is {getattr(error, name)}, not {value}"
            return error
        assert error is None, f"{call} raised {error!r}; the model expects {verdict}"
        self.model = trial
        if call.op == "close":
            return None
        assert posting is not None
        if isinstance(verdict, Replay):
            if verdict.ident not in self.postings:
                # Released by the release-reservations job, whose postings are not returned.
                assert (posting.kind, posting.actor) == ("release", "job:release-reservations"), posting
                self.postings[verdict.ident] = dataclasses.replace(posting, replayed=False)
            assert posting == dataclasses.replace(self.postings[verdict.ident], replayed=True), call
            return posting
        assert not posting.replayed, call
        actual = {name: getattr(posting, name) for name in verdict}
        assert actual == verdict, f"{call}: the posting shows {actual}, the model {verdict}"
        self.postings[call.ident()] = posting
        self.calls.append(call)
        return posting

    def perform_job(self, name: str) -> None:
        """Run job ``name`` on the model and the service; compare the counts."""
        expected = getattr(self.model, name)()
        LedgerMachine.outcomes[name, "ok" if expected else "nothing"] += 1
        assert getattr(jobs, name)() == expected, name

    # -- rules

    def _step(self) -> None:
        LedgerMachine.steps += 1

    def _earn(self, member: int, amount: int, start: int | None, end: int | None) -> None:
        when = (("available_from", self._at(start)), ("expires_at", self._at(end)))
        self.perform(Call("earn", self.ids[member], (amount,), (("key", self._key("order")), *when)))

    @rule(member=MEMBER, amount=st.integers(1, 300), end=EXPIRES)
    def earn(self, member: int, amount: int, end: int | None) -> None:
        """Earn points available at once (or from a time already past)."""
        self._step()
        self._earn(member, amount, None, end)

    @rule(member=MEMBER, amount=st.integers(1, 300), start=AVAILABLE_FROM, end=EXPIRES)
    def earn_pending(self, member: int, amount: int, start: int, end: int | None) -> None:
        """Earn points that become available later (or from a time already past or now)."""
        self._step()
        self._earn(member, amount, start, end if end is None or start <= 0 else start + end)

    @rule(member=MEMBER, amount=st.integers(1, 300), wait=st.sampled_from([6, 24]))
    def earn_pending_until_cron(self, member: int, amount: int, wait: int) -> None:
        """Earn pending points, then let the clock reach them with the cron jobs running
        before the member does anything else: the job, not a debit, activates them."""
        self._step()
        self._earn(member, amount, wait, None)
        self.advance_clock(wait, True)

    def _debitor(self, data: st.DataObject) -> tuple[int, int]:
        """A member (mostly one with points) and an amount: mostly what the member
        can afford, sometimes more (an overdraw)."""
        accounts = [self.model.accounts.get(mid) or Account(mid) for mid in self.ids]
        rich = [i for i, account in enumerate(accounts) if account.available > 0]
        member = data.draw(st.one_of(st.sampled_from(rich), MEMBER) if rich else MEMBER, label="member")
        can = max(accounts[member].available, 0)
        could = can + max(accounts[member].pending, 0) + 30
        return member, data.draw(
            st.one_of(st.integers(1, max(can, 1)), st.integers(1, could)), label="points"
        )

    @rule(data=st.data())
    def redeem(self, data: st.DataObject) -> None:
        self._step()
        if self._repeated(data, "redeem"):
            return
        member, amount = self._debitor(data)
        self.perform(Call("redeem", self.ids[member], (amount,), (("key", self._key("claim")),)))

    @rule(
        data=st.data(),
        end=HOLD_EXPIRES,
        then=st.sampled_from(["hold", "hold", "capture", "capture part", "release"]),
    )
    def reserve(self, data: st.DataObject, end: int | None, then: str) -> None:
        """Reserve points for a checkout; then, as the order goes, leave them held
        (for a later capture or release, or the time-out job), or capture all or
        part of them, or release them, checking the ledger after each call."""
        self._step()
        if self._repeated(data, "reserve"):
            return
        member, amount = self._debitor(data)
        key = self._key("checkout")
        call = Call("reserve", self.ids[member], (amount,), (("key", key), ("expires_at", self._at(end))))
        if not isinstance(self.perform(call), Posting) or then == "hold":
            return
        self.matches_model()
        if then == "release":
            self.perform(Call("release", self.ids[member], (), (("key", key),)))
            return
        part = None if then == "capture" else data.draw(st.integers(1, amount), label="captured")
        self.perform(Call("capture", self.ids[member], (), (("key", key), ("points", part))))

    def _hold_target(self, data: st.DataObject) -> tuple[int, str, int]:
        """A reservation ``(member, key, points)``: mostly a held one, sometimes one
        already captured or released, or an unknown one."""
        groups: dict[str, list[tuple[int, str, int]]] = {"held": [], "captured": [], "released": []}
        for hold in self.model.holds:
            groups[hold.status].append((hold.member, hold.key, hold.points))
        which = [g for g in ("held", "held", "held", "captured", "released") if groups[g]] + ["unknown"]
        group = data.draw(st.sampled_from(which), label="which reservation")
        if group == "unknown":
            return (self.ids[data.draw(MEMBER, label="member")], "checkout-unknown", 10)
        return data.draw(st.sampled_from(groups[group]), label="reservation")

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def capture(self, data: st.DataObject) -> None:
        """Capture all (``points=None``) or part of a reservation; more than held is refused."""
        self._step()
        if self._repeated(data, "capture"):
            return
        member, key, held = self._hold_target(data)
        amount = data.draw(st.one_of(st.none(), st.integers(1, held), st.just(held + 1)), label="points")
        self.perform(Call("capture", member, (), (("key", key), ("points", amount))))

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._step()
        if self._repeated(data, "release"):
            return
        member, key, _ = self._hold_target(data)
        self.perform(Call("release", member, (), (("key", key),)))

    @rule(data=st.data(), policy=POLICY)
    def reverse(self, data: st.DataObject, policy: str | None) -> None:
        """Reverse all or part of an earn (a refund) or a redeem or capture (a cancellation)."""
        self._step()
        if self._repeated(data, "reverse"):
            return
        targets: list[tuple[int, str, str, int]] = []
        for account in self.model.accounts.values():
            targets += [(account.id, "earn", k, n) for k, (n, _) in account.earned.items()]
            targets += [
                (account.id, "redeem", k, sum(p for _, p in d.taken))
                for (kind, k), d in account.debits.items()
                if kind == "redeem"
            ]
            targets += [(account.id, "capture", k, n) for k, n in account.captured.items()]
        unknown = (self.ids[data.draw(MEMBER, label="member")], "earn", "order-unknown", 10)
        member, kind, original, total = data.draw(
            st.sampled_from([*targets, *targets, unknown]), label="original"
        )
        account = self.model.accounts.get(member) or Account(member)
        left = total - account.reversed.get((kind, original), 0)
        amount = data.draw(
            st.one_of(st.none(), st.integers(1, max(left, 1)), st.just(left + 1)), label="points"
        )
        kwargs = (("original", (kind, original)), ("points", amount), ("policy", policy))
        self.perform(Call("reverse", member, (), (("key", self._key("refund")), *kwargs)))

    @rule(
        member=MEMBER, amount=st.integers(-200, 200).filter(bool), end=EXPIRES, allow_negative=st.booleans()
    )
    def adjust(self, member: int, amount: int, end: int | None, allow_negative: bool) -> None:
        self._step()
        kwargs = (("key", self._key("fix")), ("actor", "admin"), ("reason", "correction"))
        more = (("expires_at", self._at(end)), ("allow_negative", allow_negative))
        self.perform(Call("adjust", self.ids[member], (amount,), (*kwargs, *more)))

    @rule(name=st.sampled_from(["expire_points", "release_pending", "release_reservations"]))
    def run_job(self, name: str) -> None:
        """Run a background job: its count and effects match the model."""
        self._step()
        self.perform_job(name)

    @rule(hours=st.sampled_from([1, 5, 6, 18, 24, 48, 72, 168]), cron=st.booleans())
    def advance_clock(self, hours: int, cron: bool) -> None:
        """Move the clock on; with ``cron``, run the background jobs then."""
        self._step()
        self.model.now = self.clock.advance(hours=hours)
        if cron:
            self.perform_job("release_pending")
            self.perform_job("expire_points")
            self.perform_job("release_reservations")

    @precondition(lambda self: not self.model.accounts[self.closable].closed)
    @rule()
    def close_member(self) -> None:
        """Close the third member: it takes no more operations, its lots still expire."""
        self._step()
        self.perform(Call("close", self.closable))

    def _repeat(self, call: Call, *, same: bool) -> None:
        """Repeat the key of an earlier ``call``: with the same parameters the first
        posting comes back and nothing is written; with others, IdempotencyConflict
        and nothing is written."""
        kwargs = dict(call.kwargs)
        if same or call.op == "release":
            result = self.perform(call)
            assert isinstance(result, MemberClosed) or (isinstance(result, Posting) and result.replayed)
            return
        if call.op in ("earn", "redeem", "reserve"):
            other = call.but(call.args[0] + 1)
        elif call.op == "adjust":
            other = call.but(call.args[0] * 2)
        elif call.op == "capture":
            other = call.but(points=None if kwargs["points"] else 10**6)
        else:
            other = call.but(policy="clamp_to_zero" if kwargs["policy"] != "clamp_to_zero" else None)
        assert isinstance(self.perform(other), IdempotencyConflict | MemberClosed)

    def _repeated(self, data: st.DataObject, op: str) -> bool:
        """Now and then repeat an earlier key of ``op`` instead of using a new one."""
        earlier = [c for c in self.calls if c.op == op]
        if not earlier:
            return False
        how = data.draw(st.sampled_from(["new"] * 6 + ["same", "other"]), label="key")
        if how == "new":
            return False
        self._repeat(data.draw(st.sampled_from(earlier), label="earlier call"), same=how == "same")
        return True

    @precondition(lambda self: self.calls)
    @rule(data=st.data(), same=st.booleans())
    def replay(self, data: st.DataObject, same: bool) -> None:
        """Repeat the key of any earlier operation, with the same parameters or others."""
        self._step()
        op = data.draw(st.sampled_from(sorted({c.op for c in self.calls})), label="operation")
        self._repeat(
            data.draw(st.sampled_from([c for c in self.calls if c.op == op]), label="call"), same=same
        )

    @rule(data=st.data(), what=st.sampled_from(["points", "member", "key", "kind", "expiry"]))
    def invalid_request(self, data: st.DataObject, what: str) -> None:
        """Malformed points, members, keys, kinds or expiries, and unknown members:
        the specific error, and nothing written."""
        self._step()
        op = data.draw(
            st.sampled_from(["earn", "redeem", "reserve", "adjust", "capture", "release", "reverse"])
        )
        member: t.Any = self.ids[data.draw(MEMBER, label="member")]
        if what == "points":
            value = data.draw(st.sampled_from(BAD_POINTS), label="points")
            if op == "release":
                op = "redeem"
            if op == "adjust" and isinstance(value, int) and not isinstance(value, bool) and value < 0:
                value = 0  # a negative adjustment is valid
            assert isinstance(self.perform(self._sample_call(op, member, value)), InvalidRequest)
        elif what == "member":
            unknown = self.ids[3]
            member = data.draw(st.sampled_from([unknown, *BAD_MEMBERS, unknown]), label="bad member")
            result = self.perform(self._sample_call(op, member, 10))
            assert isinstance(result, InvalidRequest | MemberNotFound)
        elif what == "key":
            key = data.draw(st.sampled_from(BAD_KEYS), label="key")
            assert isinstance(self.perform(self._sample_call(op, member, 10).but(key=key)), InvalidRequest)
        elif what == "kind":
            kind = data.draw(
                st.sampled_from(["reserve", "release", "adjust", "expire", "bogus"]), label="kind"
            )
            call = Call("reverse", member, (), (("key", self._key("refund")), ("original", (kind, "x"))))
            assert isinstance(self.perform(call), InvalidRequest)
        else:
            start = data.draw(st.sampled_from([None, 24]), label="available_from")
            hours = data.draw(st.sampled_from([-24, 0]), label="expires_at")
            when = (("available_from", self._at(start)), ("expires_at", self._at((start or 0) + hours)))
            call = Call("earn", member, (10,), (("key", self._key("order")), *when))
            assert isinstance(self.perform(call), InvalidRequest | MemberClosed | MemberNotFound)

    def _sample_call(self, op: str, member: t.Any, amount: t.Any) -> Call:
        key = ("key", self._key(op))
        if op in ("earn", "redeem", "reserve"):
            return Call(op, member, (amount,), (key,))
        if op == "adjust":
            return Call(op, member, (amount,), (key, ("actor", "admin"), ("reason", "correction")))
        if op == "capture":
            return Call(op, member, (), (key, ("points", amount)))
        if op == "release":
            return Call(op, member, (), (key,))
        return Call(op, member, (), (key, ("original", ("earn", "order-unknown")), ("points", amount)))

    # -- invariants

    @invariant()
    def matches_model(self) -> None:
        """Balances, lots, reservations and the ledger agree with the model and with each other."""
        s = self.store
        m, lot, r, e = s.member, s.lot, s.reservation, s.entry
        with self.db.engine.connect() as conn:
            accounts = conn.execute(
                sa.select(
                    m.c.id, m.c.available, m.c.pending, m.c.reserved, m.c.lifetime_earned, m.c.status
                ).order_by(m.c.id)
            ).all()
            lots = conn.execute(
                sa.select(
                    lot.c.member_id,
                    lot.c.points,
                    lot.c.remaining,
                    lot.c.pending,
                    lot.c.expired,
                    lot.c.available_from,
                    lot.c.expires_at,
                ).order_by(lot.c.id)
            ).all()
            holds = conn.execute(
                sa.select(r.c.member_id, r.c.source_key, r.c.points, r.c.status, r.c.expires_at).order_by(
                    r.c.id
                )
            ).all()
            ledger = conn.execute(
                sa.select(
                    e.c.id,
                    e.c.member_id,
                    e.c.delta_available,
                    e.c.delta_pending,
                    e.c.delta_reserved,
                    e.c.available_after,
                    e.c.pending_after,
                    e.c.reserved_after,
                ).order_by(e.c.id)
            ).all()
        model = self.model
        assert [tuple(row) for row in accounts] == [a.row() for a in model.accounts.values()]
        assert [tuple(row) for row in lots] == [x.row() for x in model.lots]
        assert [tuple(row) for row in holds] == [h.row() for h in model.holds]
        # Each entry's balances after it follow from the one before it; the sums
        # of the deltas are the cached balances.
        running = {mid: (0, 0, 0) for mid in model.accounts}
        entries = dict.fromkeys(model.accounts, 0)
        for row in ledger:
            available, pending, reserved = running[row.member_id]
            after = (
                available + row.delta_available,
                pending + row.delta_pending,
                reserved + row.delta_reserved,
            )
            assert (row.available_after, row.pending_after, row.reserved_after) == after, row
            running[row.member_id] = after
            entries[row.member_id] += 1
        for account in model.accounts.values():
            assert entries[account.id] == account.entries, account
            assert running[account.id] == (account.available, account.pending, account.reserved), account
            read = members.balances(account.id)
            assert (read.available, read.pending, read.reserved, read.lifetime_earned) == account.row()[1:5]
        assert audit.verify() == []
        self.db.session.rollback()


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUTS.get(_profile(), 600))
def test_ledger_matches_model(app: t.Any, clock: FrozenClock) -> None:
    """Thousands of random operations leave the ledger exactly where the model says."""
    profile = _profile()
    if profile not in MIN_STEPS:
        pytest.fail(f"LOYALTY_LEDGER_MODEL_PROFILE must be one of {sorted(MIN_STEPS)}, not {profile!r}.")
    LedgerMachine.steps = 0
    LedgerMachine.outcomes.clear()
    with app.app_context():
        run_state_machine_as_test(
            lambda: LedgerMachine(app, clock), settings=settings.get_profile(f"ledger-model-{profile}")
        )
    assert LedgerMachine.steps >= MIN_STEPS[profile]
    if MIN_STEPS[profile]:
        # The run reached every kind of outcome, not just the easy ones.
        missing = sorted(COVERAGE - set(LedgerMachine.outcomes))
        assert not missing, f"never reached: {missing}"
