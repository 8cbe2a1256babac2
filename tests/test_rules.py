"""The earning rules as a pure function: no app, no database.

:func:`flask_loyalty.rules.evaluate` turns an order and a rule set into a
quote; these tests pin its arithmetic: the base rate, rounding, the earn
basis, multipliers, exclusions, the minimum order, campaigns, the tier
multiplier and rule callbacks, and the per-line and per-rule breakdowns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_loyalty import InvalidRequest
from flask_loyalty.rules import Applied
from flask_loyalty.rules import Award
from flask_loyalty.rules import Campaign
from flask_loyalty.rules import evaluate
from flask_loyalty.rules import LineContext
from flask_loyalty.rules import OrderContext
from flask_loyalty.rules import Quote
from flask_loyalty.rules import round_points
from flask_loyalty.rules import RuleSet
from flask_loyalty.rules import share

#: A Thursday.
AT = dt.datetime(2026, 1, 1, 12, 0)
TICK = dt.timedelta(microseconds=1)


def line(
    sku: str, quantity: int, price: str, category: str | None = None, discount: str = "0"
) -> LineContext:
    """An order line."""
    return LineContext(sku, quantity, Decimal(price), category, discount=Decimal(discount))


def order(
    *lines: LineContext, at: dt.datetime = AT, tier_multiplier: str = "1", **amounts: str
) -> OrderContext:
    """An order of ``lines`` at ``at``; ``amounts`` are shipping, tax, discount, paid_with_points."""
    return OrderContext(
        reference="T-1",
        member_id=None,
        currency="USD",
        lines=lines,
        at=at,
        tier_multiplier=Decimal(tier_multiplier),
        **{name: Decimal(value) for name, value in amounts.items()},
    )


def earned(context: OrderContext, **rules: t.Any) -> int:
    """The points ``context`` earns under ``RuleSet(**rules)``."""
    return evaluate(context, RuleSet(**rules)).points


def per_line(quote: Quote) -> list[int]:
    """The quote's per-line points."""
    return [ln.points for ln in quote.lines]


# -- the base rate and rounding ------------------------------------------------


def test_the_classic_example_300_at_the_default_rate_earns_3000() -> None:
    quote = evaluate(order(line("TEA", 1, "300.00")), RuleSet())
    assert quote.points == 3000
    assert quote.exact == 3000
    assert quote.applied == ()
    assert not quote.vetoed
    assert per_line(quote) == [3000]
    assert quote.lines[0].basis == Decimal("300")
    assert quote.lines[0].multiplier == 1


def test_the_default_rule_set_is_10_points_per_unit_floored_on_goods() -> None:
    rules = RuleSet()
    assert (rules.rate, rules.rounding, rules.basis, rules.minimum, rules.decimals) == (
        Decimal(10),
        "floor",
        "goods",
        None,
        2,
    )


def test_lines_of_an_order_add_up() -> None:
    quote = evaluate(order(line("TEA", 3, "60.00"), line("MUG", 1, "120.00")), RuleSet())
    assert quote.points == 3000
    assert per_line(quote) == [1800, 1200]
    assert [ln.sku for ln in quote.lines] == ["TEA", "MUG"]
    assert [ln.index for ln in quote.lines] == [0, 1]


@pytest.mark.parametrize(
    ("amount", "floor", "half_up", "ceiling"),
    [
        ("0.04", 0, 0, 1),
        ("0.05", 0, 1, 1),
        ("0.06", 0, 1, 1),
        ("0.10", 1, 1, 1),
        ("0.14", 1, 1, 2),
        ("0.15", 1, 2, 2),
        ("0.16", 1, 2, 2),
        ("0.25", 2, 3, 3),
        ("2.45", 24, 25, 25),
        ("299.95", 2999, 3000, 3000),
        ("300.00", 3000, 3000, 3000),
    ],
)
def test_rounding_at_half_point_boundaries(amount: str, floor: int, half_up: int, ceiling: int) -> None:
    context = order(line("TEA", 1, amount))
    assert earned(context, rounding="floor") == floor
    assert earned(context, rounding="half_up") == half_up
    assert earned(context, rounding="ceiling") == ceiling


