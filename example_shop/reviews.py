"""Product reviews, and the review points a verified purchase earns.

A review is "verified" when the member has a paid (or completed) order with
the product. Only verified reviews earn points:
:func:`flask_loyalty.actions.award_review` credits the ``review`` action of
``LOYALTY_ACTIONS`` once per review, at most as often a week as its cap
allows.
"""

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
from sqlalchemy.exc import IntegrityError

from flask_loyalty import ActionCapReached
from flask_loyalty import actions

from .extensions import db
from .extensions import loyalty
from .forms import AddToCartForm
from .forms import ReviewForm
from .models import Product
from .models import Review
from .templating import action_points

bp = Blueprint("reviews", __name__)


def bought(member_id: int, sku: str) -> bool:
    """Whether the member has a paid or completed order with ``sku``."""
    m = loyalty.models
    query = (
        sa.select(m.Order.id)
        .join(m.OrderLine, m.OrderLine.order_id == m.Order.id)
        .where(
            m.Order.member_id == member_id, m.Order.status.in_(("paid", "completed")), m.OrderLine.sku == sku
        )
        .limit(1)
    )
    return db.session.scalar(query) is not None


def reviews_of(product: Product) -> list[Review]:
    """The product's reviews, newest first."""
    query = sa.select(Review).where(Review.product_id == product.id).order_by(Review.id.desc()).limit(50)
    return list(db.session.scalars(query))


def write_review(member: t.Any, product: Product, rating: int, text: str) -> tuple[Review, str | None]:
    """Save ``member``'s review and award its points; returns it and why it earned nothing, if so."""
    review = Review(
        product_id=product.id,
        member_id=member.id,
        author=member.name,
        rating=rating,
        text=text,
        verified=bought(member.id, product.sku),
        created_at=loyalty.clock(),
    )
    db.session.add(review)
    db.session.commit()
    if not review.verified:
        return review, "Reviews earn points when you have bought the product."
    if action_points("review") == 0:
        return review, None
    try:
        award = actions.award_review(member, review.id, verified_purchase=True)
    except ActionCapReached:
        return review, "You have had review points as often as a week allows; this one earns none."
    review.points = award.points
    db.session.commit()
    return review, None


def product_page(product: Product, earns: int, form: ReviewForm | None = None, status: int = 200) -> t.Any:
    """The product page with its reviews and, for a member who has not reviewed it, the form."""
    found = reviews_of(product)
    mine = current_user.is_authenticated and any(r.member_id == current_user.id for r in found)
    return render_template(
        "shop/product.html",
        product=product,
        earns=earns,
        form=AddToCartForm(),
        reviews=found,
        review_form=None if mine else (form or ReviewForm()),
        review_action=actions.actions().get("review"),
        verified_buyer=current_user.is_authenticated and bought(current_user.id, product.sku),
    ), status


@bp.post("/p/<sku>/reviews")
@login_required
def add(sku: str) -> t.Any:
    from .catalogue import earns

    product = db.session.scalars(sa.select(Product).where(Product.sku == sku)).first() or abort(404)
    form = ReviewForm()
    if not form.validate_on_submit():
        return product_page(product, earns([product])[product.sku], form, 422)
    exists = sa.select(Review.id).where(Review.product_id == product.id, Review.member_id == current_user.id)
    if db.session.scalar(exists) is not None:
        flash("You have reviewed this product already.", "error")
        return redirect(url_for("catalogue.product", sku=sku))
    try:
        review, problem = write_review(current_user, product, int(form.rating.data), form.text.data.strip())
    except IntegrityError:  # a double submit: the first one won
        db.session.rollback()
        flash("You have reviewed this product already.", "error")
        return redirect(url_for("catalogue.product", sku=sku))
    if review.points:
        flash(f"Thank you for your review! It earned you {review.points:,} points.", "success")
    else:
        flash("Thank you for your review!" + (f" {problem}" if problem else ""), "success")
    return redirect(url_for("catalogue.product", sku=sku) + "#reviews")
