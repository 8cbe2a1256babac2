"""Paying with points at checkout: limits, holds, capture on payment, release on cancel or timeout."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest

from flask_loyalty import audit
from flask_loyalty import checkout
from flask_loyalty import jobs
from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty.adapters import OrderData
from flask_loyalty.errors import InsufficientPoints
from flask_loyalty.errors import InvalidRequest
from flask_loyalty.errors import InvalidState
from flask_loyalty.errors import NotFound
from flask_loyalty.orders import order_cancelled
from flask_loyalty.orders import order_paid
from flask_loyalty.rules import LineContext


def rich(points_: int = 5000) -> int:
    member_id = int(members.enroll(name="Ada").id)
    points.earn(member_id, points_, key="gift")
    return member_id


def held(member_id: int) -> tuple[int, int, int]:
    """The member's available, pending and reserved points."""
    b = members.balances(member_id)
    return (b.available, b.pending, b.reserved)


def order(member_id: int, reference: str = "A1", *, with_points: str = "0") -> OrderData:
    """An order of 40.00 of goods, part of it paid with points."""
    line = LineContext(sku="TEA", quantity=2, unit_price=Decimal("20.00"))
    return OrderData(reference=reference, user=member_id, currency="USD", total=Decimal("40.00"),
                     lines=(line,), paid_with_points=Decimal(with_points))  # fmt: skip


def test_the_offer_follows_minimum_step_and_share(app_ctx):
    member_id = rich(5000)
    offer = checkout.offer(member_id, payable_total="40.00")
    # Half of 40.00 at 0.01 a point is 2000 points, in steps of 100.
    assert (offer.minimum, offer.maximum, offer.step, offer.available) == (100, 2000, 100, 5000)
    assert offer.usable and offer.max_discount == Decimal("20.00")
    assert checkout.offer(member_id, payable_total="12.34").maximum == 600
    assert not checkout.offer(member_id, payable_total="1.00").usable


def test_the_offer_is_capped_by_the_balance(app_ctx):
    member_id = rich(1250)
    assert checkout.offer(member_id, payable_total="100.00").maximum == 1200


@pytest.mark.settings(LOYALTY_POINT_VALUE="0.003", LOYALTY_REDEEM_STEP=1, LOYALTY_REDEEM_MINIMUM=1,
                      LOYALTY_REDEEM_MAX_SHARE="1")  # fmt: skip
def test_the_discount_rounds_down_and_never_exceeds_the_payable_total(app_ctx):
    member_id = rich(100_000)
    assert checkout.points_value(333) == Decimal("0.99")  # 0.999 rounds down
    offer = checkout.offer(member_id, payable_total="10.00")
    assert offer.maximum == 3333 and checkout.points_value(offer.maximum) == Decimal("9.99")
    applied = checkout.apply_points(member_id, reference="A1", points=3333, payable_total="10.00")
    assert applied.discount == Decimal("9.99") <= Decimal("10.00")


@pytest.mark.settings(LOYALTY_POINT_VALUE="0.007", LOYALTY_REDEEM_STEP=7, LOYALTY_REDEEM_MINIMUM=1,
                      LOYALTY_REDEEM_MAX_SHARE="0.3")  # fmt: skip
def test_the_largest_offer_is_the_most_steps_within_the_share(app_ctx):
    member_id = rich(10**12)
    rng = random.Random(4)
    for cents in [0, 1, 99, 100, 10**12, *(rng.randrange(10**11) for _ in range(150))]:
        payable = Decimal(cents).scaleb(-2)
        offer = checkout.offer(member_id, payable_total=payable)
        assert offer.maximum % 7 == 0
        assert Decimal(offer.maximum) * Decimal("0.007") <= payable * Decimal("0.3")
        assert Decimal(offer.maximum + 7) * Decimal("0.007") > payable * Decimal("0.3")
        assert checkout.points_value(offer.maximum) <= payable


def test_applying_points_holds_them_until_the_order_is_paid(app_ctx, signals):
    member_id = rich(5000)
    signals.sent.clear()
    applied = checkout.apply_points(member_id, reference="A1", points=1000, payable_total="40.00")
    assert (applied.points, applied.discount, applied.status) == (1000, Decimal("10.00"), "held")
    assert applied.expires_at is not None
    assert held(member_id) == (4000, 0, 1000)
    assert signals.names() == ["points-reserved"]
    outcome = order_paid(order(member_id, with_points="10.00"))
    assert [p.kind for p in outcome.postings] == ["capture", "earn"]
    assert held(member_id) == (4000 + outcome.points, 0, 0)
    assert checkout.applied_points(member_id, reference="A1").status == "captured"
    with pytest.raises(InvalidState, match="paid already"):
        checkout.apply_points(member_id, reference="A1", points=500, payable_total="40.00")
    with pytest.raises(InvalidState, match="paid already"):
        checkout.remove_points(member_id, reference="A1")
    assert audit.verify() == []