@pytest.mark.parametrize(
    ("value", "floor", "half_up", "ceiling"),
    [
        (Fraction(0), 0, 0, 0),
        (Fraction(1, 2), 0, 1, 1),
        (Fraction(49, 100), 0, 0, 1),
        (Fraction(5, 2), 2, 3, 3),
        (Fraction(7, 2), 3, 4, 4),
        (Fraction(2999999, 2), 1499999, 1500000, 1500000),
        (Fraction(3), 3, 3, 3),
    ],
)
def test_round_points(value: Fraction, floor: int, half_up: int, ceiling: int) -> None:
    assert round_points(value, "floor") == floor
    assert round_points(value, "half_up") == half_up
    assert round_points(value, "ceiling") == ceiling


def test_round_points_refuses_an_unknown_mode() -> None:
    with pytest.raises(InvalidRequest, match="Unknown rounding 'nearest'"):
        round_points(Fraction(1, 2), "nearest")


def test_rounding_happens_once_per_order_not_per_line() -> None:
    # Three lines of 1.5 exact points each: 4.5 in all, floored once to 4.
    quote = evaluate(order(line("A", 1, "0.15"), line("B", 1, "0.15"), line("C", 1, "0.15")), RuleSet())
    assert quote.exact == Fraction(9, 2)
    assert quote.points == 4
    # Shared by largest remainder; a tie goes to the earlier line.
    assert per_line(quote) == [2, 1, 1]
    assert [ln.exact for ln in quote.lines] == [Fraction(3, 2)] * 3


def test_a_tiny_amount_earns_nothing() -> None:
    assert earned(order(line("GUM", 1, "0.05"))) == 0
    assert earned(order(line("GUM", 1, "0.09"))) == 0
    assert earned(order(line("GUM", 1, "0.01"))) == 0
    assert earned(order(line("GUM", 1, "0.10"))) == 1


def test_a_hundred_orders_of_099_never_earn_more_than_one_order_of_9900() -> None:
    small = [earned(order(line("GUM", 1, "0.99"))) for _ in range(100)]
    large = earned(order(line("GUM", 100, "0.99")))
    assert small == [9] * 100
    assert large == earned(order(line("BOX", 1, "99.00"))) == 990
    assert sum(small) == 900 <= large


cents = st.integers(min_value=0, max_value=100_000)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(cents, min_size=1, max_size=12), rate=st.sampled_from(["1", "10", "2.5", "0.3", "7"]))
def test_splitting_an_order_never_earns_more_under_floor(parts: list[int], rate: str) -> None:
    """Under the default floor rounding, no split of an order earns more than the whole."""
    rules = RuleSet(rate=Decimal(rate))
    split = sum(evaluate(order(line("A", 1, str(Decimal(c).scaleb(-2)))), rules).points for c in parts)
    whole = evaluate(order(line("A", 1, str(Decimal(sum(parts)).scaleb(-2)))), rules).points
    assert split <= whole


@settings(max_examples=200, deadline=None)
@given(
    amounts=st.lists(st.integers(min_value=0, max_value=50_000), min_size=1, max_size=8),
    rounding=st.sampled_from(["floor", "half_up", "ceiling"]),
    multiplier=st.sampled_from(["1", "1.5", "2", "0.3", "3"]),
)
def test_the_lines_always_add_up_to_the_rounded_total(
    amounts: list[int], rounding: str, multiplier: str
) -> None:
    lines = [line(f"S{i}", 1, str(Decimal(a).scaleb(-2))) for i, a in enumerate(amounts)]
    quote = evaluate(order(*lines), RuleSet(rounding=rounding, sku_multipliers={"S0": Decimal(multiplier)}))
    assert sum(per_line(quote)) == quote.points == round_points(quote.exact, rounding)
    if quote.exact:
        # Each line gets its share of the rounded total, within a point.
        for ln in quote.lines:
            assert abs(ln.points - quote.points * ln.exact / quote.exact) < 1


