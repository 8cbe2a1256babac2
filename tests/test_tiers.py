"""Tiers: qualification, upgrades at once, downgrades after the period and its grace."""

from __future__ import annotations

import datetime as dt
import threading
import typing as t
from decimal import Decimal

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_loyalty import current_loyalty
from flask_loyalty import InvalidRequest
from flask_loyalty import Loyalty
from flask_loyalty import members
from flask_loyalty import orders
from flask_loyalty import points
from flask_loyalty import tiers
from flask_loyalty.adapters import OrderData
from flask_loyalty.rules import LineContext

from .conftest import START

#: Silver at 1,000 points earned, Gold at 5,000.
POINT_TIERS = [
    {"name": "Silver", "threshold": 1000, "multiplier": "1.5", "benefits": "Free shipping"},
    {"name": "Gold", "threshold": 5000, "multiplier": 2, "benefits": "Free shipping, early sales"},
]
#: Silver at 100.00 spent, Gold at 500.00.
MONEY_TIERS = [
    {"name": "Silver", "threshold": "100.00", "multiplier": "1.5"},
    {"name": "Gold", "threshold": 500, "multiplier": 2},
]
TICK = dt.timedelta(microseconds=1)


def order(member_id: int, reference: str, amount: str, *, with_points: str = "0") -> OrderData:
    """A one-line order of ``amount`` (in USD) for the member."""
    price = Decimal(amount)
    return OrderData(
        reference,
        member_id,
        "USD",
        price,
        (LineContext("tea", 1, price, "food"),),
        paid_with_points=Decimal(with_points),
    )


def pay(member_id: int, reference: str, amount: str, **kwargs: t.Any) -> orders.OrderOutcome:
    """Pay a one-line order and return the outcome."""
    return orders.order_paid(order(member_id, reference, amount, **kwargs))


def tier_of(member_id: int) -> tuple[str | None, dt.datetime | None]:
    """The member's stored tier and since when, read afresh."""
    store = current_loyalty.store
    return t.cast(tuple[str | None, dt.datetime | None], store.atomic(lambda: store.member_tier(member_id)))


def enroll(count: int) -> list[int]:
    """Enroll ``count`` members and return their ids."""
    return [int(members.enroll(name=f"Member {i}").id) for i in range(count)]


# -- upgrades ------------------------------------------------------------------


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="calendar_year")
def test_an_upgrade_applies_at_once_and_the_next_order_earns_at_the_new_multiplier(member, clock, signals):
    # The order that crosses the threshold is earned at the old tier's multiplier...
    first = pay(member.id, "A-1", "100.00")
    assert first.points == 1000
    assert tier_of(member.id) == ("Silver", START)
    assert signals.names() == ["points-earned", "tier-changed", "order-recorded"]
    assert signals.of("tier-changed") == [{"member_id": member.id, "old": None, "new": "Silver"}]
    # ... and the next one at the new tier's: 10.00 earns 100 × 1.5.
    clock.advance(hours=1)
    assert pay(member.id, "A-2", "10.00").points == 150
    assert pay(member.id, "A-3", "300.00").points == 4500  # 5,650 earned: Gold from now on
    assert tier_of(member.id) == ("Gold", START + dt.timedelta(hours=1))
    assert pay(member.id, "A-4", "10.00").points == 200
    assert [(s["old"], s["new"]) for s in signals.of("tier-changed")] == [
        (None, "Silver"),
        ("Silver", "Gold"),
    ]


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS)
def test_a_jump_over_a_tier_goes_straight_to_the_highest(member, signals):
    pay(member.id, "B-1", "600.00")
    assert tier_of(member.id)[0] == "Gold"
    assert signals.of("tier-changed") == [{"member_id": member.id, "old": None, "new": "Gold"}]


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS)
def test_points_earned_outside_orders_upgrade_at_once(member, signals):
    signals.sent.clear()
    posting = points.earn(member, 999, key="review:1")
    assert tier_of(member.id)[0] is None
    points.earn(member, 1, key="review:2")
    assert tier_of(member.id)[0] == "Silver"
    assert posting.points == 999
    # The tier change is announced after the earn that caused it.
    assert signals.names() == ["points-earned", "points-earned", "tier-changed"]
    # Adjustments are not earned points: they never promote.
    points.adjust(member, 10_000, key="goodwill", actor="ana", reason="parcel lost")
    assert tier_of(member.id)[0] == "Silver"


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS)
def test_a_repeated_payment_changes_no_tier_and_sends_nothing(member, signals):
    pay(member.id, "C-1", "100.00")
    signals.sent.clear()
    again = pay(member.id, "C-1", "100.00")
    assert again.replayed
    assert signals.sent == []
    assert tier_of(member.id)[0] == "Silver"


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS, LOYALTY_DRY_RUN_ENABLED=True)
def test_a_dry_run_promotes_nobody(member, signals):
    assert pay(member.id, "D-1", "900.00").points == 0
    assert tier_of(member.id) == (None, None)
    assert signals.of("tier-changed") == []


