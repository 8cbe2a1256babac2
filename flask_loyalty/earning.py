"""The earning rules in force, and quotes.

Builds the :class:`~flask_loyalty.rules.RuleSet` from configuration
(``LOYALTY_EARN_*``, multipliers, exclusions, ``LOYALTY_CAMPAIGNS``), the
campaigns stored in the database, and the callbacks registered with
:meth:`Loyalty.earn_rule <flask_loyalty.Loyalty.earn_rule>`; and turns an
order, a cart or a list of lines into the :class:`~flask_loyalty.rules.OrderContext`
the rules read. :func:`quote` and the order lifecycle share all of it, so a
quote always equals what the order posts when it is paid.
"""

from __future__ import annotations

import datetime as dt
import typing as t
from decimal import Decimal

from flask import Flask

from .adapters import MODEL_ADAPTER
from .adapters import OrderData
from .config import config_value
from .config import decimal_setting
from .config import derived
from .errors import InvalidRequest
from .errors import MemberNotFound
from .money import check_currency
from .money import Currency
from .money import decimals
from .money import from_minor
from .posting import to_utc
from .proxies import current_loyalty
from .proxies import get_state
from .rules import BASES
from .rules import Campaign
from .rules import evaluate
from .rules import LineContext
from .rules import OrderContext
from .rules import Quote
from .rules import ROUNDINGS
from .rules import RuleSet


def _when(value: t.Any, what: str) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return to_utc(value, what)
    try:
        return to_utc(dt.datetime.fromisoformat(str(value)), what)
    except ValueError:
        raise ValueError(f"{what} must be a datetime or an ISO 8601 string, not {value!r}.") from None


def _names(value: t.Any, what: str) -> frozenset[str]:
    """A set of skus or categories: a list, tuple or set of strings (not one string)."""
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
        raise ValueError(f"{what} must be a list of strings, not {value!r}.")
    if not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{what} must hold non-empty strings, not {value!r}.")
    return frozenset(value)


def _multipliers(value: t.Any, key: str) -> dict[str, Decimal]:
    if not isinstance(value, t.Mapping):
        raise ValueError(f"{key} must be a mapping of names to multipliers, not {value!r}.")
    return {str(k): decimal_setting(v, f"{key}[{k!r}]") for k, v in value.items()}


def campaign_from(values: t.Mapping[str, t.Any]) -> Campaign:
    """Build a :class:`~flask_loyalty.rules.Campaign` from a mapping.

    The keys are those of ``LOYALTY_CAMPAIGNS`` entries: ``name`` (required),
    ``multiplier``, ``bonus``, ``starts_at``, ``ends_at``, ``priority``,
    ``stacking``, ``skus``, ``categories``, ``weekdays``.

    :raises ValueError: naming the campaign and the key that is wrong.
    """
    if not isinstance(values, t.Mapping):
        raise ValueError(f"A campaign is a mapping of its settings, not {values!r}.")
    unknown = set(values) - {
        "name", "multiplier", "bonus", "starts_at", "ends_at", "priority", "stacking", "skus",
        "categories", "weekdays",
    }  # fmt: skip
    name = values.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"A campaign needs a name: {dict(values)!r}.")
    if unknown:
        raise ValueError(f"Campaign {name!r} has unknown key(s): {', '.join(sorted(unknown))}.")
    bonus, priority = values.get("bonus", 0), values.get("priority", 0)
    for key, number in (("bonus", bonus), ("priority", priority)):
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValueError(f"Campaign {name!r}: {key} must be a whole number, not {number!r}.")
    days = values.get("weekdays", ())
    if not isinstance(days, list | tuple | set | frozenset) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6 for d in days
    ):
        raise ValueError(f"Campaign {name!r}: weekdays are 0 (Monday) to 6 (Sunday), not {days!r}.")
    weekdays = frozenset(days)
    stacking = values.get("stacking", True)
    if not isinstance(stacking, bool):
        raise ValueError(f"Campaign {name!r}: stacking must be True or False, not {stacking!r}.")
    campaign = Campaign(
        name=name,
        multiplier=decimal_setting(values.get("multiplier", 1), f"Campaign {name!r}: multiplier"),
        bonus=bonus,
        starts_at=_when(values.get("starts_at"), f"Campaign {name!r}: starts_at"),
        ends_at=_when(values.get("ends_at"), f"Campaign {name!r}: ends_at"),
        priority=priority,
        stacking=stacking,
        skus=_names(values.get("skus", ()), f"Campaign {name!r}: skus"),
        categories=_names(values.get("categories", ()), f"Campaign {name!r}: categories"),
        weekdays=weekdays,
    )
    if campaign.starts_at and campaign.ends_at and campaign.ends_at <= campaign.starts_at:
        raise ValueError(f"Campaign {name!r} ends before it starts.")
    return campaign