# -- the earn basis ------------------------------------------------------------------


@pytest.mark.parametrize(("basis", "points"), [("goods", 700), ("goods_shipping", 750), ("paid_total", 830)])
def test_the_earn_basis(basis: str, points: int) -> None:
    # Goods 100.00 less a 10.00 coupon and 20.00 paid with points; 5.00 shipping, 8.00 tax.
    context = order(
        line("TEA", 1, "100.00"), shipping="5.00", tax="8.00", discount="10.00", paid_with_points="20.00"
    )
    assert earned(context, basis=basis) == points


def test_order_discounts_and_points_are_shared_over_the_lines_by_amount() -> None:
    context = order(
        line("TEA", 1, "30.00"), line("MUG", 1, "10.00"), discount="4.00", paid_with_points="4.00"
    )
    quote = evaluate(context, RuleSet())
    assert [ln.basis for ln in quote.lines] == [Decimal("24"), Decimal("8")]
    assert per_line(quote) == [240, 80]


def test_a_line_discount_comes_off_its_own_line() -> None:
    quote = evaluate(order(line("TEA", 3, "10.00", discount="5.00"), line("MUG", 1, "10.00")), RuleSet())
    assert per_line(quote) == [250, 100]


# -- multipliers, exclusions, minimum ---------------------------------------------------


def test_sku_multiplier() -> None:
    quote = evaluate(
        order(line("TEA", 1, "10.00"), line("MUG", 1, "10.00")), RuleSet(sku_multipliers={"TEA": Decimal(2)})
    )
    assert per_line(quote) == [200, 100]
    assert quote.applied == (Applied("sku multiplier", "× 2", "TEA", 0),)
    assert quote.lines[0].multiplier == 2


def test_category_multiplier() -> None:
    quote = evaluate(
        order(line("NOVEL", 1, "10.00", "books"), line("MUG", 1, "10.00", "kitchen")),
        RuleSet(category_multipliers={"books": Decimal("1.5")}),
    )
    assert per_line(quote) == [150, 100]
    assert quote.applied == (Applied("category multiplier", "× 1.5", "books", 0),)


def test_sku_and_category_multipliers_multiply() -> None:
    rules = RuleSet(sku_multipliers={"NOVEL": Decimal(2)}, category_multipliers={"books": Decimal("1.5")})
    quote = evaluate(order(line("NOVEL", 1, "10.00", "books"), line("ATLAS", 1, "10.00", "books")), rules)
    assert per_line(quote) == [300, 150]
    assert [a.rule for a in quote.applied] == ["sku multiplier", "category multiplier", "category multiplier"]
    assert [a.line for a in quote.applied] == [0, 0, 1]


def test_excluded_sku_earns_nothing() -> None:
    quote = evaluate(
        order(line("GIFTCARD", 1, "50.00"), line("TEA", 1, "10.00")),
        RuleSet(excluded_skus=frozenset({"GIFTCARD"})),
    )
    assert per_line(quote) == [0, 100]
    assert quote.applied == (Applied("exclusion", "× 0", "GIFTCARD earns no points", 0),)


def test_excluded_category_earns_nothing_and_beats_multipliers() -> None:
    rules = RuleSet(
        excluded_categories=frozenset({"tobacco"}),
        sku_multipliers={"CIGAR": Decimal(5)},
        category_multipliers={"tobacco": Decimal(3)},
        campaigns=(Campaign("Everything", multiplier=Decimal(2)),),
    )
    quote = evaluate(order(line("CIGAR", 1, "20.00", "tobacco"), line("TEA", 1, "10.00", "drinks")), rules)
    assert per_line(quote) == [0, 200]
    assert quote.lines[0].multiplier == 0
    assert [(a.rule, a.line) for a in quote.applied] == [("exclusion", 0), ("campaign Everything", 1)]


def test_a_line_without_category_is_not_excluded_by_category() -> None:
    assert earned(order(line("TEA", 1, "10.00")), excluded_categories=frozenset({"tobacco"})) == 100


