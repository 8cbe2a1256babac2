"""Columns of referrals, action awards, expiry reminders and payment fingerprints.

The concrete classes are built with the ledger's models by
:func:`flask_loyalty.models.build_models`.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from .columns import BigId
from .columns import Timestamp
from .columns import utcnow

#: Referral states. See ``docs/referrals.rst``.
REFERRAL_STATUSES = ("pending", "rewarded", "capped", "rejected")


class ReferralMixin:
    """A new member who signed up with another member's referral code."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: ``pending`` until the referee's qualifying order settles; then
    #: ``rewarded`` (both bonuses), ``capped`` (the referee's bonus only: the
    #: referrer had reached the cap) or ``rejected``.
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    #: Why it was rejected or capped: ``same_payment``, ``order_refunded`` or
    #: ``cap_reached``.
    reason: Mapped[str | None] = mapped_column(sa.String(32))
    #: The referee's order that qualified (or was refunded).
    order_reference: Mapped[str | None] = mapped_column(sa.String(191))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class ActionAwardMixin:
    """Points a member earned for an action (signup, birthday, review, custom)."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    action: Mapped[str] = mapped_column(sa.String(64))
    #: What makes the award unique for the member and action (a review id, a year).
    key: Mapped[str] = mapped_column(sa.String(120))
    #: The cap period the award counts in (``2026-11-24``, ``2026-W48``, ``2026-11``).
    period: Mapped[str] = mapped_column(sa.String(16))
    points: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class ReminderMixin:
    """An expiry reminder sent for one lot and one window (days before expiry)."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    window_days: Mapped[int] = mapped_column(sa.Integer)
    #: The lot's points left when the reminder was sent.
    points: Mapped[int] = mapped_column(sa.BigInteger)
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class PaymentFingerprintMixin:
    """A digest of a payment method a member used, to spot self-referrals."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: SHA-256 of the host's fingerprint (the fingerprint itself is not stored).
    digest: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