def stored_campaign(row: t.Any) -> dict[str, t.Any]:
    """The settings of a stored campaign (a ``Campaign`` row), as
    :func:`campaign_from` takes them; its lists are comma-separated."""

    def items(text: str | None) -> list[str]:
        return [item.strip() for item in (text or "").split(",") if item.strip()]

    return {
        "name": row.name,
        "multiplier": row.multiplier,
        "bonus": row.bonus,
        "starts_at": row.starts_at,
        "ends_at": row.ends_at,
        "priority": row.priority,
        "stacking": bool(row.stacking),
        "skus": items(row.skus),
        "categories": items(row.categories),
        "weekdays": [int(day) if day.isdigit() else day for day in items(row.weekdays)],
    }


#: The configuration keys the earning rules are built from.
RULE_KEYS = (
    "EARN_ROUNDING", "EARN_BASIS", "EARN_MINIMUM", "CAMPAIGNS", "EARN_RATE", "SKU_MULTIPLIERS",
    "CATEGORY_MULTIPLIERS", "EXCLUDED_SKUS", "EXCLUDED_CATEGORIES", "CURRENCY", "CURRENCY_DECIMALS",
)  # fmt: skip


def configured_rules() -> RuleSet:
    """The rules from configuration alone (no stored campaigns, no callbacks).

    Checked and built once per app, and again whenever one of the keys
    they come from changes.

    :raises ValueError: naming the key whose value is not usable.
    """
    return derived(_build_rules, RULE_KEYS)


def _build_rules(app: Flask) -> RuleSet:
    rounding, basis = config_value("EARN_ROUNDING", app), config_value("EARN_BASIS", app)
    if rounding not in ROUNDINGS:
        raise ValueError(f"LOYALTY_EARN_ROUNDING must be one of {ROUNDINGS}, not {rounding!r}.")
    if basis not in BASES:
        raise ValueError(f"LOYALTY_EARN_BASIS must be one of {BASES}, not {basis!r}.")
    minimum = config_value("EARN_MINIMUM", app)
    campaigns = config_value("CAMPAIGNS", app)
    if isinstance(campaigns, str | bytes | t.Mapping) or not isinstance(campaigns, list | tuple):
        raise ValueError(f"LOYALTY_CAMPAIGNS must be a list of campaign mappings, not {campaigns!r}.")
    try:
        built = tuple(campaign_from(c) for c in campaigns)
    except ValueError as error:
        raise ValueError(f"LOYALTY_CAMPAIGNS: {error}") from None
    return RuleSet(
        rate=decimal_setting(config_value("EARN_RATE", app), "LOYALTY_EARN_RATE"),
        rounding=rounding,
        basis=basis,
        minimum=None if minimum is None else decimal_setting(minimum, "LOYALTY_EARN_MINIMUM"),
        sku_multipliers=_multipliers(config_value("SKU_MULTIPLIERS", app), "LOYALTY_SKU_MULTIPLIERS"),
        category_multipliers=_multipliers(
            config_value("CATEGORY_MULTIPLIERS", app), "LOYALTY_CATEGORY_MULTIPLIERS"
        ),
        excluded_skus=_names(config_value("EXCLUDED_SKUS", app), "LOYALTY_EXCLUDED_SKUS"),
        excluded_categories=_names(config_value("EXCLUDED_CATEGORIES", app), "LOYALTY_EXCLUDED_CATEGORIES"),
        campaigns=built,
        decimals=decimals(app=app),
    )


