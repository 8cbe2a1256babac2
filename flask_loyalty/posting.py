"""The building blocks every ledger operation shares.

A ledger operation (see :mod:`flask_loyalty.points`) validates its input,
then runs one :class:`Operation` in a write transaction: lock the member, look
the source key up (a repeat returns the first result; the same key with other
parameters raises), change lots, append entries and update the cached
balances. :class:`Posting` is what it returns and what signals carry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import typing as t

from . import signals
from .errors import IdempotencyConflict
from .errors import InsufficientPoints
from .errors import InvalidRequest
from .errors import LoyaltyError
from .lot_store import SpendableLot
from .proxies import get_state
from .signals import send
from .store import Balances
from .store import LoyaltyStore
from .sweeps import activate_lots
from .sweeps import due_lots
from .sweeps import expire_lots
from .transaction import checks_passed

#: A planned change of one lot: ``(lot id, change of remaining, points allocated)``.
#: A debit takes ``(lot, -n, n)``; a return gives ``(lot, n, -n)``.
LotChange: t.TypeAlias = tuple[int, int, int]

#: The longest source key (it is indexed with the member and kind).
MAX_KEY_LENGTH = 191


@dataclasses.dataclass(frozen=True)
class Posting:
    """One ledger entry, as returned by every ledger operation.

    ``delta_*`` are the signed changes of the member's buckets, ``*_after``
    the buckets after the entry, and ``points`` the nominal signed amount of
    the operation. ``replayed`` is true when the call repeated an earlier
    source key and returned that call's entry without writing anything.
    """

    id: int
    member_id: int
    kind: str
    points: int
    delta_available: int
    delta_pending: int
    delta_reserved: int
    available_after: int
    pending_after: int
    reserved_after: int
    source_key: str
    lot_id: int | None
    reservation_id: int | None
    reverses_id: int | None
    #: Points a reversal under ``clamp_to_zero`` could not take back.
    shortfall: int
    actor: str | None
    reason: str | None
    created_at: dt.datetime
    replayed: bool = False

    @classmethod
    def written(cls, entry_id: int, values: t.Mapping[str, t.Any]) -> Posting:
        """The posting of the entry ``entry_id`` just inserted with ``values``."""
        return cls(id=entry_id, **{k: v for k, v in values.items() if k != "params_hash"})

    @classmethod
    def from_row(cls, row: t.Any, *, replayed: bool = False) -> Posting:
        """Build a posting from an entry row."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"replayed"}
        return cls(**{name: getattr(row, name) for name in fields}, replayed=replayed)


def member_id_of(member: t.Any) -> int:
    """The member id of ``member``: a :class:`Member`, or an integer id.

    :raises InvalidRequest: for anything else.
    """
    value = getattr(member, "id", member)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidRequest(f"{member!r} is not a member or a member id.")
    return value


def check_points(value: t.Any, name: str = "points", *, signed: bool = False) -> int:
    """Return ``value`` if it is a whole, non-zero number of points.

    :param signed: allow negative values (adjustments).
    :raises InvalidRequest: for zero, negative (unless ``signed``), fractional
        or non-numeric values.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be a whole number of points, not {value!r}.")
    if value == 0 or (value < 0 and not signed):
        raise InvalidRequest(f"{name} must be {'non-zero' if signed else 'positive'}, not {value}.")
    if abs(value) > 10**15:
        raise InvalidRequest(f"{name} {value} is out of range.")
    return value


def check_key(key: t.Any) -> str:
    """Return ``key`` if it is a usable source key.

    :raises InvalidRequest: if it is empty, not a string, or too long.
    """
    if not isinstance(key, str) or not key.strip():
        raise InvalidRequest("A source key (a non-empty string) is required.")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"Source keys are at most {MAX_KEY_LENGTH} characters.")
    return key


def check_text(value: t.Any, name: str, limit: int) -> str | None:
    """Return ``value`` if it is ``None`` or a string of at most ``limit`` characters."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidRequest(f"{name} must be a string of at most {limit} characters.")
    return value


def to_utc(value: t.Any, name: str) -> dt.datetime | None:
    """Return ``value`` as a naive UTC datetime; naive input is taken as UTC.

    :raises InvalidRequest: if it is not a datetime.
    """
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise InvalidRequest(f"{name} must be a datetime, not {value!r}.")
    if value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


