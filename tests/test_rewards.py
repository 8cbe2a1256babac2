"""The reward catalogue: redeeming, limits, stock under concurrency, codes and cancellation."""

from __future__ import annotations

import datetime as dt
import typing as t
from decimal import Decimal

import pytest

from flask_loyalty import audit
from flask_loyalty import checkout
from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty import rewards
from flask_loyalty.errors import IdempotencyConflict
from flask_loyalty.errors import InsufficientPoints
from flask_loyalty.errors import InvalidRequest
from flask_loyalty.errors import InvalidState
from flask_loyalty.errors import NotFound
from flask_loyalty.errors import RewardUnavailable
from flask_loyalty.proxies import current_loyalty

from .conftest import run_together

COUPON = {"slug": "five-off", "name": "5.00 off", "kind": "fixed_amount", "cost": 500, "amount": "5.00"}


def reward_rows(db: t.Any) -> list[tuple[t.Any, ...]]:
    r = db.metadata.tables["loyalty_reward"]
    with db.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(r.select().order_by(r.c.id)).all()]


def redemption_rows(db: t.Any) -> list[tuple[t.Any, ...]]:
    d = db.metadata.tables["loyalty_redemption"]
    with db.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(d.select().order_by(d.c.id)).all()]


def rich(points_: int = 2000, name: str = "Ada") -> int:
    member_id = int(members.enroll(name=name).id)
    points.earn(member_id, points_, key="gift")
    return member_id


# -- the catalogue ----------------------------------------------------------------------


def test_a_reward_is_created_and_listed_cheapest_first(app_ctx):
    rewards.create_reward(slug="tea", name="A free tea", kind="free_product", cost=800, sku="TEA-01")
    coupon = rewards.create_reward(**COUPON, description="On any order", stock=10)
    assert coupon.amount == Decimal("5.00") and coupon.stock == 10 and coupon.active
    assert [r.slug for r in rewards.list_rewards()] == ["five-off", "tea"]
    assert rewards.get_reward("tea").sku == "TEA-01"
    assert rewards.get_reward(coupon.id) == coupon


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({**COUPON, "cost": 0}, "cost must be a whole number"),
        ({**COUPON, "cost": -5}, "cost must be a whole number"),
        ({**COUPON, "cost": "500"}, "cost must be a whole number"),
        ({**COUPON, "cost": 10**16}, "cost must be a whole number"),
        ({**COUPON, "amount": None}, "needs an amount"),
        ({**COUPON, "amount": "0"}, "greater than 0"),
        ({**COUPON, "amount": 5.0}, "Money must be"),
        ({**COUPON, "kind": "cash"}, "kind must be one of"),
        ({**COUPON, "slug": "five off!"}, "slug must be"),
        ({**COUPON, "name": ""}, "needs a name"),
        ({**COUPON, "stock": -1}, "stock must be"),
        ({**COUPON, "colour": "red"}, "Unknown reward field"),
        ({**COUPON, "tier": "Platinum"}, "not one of LOYALTY_TIERS"),
        (
            {**COUPON, "starts_at": dt.datetime(2026, 2, 1), "ends_at": dt.datetime(2026, 1, 1)},
            "after starts_at",
        ),
        ({"slug": "pct", "name": "Off", "kind": "percentage", "cost": 10, "percent": 101}, "percent must be"),
        ({"slug": "pct", "name": "Off", "kind": "percentage", "cost": 10}, "percent must be"),
        ({"slug": "tea", "name": "Tea", "kind": "free_product", "cost": 10}, "needs a sku"),
    ],
)
def test_a_malformed_reward_is_refused_and_nothing_is_written(app_ctx, db, values, message):
    with pytest.raises(InvalidRequest, match=message):
        rewards.create_reward(**values)
    assert reward_rows(db) == []


def test_a_slug_is_unique(app_ctx, db):
    rewards.create_reward(**COUPON)
    with pytest.raises(InvalidRequest, match="already exists"):
        rewards.create_reward(**{**COUPON, "name": "Other"})
    assert len(reward_rows(db)) == 1


