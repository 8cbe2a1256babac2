"""Referrals: codes, self-referral guards, qualification, caps and refunds."""

from __future__ import annotations

from decimal import Decimal

import pytest

from flask_loyalty import audit
from flask_loyalty import members
from flask_loyalty import referrals
from flask_loyalty.adapters import OrderData
from flask_loyalty.errors import InvalidRequest
from flask_loyalty.errors import NotFound
from flask_loyalty.errors import ReferralRefused
from flask_loyalty.orders import order_completed
from flask_loyalty.orders import order_paid
from flask_loyalty.orders import order_refunded
from flask_loyalty.rules import LineContext

from .conftest import run_together

BONUSES = {"LOYALTY_REFERRAL_REFEREE_BONUS": 500, "LOYALTY_REFERRAL_REFERRER_BONUS": 1000,
           "LOYALTY_REFERRAL_MINIMUM_ORDER": "25.00", "LOYALTY_PENDING_DAYS": 14}  # fmt: skip


def order(member_id: int, reference: str, total: str = "40.00") -> OrderData:
    line = LineContext(sku="TEA", quantity=1, unit_price=Decimal(total))
    return OrderData(reference=reference, user=member_id, currency="USD", total=Decimal(total), lines=(line,))


def bonus_entries(member_id: int) -> list[tuple[int, str]]:
    from flask_loyalty import history

    page = history.history(member_id, limit=500)
    return [(e.points, e.source_key) for e in reversed(page.entries) if e.source_key.startswith("referral:")]


def pair(referrer_email: str = "ada@example.com", referee_email: str = "bob@example.com") -> tuple[int, int]:
    ada = int(members.enroll(name="Ada", email=referrer_email).id)
    bob = int(members.enroll(name="Bob", email=referee_email).id)
    return ada, bob


def befriend(code: str, name: str) -> int:
    """A new member referred with ``code`` whose first order is paid and completed."""
    friend = int(members.enroll(name=name, email=f"{name.lower()}@example.com").id)
    referrals.refer(friend, code)
    order_paid(order(friend, f"order-{name}"))
    order_completed(order(friend, f"order-{name}"))
    return friend


def referrer_with_friends(count: int) -> tuple[int, str, list[int]]:
    """Ada, her code and ``count`` friends she referred, each with a completed order."""
    ada = int(members.enroll(name="Ada", email="ada@example.com").id)
    code = referrals.referral_code(ada)
    return ada, code, [befriend(code, f"F{i}") for i in range(count)]


@pytest.mark.settings(**BONUSES)
def test_the_full_referral_path_earns_both_bonuses_once(app_ctx, clock, signals):
    ada, bob = pair()
    code = referrals.referral_code(ada)
    assert len(code) == 8 and referrals.referral_code(ada) == code
    referral = referrals.refer(bob, code.lower())
    assert (referral.status, referral.referrer_id, referral.referee_name) == ("pending", ada, "Bob")
    order_paid(order(bob, "B-small", "10.00"))  # below the minimum: not the qualifying order
    order_paid(order(bob, "B1"))
    assert referrals.settle_referrals() == {"rewarded": 0, "capped": 0, "rejected": 0}
    clock.advance(days=14)
    signals.sent.clear()
    assert referrals.settle_referrals() == {"rewarded": 1, "capped": 0, "rejected": 0}
    assert referrals.settle_referrals() == {"rewarded": 0, "capped": 0, "rejected": 0}
    decided = referrals.referral_of(bob)
    assert decided is not None and (decided.status, decided.order_reference) == ("rewarded", "B1")
    assert bonus_entries(bob) == [(500, f"referral:{referral.id}:referee")]
    assert bonus_entries(ada) == [(1000, f"referral:{referral.id}:referrer")]
    assert "referral-decided" in signals.names()
    assert [r.id for r in referrals.referrals_by(ada)] == [referral.id]
    assert [r.id for r in referrals.list_referrals()] == [referral.id]
    assert audit.verify() == []


@pytest.mark.settings(**BONUSES)
def test_a_completed_order_qualifies_before_the_window_ends(app_ctx):
    ada, bob = pair()
    referrals.refer(bob, referrals.referral_code(ada))
    order_paid(order(bob, "B1"))
    order_completed(order(bob, "B1"))
    assert referrals.settle_referrals()["rewarded"] == 1


@pytest.mark.settings(**BONUSES)
@pytest.mark.parametrize(
    ("referrer_email", "referee_email"),
    [
        ("Ada.Lovelace@GMAIL.com", "adalovelace@gmail.com"),
        ("ada.lovelace@gmail.com", "adalovelace@gmail.com"),
        ("ada.lovelace@gmail.com", "Ada.Love.Lace+shop@googlemail.com"),
        ("ada@outlook.com", "ada+referral@outlook.com"),
    ],
)
def test_the_same_mailbox_cannot_refer_itself(app_ctx, db, referrer_email, referee_email):
    ada, bob = pair(referrer_email, referee_email)
    with pytest.raises(ReferralRefused, match="another address") as caught:
        referrals.refer(bob, referrals.referral_code(ada))
    assert caught.value.reason == "same_email" and referrals.referral_of(bob) is None


