"""Columns of the shop-side models: carts, orders, refunds and campaigns.

The concrete classes are built with the ledger's models by
:func:`flask_loyalty.models.build_models`. Money is stored as integer minor
units (``*_minor`` columns); see :mod:`flask_loyalty.money`.
"""

from __future__ import annotations

import datetime as dt
import typing as t

import sqlalchemy as sa
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from .columns import BigId
from .columns import Timestamp
from .columns import utcnow

#: Order states. See ``docs/orders.rst``.
ORDER_STATUSES = ("placed", "paid", "completed", "refunded", "cancelled")


class CartMixin:
    """A member's shopping cart (for shops that have none of their own)."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    currency: Mapped[str] = mapped_column(sa.String(3))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class LineMixin:
    """A product line: sku, category, quantity and unit price in minor units."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sku: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    category: Mapped[str | None] = mapped_column(sa.String(64))
    quantity: Mapped[int] = mapped_column(sa.Integer)
    unit_price_minor: Mapped[int] = mapped_column(sa.BigInteger)


class OrderLineMixin:
    """What an order line earned and what of it was refunded (with :class:`LineMixin`)."""

    #: A discount on this line, in minor units.
    discount_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: The points the line earned when the order was paid.
    points: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: How many of the line's units were refunded.
    refunded_quantity: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: The points reversed for refunds of this line.
    refunded_points: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class OrderMixin:
    """The loyalty view of an order: reference, member, currency, amounts, status."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: The host's order id or number.
    reference: Mapped[str] = mapped_column(sa.String(191), unique=True)
    currency: Mapped[str] = mapped_column(sa.String(3))
    #: The grand total before any part paid with points, in minor units.
    total_minor: Mapped[int] = mapped_column(sa.BigInteger)
    shipping_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    tax_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    discount_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: The money value of the part paid with points, in minor units.
    points_value_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: The money refunded so far, in minor units.
    refunded_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    status: Mapped[str] = mapped_column(sa.String(16), default="placed")
    #: The points the order earned when it was paid.
    points: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: A digest of the order as it was paid, to tell a repeat from a change.
    params_hash: Mapped[str] = mapped_column(sa.String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    paid_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    completed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class RefundMixin:
    """One refund of an order, recorded once per refund reference."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: The host's refund id.
    reference: Mapped[str] = mapped_column(sa.String(191))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    #: The points the refund reversed.
    points: Mapped[int] = mapped_column(sa.BigInteger)
    #: A digest of what was refunded, to tell a repeat from a change.
    params_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class CampaignMixin:
    """An earning campaign stored in the database (see ``LOYALTY_CAMPAIGNS``)."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120), unique=True)
    multiplier: Mapped[str] = mapped_column(sa.String(20), default="1")
    bonus: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    starts_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    ends_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    priority: Mapped[int] = mapped_column(sa.Integer, default=0)
    stacking: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    #: Comma-separated skus the campaign covers (all when empty).
    skus: Mapped[str] = mapped_column(sa.String(1000), default="")
    #: Comma-separated categories the campaign covers (all when empty).
    categories: Mapped[str] = mapped_column(sa.String(1000), default="")
    #: Comma-separated weekdays, 0 = Monday (every day when empty).
    weekdays: Mapped[str] = mapped_column(sa.String(20), default="")
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    def values(self) -> dict[str, t.Any]:
        """The campaign as keyword arguments of :class:`flask_loyalty.rules.Campaign`."""
        return {
            "name": self.name,
            "multiplier": self.multiplier,
            "bonus": self.bonus,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "priority": self.priority,
            "stacking": self.stacking,
            "skus": [s for s in self.skus.split(",") if s],
            "categories": [c for c in self.categories.split(",") if c],
            "weekdays": [int(d) for d in self.weekdays.split(",") if d],
        }