def test_update_changes_fields_and_checks_them(app_ctx):
    coupon = rewards.create_reward(**COUPON)
    assert rewards.update_reward("five-off", stock=3, active=False).stock == 3
    with pytest.raises(InvalidRequest, match="cost"):
        rewards.update_reward(coupon.id, cost=0)
    assert rewards.get_reward(coupon.id).cost == 500
    assert rewards.list_rewards() == []
    assert [r.slug for r in rewards.list_rewards(include_inactive=True)] == ["five-off"]
    with pytest.raises(NotFound):
        rewards.update_reward("nope", stock=1)


def test_the_catalogue_shows_rewards_inside_their_window(app_ctx, clock):
    now = clock()
    rewards.create_reward(**COUPON, starts_at=now + dt.timedelta(days=1))
    rewards.create_reward(**{**COUPON, "slug": "old"}, ends_at=now)
    rewards.create_reward(**{**COUPON, "slug": "now"}, starts_at=now, ends_at=now + dt.timedelta(seconds=1))
    assert [r.slug for r in rewards.list_rewards()] == ["now"]
    clock.advance(days=1)
    assert [r.slug for r in rewards.list_rewards()] == ["five-off"]


# -- redeeming --------------------------------------------------------------------------


def test_redeeming_spends_the_cost_takes_stock_and_issues_a_code(app_ctx, db, signals):
    member_id = rich()
    coupon = rewards.create_reward(**COUPON, stock=2, valid_days=30)
    signals.sent.clear()
    issued = rewards.redeem_reward(member_id, coupon.id, key="form-1")
    assert (issued.status, issued.points, issued.kind, issued.amount) == (
        "issued",
        500,
        "fixed_amount",
        Decimal("5.00"),
    )
    assert len(issued.code) == rewards.CODE_LENGTH and set(issued.code) <= set(rewards.CODE_ALPHABET)
    assert issued.expires_at == current_loyalty.now() + dt.timedelta(days=30)
    assert members.balances(member_id).available == 1500
    assert rewards.get_reward(coupon.id).stock == 1
    assert signals.names() == ["points-redeemed", "reward-redeemed"]
    assert signals.of("reward-redeemed") == [{"member_id": member_id, "redemption": issued}]
    assert audit.verify() == []


def test_codes_are_unique_and_unguessable(app_ctx):
    member_id = rich(100_000)
    coupon = rewards.create_reward(**{**COUPON, "cost": 1})
    codes = {rewards.redeem_reward(member_id, coupon.id, key=f"k{i}").code for i in range(200)}
    assert len(codes) == 200


def test_a_repeated_key_redeems_once(app_ctx, signals):
    member_id = rich()
    coupon = rewards.create_reward(**COUPON)
    first = rewards.redeem_reward(member_id, coupon.slug, key="form-1")
    signals.sent.clear()
    again = rewards.redeem_reward(member_id, coupon.slug, key="form-1")
    assert again.replayed and again.code == first.code and again.id == first.id
    assert members.balances(member_id).available == 1500
    assert signals.names() == []
    other = rewards.create_reward(**{**COUPON, "slug": "other"})
    with pytest.raises(IdempotencyConflict):
        rewards.redeem_reward(member_id, other.id, key="form-1")


@pytest.mark.settings(
    LOYALTY_TIERS=({"name": "Silver", "threshold": 1000}, {"name": "Gold", "threshold": 5000})
)
@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"active": False}, "inactive"),
        ({"stock": 0}, "out_of_stock"),
        ({"tier": "Gold"}, "tier_required"),
        ({"per_member_limit": 1}, "limit_reached"),
        ({"ends_at": dt.datetime(2026, 1, 1, 12)}, "ended"),
        ({"starts_at": dt.datetime(2026, 1, 1, 12, 0, 1)}, "not_started"),
    ],
)
def test_an_unavailable_reward_is_refused_and_nothing_is_written(app_ctx, db, values, reason):
    member_id = rich()  # 2000 points earned: Silver, not Gold
    coupon = rewards.create_reward(**COUPON, **values)
    if reason == "limit_reached":
        rewards.redeem_reward(member_id, coupon.id, key="first")
    before = (members.balances(member_id), reward_rows(db), redemption_rows(db))
    with pytest.raises(RewardUnavailable) as caught:
        rewards.redeem_reward(member_id, coupon.id, key="form-1")
    assert caught.value.reason == reason and caught.value.code == "reward_unavailable"
    assert (members.balances(member_id), reward_rows(db), redemption_rows(db)) == before
    assert rewards.availability(member_id, [rewards.get_reward(coupon.id)])[coupon.id].reason == reason


