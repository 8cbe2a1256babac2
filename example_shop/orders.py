"""A member's orders: the list, and each order with the points it earned and used."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from flask import abort
from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import url_for
from flask_login import current_user
from flask_login import login_required

from flask_loyalty import checkout
from flask_loyalty import LoyaltyError

from .extensions import db
from .extensions import loyalty
from .forms import ActionForm
from .ordering import amount_due
from .ordering import fulfilment
from .ordering import set_status
from .ordering import SHIPPING_OPTIONS

bp = Blueprint("orders", __name__, url_prefix="/orders")


def find_order(reference: str) -> t.Any:
    """The order with ``reference``, or 404."""
    m = loyalty.models
    return db.session.scalars(sa.select(m.Order).where(m.Order.reference == reference)).first() or abort(404)


def own_order(reference: str) -> t.Any:
    """The logged-in member's order with ``reference``; 404 for anyone else's."""
    order = find_order(reference)
    if order.member_id != current_user.id:
        abort(404)
    return order


def order_view(order: t.Any) -> dict[str, t.Any]:
    """What the order pages show of an order."""
    held = checkout.applied_points(order.member_id, reference=order.reference)
    details = fulfilment(order)
    return {
        "order": order,
        "details": details,
        "shipping": SHIPPING_OPTIONS.get(details.shipping_method) if details else None,
        "points_used": held.points if held is not None else 0,
        "points_status": held.status if held is not None else None,
        "due": amount_due(order),
    }


@bp.get("/")
@login_required
def history() -> str:
    m = loyalty.models
    rows = db.session.scalars(
        sa.select(m.Order).where(m.Order.member_id == current_user.id).order_by(m.Order.created_at.desc())
    ).all()
    return render_template("shop/orders.html", orders=rows)


@bp.get("/<reference>")
@login_required
def detail(reference: str) -> str:
    order = own_order(reference)
    return render_template("shop/order.html", form=ActionForm(), **order_view(order))


@bp.post("/<reference>/cancel")
@login_required
def cancel(reference: str) -> t.Any:
    order = own_order(reference)
    if ActionForm().validate_on_submit():
        if order.status != "placed":
            flash("Only an order that is not paid yet can be cancelled here.", "error")
        else:
            try:
                set_status(order, "cancelled")
            except LoyaltyError as error:
                flash(error.message, "error")
            else:
                flash(f"Order {reference} is cancelled; any points it held are back in your account.", "info")
    return redirect(url_for("orders.detail", reference=reference))
