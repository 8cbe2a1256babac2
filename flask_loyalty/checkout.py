"""Paying part of an order with points.

The shop's checkout asks for an :func:`offer` (how many points the member may
apply to the order, within ``LOYALTY_REDEEM_MINIMUM``, ``LOYALTY_REDEEM_STEP``
and ``LOYALTY_REDEEM_MAX_SHARE`` of the payable total), then
:func:`apply_points` when the order is placed: the points are *held* (a
reservation) so they cannot be spent twice while the order is being paid.
:func:`~flask_loyalty.orders.order_paid` captures the hold;
:func:`~flask_loyalty.orders.order_cancelled`, :func:`remove_points` or the
hold's timeout (``LOYALTY_RESERVATION_TTL``, released by ``flask loyalty
release-reservations``) give the points back.

The discount of ``n`` points is ``n × LOYALTY_POINT_VALUE`` rounded *down* to
the currency's minor unit, and never more than the order's payable total.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t
from decimal import Decimal
from decimal import ROUND_FLOOR

from . import signals
from .config import config_value
from .config import decimal_setting
from .errors import InsufficientPoints
from .errors import InvalidRequest
from .errors import InvalidState
from .errors import NotFound
from .member_lock import run_locked
from .members import member_for_user
from .money import currency
from .money import decimals
from .money import MoneyInput
from .money import parse_amount
from .points import release_within
from .points import reserve_within
from .posting import check_key
from .posting import check_points
from .posting import digest
from .posting import Operation
from .posting import Posting
from .proxies import current_loyalty

__all__ = ["PointsOffer", "AppliedPoints", "points_value", "offer", "apply_points", "remove_points",
           "applied_points"]  # fmt: skip


def points_value(points: int) -> Decimal:
    """The money value of ``points`` at checkout, rounded down to the minor unit."""
    value = Decimal(points) * decimal_setting(config_value("POINT_VALUE"), "LOYALTY_POINT_VALUE")
    return value.quantize(Decimal(1).scaleb(-decimals()), rounding=ROUND_FLOOR)


@dataclasses.dataclass(frozen=True)
class PointsOffer:
    """How many points a member may apply to an order.

    Points are applied in multiples of :attr:`step`, from :attr:`minimum` to
    :attr:`maximum`; when :attr:`maximum` is below :attr:`minimum` the member
    cannot pay this order with points (:attr:`usable` is false).
    """

    #: The order's payable total, before any points.
    payable: Decimal
    currency: str
    #: The member's spendable points, counting those already held for this order.
    available: int
    minimum: int
    maximum: int
    step: int
    #: What one point is worth.
    point_value: Decimal
    #: The points held for the order now (0 if none).
    applied: int

    @property
    def usable(self) -> bool:
        """Whether the member can apply points to this order at all."""
        return self.maximum >= self.minimum

    @property
    def max_discount(self) -> Decimal:
        """The discount of :attr:`maximum` points."""
        return points_value(self.maximum) if self.usable else Decimal(0)

    def check(self, points: t.Any) -> int:
        """Return ``points`` if the member may apply that many.

        :raises InvalidRequest: if it is not a whole number of points within
            the offer's limits.
        :raises InsufficientPoints: if the member does not have that many.
        """
        wanted = check_points(points)
        if wanted < self.minimum:
            raise InvalidRequest(f"Apply at least {self.minimum} points.")
        if wanted % self.step:
            raise InvalidRequest(f"Points are applied in steps of {self.step}.")
        if wanted > self.available:
            raise InsufficientPoints(
                f"You have {self.available} points to spend; {wanted} were asked for.",
                available=self.available,
                requested=wanted,
            )
        if not self.usable:
            raise InvalidRequest(
                f"Points cannot pay this order: at least {self.minimum} are needed and"
                f" at most {self.maximum} can be applied."
            )
        if wanted > self.maximum:
            raise InvalidRequest(f"At most {self.maximum} points can be applied to this order.")
        return wanted


@dataclasses.dataclass(frozen=True)
class AppliedPoints:
    """Points held for an order at checkout."""

    reference: str
    points: int
    #: The money the points pay, in :attr:`currency`.
    discount: Decimal
    currency: str
    #: ``held`` until the order is paid (``captured``) or they are ``released``.
    status: str
    #: When an unpaid hold is released.
    expires_at: dt.datetime | None
    #: The reservation's key in the ledger.
    key: str
    #: The ledger entry that held the points (or, for a repeat, the first call's).
    posting: Posting | None = None
    replayed: bool = False


def _check_reference(reference: t.Any) -> str:
    checked = check_key(reference)
    if len(checked) > 150:
        raise InvalidRequest("An order reference is at most 150 characters.")
    return checked


def _offer(op: Operation, payable: Decimal, held: int) -> PointsOffer:
    share = decimal_setting(config_value("REDEEM_MAX_SHARE"), "LOYALTY_REDEEM_MAX_SHARE")
    value = decimal_setting(config_value("POINT_VALUE"), "LOYALTY_POINT_VALUE")
    step = int(config_value("REDEEM_STEP"))
    spendable = max(0, op.balances.available) + held
    by_share = int((payable * share / value).to_integral_value(rounding=ROUND_FLOOR))
    # points_value rounds down, so the discount of by_share points never exceeds the share.
    most = min(spendable, by_share) // step * step
    return PointsOffer(payable=payable, currency=currency(), available=spendable,
                       minimum=int(config_value("REDEEM_MINIMUM")), maximum=most, step=step,
                       point_value=value, applied=held)  # fmt: skip


def _held(op: Operation, reference: str) -> tuple[list[t.Any], t.Any]:
    rows = op.store.order_reservations(op.member_id, reference)
    if any(r.status == "captured" for r in rows):
        raise InvalidState(f"Order {reference!r} was paid already; its points cannot change.")
    return rows, next((r for r in rows if r.status == "held"), None)


def _applied(
    reference: str, row: t.Any, posting: Posting | None = None, replayed: bool = False
) -> AppliedPoints:
    return AppliedPoints(reference=reference, points=int(row.points), discount=points_value(int(row.points)),
                         currency=currency(), status=row.status, expires_at=row.expires_at,
                         key=row.source_key, posting=posting, replayed=replayed)  # fmt: skip


def offer(member: t.Any, *, reference: str | None = None, payable_total: MoneyInput) -> PointsOffer:
    """What ``member`` may apply to an order whose payable total is ``payable_total``.

    :param member: a member, member id or host user.
    :param reference: the order, to count points already held for it.
    :raises InvalidRequest: for a malformed or negative total.
    """
    payable = parse_amount(payable_total)
    if payable < 0:
        raise InvalidRequest("The payable total cannot be negative.")
    ref = None if reference is None else _check_reference(reference)
    member_id = member_for_user(member)

    def work(op: Operation) -> PointsOffer:
        op.settle()
        hold = _held(op, ref)[1] if ref is not None else None
        return _offer(op, payable, 0 if hold is None else int(hold.points))

    return run_locked(member_id, work)


def apply_points(
    member: t.Any, *, reference: str, points: int, payable_total: MoneyInput, actor: str | None = None
) -> AppliedPoints:
    """Hold ``points`` of ``member`` to pay part of order ``reference``.

    Applying again with another amount releases the earlier hold and holds
    the new amount, in one transaction; applying the same amount again
    changes nothing (the result has ``replayed=True``). The hold expires after
    ``LOYALTY_RESERVATION_TTL`` seconds unless the order is paid.

    :param reference: the shop's order reference, as later given to
        :func:`~flask_loyalty.orders.order_paid`.
    :param payable_total: the order's total before points, to check
        ``LOYALTY_REDEEM_MAX_SHARE``.
    :raises InvalidRequest: for points outside the :func:`offer`'s limits.
    :raises InsufficientPoints: if the member's balance does not cover them.
    :raises InvalidState: if the order was paid already.
    """
    ref = _check_reference(reference)
    payable = parse_amount(payable_total)
    if payable < 0:
        raise InvalidRequest("The payable total cannot be negative.")
    wanted = check_points(points)
    member_id = member_for_user(member)
    ttl = config_value("RESERVATION_TTL")
    refs = {"actor": actor, "reason": f"order {ref}"}

    def work(op: Operation) -> AppliedPoints:
        op.settle()
        rows, hold = _held(op, ref)
        if hold is not None and int(hold.points) == wanted:
            return _applied(ref, hold, replayed=True)
        _offer(op, payable, 0 if hold is None else int(hold.points)).check(wanted)
        if hold is not None:
            op = op.then("release", hold.source_key)
            released = release_within(op, refs)
            op.notify(signals.points_released, member_id=member_id, entry=released)
        key = f"order:{ref}" if not rows else f"order:{ref}:{len(rows) + 1}"
        until = None if ttl is None else op.now + dt.timedelta(seconds=int(ttl))
        op = op.then("reserve", key, digest("reserve", {"points": wanted, "expires_at": until}))
        posting = reserve_within(op, wanted, until, refs, reference=ref)
        op.notify(signals.points_reserved, member_id=member_id, entry=posting)
        row = op.store.find_reservation(member_id, key)
        return _applied(ref, row, posting)

    return run_locked(member_id, work, replayed=lambda applied: applied.replayed)


def remove_points(member: t.Any, *, reference: str, actor: str | None = None) -> AppliedPoints:
    """Release the points held for order ``reference``.

    :raises NotFound: if no points are held for it.
    :raises InvalidState: if the order was paid already.
    """
    ref = _check_reference(reference)
    member_id = member_for_user(member)

    def work(op: Operation) -> AppliedPoints:
        hold = _held(op, ref)[1]
        if hold is None:
            raise NotFound(f"No points are held for order {ref!r}.")
        op = op.then("release", hold.source_key)
        posting = release_within(op, {"actor": actor, "reason": f"order {ref}: points removed"})
        op.notify(signals.points_released, member_id=member_id, entry=posting)
        return _applied(ref, op.store.find_reservation(member_id, hold.source_key), posting)

    return run_locked(member_id, work)


def applied_points(member: t.Any, *, reference: str) -> AppliedPoints | None:
    """The points held for (or captured by) order ``reference``, or ``None``."""
    ref = _check_reference(reference)
    member_id = member_for_user(member)
    store = current_loyalty.store

    def read() -> AppliedPoints | None:
        rows = store.order_reservations(member_id, ref)
        row = next((r for r in rows if r.status in ("held", "captured")), None)
        return None if row is None else _applied(ref, row)

    return store.atomic(read)