def rules_at(at: dt.datetime, campaigns: t.Sequence[t.Any] | None = None) -> RuleSet:
    """Every rule in force at ``at``: configuration, stored campaigns, callbacks.

    :param campaigns: the stored campaigns in force at ``at`` (rows), if the
        caller has read them; read here otherwise.
    """
    state = get_state()
    base = configured_rules()
    if campaigns is None:
        campaigns = state.store.active_campaigns(at)
    stored = tuple(campaign_from(stored_campaign(row)) for row in campaigns)
    callbacks = state.extension.earn_rules
    if not stored and not callbacks:
        return base
    return RuleSet(
        **{
            **base.__dict__,
            "campaigns": base.campaigns + stored,
            "callbacks": tuple(callbacks.items()),
        }
    )


def tier_multiplier(tier: str | None, member_id: int | None) -> Decimal:
    """The earning multiplier of ``tier``: the registered hook's, else ``LOYALTY_TIERS``'."""
    hook = current_loyalty.extension.tier_multiplier_hook
    if hook is not None:
        return decimal_setting(hook(tier, member_id), "The tier multiplier")
    for level in config_value("TIERS"):
        if level["name"] == tier:
            return decimal_setting(level.get("multiplier", 1), f"Tier {tier!r}: multiplier")
    return Decimal(1)


def read_order(order: t.Any) -> OrderData:
    """The loyalty view of ``order``: :class:`OrderData`, the extension's own
    ``Order``, or a host order read by the registered adapter.

    :raises InvalidRequest: if no adapter can read it.
    """
    if isinstance(order, OrderData):
        return order
    state = get_state()
    if isinstance(order, state.models.Order):
        return MODEL_ADAPTER.read(order)
    adapter = state.extension.order_adapter_object
    if adapter is None:
        raise InvalidRequest(
            f"Cannot read {type(order).__name__} as an order: register an adapter"
            " with loyalty.order_adapter(...)."
        )
    return adapter.read(order) if hasattr(adapter, "read") else t.cast(OrderData, adapter(order))


def check_order(data: OrderData) -> Currency:
    """Refuse an order that is not a consistent order in the shop's currency.

    :returns: the order's currency, to convert its amounts with.

    :raises CurrencyMismatch: for another currency.
    :raises InvalidRequest: for an empty reference, no lines, a sku,
        category or name that does not fit its column, a quantity that is not
        a positive whole number, negative amounts or amounts finer than the
        currency's minor unit, a discount larger than its line or lines, goods
        (less discounts) worth more than the total, or more paid with points
        than the total.
    """
    unit = Currency.of(check_currency(data.currency))
    if not isinstance(data.reference, str) or not data.reference.strip() or len(data.reference) > 160:
        raise InvalidRequest("An order needs a reference of 1 to 160 characters.")
    if not data.lines:
        raise InvalidRequest(f"Order {data.reference!r} has no lines.")
    for line in data.lines:
        if not isinstance(line.sku, str) or not line.sku or len(line.sku) > 64:
            raise InvalidRequest(f"Order {data.reference!r}: a sku is a string of 1 to 64 characters.")
        if not (line.category is None or isinstance(line.category, str) and len(line.category) <= 64):
            raise InvalidRequest(f"Order {data.reference!r}: the category of {line.sku!r} is not usable.")
        if not isinstance(line.name, str) or len(line.name) > 200:
            raise InvalidRequest(f"Order {data.reference!r}: the name of {line.sku!r} is not usable.")
        quantity = line.quantity
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 < quantity < 2**31:
            raise InvalidRequest(
                f"Order {data.reference!r}: quantity of {line.sku!r} must be a positive whole number."
            )
        unit.parse(line.unit_price)
        unit.parse(line.discount)
        if line.unit_price < 0 or line.discount < 0:
            raise InvalidRequest(f"Order {data.reference!r}: line {line.sku!r} has a negative amount.")
        if line.discount > line.unit_price * line.quantity:
            raise InvalidRequest(f"Order {data.reference!r}: the discount of {line.sku!r} exceeds the line.")
    for name in ("shipping", "tax", "discount", "paid_with_points", "total"):
        unit.parse(getattr(data, name))
        if getattr(data, name) < 0:
            raise InvalidRequest(f"Order {data.reference!r}: {name} must not be negative.")
    goods = sum((line.amount for line in data.lines), Decimal(0)) - data.discount
    if goods < 0:
        raise InvalidRequest(f"Order {data.reference!r}: its discount exceeds its lines.")
    if goods > data.total:
        raise InvalidRequest(
            f"Order {data.reference!r}: its lines come to {goods} after discounts,"
            f" more than its total {data.total}."
        )
    if data.paid_with_points > data.total:
        raise InvalidRequest(f"Order {data.reference!r}: more was paid with points than the total.")
    return unit