#: ``json.dumps(..., sort_keys=True, default=str)``, made once.
_DIGEST_JSON = json.JSONEncoder(sort_keys=True, default=str)


def digest(kind: str, params: dict[str, t.Any]) -> str:
    """A stable digest of an operation's parameters, stored with its source key."""
    text = _DIGEST_JSON.encode({"kind": kind, **params})
    return hashlib.sha256(text.encode()).hexdigest()


def net_credit(available: int, points: int) -> int:
    """How much of a credit of ``points`` lands in lots.

    A negative available balance (a clawback under ``allow_negative``) is paid
    back first: lots hold ``max(0, balance after) - max(0, balance before)``.
    """
    return max(0, available + points) - max(0, available)


@dataclasses.dataclass
class Operation:
    """One ledger operation inside its write transaction (internal).

    The member's row is locked when the operation first needs its balances
    (:attr:`balances`), or by the write of a credit, whichever comes first.
    """

    store: LoyaltyStore
    member_id: int
    kind: str
    key: str
    digest: str
    now: dt.datetime
    #: Signals to send after commit besides the operation's own:
    #: ``(signal, keyword payload, whether it goes after the operation's)``.
    events: list[tuple[t.Any, dict[str, t.Any], bool]] = dataclasses.field(init=False, default_factory=list)
    _balances: Balances | None = dataclasses.field(init=False, default=None, repr=False)
    #: Whether the key was looked up before the member was locked (see :meth:`begin`).
    _unseen_key: bool = dataclasses.field(init=False, default=False, repr=False)
    #: The live lots :meth:`settle` read, with the write count they are current at.
    _lots: tuple[int, list[SpendableLot]] | None = dataclasses.field(init=False, default=None, repr=False)

    @property
    def balances(self) -> Balances:
        """The member's balances in this transaction; the first read locks the member's row.

        :raises MemberNotFound: if there is no such member.
        :raises MemberClosed: if the member is closed.
        """
        if self._balances is None:
            self._balances = self.store.lock_member(self.member_id)
        return self._balances

    @balances.setter
    def balances(self, value: Balances) -> None:
        self._balances = value

    def then(self, kind: str, key: str, digest: str = "") -> Operation:
        """A follow-on operation in the same transaction, with another kind and key.

        It carries on from this operation's balances and collects its signals
        in the same list; use it, not this one, from then on.
        """
        follower = Operation(self.store, self.member_id, kind, check_key(key), digest, self.now)
        follower.balances = self.balances
        follower.events = self.events
        self._lots = None
        return follower

    def notify(self, signal: t.Any, *, after: bool = False, **payload: t.Any) -> None:
        """Send ``signal`` with ``payload`` once the operation has committed."""
        self.events.append((signal, payload, after))

    def begin(self, *, lock: bool = True) -> Posting | None:
        """Look the key up and lock the member; return the earlier posting if the key was used before.

        On PostgreSQL and SQLite the key is looked up before the member is
        locked, so a repeated call neither waits for nor takes the lock, and
        the lock is held for one statement less; the unique key catches a
        concurrent entry with the same key, and the operation is then replayed
        (see :meth:`LoyaltyStore.insert_entry`). Elsewhere the member is
        locked first and the key read under the lock.

        :param lock: lock the member now. A credit passes ``False``: its
            write locks the member (:meth:`credit`), and the member is locked
            before any other row either way.
        :raises IdempotencyConflict: if the key was used with other parameters.
        """
        store = self.store
        if store.returning:
            prior = store.seek_entry(self.member_id, self.kind, self.key)
            self._unseen_key = prior is None
            if lock or prior is not None:
                self.balances  # noqa: B018 - takes the lock; a closed member's replay is refused
        else:
            self.balances = store.lock_member(self.member_id)
            prior = store.find_entry(self.member_id, self.kind, self.key)
        if prior is None or not prior.params_hash:
            # No entry, or one written as a side effect of another operation
            # (the release after a partial capture): the operation decides.
            return None
        if prior.params_hash != self.digest:
            raise IdempotencyConflict(
                f"Source key {self.key!r} was already used for a different {self.kind} "
                f"of member {self.member_id}."
            )
        return Posting.from_row(prior, replayed=True)

    def checks_passed(self) -> None:
        """Declare that the operation has made all its checks: what is left only writes.

        Inside a host's transaction, the writes then need no savepoint of
        their own (see :func:`flask_loyalty.transaction.checks_passed`).
        """
        checks_passed(self.store.session)

    def settle(self) -> None:
        """Make the member's due pending lots available and expire due lots.

        Locks the member first. The member's lots are read once: when none
        is due, :meth:`take` uses what was read.
        """
        store, mid = self.store, self.member_id
        self.balances  # noqa: B018 - the lock comes first
        live, due = store.member_lots(mid, self.now)
        if not due:
            self._lots = (store.write_count(), live)
            return
        for what, sweep, signal in (
            ("activate", activate_lots, signals.points_activated),
            ("expire", expire_lots, signals.points_expired),
        ):
            count = 0
            while rows := due_lots(store, what, self.now, 1000, member_id=mid):
                count += sweep(store, [row.id for row in rows], self.now, None)
            if count:
                self.notify(signal, member_ids=[mid], count=count)
        self.balances = store.lock_member(mid)

    def take(
        self, points: int, *, allow_shortfall: bool = False, exclude: int | None = None
    ) -> tuple[list[LotChange], int]:
        """Plan a debit of ``points`` from live lots, soonest expiry first.

        :param exclude: a lot not to take from.
        :returns: ``(lot changes, shortfall)``: what to take from each lot and
            the points the lots could not cover.
        :raises InsufficientPoints: if the available balance does not cover
            ``points`` and ``allow_shortfall`` is false.
        """
        available = self.balances.available
        if points > available and not allow_shortfall:
            raise InsufficientPoints(
                f"Member {self.member_id} has {available} points available; {points} were requested.",
                available=available,
                requested=points,
            )
        changes: list[LotChange] = []
        left = points
        for lot in self._live_lots() if points else ():
            if left == 0:
                break
            if lot.id == exclude:
                continue
            used = min(left, lot.remaining)
            changes.append((lot.id, -used, used))
            left -= used
        return changes, left

    def _live_lots(self) -> list[SpendableLot]:
        """The member's live lots: as :meth:`settle` read them if nothing was written since."""
        cached, self._lots = self._lots, None
        if cached is not None and cached[0] == self.store.write_count():
            return cached[1]
        return self.store.spendable_lots(self.member_id, self.now)

    def _move(self, available: int, pending: int, reserved: int, lifetime: int) -> Balances:
        """Move the member's cached balances by the deltas and return them.

        If the member is not locked yet (a credit), one statement locks its
        row and moves them (:meth:`LoyaltyStore.add_balances`).
        """
        if self._balances is None:
            after = self.store.add_balances(self.member_id, available, pending, reserved, lifetime)
        else:
            after = self._balances.after(available, pending, reserved, lifetime)
            self.store.set_balances(self.member_id, after)
        self._balances = after
        return after

    def credit(
        self,
        points: int,
        *,
        pending: bool,
        lifetime: int,
        expires_at: dt.datetime | None,
        available_from: dt.datetime,
        **refs: t.Any,
    ) -> Posting:
        """Credit ``points`` in a new lot and post them (netting a negative balance).

        The body of :func:`flask_loyalty.points.credit`. A credit cannot
        overdraw, so it needs no balance read before it: unless the member is
        locked already, one ``UPDATE ... RETURNING`` locks it and moves its
        balances, then the lot and the entry are inserted.

        :param pending: whether the points wait until ``available_from``.
        :param lifetime: the change of the member's ``lifetime_earned``.
        :param refs: as for :meth:`write`.
        """
        delta = (0, points) if pending else (points, 0)
        store = self.store
        if self._balances is not None and store.credits_in_one:
            # The member is locked: every value is known but the lot's id,
            # and the three writes go in one statement.
            after = self._balances.after(delta[0], delta[1], 0, lifetime)
            lot = self._lot(points, pending, after, available_from, expires_at)
            values = self._entry(points, self.kind, after, (delta[0], delta[1], 0), refs)
            self._unseen_key = False
            values["lot_id"], entry_id = store.credit_locked(self.member_id, after, lot, values)
            self._balances = after
            return Posting.written(entry_id, values)
        after = self._move(delta[0], delta[1], 0, lifetime)
        lot_id = store.insert_lot(self._lot(points, pending, after, available_from, expires_at))
        return self._append(points, self.kind, after, (delta[0], delta[1], 0), (), {"lot_id": lot_id, **refs})

    def _lot(
        self,
        points: int,
        pending: bool,
        after: Balances,
        available_from: dt.datetime,
        expires_at: dt.datetime | None,
    ) -> dict[str, t.Any]:
        """The values of a credit's new lot, given the balances after the credit."""
        return {
            "member_id": self.member_id,
            "points": points,
            "remaining": points if pending else net_credit(after.available - points, points),
            "pending": pending,
            "expired": False,
            "available_from": available_from,
            "expires_at": expires_at,
            "created_at": self.now,
        }

    def write(
        self,
        points: int,
        *,
        kind: str | None = None,
        available: int = 0,
        pending: int = 0,
        reserved: int = 0,
        lifetime: int = 0,
        lot_changes: t.Sequence[LotChange] = (),
        **refs: t.Any,
    ) -> Posting:
        """Append an entry, apply its lot changes and update the cached balances.

        :param kind: the entry kind, the operation's own by default.
        :param refs: ``lot_id``, ``reservation_id``, ``reverses_id``, ``shortfall``, ``actor``
            and ``reason``.
        """
        after = self._move(available, pending, reserved, lifetime)
        return self._append(
            points, kind or self.kind, after, (available, pending, reserved), lot_changes, refs
        )

    def _append(
        self,
        points: int,
        kind: str,
        after: Balances,
        deltas: tuple[int, int, int],
        lot_changes: t.Sequence[LotChange],
        refs: dict[str, t.Any],
    ) -> Posting:
        """Insert the entry of a write whose balances have moved, and apply its lot changes."""
        values = self._entry(points, kind, after, deltas, refs)
        unseen = self._unseen_key and kind == self.kind
        self._unseen_key = self._unseen_key and not unseen
        entry_id = self.store.insert_entry(values, unseen=unseen)
        self.store.change_lots(entry_id, lot_changes)
        return Posting.written(entry_id, values)

    def _entry(
        self, points: int, kind: str, after: Balances, deltas: tuple[int, int, int], refs: dict[str, t.Any]
    ) -> dict[str, t.Any]:
        """The values of an entry of ``points`` whose write leaves the balances ``after``."""
        available, pending, reserved = deltas
        return {
            "member_id": self.member_id,
            "kind": kind,
            "points": points,
            "delta_available": available,
            "delta_pending": pending,
            "delta_reserved": reserved,
            "available_after": after.available,
            "pending_after": after.pending,
            "reserved_after": after.reserved,
            "source_key": self.key,
            "params_hash": self.digest if kind == self.kind else "",
            "created_at": self.now,
            "lot_id": None,
            "reservation_id": None,
            "reverses_id": None,
            "shortfall": 0,
            "actor": None,
            "reason": None,
            **refs,
        }


