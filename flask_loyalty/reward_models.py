"""Columns of the reward catalogue, redemptions and stored API responses.

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

#: Kinds of reward. See ``docs/rewards.rst``.
REWARD_KINDS = ("fixed_amount", "percentage", "free_shipping", "free_product")
#: Redemption states.
REDEMPTION_STATUSES = ("issued", "used", "cancelled", "expired")


class RewardMixin:
    """A reward in the catalogue, bought with points.

    ``kind`` says what the member gets: a coupon worth ``amount_minor``
    (``fixed_amount``), a coupon for ``percent`` off (``percentage``), free
    shipping (``free_shipping``) or the product ``sku`` (``free_product``).
    """

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: The reward's name in URLs; unique.
    slug: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str] = mapped_column(sa.String(2000), default="")
    kind: Mapped[str] = mapped_column(sa.String(16))
    #: The price in points.
    cost: Mapped[int] = mapped_column(sa.BigInteger)
    #: The coupon's value in minor units (``fixed_amount``).
    amount_minor: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: The coupon's percentage off, 1 to 100 (``percentage``).
    percent: Mapped[int | None] = mapped_column(sa.Integer)
    #: The product given (``free_product``).
    sku: Mapped[str | None] = mapped_column(sa.String(64))
    #: How many are left; ``None`` for no limit.
    stock: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: How many one member may hold (issued or used); ``None`` for no limit.
    per_member_limit: Mapped[int | None] = mapped_column(sa.Integer)
    #: The lowest tier that may redeem it; ``None`` for every member.
    tier: Mapped[str | None] = mapped_column(sa.String(32))
    starts_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    ends_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: Days a redemption's code stays valid; ``None`` for no expiry.
    valid_days: Mapped[int | None] = mapped_column(sa.Integer)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class RedemptionMixin:
    """A reward a member bought, with its code and status."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: The unguessable code the member shows or types at checkout.
    code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    #: The redemption's idempotency key, unique per member.
    source_key: Mapped[str] = mapped_column(sa.String(191))
    #: The points it cost.
    points: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(16), default="issued")
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: The order the code was used for.
    order_reference: Mapped[str | None] = mapped_column(sa.String(191))
    used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class ApiResponseMixin:
    """The stored response to a POST with an ``Idempotency-Key``, replayed on repeat."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(191))
    #: A digest of the method, path and body the key was first used with.
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int] = mapped_column(sa.Integer)
    body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