def context(data: OrderData, member_id: int | None, at: dt.datetime, tier: str | None) -> OrderContext:
    """The rules' read-only view of an order for ``member_id`` at ``at``."""
    return OrderContext(
        reference=data.reference,
        member_id=member_id,
        currency=data.currency.upper(),
        lines=data.lines,
        at=at,
        shipping=data.shipping,
        tax=data.tax,
        discount=data.discount,
        paid_with_points=data.paid_with_points,
        tier=tier,
        tier_multiplier=tier_multiplier(tier, member_id),
    )


def quote(
    order: t.Any,
    *,
    member: t.Any = None,
    at: dt.datetime | None = None,
) -> Quote:
    """The points ``order`` would earn if it were paid now, with breakdowns.

    :param order: an order (see :func:`read_order`), a cart of the
        extension's ``Cart`` model, or a sequence of
        :class:`~flask_loyalty.rules.LineContext`.
    :param member: the member whose tier counts; the order's or cart's own
        member by default, none for a bare list of lines.
    :param at: the time the campaigns are evaluated at; now by default.

    An empty cart or list of lines earns nothing (a quote of 0 points with no
    lines); an order must have lines.
    """
    from .members import member_for_user

    state = get_state()
    when = to_utc(at, "at") or state.now()
    empty_cart = isinstance(order, state.models.Cart) and not order.items
    if empty_cart or (isinstance(order, list | tuple) and not order):
        return Quote(0, (), ())
    if isinstance(order, state.models.Cart):
        lines = tuple(
            LineContext(item.sku, item.quantity, from_minor(item.unit_price_minor), item.category, item.name)
            for item in order.items
        )
        data = OrderData(f"cart:{order.id}", member or order.member_id, order.currency, sum(
            (ln.amount for ln in lines), Decimal(0)), lines)  # fmt: skip
    elif isinstance(order, list | tuple):
        lines = tuple(order)
        data = OrderData(
            "quote",
            member,
            str(config_value("CURRENCY")),
            sum((ln.amount for ln in lines), Decimal(0)),
            lines,
        )
    else:
        data = read_order(order)
        if member is not None:
            data = OrderData(**{**data.__dict__, "user": member})
    check_order(data)
    try:
        member_id = member_for_user(data.user, auto_enroll=False) if data.user is not None else None
    except MemberNotFound:
        # A shopper who is not a member yet: enrolled when the order is paid.
        member_id = None
    tier = state.store.member_tier(member_id)[0] if member_id else None
    return evaluate(context(data, member_id, when, tier), rules_at(when))