def test_the_same_email_in_another_case_is_one_member(app_ctx):
    pair()
    with pytest.raises(InvalidRequest, match="already exists"):
        members.enroll(name="Ada again", email="ADA@Example.COM")
    assert referrals.canonical_email("ADA@Example.COM") == referrals.canonical_email("ada@example.com")


def test_dots_count_where_the_provider_keeps_them(app_ctx):
    ada, bob = pair("a.da@example.com", "ada@example.com")
    assert referrals.refer(bob, referrals.referral_code(ada)).status == "pending"


def test_a_member_cannot_use_their_own_code(app_ctx):
    ada, _ = pair()
    with pytest.raises(ReferralRefused) as caught:
        referrals.refer(ada, referrals.referral_code(ada))
    assert caught.value.reason == "self_referral"


def test_the_same_payment_method_is_refused_at_signup_and_rejected_later(app_ctx, clock):
    ada, bob = pair()
    referrals.note_payment(ada, "card:4242")
    with pytest.raises(ReferralRefused) as caught:
        referrals.refer(bob, referrals.referral_code(ada), fingerprint="card:4242")
    assert caught.value.reason == "same_payment" and referrals.referral_of(bob) is None
    carl = int(members.enroll(name="Carl", email="carl@example.com").id)
    referrals.refer(carl, referrals.referral_code(ada), fingerprint="card:1111")
    order_paid(order(carl, "C1"))
    referrals.note_payment(carl, "card:4242")  # pays with Ada's card after all
    clock.advance(days=1)
    order_completed(order(carl, "C1"))
    assert referrals.settle_referrals() == {"rewarded": 0, "capped": 0, "rejected": 1}
    decided = referrals.referral_of(carl)
    assert decided is not None and (decided.status, decided.reason) == ("rejected", "same_payment")
    assert bonus_entries(ada) == bonus_entries(carl) == []


def test_a_member_is_referred_once(app_ctx):
    ada, bob = pair()
    carl = int(members.enroll(name="Carl", email="carl@example.com").id)
    referrals.refer(bob, referrals.referral_code(ada))
    with pytest.raises(ReferralRefused) as caught:
        referrals.refer(bob, referrals.referral_code(carl))
    assert caught.value.reason == "already_referred"


@pytest.mark.parametrize("code", ["", "NOPE1234", "x" * 17, None, 12])
def test_unknown_codes_are_refused(app_ctx, code):
    _, bob = pair()
    with pytest.raises((InvalidRequest, NotFound)):
        referrals.refer(bob, code)


@pytest.mark.settings(**BONUSES)
@pytest.mark.parametrize("undo", ["refund", "cancel"])
def test_a_qualifying_order_refunded_in_the_window_earns_no_bonus(app_ctx, clock, undo):
    ada, bob = pair()
    referrals.refer(bob, referrals.referral_code(ada))
    order_paid(order(bob, "B1"))
    clock.advance(days=3)
    if undo == "refund":
        order_refunded(order(bob, "B1"), key="R1", amount="5.00")
    else:
        from flask_loyalty.orders import order_cancelled

        order_cancelled(order(bob, "B1"))
    clock.advance(days=14)
    assert referrals.settle_referrals()["rejected"] == 1
    decided = referrals.referral_of(bob)
    assert decided is not None and (decided.status, decided.reason) == ("rejected", "order_refunded")
    assert bonus_entries(ada) == bonus_entries(bob) == []


@pytest.mark.settings(**BONUSES, LOYALTY_REFERRAL_CAP=2, LOYALTY_REFERRAL_CAP_PERIOD="month")
def test_the_referrer_bonus_is_capped_per_period(app_ctx, clock):
    ada, code, friends = referrer_with_friends(4)
    assert referrals.settle_referrals() == {"rewarded": 2, "capped": 2, "rejected": 0}
    assert [p for p, _ in bonus_entries(ada)] == [1000, 1000]
    assert all(bonus_entries(f) for f in friends)  # referees still get theirs
    # A new month, a new allowance.
    clock.advance(days=31)
    befriend(code, "Late")
    assert referrals.settle_referrals()["rewarded"] == 1
    assert audit.verify() == []


@pytest.mark.settings(**BONUSES)
def test_settling_from_two_threads_at_once_pays_each_bonus_once(app):
    with app.app_context():
        ada, _, _ = referrer_with_friends(6)
    outcomes = run_together(app, [lambda: referrals.settle_referrals(chunk_size=2)] * 2)
    assert sum(o["rewarded"] for o in outcomes) == 6, outcomes
    with app.app_context():
        assert members.balances(ada).available == 6000
        assert audit.verify() == []


def test_the_referrals_command(app, runner):
    result = runner.invoke(args=["loyalty", "referrals"])
    assert result.exit_code == 0
    assert result.output == "Referrals rewarded: 0, capped: 0, rejected: 0.\n"
