"""The cart: the extension's ``Cart`` of the logged-in member."""

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

from flask_loyalty import InvalidRequest
from flask_loyalty.earning import quote

from .extensions import db
from .forms import AddToCartForm
from .forms import CartLineForm
from .models import Product
from .ordering import add_to_cart
from .ordering import cart_for
from .ordering import set_quantity

bp = Blueprint("cart", __name__, url_prefix="/cart")


@bp.get("/")
@login_required
def show() -> str:
    cart = cart_for(current_user, create=False)
    items = list(cart.items) if cart is not None else []
    subtotal = sum(i.quantity * i.unit_price_minor for i in items)
    earns = quote(cart).points if cart is not None else 0
    return render_template(
        "shop/cart.html", items=items, subtotal=subtotal, earns=earns, line_form=CartLineForm()
    )


@bp.post("/add/<sku>")
@login_required
def add(sku: str) -> t.Any:
    product = db.session.scalars(sa.select(Product).where(Product.sku == sku)).first() or abort(404)
    form = AddToCartForm()
    if not form.validate():
        flash("Choose a quantity from 1 to 20.", "error")
        return redirect(url_for("catalogue.product", sku=sku))
    add_to_cart(current_user, product, form.quantity.data)
    flash(f"Added {form.quantity.data} × {product.name} to your cart.", "success")
    return redirect(url_for("cart.show"))


@bp.post("/update/<sku>")
@login_required
def update(sku: str) -> t.Any:
    form = CartLineForm()
    if not form.validate() or form.quantity.data is None:
        flash("Choose a quantity from 0 to 20.", "error")
        return redirect(url_for("cart.show"))
    try:
        set_quantity(current_user, sku, form.quantity.data)
    except InvalidRequest as error:
        flash(error.message, "error")
    return redirect(url_for("cart.show"))
