"""Checkout: delivery and a coupon, then payment with points and a (simulated) card.

Continuing to payment places the order (the extension's ``Order``, status
``placed``) and uses the coupon for it. The payment page shows the
extension's checkout widget, which holds the points the member applies to
the order; paying sets the status to ``paid``, which captures those points
and earns the order's own, in the same commit.
"""

from __future__ import annotations

import dataclasses
import typing as t
from decimal import Decimal

import sqlalchemy as sa
from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask_login import current_user
from flask_login import login_required

from flask_loyalty import checkout as loyalty_checkout
from flask_loyalty import LoyaltyError
from flask_loyalty import rewards
from flask_loyalty.checkout_widget import checkout_widget
from flask_loyalty.earning import quote
from flask_loyalty.earning import read_order
from flask_loyalty.money import from_minor

from .extensions import db
from .extensions import loyalty
from .forms import ActionForm
from .forms import CheckoutForm
from .ordering import cart_for
from .ordering import fulfilment
from .ordering import pay
from .ordering import place_order
from .ordering import price
from .ordering import SHIPPING_OPTIONS
from .orders import own_order

bp = Blueprint("checkout", __name__, url_prefix="/checkout")


@loyalty.checkout_loader
def order_being_paid(user: t.Any) -> tuple[str, Decimal] | None:
    """The order on the member's payment page: the one the points widget applies points to."""
    reference = session.get("paying")
    if not reference:
        return None
    m = loyalty.models
    order = db.session.scalars(
        sa.select(m.Order).where(m.Order.reference == reference, m.Order.member_id == user.id)
    ).first()
    if order is None or order.status != "placed":
        return None
    return order.reference, from_minor(order.total_minor)


@bp.route("/", methods=("GET", "POST"))
@login_required
def review() -> t.Any:
    cart = cart_for(current_user, create=False)
    if cart is None or not cart.items:
        flash("Your cart is empty.", "info")
        return redirect(url_for("cart.show"))
    form = CheckoutForm()
    coupon, problem = None, None
    if form.coupon.data and form.coupon.data.strip():
        try:
            coupon = rewards.check_code(form.coupon.data, member=current_user)
        except LoyaltyError as error:
            form.coupon.errors = [*form.coupon.errors, error.message]
    shipping = form.shipping.data if form.shipping.data in SHIPPING_OPTIONS else "standard"
    priced = price(cart, shipping, coupon)
    placing = form.is_submitted() and form.place.data
    if placing and form.validate() and not form.coupon.errors:
        try:
            order = place_order(current_user, shipping=form.shipping.data, coupon_code=form.coupon.data or "")
        except LoyaltyError as error:
            problem = error.message
        else:
            return redirect(url_for("checkout.payment", reference=order.reference))
    coupons = [r for r in rewards.member_redemptions(current_user) if r.status == "issued"]
    page = render_template(
        "shop/checkout.html",
        form=form,
        shipping_options=SHIPPING_OPTIONS.values(),
        priced=priced,
        problem=problem,
        coupons=coupons,
        earns=quote(cart).points,
        balance=loyalty_checkout.offer(current_user, payable_total=priced.total),
    )
    return page, 422 if placing and (form.errors or problem) else 200


@bp.route("/pay/<reference>", methods=("GET", "POST"))
@login_required
def payment(reference: str) -> t.Any:
    order = own_order(reference)
    if order.status != "placed":
        session.pop("paying", None)
        return redirect(url_for("orders.detail", reference=reference))
    form = ActionForm()
    if form.validate_on_submit():
        try:
            pay(order)
        except LoyaltyError as error:
            flash(f"The payment did not go through: {error.message}", "error")
        else:
            session.pop("paying", None)
            flash(f"Thank you! Order {reference} is paid.", "success")
            return redirect(url_for("orders.detail", reference=reference))
    session["paying"] = reference
    applied = loyalty_checkout.applied_points(current_user, reference=reference)
    held = applied if applied is not None and applied.status == "held" else None
    details = fulfilment(order)
    paid_with_points = held.discount if held else Decimal(0)
    return render_template(
        "shop/payment.html",
        order=order,
        form=form,
        held=held,
        details=details,
        due=from_minor(order.total_minor) - paid_with_points,
        # What paying earns: the part paid with points earns nothing.
        earns=quote(dataclasses.replace(read_order(order), paid_with_points=paid_with_points)).points,
        loyalty_checkout=checkout_widget(next=request.path),
    )
