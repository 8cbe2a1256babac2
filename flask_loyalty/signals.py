"""Signals sent by flask-loyalty.

Every signal is sent with the real application object as sender, only after
the transaction that made the change has committed, and never for a replayed
(idempotent) request. Payloads are keyword arguments; receivers must accept
``**extra`` so that new keywords can be added without breaking them. See
``docs/signals.rst``.
"""

from __future__ import annotations

import typing as t

from blinker import Namespace
from blinker import Signal
from flask import current_app

_signals = Namespace()


def send(signal: Signal, **kwargs: t.Any) -> None:
    """Send ``signal`` with the real current app as sender (internal)."""
    signal.send(current_app._get_current_object(), **kwargs)  # type: ignore[attr-defined]


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

#: A member was enrolled. Sent with ``member`` (the ORM object).
member_enrolled = _signals.signal("member-enrolled")