def test_minimum_order() -> None:
    rules = {"minimum": Decimal("20.00")}
    below = evaluate(order(line("TEA", 1, "19.99")), RuleSet(**rules))
    assert below.points == 0
    assert below.applied == (Applied("minimum order", "× 0", "below the minimum of 20.00"),)
    assert per_line(below) == [0]
    assert earned(order(line("TEA", 1, "20.00")), **rules) == 200
    # The minimum counts what the order earns on: goods after discounts.
    assert earned(order(line("TEA", 1, "25.00"), discount="5.01"), **rules) == 0
    assert earned(order(line("TEA", 1, "25.00"), discount="5.00"), **rules) == 200


def test_minimum_order_also_stops_bonuses_but_not_callbacks() -> None:
    rules = RuleSet(
        minimum=Decimal(50),
        campaigns=(Campaign("Welcome", bonus=100),),
        callbacks=(("always", lambda o, q: Award.add(7, "seven for everyone")),),
    )
    quote = evaluate(order(line("TEA", 1, "10.00")), rules)
    assert quote.points == 7
    assert [a.rule for a in quote.applied] == ["minimum order", "always"]


# -- campaigns -----------------------------------------------------------------------


WINTER_START = dt.datetime(2026, 1, 10, 0, 0)
WINTER_END = dt.datetime(2026, 1, 20, 0, 0)


@pytest.mark.parametrize(
    ("at", "points"),
    [
        (WINTER_START - TICK, 100),
        (WINTER_START, 200),
        (WINTER_START + TICK, 200),
        (WINTER_END - TICK, 200),
        (WINTER_END, 100),
        (WINTER_END + TICK, 100),
    ],
)
def test_a_campaign_window_includes_its_start_and_excludes_its_end(at: dt.datetime, points: int) -> None:
    winter = Campaign("Winter", multiplier=Decimal(2), starts_at=WINTER_START, ends_at=WINTER_END)
    assert winter.active(at) is (points == 200)
    assert earned(order(line("TEA", 1, "10.00"), at=at), campaigns=(winter,)) == points


def test_open_ended_campaigns() -> None:
    since = Campaign("Since", multiplier=Decimal(2), starts_at=WINTER_START)
    until = Campaign("Until", multiplier=Decimal(3), ends_at=WINTER_START)
    assert earned(order(line("TEA", 1, "10.00"), at=WINTER_START - TICK), campaigns=(since, until)) == 300
    assert earned(order(line("TEA", 1, "10.00"), at=WINTER_START), campaigns=(since, until)) == 200


def test_stacking_campaigns_multiply() -> None:
    campaigns = (Campaign("A", multiplier=Decimal(2)), Campaign("B", multiplier=Decimal(3)))
    quote = evaluate(order(line("TEA", 1, "10.00")), RuleSet(campaigns=campaigns))
    assert quote.points == 600
    assert [a.effect for a in quote.applied] == ["× 2", "× 3"]


def test_a_non_stacking_campaign_of_highest_priority_applies_alone() -> None:
    campaigns = (
        Campaign("Members week", multiplier=Decimal(2), priority=1),
        Campaign("Triple day", multiplier=Decimal(3), priority=5, stacking=False),
        Campaign("Small", multiplier=Decimal("1.5"), priority=0),
    )
    quote = evaluate(order(line("TEA", 1, "10.00")), RuleSet(campaigns=campaigns))
    assert quote.points == 300
    assert [a.rule for a in quote.applied] == ["campaign Triple day"]


def test_a_non_stacking_campaign_after_another_does_not_apply() -> None:
    campaigns = (
        Campaign("Triple day", multiplier=Decimal(3), priority=1, stacking=False),
        Campaign("Members week", multiplier=Decimal(2), priority=5),
        Campaign("Small", multiplier=Decimal("1.5"), priority=0),
    )
    quote = evaluate(order(line("TEA", 1, "10.00")), RuleSet(campaigns=campaigns))
    assert quote.points == 300
    assert [a.rule for a in quote.applied] == ["campaign Members week", "campaign Small"]


