"""Signals sent by flask-loyalty.

Every signal is sent with the real application object as sender, only after
the transaction that made the change has committed, and never for a replayed
(idempotent) request. Payloads are keyword arguments; receivers must accept
``**extra`` so that new keywords can be added without breaking them. See
``docs/signals.rst``.
"""

from __future__ import annotations

import contextlib
import contextvars
import typing as t

from blinker import Namespace
from blinker import Signal
from flask import current_app

_signals = Namespace()

#: A signal held back until a transaction commits: ``(signal, sender, kwargs)``.
Deferred: t.TypeAlias = tuple[Signal, t.Any, dict[str, t.Any]]

_held: contextvars.ContextVar[list[Deferred] | None] = contextvars.ContextVar(
    "flask_loyalty_held_signals", default=None
)


def send(signal: Signal, **kwargs: t.Any) -> None:
    """Send ``signal`` with the real current app as sender (internal).

    Inside :func:`held`, the signal is queued instead of sent.
    """
    sender = current_app._get_current_object()  # type: ignore[attr-defined]
    queue = _held.get()
    if queue is not None:
        queue.append((signal, sender, kwargs))
        return
    signal.send(sender, **kwargs)


@contextlib.contextmanager
def held() -> t.Iterator[list[Deferred]]:
    """Queue the signals sent inside the block instead of sending them (internal).

    For services run inside a transaction that commits later (see
    :mod:`flask_loyalty.autohooks`): the caller sends the queue with
    :func:`send_held` once that transaction has committed, or drops it.
    """
    queue: list[Deferred] = []
    token = _held.set(queue)
    try:
        yield queue
    finally:
        _held.reset(token)


def send_held(queue: t.Iterable[Deferred]) -> None:
    """Send the signals that :func:`held` queued, in order (internal)."""
    for signal, sender, kwargs in queue:
        signal.send(sender, **kwargs)


#: Points were credited. Sent with ``member_id`` and ``entry``
#: (a :class:`~flask_loyalty.posting.Posting`); ``entry.delta_pending`` is
#: non-zero when they wait in the pending bucket.
points_earned = _signals.signal("points-earned")

#: Points were spent at once. Sent with ``member_id`` and ``entry``.
points_redeemed = _signals.signal("points-redeemed")

#: Points were put on hold for a checkout. Sent with ``member_id`` and ``entry``.
points_reserved = _signals.signal("points-reserved")

#: Held points were spent. Sent with ``member_id`` and ``entry``.
points_captured = _signals.signal("points-captured")

#: Held points went back to the available balance. Sent with ``member_id`` and
#: ``entry``.
points_released = _signals.signal("points-released")

#: An earlier credit or debit was reversed (refund, cancellation). Sent with
#: ``member_id``, ``entry`` and ``original`` (the reversed entry's
#: ``(kind, key)``; ``entry.reverses_id`` is its id).
points_reversed = _signals.signal("points-reversed")

#: A sweep expired lots. Sent once per sweep chunk with ``member_ids``
#: (the members whose points expired) and ``count`` (entries written).
points_expired = _signals.signal("points-expired")

#: A sweep made pending points available. Sent once per sweep chunk with
#: ``member_ids`` and ``count``.
points_activated = _signals.signal("points-activated")

#: A shop owner adjusted a balance by hand. Sent with ``member_id`` and
#: ``entry``; ``entry.actor`` and ``entry.reason`` say who and why.
points_adjusted = _signals.signal("points-adjusted")

#: :func:`~flask_loyalty.audit.rebuild` repaired cached balances. Sent with
#: ``repairs`` (a list of :class:`~flask_loyalty.audit.Discrepancy`).
balances_rebuilt = _signals.signal("balances-rebuilt")

#: An order's payment was recorded (:func:`~flask_loyalty.orders.order_paid`).
#: Sent with ``member_id`` and ``order`` (an
#: :class:`~flask_loyalty.orders.OrderOutcome` with the quote and postings).
order_recorded = _signals.signal("order-recorded")

#: An order was completed. Sent with ``member_id`` and ``order``.
order_completed = _signals.signal("order-completed")

#: A refund of an order was recorded. Sent with ``member_id`` and ``order``
#: (``order.points`` is what the refund reversed).
order_refunded = _signals.signal("order-refunded")

#: An order was cancelled. Sent with ``member_id`` and ``order``.
order_cancelled = _signals.signal("order-cancelled")

#: A member moved to another tier. Sent with ``member_id``, ``old`` and
#: ``new`` (tier names or ``None``).
tier_changed = _signals.signal("tier-changed")

#: A member was enrolled. Sent with ``member`` (the ORM object).
member_enrolled = _signals.signal("member-enrolled")

#: A member redeemed a reward. Sent with ``member_id`` and ``redemption``
#: (a :class:`~flask_loyalty.rewards.Redemption`), after ``points_redeemed``.
reward_redeemed = _signals.signal("reward-redeemed")

#: A redemption was cancelled and its points returned. Sent with
#: ``member_id`` and ``redemption``, after ``points_reversed``.
redemption_cancelled = _signals.signal("redemption-cancelled")

#: A redemption's code was used for an order. Sent with ``member_id`` and
#: ``redemption``.
redemption_used = _signals.signal("redemption-used")

#: A member earned an action's points. Sent with ``member_id``, ``action``,
#: ``key`` and ``entry``, after ``points_earned``.
action_awarded = _signals.signal("action-awarded")

#: A referral was decided. Sent with ``referral`` (a
#: :class:`~flask_loyalty.referrals.Referral`).
referral_decided = _signals.signal("referral-decided")

#: Points are about to expire. Sent once per member and reminder window with
#: ``member_id``, ``window_days``, ``points`` and ``expires_at`` (the soonest).
points_expiring = _signals.signal("points-expiring")