def test_applying_the_same_amount_again_changes_nothing_and_another_amount_replaces_it(app_ctx, signals):
    member_id = rich(5000)
    checkout.apply_points(member_id, reference="A1", points=1000, payable_total="40.00")
    signals.sent.clear()
    assert checkout.apply_points(member_id, reference="A1", points=1000, payable_total="40.00").replayed
    assert signals.names() == []
    changed = checkout.apply_points(member_id, reference="A1", points=2000, payable_total="40.00")
    assert changed.points == 2000 and not changed.replayed
    assert signals.names() == ["points-released", "points-reserved"]
    assert held(member_id) == (3000, 0, 2000)
    order_paid(order(member_id, with_points="20.00"))
    assert members.balances(member_id).reserved == 0
    assert audit.verify() == []


def test_cancelling_the_order_releases_a_hold_and_returns_captured_points(app_ctx):
    member_id = rich(5000)
    checkout.apply_points(member_id, reference="A1", points=1000, payable_total="40.00")
    checkout.apply_points(member_id, reference="A1", points=500, payable_total="40.00")
    order_cancelled(order(member_id))
    assert held(member_id) == (5000, 0, 0)
    checkout.apply_points(member_id, reference="B1", points=1000, payable_total="40.00")
    order_paid(order(member_id, "B1", with_points="10.00"))
    order_cancelled(order(member_id, "B1", with_points="10.00"))
    assert held(member_id) == (5000, 0, 0)
    assert audit.verify() == []


def test_removing_points_releases_the_hold(app_ctx):
    member_id = rich(5000)
    checkout.apply_points(member_id, reference="A1", points=1000, payable_total="40.00")
    removed = checkout.remove_points(member_id, reference="A1")
    assert removed.status == "released"
    assert checkout.applied_points(member_id, reference="A1") is None
    assert held(member_id) == (5000, 0, 0)
    with pytest.raises(NotFound):
        checkout.remove_points(member_id, reference="A1")
    assert checkout.apply_points(member_id, reference="A1", points=1000, payable_total="40.00").points == 1000


@pytest.mark.settings(LOYALTY_RESERVATION_TTL=600)
def test_an_unpaid_hold_is_released_after_its_ttl(app_ctx, clock):
    member_id = rich(5000)
    applied = checkout.apply_points(member_id, reference="A1", points=1000, payable_total="40.00")
    assert applied.expires_at == clock() + dt.timedelta(seconds=600)
    clock.advance(seconds=599)
    assert jobs.release_reservations() == 0
    clock.advance(seconds=1)
    assert jobs.release_reservations() == 1
    assert held(member_id) == (5000, 0, 0)
    assert checkout.applied_points(member_id, reference="A1") is None


@pytest.mark.parametrize(
    ("points_", "payable", "error", "message"),
    [
        (0, "40.00", InvalidRequest, "positive"),
        (-100, "40.00", InvalidRequest, "positive"),
        ("100", "40.00", InvalidRequest, "whole number"),
        (1.5, "40.00", InvalidRequest, "whole number"),
        (10**16, "40.00", InvalidRequest, "out of range"),
        (50, "40.00", InvalidRequest, "at least 100"),
        (150, "40.00", InvalidRequest, "steps of 100"),
        (2100, "40.00", InvalidRequest, "At most 2000"),
        (5100, "400.00", InsufficientPoints, "You have 5000"),
        (100, "-1.00", InvalidRequest, "negative"),
        (100, "abc", InvalidRequest, "not an amount"),
        (100, 40.0, InvalidRequest, "Money must be"),
        (100, "1.00", InvalidRequest, "cannot pay this order"),
    ],
)
def test_bad_points_or_totals_are_refused_and_nothing_is_held(app_ctx, points_, payable, error, message):
    member_id = rich(5000)
    with pytest.raises(error, match=message):
        checkout.apply_points(member_id, reference="A1", points=points_, payable_total=payable)
    assert held(member_id) == (5000, 0, 0)


def test_more_points_than_the_balance_are_refused(app_ctx):
    member_id = rich(5000)
    checkout.apply_points(member_id, reference="A0", points=2000, payable_total="40.00")
    checkout.apply_points(member_id, reference="A1", points=2000, payable_total="40.00")
    with pytest.raises(InsufficientPoints, match="You have 1000 points to spend; 2000"):
        checkout.apply_points(member_id, reference="A2", points=2000, payable_total="40.00")
    with pytest.raises(InvalidRequest, match="At most 500"):
        checkout.apply_points(member_id, reference="A2", points=600, payable_total="10.00")
    assert held(member_id) == (1000, 0, 4000)


@pytest.mark.parametrize("reference", ["", "   ", None, 12, "x" * 151])
def test_a_bad_reference_is_refused(app_ctx, reference):
    member_id = rich(5000)
    with pytest.raises(InvalidRequest):
        checkout.apply_points(member_id, reference=reference, points=100, payable_total="40.00")


def test_insufficient_points_when_the_balance_is_spent(app_ctx):
    member_id = rich(100)
    points.redeem(member_id, 100, key="spent")
    with pytest.raises(InsufficientPoints):
        checkout.apply_points(member_id, reference="A1", points=100, payable_total="40.00")
