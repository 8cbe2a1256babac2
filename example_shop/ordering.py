"""The shop's order logic: carts, prices, placing an order, paying for it.

Views call these functions; they reach the points ledger only through the
extension's public API (:mod:`flask_loyalty.checkout`,
:mod:`flask_loyalty.rewards`) and the status of the extension's ``Order``:
setting it to ``"paid"`` and committing earns the order's points and
captures the points held for it, in the same transaction.
"""

from __future__ import annotations

import dataclasses
import secrets
import typing as t
from decimal import Decimal
from decimal import ROUND_FLOOR

import sqlalchemy as sa

from flask_loyalty import checkout
from flask_loyalty import InvalidRequest
from flask_loyalty import rewards
from flask_loyalty.money import currency
from flask_loyalty.money import from_minor
from flask_loyalty.money import to_minor

from .extensions import db
from .extensions import loyalty
from .models import Fulfilment
from .models import Product

#: The most of one product a cart holds.
MAX_QUANTITY = 20


@dataclasses.dataclass(frozen=True)
class ShippingOption:
    code: str
    label: str
    price: Decimal


SHIPPING_OPTIONS = {
    option.code: option
    for option in (
        ShippingOption("standard", "Standard delivery (3–5 days)", Decimal("4.95")),
        ShippingOption("express", "Express delivery (next day)", Decimal("9.95")),
        ShippingOption("pickup", "Collect from the shop", Decimal("0.00")),
    )
}


@dataclasses.dataclass(frozen=True)
class PricedLine:
    sku: str
    name: str
    category: str | None
    quantity: int
    unit_price: Decimal
    #: A discount on this line (a free product from a coupon).
    discount: Decimal = Decimal(0)

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.quantity - self.discount


