"""Earning rules: how many points an order earns, line by line and rule by rule.

:func:`evaluate` is a pure function of an :class:`OrderContext` and a
:class:`RuleSet`; the quote for a cart and the points posted when the order is
paid both come from it, so they are always equal.

Arithmetic is exact (:class:`fractions.Fraction` over integer minor units).
Each line's exact points are ``basis × rate × multipliers``; the order's total
is rounded once with the configured rounding (floor by default, so a point is
only ever awarded for a whole point's worth of spending) and shared out over
the lines by largest remainder, so the per-line breakdown always adds up to
the total.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import functools
import math
import typing as t
from decimal import Decimal
from fractions import Fraction

from .errors import InvalidRequest

#: Rounding modes of ``LOYALTY_EARN_ROUNDING``.
ROUNDINGS = ("floor", "half_up", "ceiling")
#: What ``LOYALTY_EARN_BASIS`` may count: goods only (the default), goods and
#: shipping, or everything paid (goods, shipping and tax).
BASES = ("goods", "goods_shipping", "paid_total")
_ZERO = Fraction(0)
_ONE = Fraction(1)


@dataclasses.dataclass(frozen=True)
class LineContext:
    """One order line as the rules see it. Amounts are in the order's currency."""

    sku: str
    quantity: int
    unit_price: Decimal
    category: str | None = None
    name: str = ""
    #: A discount on this line (a coupon on the product), taken off its amount.
    discount: Decimal = Decimal(0)

    @property
    def amount(self) -> Decimal:
        """``unit_price × quantity − discount``."""
        return self.unit_price * self.quantity - self.discount


@dataclasses.dataclass(frozen=True)
class OrderContext:
    """A read-only view of an order (or cart) for the earning rules."""

    reference: str
    member_id: int | None
    currency: str
    lines: tuple[LineContext, ...]
    #: When the order was paid (or, for a quote, now); naive UTC.
    at: dt.datetime
    shipping: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    #: An order-level discount (coupon), shared over the lines by amount.
    discount: Decimal = Decimal(0)
    #: The money value paid with points, shared over the lines by amount.
    paid_with_points: Decimal = Decimal(0)
    #: The member's tier name, if tiers are configured.
    tier: str | None = None
    #: The member's tier earning multiplier.
    tier_multiplier: Decimal = Decimal(1)

    @property
    def subtotal(self) -> Decimal:
        """The sum of the line amounts."""
        return sum((line.amount for line in self.lines), Decimal(0))


@dataclasses.dataclass(frozen=True)
class Campaign:
    """A time-boxed earning campaign.

    The window is ``[starts_at, ends_at)``: it includes its first instant and
    excludes its last. A campaign applies to lines matching ``skus`` or
    ``categories`` (all lines when both are empty) on ``weekdays``
    (0 = Monday; all days when empty): its ``multiplier`` multiplies those
    lines' points, and its ``bonus`` is added once per order that has such a
    line (one that earns at all), shared over those lines.
    """

    name: str
    multiplier: Decimal = Decimal(1)
    bonus: int = 0
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    priority: int = 0
    stacking: bool = True
    skus: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    weekdays: frozenset[int] = frozenset()

    def active(self, at: dt.datetime) -> bool:
        """Whether ``at`` falls in the campaign's window and weekdays."""
        if self.starts_at is not None and at < self.starts_at:
            return False
        if self.ends_at is not None and at >= self.ends_at:
            return False
        return not self.weekdays or at.weekday() in self.weekdays

    def matches(self, line: LineContext) -> bool:
        """Whether the campaign covers ``line``."""
        if not self.skus and not self.categories:
            return True
        return line.sku in self.skus or (line.category is not None and line.category in self.categories)


@dataclasses.dataclass(frozen=True)
class Award:
    """What a rule callback decides: add points, multiply, or veto.

    Build one with :meth:`add`, :meth:`multiply` or :meth:`veto`.
    """

    kind: t.Literal["add", "multiply", "veto"]
    value: Decimal
    explanation: str

    @classmethod
    def add(cls, points: int, explanation: str) -> Award:
        """Add ``points`` (may be negative) to the order."""
        if isinstance(points, bool) or not isinstance(points, int):
            raise InvalidRequest(f"Award.add takes whole points, not {points!r}.")
        return cls("add", Decimal(points), explanation)

    @classmethod
    def multiply(cls, factor: Decimal | int | str, explanation: str) -> Award:
        """Multiply the order's points by ``factor`` (not negative)."""
        value = _decimal(factor, "factor")
        if value < 0:
            raise InvalidRequest(f"Award.multiply takes a factor of 0 or more, not {factor!r}.")
        return cls("multiply", value, explanation)

    @classmethod
    def veto(cls, explanation: str) -> Award:
        """Award nothing for the order."""
        return cls("veto", Decimal(0), explanation)


#: A rule callback: receives the order and the quote so far, returns an
#: :class:`Award` or ``None`` to leave the quote as it is.
RuleCallback = t.Callable[[OrderContext, "Quote"], "Award | None"]


