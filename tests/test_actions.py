"""Action points: signup, birthdays, reviews and custom actions, with caps and exactly-once keys."""

from __future__ import annotations

import datetime as dt

import pytest

from flask_loyalty import actions
from flask_loyalty import audit
from flask_loyalty import members
from flask_loyalty.errors import ActionCapReached
from flask_loyalty.errors import InvalidRequest
from flask_loyalty.errors import InvalidState
from flask_loyalty.proxies import current_loyalty

from .conftest import run_together

ACTIONS = {
    "signup": {"points": 100},
    "birthday": {"points": 200},
    "review": {"points": 20, "cap": 2, "per": "week"},
}


def entries(member_id: int) -> list[tuple[str, int, str]]:
    from flask_loyalty import history

    return [(e.kind, e.points, e.source_key) for e in reversed(history.history(member_id, limit=500).entries)]


@pytest.mark.settings(LOYALTY_ACTIONS=ACTIONS)
def test_a_new_member_gets_the_signup_bonus_once(app_ctx, signals):
    member = members.enroll(name="Ada")
    assert members.balances(member.id).available == 100
    assert entries(member.id) == [("earn", 100, "action:signup:once")]
    assert "action-awarded" in signals.names()
    again = actions.award(member.id, "signup", key="once")
    assert again.replayed and again.posting is not None and again.posting.points == 100
    assert members.balances(member.id).available == 100


def test_without_a_signup_action_enrolment_earns_nothing(app_ctx):
    assert members.balances(members.enroll(name="Ada").id).available == 0


@pytest.mark.settings(LOYALTY_ACTIONS=ACTIONS)
def test_reviews_earn_for_verified_purchases_up_to_the_weekly_cap(app_ctx, clock, signals):
    member_id = int(members.enroll(name="Ada").id)
    actions.award_review(member_id, 1, verified_purchase=True)
    assert actions.award_review(member_id, 1, verified_purchase=True).replayed
    actions.award_review(member_id, 2, verified_purchase=True)
    before = (members.balances(member_id), entries(member_id))
    signals.sent.clear()
    with pytest.raises(ActionCapReached, match="at most 2 time"):
        actions.award_review(member_id, 3, verified_purchase=True)
    assert (members.balances(member_id), entries(member_id)) == before and signals.names() == []
    with pytest.raises(InvalidState, match="verified purchases"):
        actions.award_review(member_id, 4, verified_purchase=False)
    # 2026-01-01 is a Thursday: the next ISO week starts on Monday the 5th.
    clock.advance(days=4)
    actions.award_review(member_id, 3, verified_purchase=True)
    assert members.balances(member_id).available == 100 + 3 * 20
    assert audit.verify() == []


def test_registered_custom_actions_have_caps_per_day(app, app_ctx, clock):
    current_loyalty.extension.register_action("newsletter", points=5, cap=1, per="day")
    try:
        member_id = int(members.enroll(name="Ada").id)
        actions.award(member_id, "newsletter", key="a")
        with pytest.raises(ActionCapReached):
            actions.award(member_id, "newsletter", key="b")
        clock.advance(days=1)
        actions.award(member_id, "newsletter", key="b")
        assert members.balances(member_id).available == 10
    finally:
        current_loyalty.extension.actions.clear()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": 0}, "points must be"),
        ({"points": -5}, "points must be"),
        ({"points": "5"}, "points must be"),
        ({"points": 5, "cap": 1}, "both cap and per"),
        ({"points": 5, "cap": 1, "per": "fortnight"}, "per must be one of"),
        ({"points": 5, "cap": 0, "per": "day"}, "cap must be"),
    ],
)
def test_malformed_actions_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        actions.Action("x", **kwargs)


@pytest.mark.settings(LOYALTY_ACTIONS=ACTIONS)
@pytest.mark.parametrize(
    ("action", "key"), [("nope", "k"), ("review", ""), ("review", "x" * 121), ("review", 5)]
)
def test_unknown_actions_and_bad_keys_are_refused(app_ctx, action, key):
    member_id = int(members.enroll(name="Ada").id)
    with pytest.raises(InvalidRequest):
        actions.award(member_id, action, key=key)
    assert members.balances(member_id).available == 100


@pytest.mark.settings(LOYALTY_ACTIONS=ACTIONS)
def test_a_29_february_birthday_is_celebrated_on_28_february_in_other_years(app_ctx):
    leapling = int(members.enroll(name="Leap", birthday=dt.date(2004, 2, 29)).id)
    march = int(members.enroll(name="March", birthday=dt.date(1990, 3, 1)).id)
    assert actions.award_birthdays(now=dt.datetime(2027, 2, 27, 6)) == 0
    assert actions.award_birthdays(now=dt.datetime(2027, 2, 28, 6)) == 1
    assert actions.award_birthdays(now=dt.datetime(2027, 2, 28, 23)) == 0  # once a year
    assert actions.award_birthdays(now=dt.datetime(2027, 3, 1, 6)) == 1  # March's, not Leap's
    assert [members.balances(m).available for m in (leapling, march)] == [300, 300]
    # A leap year: the 29th itself, and nothing on the 28th.
    assert actions.award_birthdays(now=dt.datetime(2028, 2, 28, 6)) == 0
    assert actions.award_birthdays(now=dt.datetime(2028, 2, 29, 6)) == 1
    assert members.balances(leapling).available == 500
    assert audit.verify() == []


@pytest.mark.settings(LOYALTY_ACTIONS=ACTIONS)
def test_the_birthday_job_from_two_threads_at_once_awards_each_member_once(app):
    with app.app_context():
        ids = [int(members.enroll(name=f"M{i}", birthday=dt.date(1990, 6, 1)).id) for i in range(10)]
    when = dt.datetime(2026, 6, 1, 8)
    counts = run_together(app, [lambda: actions.award_birthdays(now=when, chunk_size=3)] * 2)
    assert sum(counts) == 10, counts
    with app.app_context():
        assert {members.balances(m).available for m in ids} == {300}
        assert audit.verify() == []


def test_no_birthday_action_awards_nothing(app_ctx):
    members.enroll(name="Ada", birthday=dt.date(1990, 1, 1))
    assert actions.award_birthdays() == 0


@pytest.mark.parametrize("birthday", ["1990-01-01", dt.datetime(1990, 1, 1), 19900101])
def test_a_birthday_must_be_a_date(app_ctx, birthday):
    with pytest.raises(InvalidRequest, match="birthday must be a date"):
        members.enroll(name="Ada", birthday=birthday)


@pytest.mark.settings(LOYALTY_ACTIONS=ACTIONS)
def test_the_birthdays_command(app, runner):
    with app.app_context():
        members.enroll(name="Ada", birthday=dt.date(1990, 1, 1))
    result = runner.invoke(args=["loyalty", "birthdays", "--now", "2026-01-01"])
    assert result.exit_code == 0 and result.output == "Awarded the birthday bonus to 1 member(s).\n"