def test_without_tiers_nobody_has_a_tier(member, signals):
    pay(member.id, "E-1", "900.00")
    assert tier_of(member.id) == (None, None)
    assert tiers.evaluate_tiers() == 0
    assert signals.of("tier-changed") == []


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="calendar_year")
def test_periods_are_not_added_up(member, clock):
    pay(member.id, "F-1", "80.00")  # 800 points in 2026
    clock.set(dt.datetime(2027, 3, 1))
    pay(member.id, "F-2", "30.00")  # 300 in 2027: neither year reaches 1,000
    assert tier_of(member.id)[0] is None
    assert tiers.standing(member.id).metric == 300
    pay(member.id, "F-3", "70.00")  # 1,000 in 2027
    assert tier_of(member.id)[0] == "Silver"


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS)
def test_the_tier_multiplier_hook_overrides_the_configured_multiplier(app, member):
    extension = app.extensions["loyalty"].extension
    seen: list[tuple[str | None, int | None]] = []

    @extension.tier_multiplier
    def multiplier(tier: str | None, member_id: int | None) -> int:
        seen.append((tier, member_id))
        return 3 if tier == "Silver" else 1

    assert pay(member.id, "G-1", "100.00").points == 1000
    assert pay(member.id, "G-2", "10.00").points == 300  # not 150: the hook wins
    assert seen == [(None, member.id), ("Silver", member.id)]


# -- downgrades ----------------------------------------------------------------


@pytest.mark.parametrize("grace", [0, 30])
def test_a_calendar_year_qualification_holds_to_the_end_of_the_next_year_plus_grace(
    app, clock, signals, grace
):
    app.config.update(
        LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="calendar_year", LOYALTY_TIER_GRACE_DAYS=grace
    )
    with app.app_context():
        (member_id,) = enroll(1)
        pay(member_id, "H-1", "100.00")  # Silver in 2026
        signals.sent.clear()
        assert tiers.evaluate_tiers(now=dt.datetime(2026, 12, 31, 23, 59)) == 0
        assert tiers.evaluate_tiers(now=dt.datetime(2027, 7, 1)) == 0
        boundary = dt.datetime(2028, 1, 1) + dt.timedelta(days=grace)
        assert tiers.evaluate_tiers(now=boundary - TICK) == 0
        assert tier_of(member_id) == ("Silver", START)
        assert tiers.evaluate_tiers(now=boundary) == 1
        assert tier_of(member_id) == (None, boundary)
        assert signals.of("tier-changed") == [{"member_id": member_id, "old": "Silver", "new": None}]
        assert tiers.evaluate_tiers(now=boundary) == 0


@pytest.mark.settings(
    LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="calendar_year", LOYALTY_TIER_GRACE_DAYS=30
)
def test_qualifying_again_keeps_the_tier_another_year(member, clock):
    pay(member.id, "H-2", "100.00")  # Silver in 2026
    clock.set(dt.datetime(2027, 6, 1))
    pay(member.id, "H-3", "70.00")  # 1,050 points (× 1.5) in 2027: Silver again
    assert tiers.evaluate_tiers(now=dt.datetime(2028, 12, 31)) == 0
    assert tiers.evaluate_tiers(now=dt.datetime(2029, 1, 31) - TICK) == 0
    assert tiers.evaluate_tiers(now=dt.datetime(2029, 1, 31)) == 1
    assert tier_of(member.id) == (None, dt.datetime(2029, 1, 31))