@pytest.mark.settings(
    LOYALTY_TIERS=({"name": "Silver", "threshold": 1000}, {"name": "Gold", "threshold": 5000})
)
def test_a_tier_reward_is_open_to_that_tier_and_above(app_ctx):
    member_id = rich(6000)
    silver = rewards.create_reward(**COUPON, tier="Silver")
    assert rewards.availability(member_id, [silver]) == {silver.id: None}
    assert rewards.redeem_reward(member_id, silver.id, key="k").status == "issued"


def test_not_enough_points_is_refused_and_nothing_is_written(app_ctx, db):
    member_id = rich(499)
    coupon = rewards.create_reward(**COUPON, stock=1)
    with pytest.raises(InsufficientPoints, match="costs 500 points; you have 499"):
        rewards.redeem_reward(member_id, coupon.id, key="k")
    assert rewards.get_reward(coupon.id).stock == 1 and redemption_rows(db) == []
    assert members.balances(member_id).available == 499


@pytest.mark.parametrize("reward", [0, -1, "", "x" * 65, None, 1.5, True, 999])
def test_an_unknown_reward_is_refused(app_ctx, db, reward):
    member_id = rich()
    with pytest.raises((InvalidRequest, NotFound)):
        rewards.redeem_reward(member_id, reward, key="k")
    assert redemption_rows(db) == []


@pytest.mark.slow
def test_twenty_members_redeeming_a_reward_with_stock_five_get_exactly_five(app, db):
    with app.app_context():
        ids = [rich(1000, f"M{i}") for i in range(20)]
        coupon = rewards.create_reward(**COUPON, stock=5)
    outcomes = run_together(app, [lambda m=m: rewards.redeem_reward(m, coupon.id, key="buy") for m in ids])
    won = [o for o in outcomes if isinstance(o, rewards.Redemption)]
    lost = [o for o in outcomes if not isinstance(o, rewards.Redemption)]
    assert len(won) == 5 and len(lost) == 15
    assert all(isinstance(o, RewardUnavailable) and o.reason == "out_of_stock" for o in lost)
    with app.app_context():
        assert rewards.get_reward(coupon.id).stock == 0
        assert sorted(members.balances(m).available for m in ids) == [500] * 5 + [1000] * 15
        assert audit.verify() == []


@pytest.mark.slow
def test_a_checkout_hold_and_a_redemption_at_once_on_a_balance_for_one_succeed_once(app, db):
    with app.app_context():
        member_id = rich(500)
        coupon = rewards.create_reward(**COUPON)
    for round_ in range(3):
        ref = f"O{round_}"
        outcomes = run_together(app, [
            lambda key=f"r{round_}": rewards.redeem_reward(member_id, coupon.id, key=key),
            lambda ref=ref: checkout.apply_points(member_id, reference=ref, points=500, payable_total=10),
        ])  # fmt: skip
        failures = [o for o in outcomes if isinstance(o, Exception)]
        assert len(failures) == 1 and isinstance(failures[0], InsufficientPoints), outcomes
        with app.app_context():
            assert members.balances(member_id).available == 0
            assert audit.verify() == []
            # Give the points back for the next round.
            if isinstance(outcomes[0], Exception):
                checkout.remove_points(member_id, reference=ref)
            else:
                rewards.cancel_redemption(member_id, outcomes[0].id)


# -- cancelling, codes ------------------------------------------------------------------