def test_of_two_non_stacking_campaigns_the_higher_priority_wins_not_the_larger() -> None:
    campaigns = (
        Campaign("Quadruple", multiplier=Decimal(4), priority=1, stacking=False),
        Campaign("Double", multiplier=Decimal(2), priority=2, stacking=False),
    )
    quote = evaluate(order(line("TEA", 1, "10.00")), RuleSet(campaigns=campaigns))
    assert quote.points == 200
    assert [a.rule for a in quote.applied] == ["campaign Double"]


def test_equal_priorities_go_in_declaration_order() -> None:
    first = Campaign("First", multiplier=Decimal(2), stacking=False)
    second = Campaign("Second", multiplier=Decimal(3), stacking=False)
    assert earned(order(line("TEA", 1, "10.00")), campaigns=(first, second)) == 200
    assert earned(order(line("TEA", 1, "10.00")), campaigns=(second, first)) == 300


def test_an_inactive_non_stacking_campaign_blocks_nothing() -> None:
    campaigns = (
        Campaign("Over", multiplier=Decimal(5), priority=9, stacking=False, ends_at=AT),
        Campaign("Double", multiplier=Decimal(2)),
    )
    assert earned(order(line("TEA", 1, "10.00")), campaigns=campaigns) == 200


def test_non_stacking_is_decided_per_line() -> None:
    campaigns = (
        Campaign("Tea fortnight", multiplier=Decimal(3), priority=5, stacking=False, skus=frozenset({"TEA"})),
        Campaign("Double", multiplier=Decimal(2)),
    )
    quote = evaluate(order(line("TEA", 1, "10.00"), line("MUG", 1, "10.00")), RuleSet(campaigns=campaigns))
    assert per_line(quote) == [300, 200]


def test_campaigns_cover_their_skus_and_categories_only() -> None:
    campaigns = (
        Campaign("Tea", multiplier=Decimal(2), skus=frozenset({"TEA"})),
        Campaign("Books", multiplier=Decimal(3), categories=frozenset({"books"})),
    )
    lines = (line("TEA", 1, "10.00", "drinks"), line("NOVEL", 1, "10.00", "books"), line("MUG", 1, "10.00"))
    quote = evaluate(order(*lines), RuleSet(campaigns=campaigns))
    assert per_line(quote) == [200, 300, 100]
    assert [(a.rule, a.line) for a in quote.applied] == [("campaign Tea", 0), ("campaign Books", 1)]


def test_weekday_campaign() -> None:
    weekend = Campaign("Double points weekend", multiplier=Decimal(2), weekdays=frozenset({5, 6}))
    saturday = dt.datetime(2026, 1, 3, 0, 0)
    assert saturday.weekday() == 5
    cases = [
        (saturday - TICK, 100),  # Friday, last instant
        (saturday, 200),
        (saturday + dt.timedelta(days=1, hours=23, minutes=59), 200),  # Sunday night
        (saturday + dt.timedelta(days=2), 100),  # Monday, first instant
    ]
    for at, points in cases:
        assert earned(order(line("TEA", 1, "10.00"), at=at), campaigns=(weekend,)) == points, at


def test_campaign_bonus() -> None:
    welcome = Campaign("Welcome", bonus=100, starts_at=WINTER_START, ends_at=WINTER_END)
    inside = evaluate(order(line("TEA", 1, "10.00"), at=WINTER_START), RuleSet(campaigns=(welcome,)))
    assert inside.points == 200
    assert inside.applied == (Applied("campaign Welcome", "+ 100", "bonus"),)
    assert earned(order(line("TEA", 1, "10.00"), at=WINTER_END), campaigns=(welcome,)) == 100


