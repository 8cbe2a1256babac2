"""The ledger service: every way a member's points change.

Each function is one exactly-once operation: it takes a source ``key``
(an order id, refund id, claim id, API idempotency key...) that is unique per
member and kind. Calling it again with the same key and parameters returns the
first call's :class:`~flask_loyalty.posting.Posting` (with ``replayed=True``)
and writes nothing; the same key with other parameters raises
:class:`~flask_loyalty.errors.IdempotencyConflict`.

Every function runs in one transaction under a lock on the member's row
(``BEGIN IMMEDIATE`` on SQLite), so concurrent debits from any number of
threads or processes can never overdraw a balance. Signals are sent after
commit. Invalid input raises :class:`~flask_loyalty.errors.InvalidRequest`
before anything is written.

Points are whole numbers. Debits take points from lots soonest expiry first
(never-expiring lots last); expired and pending points cannot be spent.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from . import signals
from .config import CLAWBACK_POLICIES
from .config import config_value
from .errors import InvalidRequest
from .errors import InvalidState
from .errors import NotFound
from .posting import check_points
from .posting import check_text
from .posting import LotChange
from .posting import net_credit
from .posting import Operation
from .posting import Posting
from .posting import run_operation
from .posting import to_utc
from .tiers import promote_within

__all__ = ["earn", "redeem", "reserve", "capture", "release", "reverse", "adjust"]


def _refs(actor: t.Any, reason: t.Any) -> dict[str, t.Any]:
    return {"actor": check_text(actor, "actor", 191), "reason": check_text(reason, "reason", 500)}


def credit(op: Operation, points: int, *, pending: bool, lifetime: int, expires_at: dt.datetime | None,
            available_from: dt.datetime, **refs: t.Any) -> Posting:  # fmt: skip
    """Create a lot for a credit and post it with ``op`` (netting a negative balance).

    The body of :func:`earn` and of positive :func:`adjust`, for services that
    credit inside a transaction of their own (paid orders); see
    :meth:`Operation.credit <flask_loyalty.posting.Operation.credit>`.
    """
    return op.credit(points, pending=pending, lifetime=lifetime, expires_at=expires_at,
                     available_from=available_from, **refs)  # fmt: skip


def earn(
    member: t.Any,
    points: int,
    *,
    key: str,
    available_from: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> Posting:
    """Credit ``points`` earned by ``member``.

    :param member: a member or member id.
    :param points: a positive whole number.
    :param key: the source key, e.g. ``"order:1042"``.
    :param available_from: when the points may be spent; until then they are
        *pending*. ``None`` or a past time means at once.
    :param expires_at: when what is left of them expires; ``None`` for never.
    :param actor: who caused the credit (free text, 191 characters).
    :param reason: why (free text, 500 characters).
    :raises InvalidRequest: on invalid input, or an expiry not after the time
        the points become available.
    """
    points = check_points(points)
    start, end = to_utc(available_from, "available_from"), to_utc(expires_at, "expires_at")
    refs = _refs(actor, reason)
    params = {"points": points, "available_from": start, "expires_at": end}

    def apply(op: Operation) -> Posting:
        begins = max(start or op.now, op.now)
        if end is not None and end <= begins:
            raise InvalidRequest("expires_at must be after the time the points become available.")
        op.checks_passed()
        posting = credit(op, points, pending=begins > op.now, lifetime=points, expires_at=end,
                         available_from=begins, **refs)  # fmt: skip
        promote_within(op)
        return posting

    return run_operation("earn", member, key, params, apply, signals.points_earned, lock=False)


def redeem(
    member: t.Any, points: int, *, key: str, actor: str | None = None, reason: str | None = None
) -> Posting:
    """Spend ``points`` of ``member``'s available balance at once.

    :raises InsufficientPoints: if the available balance does not cover them.
    """
    points = check_points(points)
    refs = _refs(actor, reason)

    def apply(op: Operation) -> Posting:
        op.settle()
        changes, _ = op.take(points)
        return op.write(-points, available=-points, lot_changes=changes, **refs)

    return run_operation("redeem", member, key, {"points": points}, apply, signals.points_redeemed)


def reserve(
    member: t.Any,
    points: int,
    *,
    key: str,
    expires_at: dt.datetime | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> Posting:
    """Hold ``points`` for a checkout; :func:`capture` or :func:`release` them later.

    The points leave the available balance at once, so they cannot be spent
    twice while the order is being paid.

    :param key: the reservation's key (the order); capture and release use it.
    :param expires_at: when an uncaptured hold is released by
        ``flask loyalty release-reservations``; ``None`` for never.
    :raises InsufficientPoints: if the available balance does not cover them.
    """
    points = check_points(points)
    until = to_utc(expires_at, "expires_at")
    refs = _refs(actor, reason)

    def apply(op: Operation) -> Posting:
        return reserve_within(op, points, until, refs)

    params = {"points": points, "expires_at": until}
    return run_operation("reserve", member, key, params, apply, signals.points_reserved)


def _held(op: Operation) -> t.Any:
    reservation = op.store.find_reservation(op.member_id, op.key)
    if reservation is None:
        raise NotFound(f"Member {op.member_id} has no reservation {op.key!r}.")
    if reservation.status != "held":
        raise InvalidState(f"Reservation {op.key!r} is already {reservation.status}.")
    return reservation


def _give_back(op: Operation, entry_id: int, points: int, already: t.Sequence[int]) -> list[LotChange]:
    """Plan the return of ``points`` to the lots that entry ``entry_id`` took them from.

    Lots are refilled newest allocation first, skipping what the entries
    ``already`` gave back. Points whose lot has expired meanwhile go to a new
    lot with the same expiry, which the next expiry sweep removes. A negative
    available balance is paid back first (see :func:`net_credit`).
    """
    keep = net_credit(op.balances.available, points)
    returned = op.store.returned_to_lots(already)
    changes: list[LotChange] = []
    for row in reversed(op.store.allocations(entry_id)):
        back = min(keep, row.points - returned.get(row.lot_id, 0))
        if back <= 0:
            continue
        keep -= back
        if row.expired or (row.expires_at is not None and row.expires_at <= op.now):
            op.store.insert_lot(
                {
                    "member_id": op.member_id,
                    "points": back,
                    "remaining": back,
                    "pending": False,
                    "expired": False,
                    "available_from": op.now,
                    "expires_at": row.expires_at,
                    "created_at": op.now,
                }  # fmt: skip
            )
            changes.append((row.lot_id, 0, -back))
        else:
            changes.append((row.lot_id, back, -back))
    return changes


def _release(op: Operation, reservation: t.Any, points: int, **refs: t.Any) -> Posting:
    reserve_entry = op.store.find_entry(op.member_id, "reserve", op.key)
    changes = _give_back(op, reserve_entry.id, points, [])
    return op.write(0, kind="release", available=points, reserved=-points, lot_changes=changes,
                    reservation_id=reservation.id, **refs)  # fmt: skip


def capture(
    member: t.Any,
    *,
    key: str,
    points: int | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> Posting:
    """Spend the points held by reservation ``key``.

    :param points: capture only this many; the rest is released in the same
        transaction. All of them by default.
    :raises NotFound: if there is no such reservation.
    :raises InvalidState: if it was already released, or ``points`` exceeds it.
    """
    wanted = None if points is None else check_points(points)
    refs = _refs(actor, reason)

    def apply(op: Operation) -> Posting:
        return capture_within(op, wanted, refs)

    return run_operation("capture", member, key, {"points": wanted}, apply, signals.points_captured)


def release(member: t.Any, *, key: str, actor: str | None = None, reason: str | None = None) -> Posting:
    """Return the points held by reservation ``key`` to the available balance.

    :raises NotFound: if there is no such reservation.
    :raises InvalidState: if it was already captured.
    """
    refs = _refs(actor, reason)

    def apply(op: Operation) -> Posting:
        return release_within(op, refs)

    return run_operation("release", member, key, {}, apply, signals.points_released)


def release_within(op: Operation, refs: dict[str, t.Any]) -> Posting:
    """Release the reservation ``op.key`` with ``op`` (the body of :func:`release`)."""
    reservation = _held(op)
    posting = _release(op, reservation, reservation.points, **refs)
    op.store.set_reservation_status(reservation.id, "released")
    return posting


def reverse(
    member: t.Any,
    *,
    key: str,
    original: tuple[str, str],
    points: int | None = None,
    policy: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> Posting:
    """Reverse all or part of an earlier earn, redeem or capture.

    Reversing an *earn* (a refund) takes the points back: from the earn's own
    lot first, then from the member's other live lots. If they were already
    spent, ``policy`` decides: ``"allow_negative"`` lets the available balance
    go below zero (later credits pay it back), ``"clamp_to_zero"`` takes what
    is there and records the rest as :attr:`Posting.shortfall`.

    Reversing a *redeem* or *capture* (a cancellation) returns the points to
    the lots they came from.

    :param key: this reversal's own source key (e.g. the refund id).
    :param original: ``(kind, key)`` of the entry to reverse.
    :param points: how many to reverse; all that is left by default. The sum
        of all reversals of an entry never exceeds it.
    :param policy: the clawback policy; ``LOYALTY_CLAWBACK_POLICY`` by default.
    :raises NotFound: if the original entry does not exist.
    :raises InvalidState: if more would be reversed than is left.
    """
    kind, original_key = original
    if kind not in ("earn", "redeem", "capture"):
        raise InvalidRequest(f"Only earn, redeem and capture entries can be reversed, not {kind!r}.")
    wanted = None if points is None else check_points(points)
    if policy is not None and policy not in CLAWBACK_POLICIES:
        raise InvalidRequest(f"policy must be one of {CLAWBACK_POLICIES}, not {policy!r}.")
    refs = _refs(actor, reason)

    def apply(op: Operation) -> Posting:
        return reverse_within(op, (kind, original_key), wanted, policy, refs)

    params = {"original": [kind, original_key], "points": wanted, "policy": policy}
    return run_operation("reverse", member, key, params, apply, signals.points_reversed,
                         original=(kind, original_key))  # fmt: skip


def reverse_within(
    op: Operation,
    original: tuple[str, str],
    wanted: int | None,
    policy: str | None,
    refs: dict[str, t.Any],
) -> Posting:
    """Write a reversal of ``original`` with ``op`` (the body of :func:`reverse`).

    For services that reverse inside a transaction of their own (refunds and
    cancellations of orders). Arguments are validated as in :func:`reverse`.
    """
    kind, original_key = original
    op.settle()
    entry = op.store.find_entry(op.member_id, kind, original_key)
    if entry is None:
        raise NotFound(f"Member {op.member_id} has no {kind} entry {original_key!r}.")
    prior = op.store.reversal_ids(entry.id)
    left = abs(entry.points) - op.store.reversed_points(entry.id)
    amount = left if wanted is None else wanted
    if amount > left or amount == 0:
        raise InvalidState(f"Only {left} points of {kind} {original_key!r} are left to reverse.")
    refs_ = {**refs, "reverses_id": entry.id}
    if kind != "earn":
        source = entry.id
        if kind == "capture":
            source = op.store.find_entry(op.member_id, "reserve", original_key).id
            released = op.store.find_entry(op.member_id, "release", original_key)
            prior = [*prior, *([released.id] if released else [])]
        changes = _give_back(op, source, amount, prior)
        return op.write(amount, available=amount, lot_changes=changes, **refs_)
    return _claw_back(op, entry, amount, policy or config_value("CLAWBACK_POLICY"), **refs_)


def _claw_back(op: Operation, entry: t.Any, amount: int, policy: str, **refs: t.Any) -> Posting:
    """Take back ``amount`` earned by ``entry``.

    In this order: what is left of the earn's own lot; then what of that lot
    has expired (gone already, so nothing more is taken for it); then the
    member's other live lots; then, for points already spent, the clawback
    policy: a negative balance, or a recorded shortfall.
    """
    lot = op.store.get_lot(entry.lot_id)
    own = 0 if lot.expired else min(amount, lot.remaining)
    gone = min(amount - own, op.store.expired_unreversed(lot.id, entry.id)) if lot.expired else 0
    changes: list[LotChange] = [(lot.id, -own, own)] if own else []
    if gone:
        changes.append((lot.id, 0, gone))  # recorded against the expired part
    more, shortfall = op.take(amount - own - gone, allow_shortfall=True, exclude=lot.id)
    if policy != "clamp_to_zero":
        shortfall = 0
    from_available = amount - own - gone - shortfall + (0 if lot.pending else own)
    return op.write(-amount, available=-from_available, pending=-own if lot.pending else 0,
                    lifetime=-amount, lot_changes=changes + more, shortfall=shortfall, **refs)  # fmt: skip


def adjust(
    member: t.Any,
    points: int,
    *,
    key: str,
    actor: str,
    reason: str,
    expires_at: dt.datetime | None = None,
    allow_negative: bool = False,
) -> Posting:
    """Correct a balance by hand: add (positive) or remove (negative) points.

    Added points form a lot expiring at ``expires_at``; removed points come
    from lots soonest expiry first. Adjustments do not count as earned.

    :param actor: who made the adjustment (required).
    :param reason: why (required).
    :param allow_negative: let a removal take the balance below zero.
    :raises InsufficientPoints: if a removal exceeds the available balance
        and ``allow_negative`` is false.
    """
    points = check_points(points, signed=True)
    end = to_utc(expires_at, "expires_at")
    refs = _refs(actor, reason)
    if not (refs["actor"] or "").strip() or not (refs["reason"] or "").strip():
        raise InvalidRequest("An adjustment needs an actor and a reason.")

    def apply(op: Operation) -> Posting:
        if points > 0:
            if end is not None and end <= op.now:
                raise InvalidRequest("expires_at must be in the future.")
            op.checks_passed()
            return credit(
                op, points, pending=False, lifetime=0, expires_at=end, available_from=op.now, **refs
            )
        op.settle()
        changes, _ = op.take(-points, allow_shortfall=allow_negative)
        return op.write(points, available=points, lot_changes=changes, **refs)

    params = {"points": points, "expires_at": end, "allow_negative": allow_negative}
    return run_operation("adjust", member, key, params, apply, signals.points_adjusted, lock=False)


def reserve_within(
    op: Operation,
    points: int,
    until: dt.datetime | None,
    refs: dict[str, t.Any],
    reference: str | None = None,
) -> Posting:
    """Hold ``points`` under key ``op.key`` with ``op`` (the body of :func:`reserve`).

    :param reference: the order the points are held for (checkout holds).
    """
    op.settle()
    changes, _ = op.take(points)
    reservation_id = op.store.insert_reservation(
        {
            "member_id": op.member_id,
            "source_key": op.key,
            "points": points,
            "status": "held",
            "expires_at": until,
            "reference": reference,
            "created_at": op.now,
        }  # fmt: skip
    )
    return op.write(-points, available=-points, reserved=points, lot_changes=changes,
                    reservation_id=reservation_id, **refs)  # fmt: skip


def capture_within(op: Operation, wanted: int | None, refs: dict[str, t.Any]) -> Posting:
    """Capture the reservation ``op.key`` with ``op`` (the body of :func:`capture`)."""
    reservation = _held(op)
    amount = reservation.points if wanted is None else wanted
    if amount > reservation.points:
        raise InvalidState(f"Reservation {op.key!r} holds only {reservation.points} points.")
    posting = op.write(-amount, reserved=-amount, reservation_id=reservation.id, **refs)
    if amount < reservation.points:
        released = _release(op, reservation, reservation.points - amount, **refs)
        op.notify(signals.points_released, after=True, member_id=op.member_id, entry=released)
    op.store.set_reservation_status(reservation.id, "captured")
    return posting
