"""The earning rules in force: configuration, stored campaigns, callbacks, quotes.

Configuration tests need no database. The others run on every engine: stored
campaigns, rule callbacks registered on the extension, the dry run, and the
promise that a quote equals exactly what the order posts when it is paid.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import types
import typing as t
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import current_app
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from flask_loyalty import CurrencyMismatch
from flask_loyalty import InvalidRequest
from flask_loyalty import Loyalty
from flask_loyalty import members
from flask_loyalty import orders
from flask_loyalty import points
from flask_loyalty.adapters import AttributeOrderAdapter
from flask_loyalty.adapters import OrderData
from flask_loyalty.earning import configured_rules
from flask_loyalty.earning import quote
from flask_loyalty.earning import rules_at
from flask_loyalty.rules import Applied
from flask_loyalty.rules import Award
from flask_loyalty.rules import Campaign
from flask_loyalty.rules import LineContext
from flask_loyalty.rules import OrderContext
from flask_loyalty.rules import Quote
from flask_loyalty.rules import RuleSet

from .conftest import START

# -- helpers ---------------------------------------------------------------------------


def bare_app(**config: t.Any) -> Flask:
    """An app with the extension on an in-memory database, for configuration tests."""
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", **{f"LOYALTY_{k}": v for k, v in config.items()})
    Loyalty(app, db=SQLAlchemy(app))
    return app


def rules_of(**config: t.Any) -> RuleSet:
    """The configured rules of an app with ``config`` (unprefixed keys)."""
    app = bare_app()
    app.config.update({f"LOYALTY_{k}": v for k, v in config.items()})
    with app.app_context():
        return configured_rules()


def line(
    sku: str, quantity: int, price: str, category: str | None = None, discount: str = "0"
) -> LineContext:
    """An order line."""
    return LineContext(sku, quantity, Decimal(price), category, discount=Decimal(discount))


def order_data(reference: str, user: t.Any, *lines: LineContext, **amounts: str) -> OrderData:
    """An order whose total is its goods plus shipping and tax, less its discount."""
    money = {k: Decimal(v) for k, v in amounts.items()}
    goods = sum((ln.amount for ln in lines), Decimal(0))
    total = goods - money.get("discount", 0) + money.get("shipping", 0) + money.get("tax", 0)
    return OrderData(reference, user, "USD", Decimal(total), tuple(lines), **money)


def loyalty_of(app: Flask) -> Loyalty:
    """The app's extension object."""
    return t.cast(Loyalty, app.extensions["loyalty"].extension)


def add_campaign(db: t.Any, **values: t.Any) -> None:
    """Store a campaign row."""
    models = loyalty_of(t.cast(Flask, current_app)).models
    db.session.add(models.Campaign(**values))
    db.session.commit()


def stored_line_points(db: t.Any, reference: str) -> list[int]:
    """The points stored on the order's lines, in line order, read afresh."""
    o, ln = db.metadata.tables["loyalty_order"], db.metadata.tables["loyalty_order_line"]
    with db.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(ln.c.points)
                .join(o, o.c.id == ln.c.order_id)
                .where(o.c.reference == reference)
                .order_by(ln.c.id)
            ).scalars()
        )


def count(db: t.Any, name: str) -> int:
    """The number of rows in ``loyalty_<name>``, read afresh."""
    with db.engine.connect() as conn:
        table = db.metadata.tables[f"loyalty_{name}"]
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# -- rules from configuration ---------------------------------------------------------


def test_the_default_configuration_is_the_classic_rule() -> None:
    assert rules_of() == RuleSet(rate=Decimal(10), rounding="floor", basis="goods", minimum=None, decimals=2)