def run_operation(
    kind: str,
    member: t.Any,
    key: t.Any,
    params: dict[str, t.Any],
    apply: t.Callable[[Operation], Posting],
    signal: t.Any,
    *,
    lock: bool = True,
    **signal_kwargs: t.Any,
) -> Posting:
    """Run ``apply`` as one exactly-once ledger operation and send ``signal``.

    :param kind: the kind whose source keys ``key`` is unique among.
    :param params: the parameters that must match when ``key`` is repeated.
    :param apply: writes the operation's entries; may run more than once.
    :param signal: sent after commit, unless the call was a replay.
    :param lock: lock the member before ``apply`` (see :meth:`Operation.begin`).
    """
    state = get_state()
    member_id = member_id_of(member)
    key = check_key(key)
    op_digest = digest(kind, params)

    def work() -> tuple[Posting, list[tuple[t.Any, dict[str, t.Any], bool]]]:
        op = Operation(state.store, member_id, kind, key, op_digest, state.now())
        try:
            return op.begin(lock=lock) or apply(op), op.events
        except LoyaltyError:
            if op._balances is None:
                # Refused before the member was locked: the member's own
                # errors (unknown, closed) come first, as when it is locked first.
                op.balances  # noqa: B018
            raise

    # Ledger operations call no host code: they may run on a connection of their own.
    posting, events = state.store.atomic(work, standalone=True)
    if not posting.replayed:
        for event, payload, after in events:
            if not after:
                send(event, **payload)
        send(signal, member_id=member_id, entry=posting, **signal_kwargs)
        for event, payload, after in events:
            if after:
                send(event, **payload)
    return posting