def test_a_campaign_bonus_goes_to_the_lines_it_covers() -> None:
    tea_bonus = Campaign("Tea bonus", bonus=50, skus=frozenset({"TEA"}))
    without = evaluate(order(line("MUG", 1, "10.00")), RuleSet(campaigns=(tea_bonus,)))
    assert (without.points, without.applied) == (100, ())
    with_tea = evaluate(
        order(line("MUG", 1, "10.00"), line("TEA", 1, "1.00")), RuleSet(campaigns=(tea_bonus,))
    )
    assert per_line(with_tea) == [100, 60]


def test_a_campaign_bonus_skips_excluded_lines() -> None:
    bonus = Campaign("Welcome", bonus=100)
    rules = RuleSet(campaigns=(bonus,), excluded_skus=frozenset({"GIFTCARD"}))
    assert earned(order(line("GIFTCARD", 1, "50.00")), **rules.__dict__) == 0
    quote = evaluate(order(line("GIFTCARD", 1, "50.00"), line("TEA", 1, "10.00")), rules)
    assert per_line(quote) == [0, 200]


def test_a_campaign_bonus_on_free_lines_is_shared_equally() -> None:
    bonus = Campaign("Sample day", bonus=9, skus=frozenset({"SAMPLE"}))
    quote = evaluate(
        order(line("SAMPLE", 1, "0.00"), line("SAMPLE2", 1, "0.00")), RuleSet(campaigns=(bonus,))
    )
    assert per_line(quote) == [9, 0]


def test_campaign_multiplier_and_bonus_together() -> None:
    campaign = Campaign("Launch", multiplier=Decimal(2), bonus=25)
    quote = evaluate(order(line("TEA", 1, "10.00")), RuleSet(campaigns=(campaign,)))
    assert quote.points == 225
    assert [a.effect for a in quote.applied] == ["× 2", "+ 25"]


# -- the tier multiplier -----------------------------------------------------------------


def test_tier_multiplier() -> None:
    context = dataclasses.replace(order(line("TEA", 1, "10.00"), tier_multiplier="1.5"), tier="gold")
    quote = evaluate(context, RuleSet())
    assert quote.points == 150
    assert quote.applied == (Applied("tier", "× 1.5", "gold"),)


def test_every_multiplier_combines() -> None:
    rules = RuleSet(
        sku_multipliers={"NOVEL": Decimal(2)},
        category_multipliers={"books": Decimal("1.5")},
        campaigns=(Campaign("Double", multiplier=Decimal(2)), Campaign("Bonus", bonus=10)),
        rounding="floor",
    )
    context = order(line("NOVEL", 1, "3.33", "books"), tier_multiplier="1.25")
    # 3.33 × 10 × 2 × 1.5 × 2 × 1.25 = 249.75, plus 10 = 259.75, floored.
    quote = evaluate(context, rules)
    assert quote.exact == Fraction(25975, 100)
    assert quote.points == 259


# -- rule callbacks --------------------------------------------------------------------------


def test_callbacks_add_multiply_and_explain() -> None:
    callbacks = (
        ("first order", lambda o, q: Award.add(50, "a first order earns 50 more")),
        ("vip", lambda o, q: Award.multiply(2, "VIPs earn double")),
    )
    quote = evaluate(order(line("TEA", 1, "10.00")), RuleSet(callbacks=callbacks))
    assert quote.points == 300
    assert quote.applied == (
        Applied("first order", "add 50", "a first order earns 50 more"),
        Applied("vip", "multiply 2", "VIPs earn double"),
    )


def test_callbacks_run_in_registration_order_and_see_the_quote_so_far() -> None:
    seen: list[int] = []

    def spy(context: OrderContext, draft: Quote) -> None:
        seen.append(draft.points)

    callbacks = (
        ("spy 1", spy),
        ("vip", lambda o, q: Award.multiply("2", "VIPs earn double")),
        ("spy 2", spy),
        ("first order", lambda o, q: Award.add(50, "a first order earns 50 more")),
        ("spy 3", spy),
    )
    assert earned(order(line("TEA", 1, "10.00")), callbacks=callbacks) == 250
    assert seen == [100, 200, 250]