def test_every_earning_key_is_read() -> None:
    rules = rules_of(
        EARN_RATE="12.5",
        EARN_ROUNDING="half_up",
        EARN_BASIS="goods_shipping",
        EARN_MINIMUM="20.00",
        SKU_MULTIPLIERS={"TEA": 2},
        CATEGORY_MULTIPLIERS={"books": "1.5"},
        EXCLUDED_SKUS=["GIFTCARD"],
        EXCLUDED_CATEGORIES=("tobacco",),
        CAMPAIGNS=[
            {
                "name": "Weekend",
                "multiplier": "2",
                "bonus": 10,
                "starts_at": "2026-01-03T00:00:00+01:00",
                "ends_at": dt.datetime(2026, 2, 1, tzinfo=dt.UTC),
                "priority": 3,
                "stacking": False,
                "skus": ["TEA"],
                "categories": {"books"},
                "weekdays": [5, 6],
            }
        ],
        CURRENCY="JPY",
    )
    assert rules == RuleSet(
        rate=Decimal("12.5"),
        rounding="half_up",
        basis="goods_shipping",
        minimum=Decimal("20.00"),
        sku_multipliers={"TEA": Decimal(2)},
        category_multipliers={"books": Decimal("1.5")},
        excluded_skus=frozenset({"GIFTCARD"}),
        excluded_categories=frozenset({"tobacco"}),
        campaigns=(
            Campaign(
                "Weekend",
                multiplier=Decimal(2),
                bonus=10,
                starts_at=dt.datetime(2026, 1, 2, 23, 0),  # converted to naive UTC
                ends_at=dt.datetime(2026, 2, 1),
                priority=3,
                stacking=False,
                skus=frozenset({"TEA"}),
                categories=frozenset({"books"}),
                weekdays=frozenset({5, 6}),
            ),
        ),
        decimals=0,
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("EARN_ROUNDING", "nearest", "LOYALTY_EARN_ROUNDING must be one of"),
        ("EARN_BASIS", "everything", "LOYALTY_EARN_BASIS must be one of"),
        ("EARN_RATE", -1, "LOYALTY_EARN_RATE must be a finite number of at least 0"),
        ("EARN_RATE", 0.1, "LOYALTY_EARN_RATE must be a Decimal, int or str"),
        ("EARN_RATE", "ten", "LOYALTY_EARN_RATE must be a number"),
        ("EARN_RATE", "Infinity", "LOYALTY_EARN_RATE must be a finite number"),
        ("EARN_MINIMUM", "-5", "LOYALTY_EARN_MINIMUM must be a finite number of at least 0"),
        ("SKU_MULTIPLIERS", {"TEA": -2}, r"LOYALTY_SKU_MULTIPLIERS\['TEA'\] must be"),
        ("SKU_MULTIPLIERS", ["TEA"], "LOYALTY_SKU_MULTIPLIERS must be a mapping"),
        ("CATEGORY_MULTIPLIERS", {"books": "x"}, r"LOYALTY_CATEGORY_MULTIPLIERS\['books'\] must be a number"),
        ("EXCLUDED_SKUS", "GIFTCARD", "LOYALTY_EXCLUDED_SKUS must be a list of strings"),
        ("EXCLUDED_CATEGORIES", [1], "LOYALTY_EXCLUDED_CATEGORIES must hold non-empty strings"),
        ("CAMPAIGNS", {"name": "Double"}, "LOYALTY_CAMPAIGNS must be a list of campaign mappings"),
        ("CAMPAIGNS", ["Double"], "LOYALTY_CAMPAIGNS: A campaign is a mapping"),
        ("CAMPAIGNS", [{"multiplier": 2}], "LOYALTY_CAMPAIGNS: A campaign needs a name"),
        ("CAMPAIGNS", [{"name": "X", "colour": "red"}], "LOYALTY_CAMPAIGNS: Campaign 'X' has unknown key"),
        ("CAMPAIGNS", [{"name": "X", "multiplier": -2}], "LOYALTY_CAMPAIGNS: Campaign 'X': multiplier"),
        ("CAMPAIGNS", [{"name": "X", "bonus": 1.5}], "LOYALTY_CAMPAIGNS: Campaign 'X': bonus"),
        ("CAMPAIGNS", [{"name": "X", "priority": "high"}], "LOYALTY_CAMPAIGNS: Campaign 'X': priority"),
        ("CAMPAIGNS", [{"name": "X", "stacking": "no"}], "LOYALTY_CAMPAIGNS: Campaign 'X': stacking"),
        ("CAMPAIGNS", [{"name": "X", "skus": "TEA"}], "LOYALTY_CAMPAIGNS: Campaign 'X': skus"),
        ("CAMPAIGNS", [{"name": "X", "categories": [None]}], "LOYALTY_CAMPAIGNS: Campaign 'X': categories"),
        ("CAMPAIGNS", [{"name": "X", "weekdays": [7]}], "LOYALTY_CAMPAIGNS: Campaign 'X': weekdays"),
        ("CAMPAIGNS", [{"name": "X", "weekdays": "weekend"}], "LOYALTY_CAMPAIGNS: Campaign 'X': weekdays"),
        (
            "CAMPAIGNS",
            [{"name": "X", "starts_at": "next week"}],
            "LOYALTY_CAMPAIGNS: Campaign 'X': starts_at",
        ),
        (
            "CAMPAIGNS",
            [{"name": "X", "starts_at": "2026-02-01", "ends_at": "2026-01-01"}],
            "LOYALTY_CAMPAIGNS: Campaign 'X' ends before it starts",
        ),
    ],
)
def test_an_unusable_value_is_a_value_error_naming_the_key(key: str, value: t.Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules_of(**{key: value})
    with pytest.raises(ValueError, match=message):
        bare_app(**{key: value})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("PENDING_DAYS", -1, "LOYALTY_PENDING_DAYS must be a whole number of at least 0, not -1"),
        ("PENDING_DAYS", "14", "LOYALTY_PENDING_DAYS must be a whole number of at least 0, not '14'"),
        ("PENDING_DAYS", None, "LOYALTY_PENDING_DAYS must be a whole number of at least 0, not None"),
        ("POINTS_EXPIRY_DAYS", 0, "LOYALTY_POINTS_EXPIRY_DAYS must be None or a whole number of at least 1"),
        (
            "POINTS_EXPIRY_DAYS",
            1.5,
            "LOYALTY_POINTS_EXPIRY_DAYS must be None or a whole number of at least 1",
        ),
    ],
)
def test_unusable_order_settings_are_refused_by_init_app(key: str, value: t.Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bare_app(**{key: value})


def test_usable_order_settings_are_accepted() -> None:
    app = bare_app(PENDING_DAYS=14, POINTS_EXPIRY_DAYS=365, DRY_RUN_ENABLED=True, AUTO_ENROLL_ENABLED=False)
    assert app.config["LOYALTY_PENDING_DAYS"] == 14


# -- quotes ------------------------------------------------------------------------


@pytest.mark.settings(LOYALTY_SKU_MULTIPLIERS={"TEA": 2})
def test_quote_of_lines_order_data_cart_and_order_model(app, db, member):
    models = loyalty_of(app).models
    lines = [line("TEA", 2, "15.00", "drinks"), line("MUG", 1, "12.34", "kitchen")]
    expected = 2 * 300 + 123
    assert quote(lines).points == expected
    assert quote(tuple(lines)).points == expected
    assert quote(order_data("Q-1", member, *lines)).points == expected
    cart = models.Cart(member_id=member.id, currency="USD")
    cart.items = [
        models.CartItem(sku="TEA", category="drinks", quantity=2, unit_price_minor=1500),
        models.CartItem(sku="MUG", category="kitchen", quantity=1, unit_price_minor=1234),
    ]
    db.session.add(cart)
    db.session.commit()
    assert quote(cart).points == expected
    placed = models.Order(reference="Q-2", member_id=member.id, currency="USD", total_minor=4234)
    placed.lines = [
        models.OrderLine(sku="TEA", category="drinks", quantity=2, unit_price_minor=1500),
        models.OrderLine(sku="MUG", category="kitchen", quantity=1, unit_price_minor=1234),
    ]
    db.session.add(placed)
    db.session.commit()
    by_model = quote(placed)
    assert by_model.points == expected
    assert [ln.points for ln in by_model.lines] == [600, 123]
    assert by_model.applied == (Applied("sku multiplier", "× 2", "TEA", 0),)


def test_host_orders_are_read_by_the_registered_adapter(app, db, member):
    host_lines = [
        types.SimpleNamespace(code="TEA", qty=2, price_cents=1500, section=7),
        types.SimpleNamespace(code="MUG", qty=1, price_cents=1234, section=None),
    ]
    host_order = types.SimpleNamespace(
        number=lambda: "H-77", customer=member, grand_cents=4734, items=host_lines, postage=500
    )
    with pytest.raises(InvalidRequest, match="register an adapter with loyalty.order_adapter"):
        quote(host_order)
    loyalty_of(app).order_adapter(
        AttributeOrderAdapter(
            reference="number",
            user="customer",
            total="grand_cents",
            lines="items",
            currency=None,
            shipping="postage",
            line_sku="code",
            line_quantity="qty",
            line_unit_price="price_cents",
            line_category="section",
            line_name=None,
            minor_units=True,
        )
    )
    app.config["LOYALTY_CATEGORY_MULTIPLIERS"] = {"7": 2}
    result = quote(host_order)
    assert [ln.points for ln in result.lines] == [600, 123]
    outcome = orders.order_paid(host_order)
    assert (outcome.reference, outcome.points) == ("H-77", 723)
    assert stored_line_points(db, "H-77") == [600, 123]


def test_quote_refuses_another_currency_and_bad_lines(app_ctx, db):
    with pytest.raises(CurrencyMismatch):
        quote(OrderData("Q-1", None, "EUR", Decimal("10.00"), (line("TEA", 1, "10.00"),)))
    with pytest.raises(InvalidRequest, match="quantity of 'TEA' must be a positive whole number"):
        quote([line("TEA", -1, "10.00")])
    with pytest.raises(InvalidRequest, match="more than 2 decimal place"):
        quote([line("TEA", 1, "10.001")])
    with pytest.raises(InvalidRequest, match="has no lines"):
        quote(OrderData("Q-1", None, "USD", Decimal(0), ()))


def test_an_empty_cart_earns_nothing(app, db, member):
    cart = loyalty_of(app).models.Cart(member_id=member.id, currency="USD")
    db.session.add(cart)
    db.session.commit()
    assert quote(cart) == Quote(0, (), ())
    assert quote([]) == Quote(0, (), ())


def test_a_quote_for_a_shopper_who_is_not_a_member_yet_enrols_nobody(app_ctx, db):
    shopper = types.SimpleNamespace(id=4711, name="Ada", email="ada@example.com")
    result = quote(order_data("Q-1", shopper, line("TEA", 1, "30.00")))
    assert result.points == 300
    assert count(db, "member") == 0


def test_a_quote_uses_the_time_given_or_the_clock(app, db, member, clock):
    app.config["LOYALTY_CAMPAIGNS"] = [
        {"name": "Later", "multiplier": 2, "starts_at": START + dt.timedelta(days=1)}
    ]
    assert quote([line("TEA", 1, "10.00")]).points == 100
    assert quote([line("TEA", 1, "10.00")], at=START + dt.timedelta(days=1)).points == 200
    clock.advance(days=1)
    assert quote([line("TEA", 1, "10.00")]).points == 200


def test_the_tier_multiplier_hook_feeds_the_quote(app, db, member):
    seen: list[tuple[str | None, int | None]] = []

    @loyalty_of(app).tier_multiplier
    def multiplier(tier: str | None, member_id: int | None) -> Decimal:
        seen.append((tier, member_id))
        return Decimal("1.5") if tier == "gold" else Decimal(1)

    app.extensions["loyalty"].store.atomic(
        lambda: app.extensions["loyalty"].store.set_member_tier(member.id, "gold", START)
    )
    result = quote(order_data("Q-1", member, line("TEA", 1, "10.00")))
    assert result.points == 150
    assert result.applied == (Applied("tier", "× 1.5", "gold"),)
    assert quote([line("TEA", 1, "10.00")]).points == 100
    assert seen == [("gold", member.id), (None, None)]
    paid = orders.order_paid(order_data("Q-1", member, line("TEA", 1, "10.00")))
    assert paid.points == 150


# -- stored campaigns --------------------------------------------------------------


def test_stored_campaign_window_is_exact_to_the_microsecond(app, db, member):
    starts, ends = START + dt.timedelta(days=2, microseconds=7), START + dt.timedelta(days=9, microseconds=7)
    add_campaign(db, name="Spring", multiplier="2", starts_at=starts, ends_at=ends)
    tick = dt.timedelta(microseconds=1)
    lines = [line("TEA", 1, "10.00")]
    assert [quote(lines, at=at).points for at in (starts - tick, starts, ends - tick, ends)] == [
        100,
        200,
        200,
        100,
    ]
    assert quote(lines, at=starts).applied == (Applied("campaign Spring", "× 2", "", 0),)


def test_stored_campaigns_are_switched_off_by_active(app, db, member):
    add_campaign(db, name="Off", multiplier="5", active=False)
    add_campaign(db, name="On", multiplier="2")
    assert quote([line("TEA", 1, "10.00")]).points == 200


def test_stored_campaigns_read_their_lists(app, db, member):
    add_campaign(db, name="Tea weekend", multiplier="3", skus="TEA, CHAI", weekdays="5,6", bonus=7)
    add_campaign(db, name="Books", multiplier="2", categories="books")
    saturday = dt.datetime(2026, 1, 3, 10, 0)
    lines = [line("TEA", 1, "10.00"), line("NOVEL", 1, "10.00", "books"), line("MUG", 1, "10.00")]
    result = quote(lines, at=saturday)
    assert [ln.points for ln in result.lines] == [307, 200, 100]
    assert [ln.points for ln in quote(lines, at=saturday + dt.timedelta(days=2)).lines] == [100, 200, 100]


@pytest.mark.settings(LOYALTY_CAMPAIGNS=[{"name": "Configured", "multiplier": 2, "priority": 1}])
def test_stored_and_configured_campaigns_compete_by_priority(app, db, member):
    add_campaign(db, name="Stored", multiplier="3", priority=5, stacking=False)
    result = quote([line("TEA", 1, "10.00")])
    assert result.points == 300
    assert [a.rule for a in result.applied] == ["campaign Stored"]
    campaigns = rules_at(START).campaigns
    assert [c.name for c in campaigns] == ["Configured", "Stored"]


def test_a_malformed_stored_campaign_is_a_value_error(app, db, member):
    add_campaign(db, name="Broken", multiplier="lots")
    with pytest.raises(ValueError, match="Campaign 'Broken': multiplier must be a number"):
        quote([line("TEA", 1, "10.00")])
    db.session.execute(sa.update(loyalty_of(app).models.Campaign).values(multiplier="2", weekdays="sat,sun"))
    db.session.commit()
    with pytest.raises(ValueError, match=r"Campaign 'Broken': weekdays are 0 \(Monday\) to 6 \(Sunday\)"):
        quote([line("TEA", 1, "10.00")])


# -- rule callbacks --------------------------------------------------------------------


def test_callbacks_registered_on_the_extension_explain_the_posted_order(app, db, member):
    loyalty = loyalty_of(app)
    contexts: list[OrderContext] = []

    @loyalty.earn_rule
    def first_order(context: OrderContext, draft: Quote) -> Award | None:
        contexts.append(context)
        return Award.add(100, "a first order earns 100 more")

    @loyalty.earn_rule(name="big basket")
    def big_basket(context: OrderContext, draft: Quote) -> Award | None:
        if len(context.lines) >= 3:
            return Award.multiply("1.5", "three lines or more earn half as much again")
        return None

    assert first_order.__name__ == "first_order"  # the decorator returns the function
    assert list(loyalty.earn_rules) == ["first_order", "big basket"]
    lines = (line("TEA", 1, "10.00"), line("MUG", 1, "20.00"), line("JAM", 1, "5.00"))
    result = orders.order_paid(order_data("C-1", member, *lines))
    assert result.points == (350 + 100) * 3 // 2 == 675
    assert result.quote is not None
    assert result.quote.applied == (
        Applied("first_order", "add 100", "a first order earns 100 more"),
        Applied("big basket", "multiply 1.5", "three lines or more earn half as much again"),
    )
    assert stored_line_points(db, "C-1") == [ln.points for ln in result.quote.lines]
    assert sum(stored_line_points(db, "C-1")) == 675
    (context,) = contexts
    assert isinstance(context, OrderContext)
    assert (context.reference, context.member_id, context.currency, context.at) == (
        "C-1",
        member.id,
        "USD",
        START,
    )
    assert context.lines == lines


def test_a_veto_callback_posts_nothing(app, db, member, signals):
    @loyalty_of(app).earn_rule
    def staff(context: OrderContext, draft: Quote) -> Award | None:
        return Award.veto("staff purchases earn no points") if context.member_id == member.id else None

    result = orders.order_paid(order_data("V-1", member, line("TEA", 1, "300.00")))
    assert result.points == 0
    assert result.postings == ()
    assert result.quote is not None and result.quote.vetoed
    assert result.quote.applied == (Applied("staff", "veto", "staff purchases earn no points"),)
    assert count(db, "ledger_entry") == 0
    assert stored_line_points(db, "V-1") == [0]
    assert signals.names() == ["order-recorded"]


def test_rule_names_are_unique(app):
    loyalty = loyalty_of(app)
    loyalty.earn_rule(name="once")(lambda c, q: None)
    with pytest.raises(ValueError, match="An earning rule named 'once' is already registered"):
        loyalty.earn_rule(name="once")(lambda c, q: None)


# -- the dry run ----------------------------------------------------------------------


@pytest.mark.settings(LOYALTY_DRY_RUN_ENABLED=True)
def test_a_dry_run_logs_the_quote_and_awards_nothing(app, db, member, signals, caplog):
    caplog.set_level(logging.INFO, logger="flask_loyalty")
    result = orders.order_paid(order_data("D-1", member, line("TEA", 1, "300.00")))
    assert result.points == 0
    assert result.postings == ()
    assert result.quote is not None and result.quote.points == 3000
    (record,) = [r for r in caplog.records if r.name == "flask_loyalty"]
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("Dry run: order D-1 would earn 3000 points: Quote(points=3000")
    assert count(db, "ledger_entry") == 0
    assert count(db, "points_lot") == 0
    assert members.balances(member).available == 0
    assert members.balances(member).lifetime_earned == 0
    assert stored_line_points(db, "D-1") == [0]
    assert [name for name in signals.names() if name.startswith("points-")] == []
    # A refund of a dry-run order reverses nothing.
    refund = orders.order_refunded(order_data("D-1", member, line("TEA", 1, "300.00")), key="R-1")
    assert (refund.points, refund.postings, refund.status) == (0, (), "refunded")
    assert count(db, "ledger_entry") == 0


# -- quote equals posted -------------------------------------------------------------------

SKUS = {"TEA": "drinks", "CHAI": "drinks", "NOVEL": "books", "ATLAS": "books", "CARD": "gifts", "MUG": None}
_references = itertools.count()


@st.composite
def carts(draw: st.DrawFn) -> tuple[list[LineContext], dict[str, str], dt.datetime, str]:
    """A random cart: lines, order amounts, the time it is paid, the rounding in force."""
    lines = []
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        sku = draw(st.sampled_from(sorted(SKUS)))
        quantity = draw(st.integers(min_value=1, max_value=5))
        price = draw(st.integers(min_value=0, max_value=20_000))
        discount = draw(st.integers(min_value=0, max_value=price * quantity))
        lines.append(
            line(sku, quantity, str(Decimal(price).scaleb(-2)), SKUS[sku], str(Decimal(discount).scaleb(-2)))
        )
    goods = sum(int(ln.amount * 100) for ln in lines)
    discount = draw(st.integers(min_value=0, max_value=goods))
    shipping, tax = draw(st.integers(0, 1500)), draw(st.integers(0, 3000))
    total = goods - discount + shipping + tax
    with_points = draw(st.integers(min_value=0, max_value=total))
    amounts = {
        "discount": str(Decimal(discount).scaleb(-2)),
        "shipping": str(Decimal(shipping).scaleb(-2)),
        "tax": str(Decimal(tax).scaleb(-2)),
        "paid_with_points": str(Decimal(with_points).scaleb(-2)),
    }
    at = START + dt.timedelta(minutes=draw(st.integers(min_value=0, max_value=6 * 24 * 60)))
    return lines, amounts, at, draw(st.sampled_from(["floor", "half_up", "ceiling"]))


@pytest.mark.settings(
    LOYALTY_SKU_MULTIPLIERS={"CHAI": "1.5"},
    LOYALTY_CATEGORY_MULTIPLIERS={"books": 2},
    LOYALTY_EXCLUDED_SKUS=["CARD"],
    LOYALTY_EARN_MINIMUM="1.00",
    LOYALTY_CAMPAIGNS=[
        {"name": "Weekend", "multiplier": 2, "weekdays": [5, 6], "stacking": False, "priority": 2},
        {"name": "Tea", "multiplier": "1.25", "skus": ["TEA"], "starts_at": START + dt.timedelta(days=1)},
    ],
)
def test_quote_equals_posted_over_random_carts(app, db, member, clock):
    """For any cart, quote(cart) is exactly what order_paid posts, line by line."""
    add_campaign(db, name="Stored bonus", bonus=25, categories="books", ends_at=START + dt.timedelta(days=4))

    @loyalty_of(app).earn_rule
    def big_spender(context: OrderContext, draft: Quote) -> Award | None:
        if draft.points > 5000:
            return Award.add(-draft.points // 10, "a tenth less over 5000")
        return Award.multiply("1.1", "a tenth more") if len(context.lines) > 2 else None

    @loyalty_of(app).earn_rule
    def no_tea_on_tuesday(context: OrderContext, draft: Quote) -> Award | None:
        tea = any(ln.sku == "TEA" for ln in context.lines)
        return Award.veto("no points for tea on Tuesdays") if tea and context.at.weekday() == 1 else None

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(cart=carts())
    def check(cart: tuple[list[LineContext], dict[str, str], dt.datetime, str]) -> None:
        lines, amounts, at, rounding = cart
        app.config["LOYALTY_EARN_ROUNDING"] = rounding
        data = order_data(f"H-{next(_references)}", member, *lines, **amounts)
        expected = quote(data, at=at)
        clock.set(at)
        posted = orders.order_paid(data)
        assert posted.quote == expected
        assert posted.points == expected.points
        assert stored_line_points(db, data.reference) == [ln.points for ln in expected.lines]
        assert sum(stored_line_points(db, data.reference)) == expected.points
        if expected.points:
            assert posted.postings[0].points == expected.points

    check()
    assert members.balances(member).lifetime_earned == members.balances(member).available


# -- the rules cookbook (docs/rules.rst) -------------------------------------------------


SATURDAY = dt.datetime(2026, 1, 3, 15, 0)
FRIDAY = dt.datetime(2026, 1, 2, 15, 0)


@pytest.mark.settings(
    LOYALTY_CAMPAIGNS=[{"name": "Double points weekend", "multiplier": 2, "weekdays": [5, 6]}]
)
def test_cookbook_double_points_weekend(app, db, member):
    assert quote([line("TEA", 1, "25.00")], at=SATURDAY).points == 500
    assert quote([line("TEA", 1, "25.00")], at=FRIDAY).points == 250


@pytest.mark.settings(LOYALTY_EXCLUDED_CATEGORIES=["gift-cards", "tobacco"])
def test_cookbook_category_exclusion(app, db, member):
    result = quote([line("GC-50", 1, "50.00", "gift-cards"), line("TEA", 1, "25.00", "tea")])
    assert result.points == 250
    assert [ln.points for ln in result.lines] == [0, 250]
    assert result.applied == (Applied("exclusion", "× 0", "GC-50 earns no points", 0),)


@pytest.mark.settings(LOYALTY_EARN_MINIMUM="20.00")
def test_cookbook_minimum_spend(app, db, member):
    assert quote([line("TEA", 1, "19.99")]).points == 0
    assert quote([line("TEA", 1, "20.00")]).points == 200


def test_cookbook_custom_callbacks(app, db, member):
    loyalty = loyalty_of(app)
    staff_member = members.enroll(name="Staff")
    staff_ids = {staff_member.id}

    @loyalty.earn_rule(name="big basket")
    def big_basket(order: OrderContext, quote: Quote) -> Award | None:
        if order.subtotal >= Decimal("100.00"):
            return Award.add(100, "100 extra points for an order of 100.00 or more")
        return None

    @loyalty.earn_rule(name="refills")
    def refills(order: OrderContext, quote: Quote) -> Award | None:
        if all(line.category == "refills" for line in order.lines):
            return Award.multiply("1.5", "half as much again for an order of refills only")
        return None

    @loyalty.earn_rule(name="staff")
    def staff(order: OrderContext, quote: Quote) -> Award | None:
        if order.member_id in staff_ids:
            return Award.veto("staff purchases earn no points")
        return None

    big = order_data("B-1", member, line("TEA", 4, "30.00", "tea"))
    result = quote(big)
    assert result.points == 1300
    assert result.applied == (
        Applied(
            rule="big basket", effect="add 100", explanation="100 extra points for an order of 100.00 or more"
        ),
    )
    assert quote(order_data("B-2", member, line("REFILL", 2, "15.00", "refills"))).points == 450
    vetoed = quote(order_data("B-3", staff_member, line("TEA", 4, "30.00", "tea")))
    assert (vetoed.points, vetoed.vetoed) == (0, True)
    assert orders.order_paid(big).points == 1300


def test_points_paid_orders_do_not_earn_on_the_points(app, db, member):
    points.earn(member, 10_000, key="welcome")
    data = order_data("P-1", member, line("TEA", 1, "30.00"), paid_with_points="10.00")
    assert quote(data).points == 200
    assert orders.order_paid(data).points == 200