@pytest.mark.parametrize("grace", [0, 10])
def test_a_rolling_qualification_holds_for_twelve_months_plus_grace(app, clock, signals, grace):
    app.config.update(
        LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="rolling_12_months", LOYALTY_TIER_GRACE_DAYS=grace
    )
    with app.app_context():
        (member_id,) = enroll(1)
        pay(member_id, "I-1", "100.00")  # Silver at START, 2026-01-01 12:00
        boundary = dt.datetime(2027, 1, 1, 12) + dt.timedelta(days=grace)
        assert tiers.evaluate_tiers(now=boundary - TICK) == 0
        assert tier_of(member_id)[0] == "Silver"
        assert tiers.evaluate_tiers(now=boundary) == 1
        assert tier_of(member_id) == (None, boundary)
        assert [(s["old"], s["new"]) for s in signals.of("tier-changed")] == [
            (None, "Silver"),
            ("Silver", None),
        ]


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="rolling_12_months")
def test_a_rolling_downgrade_goes_to_the_tier_the_window_still_holds(member, clock):
    pay(member.id, "J-1", "600.00")  # Gold at START
    clock.set(dt.datetime(2026, 6, 1))
    pay(member.id, "J-2", "100.00")  # 2,000 more (× 2) in June
    assert tiers.evaluate_tiers(now=dt.datetime(2027, 1, 1, 12)) == 1
    assert tier_of(member.id)[0] == "Silver"
    assert tiers.evaluate_tiers(now=dt.datetime(2027, 6, 1)) == 1
    assert tier_of(member.id)[0] is None


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="lifetime", LOYALTY_TIER_GRACE_DAYS=30)
def test_a_lifetime_tier_is_kept(member):
    pay(member.id, "K-1", "100.00")
    assert tiers.evaluate_tiers(now=dt.datetime(2040, 1, 1)) == 0
    assert tier_of(member.id)[0] == "Silver"


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="calendar_year")
def test_the_job_applies_upgrades_not_yet_applied(app, member, signals):
    app.config["LOYALTY_TIERS"] = ()
    pay(member.id, "L-1", "100.00")
    assert tier_of(member.id)[0] is None
    app.config["LOYALTY_TIERS"] = POINT_TIERS
    assert tiers.evaluate_tiers() == 1
    assert tier_of(member.id)[0] == "Silver"
    assert signals.of("tier-changed") == [{"member_id": member.id, "old": None, "new": "Silver"}]


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS)
def test_a_tier_no_longer_configured_is_replaced(app, member):
    pay(member.id, "M-1", "100.00")
    app.config["LOYALTY_TIERS"] = [{"name": "Bronze", "threshold": 0}, {"name": "Platinum", "threshold": 500}]
    assert tiers.evaluate_tiers() == 1
    assert tier_of(member.id)[0] == "Platinum"
    app.config["LOYALTY_TIERS"] = ()
    assert tiers.evaluate_tiers() == 1
    assert tier_of(member.id)[0] is None


@pytest.mark.settings(LOYALTY_TIERS=[{"name": "Member", "threshold": 0}, *POINT_TIERS])
def test_a_zero_threshold_tier_is_everybody_s_after_the_job(app_ctx, signals):
    ids = enroll(3)
    assert tiers.evaluate_tiers() == 3
    assert [tier_of(i)[0] for i in ids] == ["Member"] * 3
    pay(ids[0], "N-1", "100.00")
    assert tier_of(ids[0])[0] == "Silver"


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS)
def test_closed_members_are_left_alone(app, member, clock):
    pay(member.id, "O-1", "100.00")
    members.close(member.id)
    app.config["LOYALTY_TIERS"] = ()
    assert tiers.evaluate_tiers() == 0
    assert tier_of(member.id)[0] == "Silver"


