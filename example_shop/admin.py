"""The shop owner's pages: orders and their lifecycle.

Completing, cancelling and refunding go through the extension: a status
change of the order (completed, cancelled) or
:func:`flask_loyalty.orders.order_refunded` for the lines refunded.
"""

from __future__ import annotations

import datetime as dt
import functools
import secrets
import typing as t

import sqlalchemy as sa
from flask import abort
from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user
from flask_login import login_required

from flask_loyalty import InvalidState
from flask_loyalty import LoyaltyError
from flask_loyalty import orders as loyalty_orders

from .extensions import db
from .extensions import loyalty
from .forms import ActionForm
from .forms import RefundForm
from .ordering import fulfilment
from .ordering import set_status
from .orders import find_order
from .orders import order_view
from .templating import is_admin

bp = Blueprint("admin", __name__, url_prefix="/admin")

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def admin_required(view: F) -> F:
    """Only the shop owner; anyone else gets a 404, not a hint that the page exists."""

    @functools.wraps(view)
    @login_required
    def wrapped(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if not is_admin(current_user):
            abort(404)
        return view(*args, **kwargs)

    return t.cast(F, wrapped)


@bp.get("/")
@admin_required
def index() -> str:
    m = loyalty.models
    status = request.args.get("status", "")
    query = sa.select(m.Order).order_by(m.Order.created_at.desc()).limit(200)
    if status:
        query = query.where(m.Order.status == status)
    rows = db.session.scalars(query).all()
    return render_template("shop/admin/orders.html", orders=rows, status=status)


@bp.get("/orders/<reference>")
@admin_required
def order(reference: str) -> str:
    found = find_order(reference)
    return render_template(
        "shop/admin/order.html",
        form=ActionForm(),
        refund_form=RefundForm(key=secrets.token_hex(8)),
        **order_view(found),
    )


@bp.post("/orders/<reference>/<action>")
@admin_required
def act(reference: str, action: str) -> t.Any:
    found = find_order(reference)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        if action == "ship":
            details = fulfilment(found)
            if details is None or found.status not in ("paid", "completed"):
                raise InvalidState(f"Order {reference} is {found.status}; only a paid order ships.")
            details.shipped_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            db.session.commit()
        elif action in ("complete", "cancel", "refund-all"):
            status = {"complete": "completed", "cancel": "cancelled", "refund-all": "refunded"}[action]
            set_status(found, status)
        else:
            abort(404)
    except LoyaltyError as error:
        flash(error.message, "error")
    else:
        flash(f"Order {reference}: {action.replace('-', ' ')} done.", "success")
    return redirect(url_for("admin.order", reference=reference))


@bp.post("/orders/<reference>/refund")
@admin_required
def refund(reference: str) -> t.Any:
    found = find_order(reference)
    form = RefundForm()
    if not form.validate_on_submit():
        abort(400)
    lines: dict[str, int] = {}
    for line in found.lines:
        text = request.form.get(f"qty-{line.sku}", "0").strip() or "0"
        if not text.isdigit():
            flash(f"{line.name}: enter a whole number of units to refund.", "error")
            return redirect(url_for("admin.order", reference=reference))
        if int(text):
            lines[line.sku] = int(text)
    if not lines:
        flash("Choose at least one unit to refund.", "error")
        return redirect(url_for("admin.order", reference=reference))
    try:
        outcome = loyalty_orders.order_refunded(found, key=form.key.data, lines=lines)
    except LoyaltyError as error:
        flash(error.message, "error")
    else:
        db.session.expire_all()
        flash(f"Refunded {sum(lines.values())} unit(s); {outcome.points:,} points reversed.", "success")
    return redirect(url_for("admin.order", reference=reference))