@dataclasses.dataclass(frozen=True)
class RuleSet:
    """Every earning rule in force for one evaluation."""

    rate: Decimal = Decimal(10)
    rounding: str = "floor"
    basis: str = "goods"
    minimum: Decimal | None = None
    sku_multipliers: t.Mapping[str, Decimal] = dataclasses.field(default_factory=dict)
    category_multipliers: t.Mapping[str, Decimal] = dataclasses.field(default_factory=dict)
    excluded_skus: frozenset[str] = frozenset()
    excluded_categories: frozenset[str] = frozenset()
    campaigns: tuple[Campaign, ...] = ()
    callbacks: tuple[tuple[str, RuleCallback], ...] = ()
    #: The currency's minor-unit exponent (2 for USD, 0 for JPY).
    decimals: int = 2


@dataclasses.dataclass(frozen=True)
class Applied:
    """One rule's effect on the quote, for the per-rule breakdown."""

    rule: str
    effect: str
    explanation: str
    #: The line it applied to, or ``None`` for the whole order.
    line: int | None = None


@dataclasses.dataclass(frozen=True)
class LineQuote:
    """What one line earns."""

    index: int
    sku: str
    #: The amount the line earns on (after its share of discounts and points).
    basis: Decimal
    #: The product of every multiplier applied to the line.
    multiplier: Decimal
    #: The exact, unrounded points.
    exact: Fraction
    #: The whole points the line earns; the lines add up to the quote.
    points: int


@dataclasses.dataclass(frozen=True)
class Quote:
    """The points an order earns, with per-line and per-rule breakdowns."""

    points: int
    lines: tuple[LineQuote, ...]
    applied: tuple[Applied, ...]
    vetoed: bool = False

    @property
    def exact(self) -> Fraction:
        """The exact, unrounded total."""
        return sum((line.exact for line in self.lines), Fraction(0))


def _decimal(value: t.Any, name: str) -> Decimal:
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidRequest(f"{name} must be a Decimal, int or str, not {value!r}.")
    try:
        result = Decimal(value)
    except (decimal.InvalidOperation, TypeError, ValueError):
        raise InvalidRequest(f"{name} {value!r} is not a number.") from None
    if not result.is_finite():
        raise InvalidRequest(f"{name} {value!r} is not a finite number.")
    return result


def round_points(value: Fraction, rounding: str) -> int:
    """Round exact points to whole points.

    ``floor`` drops any fraction, ``ceiling`` rounds any fraction up, and
    ``half_up`` rounds to the nearest point with halves going up.
    """
    if rounding == "floor":
        return math.floor(value)
    if rounding == "ceiling":
        return math.ceil(value)
    if rounding == "half_up":
        return math.floor(value + Fraction(1, 2))
    raise InvalidRequest(f"Unknown rounding {rounding!r}; use one of {ROUNDINGS}.")


@functools.lru_cache(maxsize=512)
def _fraction(value: Decimal | int) -> Fraction:
    """``Fraction(value)`` for a setting (a rate, a multiplier), remembered."""
    return Fraction(value)


def _total(values: t.Sequence[Fraction]) -> Fraction:
    """The exact sum of ``values``."""
    return values[0] if len(values) == 1 else sum(values, _ZERO)


def share(total: int, weights: t.Sequence[Fraction]) -> list[int]:
    """Split ``total`` into whole parts proportional to ``weights`` (largest remainder).

    The parts always add up to ``total``; ties go to the earlier weight.
    """
    if len(weights) < 2 or total == 0:
        # Nothing to split: no lines, one line, or nothing to share.
        return [total] + [0] * (len(weights) - 1) if weights else []
    whole = sum(weights, Fraction(0))
    if whole == 0:
        return [total] + [0] * (len(weights) - 1)
    exact = [total * w / whole for w in weights]
    parts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _bases(order: OrderContext, rules: RuleSet) -> list[Fraction]:
    """Each line's earn basis, in currency units, exact."""
    scale = 10**rules.decimals
    amounts = [int(line.amount.scaleb(rules.decimals)) for line in order.lines]
    deduction = int((order.discount + order.paid_with_points).scaleb(rules.decimals))
    if rules.basis in ("goods_shipping", "paid_total"):
        deduction -= int(order.shipping.scaleb(rules.decimals))
    if rules.basis == "paid_total":
        deduction -= int(order.tax.scaleb(rules.decimals))
    # Deductions (and, negated, shipping or tax) are shared over the lines by amount.
    if not deduction:
        taken = [0] * len(amounts)
    else:
        weights = [Fraction(a) for a in amounts]
        taken = share(deduction, weights) if deduction > 0 else [-p for p in share(-deduction, weights)]
    return [Fraction(max(0, a - d), scale) for a, d in zip(amounts, taken, strict=True)]


