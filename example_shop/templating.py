"""What the shop's templates see: money formatting and the header's numbers."""

from __future__ import annotations

import typing as t
from decimal import Decimal

from flask import current_app
from flask import Flask
from flask_login import current_user

from flask_loyalty import actions
from flask_loyalty import members
from flask_loyalty.money import currency
from flask_loyalty.money import from_minor

from .ordering import cart_count

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "¥"}


def money(amount: Decimal | int, *, minor: bool = False) -> str:
    """``$12.50``: an amount (or minor units with ``minor=True``) in the shop's currency."""
    value = from_minor(int(amount)) if minor else Decimal(amount)
    code = currency()
    sign = "-" if value < 0 else ""
    symbol = SYMBOLS.get(code)
    return f"{sign}{symbol}{abs(value):,}" if symbol else f"{sign}{abs(value):,} {code}"


def points(value: int) -> str:
    """``1,250``"""
    return f"{int(value):,}"


def action_points(name: str) -> int:
    """What action ``name`` of ``LOYALTY_ACTIONS`` earns (0 when it is not configured)."""
    action = actions.actions().get(name)
    return action.points if action else 0


def is_admin(user: t.Any) -> bool:
    """Whether ``user`` is the shop owner (``SHOP_ADMIN_EMAILS``)."""
    return bool(
        getattr(user, "is_authenticated", False) and user.email in current_app.config["SHOP_ADMIN_EMAILS"]
    )


def loyalty_page(endpoint: str) -> str | None:
    """The URL of a member page (``dashboard``, ``rewards``...), or ``None`` if it is not mounted."""
    from flask import url_for
    from werkzeug.routing import BuildError

    name = current_app.config["LOYALTY_BLUEPRINT_NAME"]
    try:
        return url_for(f"{name}.{endpoint}")
    except BuildError:
        return None


def _header() -> dict[str, t.Any]:
    if not current_user.is_authenticated:
        return {"header_points": None, "header_cart": 0, "header_admin": False}
    return {
        "header_points": members.balances(current_user.id),
        "header_cart": cart_count(current_user),
        "header_admin": is_admin(current_user),
    }


def init_app(app: Flask) -> None:
    app.add_template_filter(money, "money")
    app.add_template_filter(lambda minor: money(minor, minor=True), "minor_money")
    app.add_template_filter(points, "points")
    app.add_template_global(loyalty_page)
    app.add_template_global(action_points)
    app.context_processor(_header)