# -- the job -------------------------------------------------------------------


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="calendar_year")
def test_the_job_works_in_chunks_and_is_idempotent(app_ctx, clock, signals):
    ids = enroll(7)
    for index, member_id in enumerate(ids):
        if index % 3:  # members 1, 2, 4, 5: Silver; 0, 3, 6: nothing
            pay(member_id, f"P-{index}", "100.00")
    signals.sent.clear()
    later = dt.datetime(2028, 1, 1)
    progress: list[int] = []
    assert tiers.evaluate_tiers(now=later, chunk_size=2, progress=progress.append) == 4
    assert progress == [1, 2, 4]  # chunks (1, 2), (3, 4), (5, 6), (7,)
    assert sorted(s["member_id"] for s in signals.of("tier-changed")) == [ids[i] for i in (1, 2, 4, 5)]
    assert tiers.evaluate_tiers(now=later, chunk_size=2) == 0
    assert tiers.evaluate_tiers(now=later) == 0
    assert len(signals.of("tier-changed")) == 4


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS)
def test_the_job_refuses_bad_arguments(app_ctx):
    with pytest.raises(InvalidRequest, match="chunk_size"):
        tiers.evaluate_tiers(chunk_size=0)
    with pytest.raises(InvalidRequest, match="now"):
        tiers.evaluate_tiers(now=t.cast(t.Any, "2027-01-01"))