def test_a_veto_awards_nothing_and_says_why() -> None:
    callbacks = (
        ("staff", lambda o, q: Award.veto("staff purchases earn no points")),
        ("after", lambda o, q: Award.add(10, "ten more")),
    )
    quote = evaluate(order(line("TEA", 1, "10.00"), line("MUG", 1, "5.00")), RuleSet(callbacks=callbacks))
    assert quote.points == 0
    assert quote.vetoed
    assert per_line(quote) == [0, 0]
    assert quote.applied == (
        Applied("staff", "veto", "staff purchases earn no points"),
        Applied("after", "add 10", "ten more"),
    )


def test_a_negative_add_never_takes_the_order_below_zero() -> None:
    quote = evaluate(
        order(line("TEA", 1, "10.00")), RuleSet(callbacks=(("fee", lambda o, q: Award.add(-500, "")),))
    )
    assert quote.points == 0
    assert per_line(quote) == [0]


def test_an_add_on_a_free_order_is_shared_equally() -> None:
    callbacks = (("sample", lambda o, q: Award.add(5, "five for trying")),)
    quote = evaluate(order(line("A", 1, "0.00"), line("B", 1, "0.00")), RuleSet(callbacks=callbacks))
    assert per_line(quote) == [3, 2]


def test_a_callback_receives_a_read_only_context() -> None:
    received: list[OrderContext] = []

    def tamper(context: OrderContext, draft: Quote) -> Award | None:
        received.append(context)
        with pytest.raises(dataclasses.FrozenInstanceError):
            context.tier_multiplier = Decimal(100)  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            context.lines[0].quantity = 99  # type: ignore[misc]
        with pytest.raises(TypeError):
            context.lines[0] = line("X", 1, "999.00")  # type: ignore[index]
        with pytest.raises(dataclasses.FrozenInstanceError):
            draft.points = 10**6  # type: ignore[misc]
        return None

    context = order(line("TEA", 2, "5.00"), shipping="3.00")
    quote = evaluate(context, RuleSet(callbacks=(("tamper", tamper),)))
    assert quote.points == 100
    assert received == [context]
    assert context.subtotal == Decimal("10.00")


def test_a_callback_that_returns_something_else_is_an_error() -> None:
    with pytest.raises(TypeError, match="Rule callback 'broken' returned 7; return an Award or None"):
        evaluate(order(line("TEA", 1, "1.00")), RuleSet(callbacks=(("broken", lambda o, q: 7),)))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Award.add(1.5, ""), "whole points"),  # type: ignore[arg-type]
        (lambda: Award.add(True, ""), "whole points"),
        (lambda: Award.multiply(-1, ""), "factor of 0 or more"),
        (lambda: Award.multiply(1.5, ""), "must be a Decimal"),  # type: ignore[arg-type]
        (lambda: Award.multiply("abc", ""), "is not a number"),
        (lambda: Award.multiply("NaN", ""), "not a finite number"),
    ],
)
def test_awards_are_checked(make: t.Callable[[], Award], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        make()


# -- sharing whole points --------------------------------------------------------------------


def test_share_by_largest_remainder() -> None:
    assert share(10, [Fraction(1), Fraction(1), Fraction(1)]) == [4, 3, 3]
    assert share(100, [Fraction(1), Fraction(2), Fraction(7)]) == [10, 20, 70]
    assert share(5, [Fraction(0), Fraction(0)]) == [5, 0]
    assert share(0, [Fraction(3), Fraction(1)]) == [0, 0]
    assert share(7, []) == []
    assert share(2, [Fraction(1, 3), Fraction(1, 3), Fraction(1, 3)]) == [1, 1, 0]


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=10**9),
    weights=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=10),
)
def test_share_always_adds_up_and_stays_within_a_point(total: int, weights: list[int]) -> None:
    parts = share(total, [Fraction(w) for w in weights])
    assert sum(parts) == total
    if sum(weights):
        for part, weight in zip(parts, weights, strict=True):
            exact = Fraction(total * weight, sum(weights))
            assert exact - 1 < part < exact + 1
