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

from .adapters import MODEL_ADAPTER
from .adapters import OrderData
from .config import config_value
from .errors import InvalidRequest
from .money import check_currency
from .money import decimals
from .money import from_minor
from .posting import to_utc
from .proxies import current_loyalty
from .rules import BASES
from .rules import Campaign
from .rules import evaluate
from .rules import LineContext
from .rules import OrderContext
from .rules import Quote
from .rules import ROUNDINGS
from .rules import RuleSet


def _number(value: t.Any, what: str) -> Decimal:
    if isinstance(value, bool | float):
        raise ValueError(f"{what} must be a Decimal, int or str, not {value!r}.")
    try:
        number = Decimal(value)
    except Exception:
        raise ValueError(f"{what} must be a number, not {value!r}.") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{what} must be a finite number of at least 0, not {value!r}.")
    return number


def _when(value: t.Any, what: str) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return to_utc(value, what)
    try:
        return to_utc(dt.datetime.fromisoformat(str(value)), what)
    except ValueError:
        raise ValueError(f"{what} must be a datetime or an ISO 8601 string, not {value!r}.") from None


def campaign_from(values: t.Mapping[str, t.Any]) -> Campaign:
    """Build a :class:`~flask_loyalty.rules.Campaign` from a mapping.

    The keys are those of ``LOYALTY_CAMPAIGNS`` entries: ``name`` (required),
    ``multiplier``, ``bonus``, ``starts_at``, ``ends_at``, ``priority``,
    ``stacking``, ``skus``, ``categories``, ``weekdays``.

    :raises ValueError: naming the campaign and the key that is wrong.
    """
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
    weekdays = frozenset(values.get("weekdays", ()))
    if not weekdays <= set(range(7)):
        raise ValueError(f"Campaign {name!r}: weekdays are 0 (Monday) to 6 (Sunday).")
    campaign = Campaign(
        name=name,
        multiplier=_number(values.get("multiplier", 1), f"Campaign {name!r}: multiplier"),
        bonus=bonus,
        starts_at=_when(values.get("starts_at"), f"Campaign {name!r}: starts_at"),
        ends_at=_when(values.get("ends_at"), f"Campaign {name!r}: ends_at"),
        priority=priority,
        stacking=bool(values.get("stacking", True)),
        skus=frozenset(str(s) for s in values.get("skus", ())),
        categories=frozenset(str(c) for c in values.get("categories", ())),
        weekdays=weekdays,
    )
    if campaign.starts_at and campaign.ends_at and campaign.ends_at <= campaign.starts_at:
        raise ValueError(f"Campaign {name!r} ends before it starts.")
    return campaign


def configured_rules() -> RuleSet:
    """The rules from configuration alone (no stored campaigns, no callbacks).

    :raises ValueError: naming the key whose value is not usable.
    """
    rounding, basis = config_value("EARN_ROUNDING"), config_value("EARN_BASIS")
    if rounding not in ROUNDINGS:
        raise ValueError(f"LOYALTY_EARN_ROUNDING must be one of {ROUNDINGS}, not {rounding!r}.")
    if basis not in BASES:
        raise ValueError(f"LOYALTY_EARN_BASIS must be one of {BASES}, not {basis!r}.")
    minimum = config_value("EARN_MINIMUM")
    return RuleSet(
        rate=_number(config_value("EARN_RATE"), "LOYALTY_EARN_RATE"),
        rounding=rounding,
        basis=basis,
        minimum=None if minimum is None else _number(minimum, "LOYALTY_EARN_MINIMUM"),
        sku_multipliers={
            str(k): _number(v, f"LOYALTY_SKU_MULTIPLIERS[{k!r}]")
            for k, v in config_value("SKU_MULTIPLIERS").items()
        },
        category_multipliers={
            str(k): _number(v, f"LOYALTY_CATEGORY_MULTIPLIERS[{k!r}]")
            for k, v in config_value("CATEGORY_MULTIPLIERS").items()
        },
        excluded_skus=frozenset(str(s) for s in config_value("EXCLUDED_SKUS")),
        excluded_categories=frozenset(str(c) for c in config_value("EXCLUDED_CATEGORIES")),
        campaigns=tuple(campaign_from(c) for c in config_value("CAMPAIGNS")),
        decimals=decimals(),
    )


