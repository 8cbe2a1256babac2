"""What templates see: translation and formatting helpers, labels, and helpers for host pages.

:func:`install` (called by :meth:`~flask_loyalty.Loyalty.init_app`) adds
these template globals to the app, for the member pages and the host's own
templates alike:

``loyalty_gettext(message, **vars)``, ``loyalty_ngettext(singular, plural, n, **vars)``
    The extension's translations (:mod:`flask_loyalty.i18n`).
``loyalty_locale()``
    The request's locale among the shipped ones (``en`` or ``zh_CN``).
``loyalty_points``, ``loyalty_money``, ``loyalty_datetime``, ``loyalty_date``
    Numbers (``n``), money (``amount, currency``) and times (``value``)
    formatted for the request's locale.
``loyalty_kind_label(kind)``, ``loyalty_status_label(status)``, ``loyalty_reward_value(reward)``
    Translated names of ledger entry kinds, redemption statuses and what a reward gives.
``loyalty_balance()``
    The logged-in member's :class:`~flask_loyalty.store.Balances`, or ``None``
    for an anonymous visitor (one primary-key read, made when called).
``loyalty_earn_points(item, price=None)``
    The points ``item`` earns when paid: a cart of the extension's ``Cart``
    model, a list of :class:`~flask_loyalty.rules.LineContext`, or a product
    (anything with ``sku`` and ``price``, or a SKU with ``price=``), priced for
    one unit. It runs the earning rules when called.

The member pages also get ``_``, ``gettext`` and ``ngettext`` (the
extension's translations, falling back to the host's Flask-Babel catalogue)
and ``loyalty_base_template`` (``LOYALTY_BASE_TEMPLATE``) from
:func:`page_context`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import dataclasses
import typing as t
from decimal import Decimal

from flask import Flask

from .config import config_value
from .i18n import current_locale
from .i18n import format_currency
from .i18n import format_date
from .i18n import format_datetime
from .i18n import format_number
from .i18n import gettext
from .i18n import lazy_gettext as _l
from .i18n import ngettext

#: Translated names of ledger entry kinds.
KIND_LABELS = {
    "earn": _l("Earned"),
    "activate": _l("Became available"),
    "redeem": _l("Redeemed"),
    "reserve": _l("Held at checkout"),
    "capture": _l("Paid at checkout"),
    "release": _l("Returned from checkout"),
    "reverse": _l("Reversed"),
    "expire": _l("Expired"),
    "adjust": _l("Adjusted"),
}

#: Translated names of redemption statuses.
STATUS_LABELS = {
    "issued": _l("Ready to use"),
    "used": _l("Used"),
    "cancelled": _l("Cancelled"),
    "expired": _l("Expired"),
    "held": _l("Held"),
    "captured": _l("Paid"),
    "released": _l("Released"),
}


def kind_label(kind: str) -> str:
    """The translated name of a ledger entry kind."""
    label = KIND_LABELS.get(kind)
    return str(label) if label is not None else kind


def status_label(status: str) -> str:
    """The translated name of a redemption or reservation status."""
    label = STATUS_LABELS.get(status)
    return str(label) if label is not None else status


def reward_value(reward: t.Any) -> str:
    """What a reward (or redemption) gives, translated: ``5.00 USD off``, ``10% off``..."""
    if reward.kind == "fixed_amount" and reward.amount is not None:
        money = format_currency(reward.amount, str(config_value("CURRENCY")))
        return gettext("%(amount)s off", amount=money)
    if reward.kind == "percentage":
        return gettext("%(percent)s%% off", percent=reward.percent)
    if reward.kind == "free_shipping":
        return gettext("Free shipping")
    return gettext("A free %(sku)s", sku=reward.sku or "")


@dataclasses.dataclass(frozen=True)
class TierProgress:
    """The member's tier and progress to the next one, ready to show."""

    #: The member's tier, or ``None`` without one.
    tier: str | None
    #: The next tier's name, or ``None`` at the top (or without tiers).
    next_tier: str | None
    #: Progress to the next tier, 0 to 100.
    percent: int
    #: What is still needed, formatted (points or money), or ``""``.
    to_next: str
    #: The benefits of the member's tier, as configured.
    benefits: str


def tier_progress(standing: t.Any) -> TierProgress:
    """Turn a :class:`~flask_loyalty.tiers.Standing` into a :class:`TierProgress`."""
    from .money import from_minor
    from .tier_config import configured_tiers

    tiers = {tier.name: tier for tier in configured_tiers()}
    benefits = tiers[standing.tier].benefits if standing.tier in tiers else ""
    following = standing.next_tier
    if following is None or standing.to_next is None:
        return TierProgress(standing.tier, None, 100 if standing.tier else 0, "", benefits)
    needed = max(following.minimum, 1)
    percent = max(0, min(100, standing.metric * 100 // needed))
    if config_value("TIER_METRIC") == "amount_spent":
        to_next = format_currency(from_minor(standing.to_next), str(config_value("CURRENCY")))
    else:
        to_next = ngettext(
            "%(num)s point", "%(num)s points", standing.to_next, num=format_number(standing.to_next)
        )
    return TierProgress(standing.tier, following.name, percent, to_next, benefits)


def current_balance() -> t.Any:
    """The logged-in member's balances, or ``None`` for an anonymous visitor."""
    from flask_login import current_user

    from .members import balances
    from .members import member_for_user

    if not getattr(current_user, "is_authenticated", False):
        return None
    return balances(member_for_user(current_user._get_current_object()))


def earn_points(item: t.Any, price: Decimal | int | str | None = None) -> int:
    """The points ``item`` earns when paid (see the module's docs)."""
    from flask_login import current_user

    from .earning import quote
    from .members import member_for_user
    from .money import parse_amount
    from .rules import LineContext

    member = None
    if getattr(current_user, "is_authenticated", False):
        member = member_for_user(current_user._get_current_object())
    if isinstance(item, str):
        if price is None:
            raise TypeError("loyalty_earn_points(sku) needs price=...")
        item = [LineContext(item, 1, parse_amount(price))]
    elif hasattr(item, "sku") and hasattr(item, "price") and not hasattr(item, "items"):
        category = getattr(item, "category", None)
        item = [
            LineContext(str(item.sku), 1, parse_amount(item.price), category, str(getattr(item, "name", "")))
        ]
    return int(quote(item, member=member).points)


def page_context() -> dict[str, t.Any]:
    """The variables every member page gets (see the module's docs)."""
    return {
        "_": gettext,
        "gettext": gettext,
        "ngettext": ngettext,
        "loyalty_base_template": config_value("BASE_TEMPLATE"),
    }


def install(app: Flask) -> None:
    """Add the template globals listed in the module's docs to ``app``."""
    helpers: dict[str, t.Callable[..., t.Any]] = {
        "loyalty_gettext": gettext,
        "loyalty_locale": current_locale,
        "loyalty_ngettext": ngettext,
        "loyalty_points": format_number,
        "loyalty_money": format_currency,
        "loyalty_datetime": format_datetime,
        "loyalty_date": format_date,
        "loyalty_kind_label": kind_label,
        "loyalty_status_label": status_label,
        "loyalty_reward_value": reward_value,
        "loyalty_balance": current_balance,
        "loyalty_earn_points": earn_points,
    }
    for name, function in helpers.items():
        app.add_template_global(function, name)