@dataclasses.dataclass(frozen=True)
class Priced:
    """What an order costs before any points are applied."""

    lines: tuple[PricedLine, ...]
    shipping: ShippingOption
    shipping_price: Decimal
    #: The coupon's discount on the whole order (fixed amount or percentage).
    discount: Decimal
    coupon: rewards.Redemption | None

    @property
    def goods(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    @property
    def total(self) -> Decimal:
        """Goods less discounts, plus shipping: the most points can pay part of."""
        return self.goods - self.discount + self.shipping_price


# -- carts ----------------------------------------------------------------------


def cart_for(member: t.Any, *, create: bool = True) -> t.Any:
    """The member's cart (the extension's ``Cart``), created when missing."""
    m = loyalty.models
    cart = db.session.scalars(sa.select(m.Cart).where(m.Cart.member_id == member.id).limit(1)).first()
    if cart is None and create:
        cart = m.Cart(member_id=member.id, currency=currency())
        db.session.add(cart)
    return cart


def add_to_cart(member: t.Any, product: Product, quantity: int = 1) -> None:
    """Put ``quantity`` of ``product`` in the member's cart, at today's price."""
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidRequest(f"Choose a quantity from 1 to {MAX_QUANTITY}.")
    cart = cart_for(member)
    category = product.category.slug
    item = next((i for i in cart.items if i.sku == product.sku), None)
    if item is None:
        item = loyalty.models.CartItem(sku=product.sku, quantity=0)
        cart.items.append(item)
    item.quantity = min(MAX_QUANTITY, item.quantity + quantity)
    item.name, item.category, item.unit_price_minor = product.name, category, product.price_minor
    db.session.commit()


def set_quantity(member: t.Any, sku: str, quantity: int) -> None:
    """Change a cart line's quantity; 0 removes it."""
    if not 0 <= quantity <= MAX_QUANTITY:
        raise InvalidRequest(f"Choose a quantity from 0 to {MAX_QUANTITY}.")
    cart = cart_for(member, create=False)
    item = next((i for i in cart.items if i.sku == sku), None) if cart is not None else None
    if item is None:
        raise InvalidRequest("That product is not in your cart.")
    if quantity:
        item.quantity = quantity
    else:
        cart.items.remove(item)
    db.session.commit()


def cart_count(member: t.Any) -> int:
    cart = cart_for(member, create=False)
    return sum(item.quantity for item in cart.items) if cart is not None else 0


# -- prices ---------------------------------------------------------------------


def price(cart: t.Any, shipping: str, coupon: rewards.Redemption | None = None) -> Priced:
    """Price the cart with a shipping option and an optional coupon (shop logic).

    A fixed-amount coupon takes its amount off the goods (never more than
    them), a percentage coupon its share of the goods rounded down to the
    cent, free shipping the shipping price, and a free product adds one of
    that product at no charge.

    :raises InvalidRequest: for an unknown shipping option, or a free
        product that the shop no longer sells.
    """
    option = SHIPPING_OPTIONS.get(shipping)
    if option is None:
        raise InvalidRequest("Choose a delivery option.")
    lines = [
        PricedLine(i.sku, i.name, i.category, i.quantity, from_minor(i.unit_price_minor)) for i in cart.items
    ]
    shipping_price, discount = option.price, Decimal(0)
    goods = sum((line.amount for line in lines), Decimal(0))
    if coupon is not None:
        if coupon.kind == "fixed_amount" and coupon.amount is not None:
            discount = min(coupon.amount, goods)
        elif coupon.kind == "percentage" and coupon.percent:
            cent = Decimal("0.01")
            discount = (goods * coupon.percent / 100).quantize(cent, rounding=ROUND_FLOOR)
        elif coupon.kind == "free_shipping":
            shipping_price = Decimal(0)
        elif coupon.kind == "free_product":
            product = db.session.scalars(sa.select(Product).where(Product.sku == coupon.sku)).first()
            if product is None:
                raise InvalidRequest(f"{coupon.reward_name}: that product is no longer sold.")
            # One more of it, at no charge (on the cart's line if it has one).
            same = next((n for n, line in enumerate(lines) if line.sku == product.sku), None)
            quantity = 1 if same is None else lines.pop(same).quantity + 1
            lines.append(
                PricedLine(
                    product.sku, product.name, product.category.slug, quantity, product.price, product.price
                )
            )
    return Priced(tuple(lines), option, shipping_price, discount, coupon)


# -- orders ---------------------------------------------------------------------


def new_reference() -> str:
    """A short order number that is hard to guess: ``LB-7KQ2M9XD``."""
    return "LB-" + "".join(secrets.choice(rewards.CODE_ALPHABET) for _ in range(8))


def place_order(member: t.Any, *, shipping: str, coupon_code: str = "", points: int = 0) -> t.Any:
    """Turn the member's cart into a placed order, in one transaction.

    The coupon is used for the order and the points are held for it
    (:func:`flask_loyalty.checkout.apply_points`); the cart is emptied. If
    anything fails, nothing is written.

    :raises flask_loyalty.LoyaltyError: a bad coupon, points outside the
        checkout limits, not enough points, an empty cart.
    """
    cart = cart_for(member, create=False)
    if cart is None or not cart.items:
        raise InvalidRequest("Your cart is empty.")
    coupon = rewards.check_code(coupon_code, member=member) if coupon_code.strip() else None
    priced = price(cart, shipping, coupon)
    if points:
        checkout.offer(member, payable_total=priced.total).check(points)
    m = loyalty.models
    order = m.Order(
        member_id=member.id,
        reference=new_reference(),
        currency=cart.currency,
        total_minor=to_minor(priced.total),
        shipping_minor=to_minor(priced.shipping_price),
        discount_minor=to_minor(priced.discount),
        lines=[
            m.OrderLine(
                sku=line.sku,
                name=line.name,
                category=line.category,
                quantity=line.quantity,
                unit_price_minor=to_minor(line.unit_price),
                discount_minor=to_minor(line.discount),
            )
            for line in priced.lines
        ],
    )
    db.session.add(order)
    db.session.add(
        Fulfilment(
            order_reference=order.reference,
            shipping_method=priced.shipping.code,
            coupon_code=coupon.code if coupon else None,
            coupon_name=coupon.reward_name if coupon else None,
        )
    )
    try:
        db.session.flush()
        # Both join this transaction: the order, the coupon and the hold commit together.
        if coupon is not None:
            rewards.use_code(coupon.code, order_reference=order.reference, member=member)
        if points:
            applied = checkout.apply_points(
                member, reference=order.reference, points=points, payable_total=priced.total
            )
            order.points_value_minor = to_minor(applied.discount)
        cart.items.clear()
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return order


def amount_due(order: t.Any) -> Decimal:
    """What the member pays in money: the total less the part paid with points."""
    return from_minor(order.total_minor - order.points_value_minor)


def pay(order: t.Any) -> None:
    """Record a (simulated) payment: the lifecycle earns and captures at commit.

    The points held for the order are what it is paid with: a hold that
    timed out meanwhile pays nothing, and the money due grows by as much.
    """
    applied = checkout.applied_points(order.member, reference=order.reference)
    held = applied is not None and applied.status == "held"
    order.points_value_minor = to_minor(applied.discount) if held and applied else 0
    order.status = "paid"
    try:
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise


def set_status(order: t.Any, status: str) -> None:
    """Move an order to ``status`` (``completed``, ``refunded``, ``cancelled``).

    :raises flask_loyalty.InvalidState: if the order cannot move there.
    """
    order.status = status
    try:
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise


def fulfilment(order: t.Any) -> Fulfilment | None:
    return db.session.scalars(
        sa.select(Fulfilment).where(Fulfilment.order_reference == order.reference)
    ).first()