def _line_multiplier(
    index: int, line: LineContext, order: OrderContext, rules: RuleSet, applied: list[Applied]
) -> Fraction:
    if line.sku in rules.excluded_skus or (line.category in rules.excluded_categories):
        applied.append(Applied("exclusion", "× 0", f"{line.sku} earns no points", index))
        return _ZERO
    factor = _ONE
    for name, table, key in (
        ("sku multiplier", rules.sku_multipliers, line.sku),
        ("category multiplier", rules.category_multipliers, line.category),
    ):
        if key is not None and key in table:
            factor *= _fraction(table[key])
            applied.append(Applied(name, f"× {table[key]}", f"{key}", index))
    if not rules.campaigns:
        return factor
    chosen = 0
    for campaign in sorted(rules.campaigns, key=lambda c: -c.priority):
        if not (campaign.active(order.at) and campaign.matches(line)) or campaign.multiplier == 1:
            continue
        if chosen and not campaign.stacking:
            continue
        factor *= _fraction(campaign.multiplier)
        chosen += 1
        applied.append(Applied(f"campaign {campaign.name}", f"× {campaign.multiplier}", "", index))
        if not campaign.stacking:
            break
    return factor


def evaluate(order: OrderContext, rules: RuleSet) -> Quote:
    """Compute what ``order`` earns under ``rules``.

    Order of evaluation: the minimum order amount, then per line the basis
    (goods after discounts and the part paid with points, per
    ``LOYALTY_EARN_BASIS``), exclusions, sku and category multipliers,
    campaigns (highest priority first; a non-stacking campaign applies only
    when it comes first, and then alone), the tier multiplier; then campaign
    bonuses (each shared over the lines its campaign covers), then the host's
    callbacks in registration order; finally the total is rounded and shared
    over the lines.
    """
    applied: list[Applied] = []
    bases = _bases(order, rules)
    rate = _fraction(rules.rate)
    if rules.minimum is not None and _total(bases) < _fraction(rules.minimum):
        applied.append(Applied("minimum order", "× 0", f"below the minimum of {rules.minimum}"))
        exact = [_ZERO] * len(order.lines)
        multipliers = [_ZERO] * len(order.lines)
    else:
        multipliers = [_line_multiplier(i, ln, order, rules, applied) for i, ln in enumerate(order.lines)]
        if order.tier_multiplier != 1:
            multipliers = [m * _fraction(order.tier_multiplier) for m in multipliers]
            applied.append(Applied("tier", f"× {order.tier_multiplier}", order.tier or ""))
        exact = [b * rate if m is _ONE else b * rate * m for b, m in zip(bases, multipliers, strict=True)]
        for campaign in rules.campaigns:
            # A bonus goes to the lines the campaign covers that earn at all,
            # and only when the order has such a line.
            pairs = zip(order.lines, multipliers, strict=True)
            covered = [campaign.matches(ln) and m != 0 for ln, m in pairs]
            if not (campaign.bonus and campaign.active(order.at) and any(covered)):
                continue
            weights = [b if c else Fraction(0) for b, c in zip(bases, covered, strict=True)]
            if not sum(weights):
                weights = [Fraction(int(c)) for c in covered]
            applied.append(Applied(f"campaign {campaign.name}", f"+ {campaign.bonus}", "bonus"))
            exact = _add(exact, weights, Fraction(campaign.bonus))
    vetoed = False
    for name, callback in rules.callbacks:
        draft = _quote(order, bases, multipliers, exact, applied, rules.rounding, vetoed)
        award = callback(order, draft)
        if award is None:
            continue
        if not isinstance(award, Award):
            raise TypeError(f"Rule callback {name!r} returned {award!r}; return an Award or None.")
        applied.append(Applied(name, award.kind if award.kind == "veto" else f"{award.kind} {award.value}",
                               award.explanation))  # fmt: skip
        if award.kind == "veto":
            vetoed = True
        elif award.kind == "multiply":
            exact = [x * Fraction(award.value) for x in exact]
        else:
            exact = _add(exact, bases if sum(bases) else [Fraction(1)] * len(bases), Fraction(award.value))
    return _quote(order, bases, multipliers, exact, applied, rules.rounding, vetoed)


def _add(exact: list[Fraction], weights: list[Fraction], points: Fraction) -> list[Fraction]:
    """Share ``points`` over the lines by ``weights``, never taking a line below zero."""
    whole = sum(weights, Fraction(0))
    if not whole:
        return exact
    return [max(Fraction(0), x + points * w / whole) for x, w in zip(exact, weights, strict=True)]


def _quote(
    order: OrderContext,
    bases: list[Fraction],
    multipliers: list[Fraction],
    exact: list[Fraction],
    applied: list[Applied],
    rounding: str,
    vetoed: bool,
) -> Quote:
    total = 0 if vetoed else max(0, round_points(_total(exact), rounding))
    parts = share(total, exact)
    lines = tuple(
        LineQuote(i, line.sku, _to_decimal(bases[i]), _to_decimal(multipliers[i]), exact[i], parts[i])
        for i, line in enumerate(order.lines)
    )
    return Quote(total, lines, tuple(applied), vetoed)


def _to_decimal(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)
