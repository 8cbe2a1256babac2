"""The shop's own tables: the catalogue and what the shop records about an order.

Members, carts and orders are the extension's models (``loyalty.models``);
the shop adds only what a loyalty programme has no business knowing about.
Prices are integer minor units (cents), read as :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import relationship

from flask_loyalty.money import from_minor

from .extensions import db


class Category(db.Model):
    __tablename__ = "shop_category"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(sa.String(40), unique=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    description: Mapped[str] = mapped_column(sa.String(300), default="")
    products: Mapped[list[Product]] = relationship(back_populates="category", order_by="Product.name")


class Product(db.Model):
    __tablename__ = "shop_product"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(sa.String(40), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str] = mapped_column(sa.String(1000), default="")
    price_minor: Mapped[int] = mapped_column(sa.Integer)
    #: The colour of the product's generated picture, as ``#rrggbb``.
    colour: Mapped[str] = mapped_column(sa.String(7), default="#6b8e23")
    category_id: Mapped[int] = mapped_column(sa.ForeignKey("shop_category.id"))
    category: Mapped[Category] = relationship(back_populates="products")

    @property
    def price(self) -> Decimal:
        """The unit price in the shop's currency."""
        return from_minor(self.price_minor)


class Fulfilment(db.Model):
    """How an order is delivered, the coupon it used, and when it shipped."""

    __tablename__ = "shop_fulfilment"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_reference: Mapped[str] = mapped_column(sa.String(40), unique=True)
    shipping_method: Mapped[str] = mapped_column(sa.String(20))
    coupon_code: Mapped[str | None] = mapped_column(sa.String(32))
    coupon_name: Mapped[str | None] = mapped_column(sa.String(120))
    shipped_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)


class Review(db.Model):
    """A member's review of a product: one per member and product."""

    __tablename__ = "shop_review"
    __table_args__ = (sa.UniqueConstraint("product_id", "member_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("shop_product.id"))
    #: The extension's member id (the shop's users are the extension's members).
    member_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    author: Mapped[str] = mapped_column(sa.String(120))
    rating: Mapped[int] = mapped_column(sa.Integer)
    text: Mapped[str] = mapped_column(sa.String(2000))
    #: Whether the member had a paid order with the product when reviewing it.
    verified: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: The points the review earned (0 when unverified or over the weekly cap).
    points: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime)


class SentReminder(db.Model):
    """An expiry reminder the shop "sent" (logged here instead of emailed), for the owner's page."""

    __tablename__ = "shop_sent_reminder"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    email: Mapped[str] = mapped_column(sa.String(254), default="")
    window_days: Mapped[int] = mapped_column(sa.Integer)
    points: Mapped[int] = mapped_column(sa.BigInteger)
    expires_at: Mapped[dt.datetime] = mapped_column(sa.DateTime)
    sent_at: Mapped[dt.datetime] = mapped_column(sa.DateTime)
