"""The catalogue: categories, product pages and their pictures."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from flask import abort
from flask import Blueprint
from flask import render_template
from flask_login import current_user

from flask_loyalty.earning import quote
from flask_loyalty.rules import LineContext

from .extensions import db
from .images import product_svg
from .models import Category
from .models import Product

bp = Blueprint("catalogue", __name__)


def earns(products: t.Iterable[Product]) -> dict[str, int]:
    """The points one of each product earns the visitor now (campaigns and tier included)."""
    member = current_user.id if current_user.is_authenticated else None
    return {
        p.sku: quote([LineContext(p.sku, 1, p.price, p.category.slug, p.name)], member=member).points
        for p in products
    }


@bp.get("/")
def index() -> str:
    categories = db.session.scalars(sa.select(Category).order_by(Category.id)).all()
    products = [p for c in categories for p in c.products]
    return render_template("shop/index.html", categories=categories, earns=earns(products))


@bp.get("/c/<slug>")
def category(slug: str) -> str:
    found = db.session.scalars(sa.select(Category).where(Category.slug == slug)).first() or abort(404)
    return render_template("shop/category.html", category=found, earns=earns(found.products))


@bp.get("/p/<sku>")
def product(sku: str) -> t.Any:
    from .reviews import product_page

    found = db.session.scalars(sa.select(Product).where(Product.sku == sku)).first() or abort(404)
    return product_page(found, earns([found])[found.sku])


@bp.get("/images/<sku>.svg")
def image(sku: str) -> t.Any:
    found = db.session.scalars(sa.select(Product).where(Product.sku == sku)).first() or abort(404)
    svg = product_svg(found.name, found.colour, found.category.slug)
    return svg, 200, {"Content-Type": "image/svg+xml", "Cache-Control": "public, max-age=86400"}