def run_together(app: Flask, calls: t.Sequence[t.Callable[[], t.Any]]) -> list[t.Any]:
    """Run each call in its own thread and app context, released together."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[t.Any] = [None] * len(calls)

    def worker(index: int) -> None:
        with app.app_context():
            try:
                barrier.wait(60)
                outcomes[index] = calls[index]()
            except Exception as error:  # asserted on below
                outcomes[index] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


@pytest.mark.timeout(180)
def test_two_jobs_at_once_change_each_member_once(app, clock, signals):
    app.config.update(LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="calendar_year")
    with app.app_context():
        ids = enroll(12)
        for member_id in ids:
            pay(member_id, f"Q-{member_id}", "100.00")
    signals.sent.clear()
    later = dt.datetime(2028, 1, 1)
    outcomes = run_together(app, [lambda: tiers.evaluate_tiers(now=later, chunk_size=5)] * 2)
    assert all(isinstance(outcome, int) for outcome in outcomes), outcomes
    assert sum(outcomes) == 12
    changed = [s["member_id"] for s in signals.of("tier-changed")]
    assert sorted(changed) == sorted(ids)
    with app.app_context():
        assert [tier_of(i) for i in ids] == [(None, later)] * 12


@pytest.mark.timeout(180)
def test_two_payments_at_once_that_cross_the_threshold_together_promote_once(app, signals):
    app.config.update(LOYALTY_TIERS=POINT_TIERS)
    with app.app_context():
        (member_id,) = enroll(1)
        pay(member_id, "R-0", "85.00")
    outcomes = run_together(app, [lambda r=r: pay(member_id, r, "10.00").points for r in ("R-1", "R-2")])
    assert outcomes == [100, 100]
    assert signals.of("tier-changed") == [{"member_id": member_id, "old": None, "new": "Silver"}]
    with app.app_context():
        assert tier_of(member_id)[0] == "Silver"


# -- metrics -------------------------------------------------------------------


@pytest.mark.settings(
    LOYALTY_TIERS=MONEY_TIERS, LOYALTY_TIER_METRIC="amount_spent", LOYALTY_TIER_PERIOD="lifetime"
)
def test_amount_spent_counts_money_paid(member):
    assert pay(member.id, "S-1", "60.00").points == 600
    assert tier_of(member.id)[0] is None
    # 40.00 paid, of which 10.00 with points: 90.00 spent in money.
    pay(member.id, "S-2", "40.00", with_points="10.00")
    assert tiers.standing(member.id).metric == 9000
    assert tier_of(member.id)[0] is None
    pay(member.id, "S-3", "10.00")  # exactly 100.00: the threshold is reached
    assert tier_of(member.id)[0] == "Silver"
    assert tiers.standing(member.id).metric == 10000


@pytest.mark.settings(
    LOYALTY_TIERS=MONEY_TIERS, LOYALTY_TIER_METRIC="amount_spent", LOYALTY_TIER_PERIOD="lifetime"
)
def test_refunds_and_cancellations_lower_amount_spent(member, signals):
    pay(member.id, "T-1", "80.00")
    pay(member.id, "T-2", "30.00")
    assert tier_of(member.id)[0] == "Silver"
    orders.order_refunded(order(member.id, "T-1", "80.00"), key="rf-1", amount="15.00")
    assert tiers.standing(member.id).metric == 9500
    # A refund never demotes at once; the job does.
    assert tier_of(member.id)[0] == "Silver"
    assert tiers.evaluate_tiers() == 1
    assert tier_of(member.id)[0] is None
    pay(member.id, "T-3", "20.00")
    assert tier_of(member.id)[0] == "Silver"
    orders.order_cancelled(order(member.id, "T-3", "20.00"))
    assert tiers.standing(member.id).metric == 9500
    assert tiers.evaluate_tiers() == 1
    assert [(s["old"], s["new"]) for s in signals.of("tier-changed")] == [
        (None, "Silver"),
        ("Silver", None),
        (None, "Silver"),
        ("Silver", None),
    ]


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="calendar_year")
def test_a_refund_lowers_points_earned_in_the_period_of_the_purchase(member, clock):
    pay(member.id, "U-1", "100.00")  # 1,000 points in 2026: Silver
    clock.set(dt.datetime(2027, 3, 1))
    pay(member.id, "U-2", "10.00")  # 150 points in 2027
    orders.order_refunded(order(member.id, "U-1", "100.00"), key="rf-1", lines={"tea": 1})
    standing = tiers.standing(member.id)
    # 2027's own sum is untouched; 2026's lost the refunded order, so Silver goes.
    assert (standing.tier, standing.metric, standing.qualified) == ("Silver", 150, None)
    assert tiers.evaluate_tiers() == 1
    assert tier_of(member.id)[0] is None


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="rolling_12_months")
def test_a_partial_refund_lowers_points_earned(member):
    pay(member.id, "V-1", "120.00")  # 1,200 points
    pay(member.id, "V-2", "0.50")  # 5 × 1.5 = 7 points
    orders.order_refunded(order(member.id, "V-1", "120.00"), key="rf-1", amount="30.00")
    assert tiers.standing(member.id).metric == 1207 - 300
    assert tiers.evaluate_tiers() == 1
    assert tier_of(member.id)[0] is None


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="calendar_year")
def test_standing_tells_the_distance_to_the_next_tier(member, clock):
    assert tiers.standing(member.id) == tiers.Standing(
        member.id, None, None, 0, None, tiers.configured_tiers()[0], 1000
    )
    pay(member.id, "W-1", "120.00")
    standing = tiers.standing(member.id)
    assert (standing.tier, standing.since, standing.metric, standing.qualified) == (
        "Silver",
        START,
        1200,
        "Silver",
    )
    assert (standing.next_tier and standing.next_tier.name, standing.to_next) == ("Gold", 3800)
    pay(member.id, "W-2", "300.00")
    standing = tiers.standing(member.id)
    assert (standing.tier, standing.next_tier, standing.to_next) == ("Gold", None, None)
    # In the next year, the current window starts again; the tier stays.
    later = tiers.standing(member.id, at=dt.datetime(2027, 2, 1))
    assert (later.tier, later.metric, later.qualified) == ("Gold", 0, "Gold")


# -- the command ---------------------------------------------------------------


@pytest.mark.settings(LOYALTY_TIERS=POINT_TIERS, LOYALTY_TIER_PERIOD="calendar_year")
def test_the_evaluate_tiers_command(app, runner):
    with app.app_context():
        (member_id,) = enroll(1)
        pay(member_id, "X-1", "100.00")
    result = runner.invoke(args=["loyalty", "evaluate-tiers", "--now", "2027-12-31T23:59:59"])
    assert (result.exit_code, result.output) == (0, "Changed the tier of 0 member(s).\n")
    result = runner.invoke(args=["loyalty", "evaluate-tiers", "--now", "2028-01-01", "--chunk-size", "1"])
    assert result.exit_code == 0, result.output
    assert result.output == "  ... 1 tiers changed\nChanged the tier of 1 member(s).\n"
    with app.app_context():
        assert tier_of(member_id) == (None, dt.datetime(2028, 1, 1))
    result = runner.invoke(args=["loyalty", "evaluate-tiers", "--chunk-size", "0"])
    assert result.exit_code == 2
    app.config["LOYALTY_TIER_PERIOD"] = "weekly"
    result = runner.invoke(args=["loyalty", "evaluate-tiers"])
    assert result.exit_code == 1
    assert "LOYALTY_TIER_PERIOD must be one of" in result.output


# -- configuration ---------------------------------------------------------------


def init(**config: t.Any) -> Flask:
    """A bare app initialised with the extension and ``config``."""
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", **config)
    SQLAlchemy(app)
    Loyalty(app)
    return app


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"LOYALTY_TIERS": "Gold"}, r"LOYALTY_TIERS must be a list of mappings, not 'Gold'"),
        ({"LOYALTY_TIERS": {"name": "Gold"}}, r"LOYALTY_TIERS must be a list of mappings"),
        ({"LOYALTY_TIERS": ["Gold"]}, r"LOYALTY_TIERS\[0\] must be a mapping"),
        ({"LOYALTY_TIERS": [{"name": "Gold"}]}, r"LOYALTY_TIERS\[0\] \('Gold'\) needs a threshold"),
        ({"LOYALTY_TIERS": [{"threshold": 10}]}, r"LOYALTY_TIERS\[0\]: name must be a text of 1 to 32"),
        ({"LOYALTY_TIERS": [{"name": " ", "threshold": 10}]}, r"LOYALTY_TIERS\[0\]: name must be"),
        ({"LOYALTY_TIERS": [{"name": "G" * 33, "threshold": 10}]}, r"LOYALTY_TIERS\[0\]: name must be"),
        (
            {"LOYALTY_TIERS": [{"name": "Gold", "threshold": 1}, {"name": "Gold", "threshold": 2}]},
            r"LOYALTY_TIERS\[1\] \('Gold'\): tier names must be unique",
        ),
        (
            {"LOYALTY_TIERS": [{"name": "Silver", "threshold": 10}, {"name": "Gold", "threshold": 10}]},
            r"LOYALTY_TIERS\[1\] \('Gold'\): thresholds must strictly increase; 10 does not exceed 10",
        ),
        (
            {"LOYALTY_TIERS": [{"name": "Silver", "threshold": 10}, {"name": "Gold", "threshold": 5}]},
            r"thresholds must strictly increase",
        ),
        (
            {"LOYALTY_TIERS": [{"name": "Gold", "threshold": 10.5}]},
            r"threshold must be a Decimal, int or str",
        ),
        (
            {"LOYALTY_TIERS": [{"name": "Gold", "threshold": -1}]},
            r"threshold must be a finite number of at least 0",
        ),
        ({"LOYALTY_TIERS": [{"name": "Gold", "threshold": "lots"}]}, r"threshold must be a number"),
        (
            {"LOYALTY_TIERS": [{"name": "Gold", "threshold": True}]},
            r"threshold must be a Decimal, int or str",
        ),
        (
            {"LOYALTY_TIERS": [{"name": "Gold", "threshold": "10.5"}]},
            r"threshold must be a whole number of points",
        ),
        (
            {
                "LOYALTY_TIERS": [{"name": "Gold", "threshold": "10.005"}],
                "LOYALTY_TIER_METRIC": "amount_spent",
            },
            r"threshold must be an amount with at most 2 decimal place\(s\)",
        ),
        (
            {"LOYALTY_TIERS": [{"name": "Gold", "threshold": 1, "multiplier": 1.5}]},
            r"LOYALTY_TIERS\[0\] \('Gold'\): multiplier must be a Decimal, int or str, not 1.5",
        ),
        (
            {"LOYALTY_TIERS": [{"name": "Gold", "threshold": 1, "multiplier": "-2"}]},
            r"multiplier must be a finite",
        ),
        (
            {"LOYALTY_TIERS": [{"name": "Gold", "threshold": 1, "level": 3}]},
            r"LOYALTY_TIERS\[0\] has unknown key\(s\): level",
        ),
        ({"LOYALTY_TIERS": [{"name": "Gold", "threshold": 1, "benefits": 5}]}, r"benefits must be text"),
        (
            {"LOYALTY_TIER_METRIC": "visits"},
            r"LOYALTY_TIER_METRIC must be one of \('points_earned', 'amount_spent'\)",
        ),
        ({"LOYALTY_TIER_PERIOD": "monthly"}, r"LOYALTY_TIER_PERIOD must be one of"),
        (
            {"LOYALTY_TIER_GRACE_DAYS": -1},
            r"LOYALTY_TIER_GRACE_DAYS must be a whole number from 0 to 365, not -1",
        ),
        ({"LOYALTY_TIER_GRACE_DAYS": 366}, r"LOYALTY_TIER_GRACE_DAYS must be a whole number"),
        ({"LOYALTY_TIER_GRACE_DAYS": "30"}, r"LOYALTY_TIER_GRACE_DAYS must be a whole number"),
        ({"LOYALTY_TIER_GRACE_DAYS": True}, r"LOYALTY_TIER_GRACE_DAYS must be a whole number"),
    ],
)
def test_invalid_tier_settings_are_refused_by_init_app(config: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        init(**config)


def test_valid_tier_settings_are_read_back() -> None:
    app = init(
        LOYALTY_TIERS=(
            {"name": "Silver", "threshold": "99.99"},
            {"name": "Gold", "threshold": 500, "multiplier": "1.25", "benefits": "Lounge"},
        ),
        LOYALTY_TIER_METRIC="amount_spent",
        LOYALTY_TIER_PERIOD="rolling_12_months",
        LOYALTY_TIER_GRACE_DAYS=365,
        LOYALTY_CURRENCY="JPY",
        LOYALTY_CURRENCY_DECIMALS=2,
    )
    with app.app_context():
        assert tiers.configured_tiers() == (
            tiers.Tier("Silver", Decimal("99.99"), Decimal(1), "", 9999),
            tiers.Tier("Gold", Decimal(500), Decimal("1.25"), "Lounge", 50000),
        )
    with pytest.raises(ValueError, match=r"at most 0 decimal place\(s\)"):
        init(
            LOYALTY_TIERS=[{"name": "Gold", "threshold": "0.5"}],
            LOYALTY_TIER_METRIC="amount_spent",
            LOYALTY_CURRENCY="JPY",
        )


def test_windows_at_a_leap_day() -> None:
    at = dt.datetime(2028, 2, 29, 8)
    assert tiers.windows_at(at, period="rolling_12_months", grace=1) == (
        tiers.Window(dt.datetime(2027, 2, 28, 8) + TICK, at + TICK),
        tiers.Window(dt.datetime(2027, 2, 28, 8) + TICK, dt.datetime(2028, 2, 28, 8) + TICK),
    )
    assert tiers.windows_at(at, period="calendar_year", grace=59) == (
        tiers.Window(dt.datetime(2028, 1, 1), at + TICK),
        tiers.Window(dt.datetime(2027, 1, 1), dt.datetime(2028, 1, 1)),
    )
    assert len(tiers.windows_at(at, period="calendar_year", grace=60)) == 3
    assert tiers.windows_at(at, period="lifetime", grace=60) == (tiers.Window(None, at + TICK),)
    assert at in tiers.windows_at(at, period="lifetime", grace=0)[0]