def rules_at(at: dt.datetime) -> RuleSet:
    """Every rule in force at ``at``: configuration, stored campaigns, callbacks."""
    state = current_loyalty
    base = configured_rules()
    stored = tuple(campaign_from(row.values()) for row in state.store.active_campaigns(at))
    return RuleSet(
        **{
            **base.__dict__,
            "campaigns": base.campaigns + stored,
            "callbacks": tuple(state.extension.earn_rules.items()),
        }
    )


def tier_multiplier(tier: str | None, member_id: int | None) -> Decimal:
    """The earning multiplier of ``tier``: the registered hook's, else ``LOYALTY_TIERS``'."""
    hook = current_loyalty.extension.tier_multiplier_hook
    if hook is not None:
        return _number(hook(tier, member_id), "The tier multiplier")
    for level in config_value("TIERS"):
        if level["name"] == tier:
            return _number(level.get("multiplier", 1), f"Tier {tier!r}: multiplier")
    return Decimal(1)


def read_order(order: t.Any) -> OrderData:
    """The loyalty view of ``order``: :class:`OrderData`, the extension's own
    ``Order``, or a host order read by the registered adapter.

    :raises InvalidRequest: if no adapter can read it.
    """
    if isinstance(order, OrderData):
        return order
    state = current_loyalty
    if isinstance(order, state.models.Order):
        return MODEL_ADAPTER.read(order)
    adapter = state.extension.order_adapter_object
    if adapter is None:
        raise InvalidRequest(
            f"Cannot read {type(order).__name__} as an order: register an adapter"
            " with loyalty.order_adapter(...)."
        )
    return adapter.read(order) if hasattr(adapter, "read") else t.cast(OrderData, adapter(order))


def check_order(data: OrderData) -> None:
    """Refuse an order that is not a consistent order in the shop's currency.

    :raises CurrencyMismatch: for another currency.
    :raises InvalidRequest: for an empty reference, no lines, a quantity that
        is not a positive whole number, negative amounts, a line discount
        larger than its line, or goods (less discounts) worth more than the
        total, or more paid with points than the total.
    """
    check_currency(data.currency)
    if not isinstance(data.reference, str) or not data.reference.strip() or len(data.reference) > 160:
        raise InvalidRequest("An order needs a reference of 1 to 160 characters.")
    if not data.lines:
        raise InvalidRequest(f"Order {data.reference!r} has no lines.")
    for line in data.lines:
        if isinstance(line.quantity, bool) or not isinstance(line.quantity, int) or line.quantity <= 0:
            raise InvalidRequest(
                f"Order {data.reference!r}: quantity of {line.sku!r} must be a positive whole number."
            )
        if line.unit_price < 0 or line.discount < 0 or line.discount > line.unit_price * line.quantity:
            raise InvalidRequest(f"Order {data.reference!r}: line {line.sku!r} has a negative amount.")
    for name in ("shipping", "tax", "discount", "paid_with_points", "total"):
        if getattr(data, name) < 0:
            raise InvalidRequest(f"Order {data.reference!r}: {name} must not be negative.")
    goods = sum((line.amount for line in data.lines), Decimal(0)) - data.discount
    if goods < 0 or goods > data.total:
        raise InvalidRequest(
            f"Order {data.reference!r}: its lines come to {goods} after discounts,"
            f" more than its total {data.total}."
        )
    if data.paid_with_points > data.total:
        raise InvalidRequest(f"Order {data.reference!r}: more was paid with points than the total.")


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
    """
    from .members import member_for_user

    state = current_loyalty
    when = to_utc(at, "at") or state.now()
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
    member_id = member_for_user(data.user, auto_enroll=False) if data.user is not None else None
    tier = state.store.member_tier(member_id)[0] if member_id else None
    return evaluate(context(data, member_id, when, tier), rules_at(when))