def test_cancelling_returns_the_points_and_stock_once(app_ctx, signals):
    member_id = rich()
    coupon = rewards.create_reward(**COUPON, stock=1)
    issued = rewards.redeem_reward(member_id, coupon.id, key="k")
    signals.sent.clear()
    cancelled = rewards.cancel_redemption(member_id, issued.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert members.balances(member_id).available == 2000
    assert rewards.get_reward(coupon.id).stock == 1
    assert signals.names() == ["points-reversed", "redemption-cancelled"]
    signals.sent.clear()
    assert rewards.cancel_redemption(member_id, issued.id).replayed
    assert members.balances(member_id).available == 2000 and signals.names() == []
    with pytest.raises(InvalidState, match="cancelled"):
        rewards.use_code(issued.code, order_reference="A1")
    assert audit.verify() == []


def test_another_members_redemption_is_not_found(app_ctx):
    ada, bob = rich(), rich(name="Bob")
    issued = rewards.redeem_reward(ada, rewards.create_reward(**COUPON).id, key="k")
    with pytest.raises(NotFound):
        rewards.cancel_redemption(bob, issued.id)
    with pytest.raises(NotFound):
        rewards.get_redemption(bob, issued.id)
    with pytest.raises(NotFound):
        rewards.check_code(issued.code, member=bob)
    assert rewards.member_redemptions(bob) == []
    assert [r.id for r in rewards.member_redemptions(ada)] == [issued.id]


def test_a_code_is_checked_and_used_for_one_order_once(app_ctx, signals):
    member_id = rich()
    issued = rewards.redeem_reward(member_id, rewards.create_reward(**COUPON).id, key="k")
    assert rewards.check_code(issued.code.lower()).id == issued.id
    signals.sent.clear()
    used = rewards.use_code(issued.code, order_reference="A1", member=member_id)
    assert (used.status, used.order_reference) == ("used", "A1")
    assert signals.names() == ["redemption-used"]
    assert rewards.use_code(issued.code, order_reference="A1").replayed
    with pytest.raises(InvalidState, match="used"):
        rewards.use_code(issued.code, order_reference="A2")
    with pytest.raises(InvalidState, match="used"):
        rewards.check_code(issued.code)
    with pytest.raises(InvalidState, match="cannot be cancelled"):
        rewards.cancel_redemption(member_id, issued.id)
    assert members.balances(member_id).available == 1500


@pytest.mark.parametrize("code", ["", "   ", "NOPE", "x" * 33, None, 12])
def test_an_unknown_code_is_refused(app_ctx, code):
    with pytest.raises((InvalidRequest, NotFound)):
        rewards.check_code(code)
    with pytest.raises((InvalidRequest, NotFound)):
        rewards.use_code(code, order_reference="A1")


def test_codes_expire_and_the_job_marks_them(app_ctx, clock):
    member_id = rich()
    issued = rewards.redeem_reward(member_id, rewards.create_reward(**COUPON, valid_days=7).id, key="k")
    clock.advance(days=7)
    with pytest.raises(InvalidState, match="expired"):
        rewards.check_code(issued.code)
    with pytest.raises(InvalidState, match="expired"):
        rewards.use_code(issued.code, order_reference="A1")
    assert rewards.expire_redemptions() == 1
    assert rewards.expire_redemptions() == 0
    assert rewards.get_redemption(member_id, issued.id).status == "expired"
    with pytest.raises(InvalidState, match="expired"):
        rewards.cancel_redemption(member_id, issued.id)
    assert members.balances(member_id).available == 1500


def test_the_cli_expires_codes(app, runner, clock):
    with app.app_context():
        member_id = rich()
        rewards.redeem_reward(member_id, rewards.create_reward(**COUPON, valid_days=1).id, key="k")
    result = runner.invoke(args=["loyalty", "expire-codes", "--now", "2026-01-03"])
    assert result.exit_code == 0 and result.output == "Expired 1 reward code(s).\n"
    result = runner.invoke(args=["loyalty", "expire-codes"])
    assert result.output == "Expired 0 reward code(s).\n"
