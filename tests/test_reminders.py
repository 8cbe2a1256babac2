"""Expiry reminders: once per lot and window, however often and from however many threads."""

from __future__ import annotations

import datetime as dt
import typing as t

import pytest

from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty import reminders
from flask_loyalty.proxies import current_loyalty

from .conftest import run_together

START = dt.datetime(2026, 1, 1, 12)


@pytest.fixture
def outbox(app: t.Any) -> t.Iterator[list[dict[str, t.Any]]]:
    """What the registered reminder hook was called with."""
    sent: list[dict[str, t.Any]] = []
    extension = app.extensions["loyalty"].extension
    extension.reminder_sender(lambda **kw: sent.append(kw))
    yield sent
    extension.reminder_sender_hook = None


def earn(member_id: int, amount: int, days: int, key: str) -> None:
    points.earn(member_id, amount, key=key, expires_at=START + dt.timedelta(days=days))


def test_each_lot_is_reminded_once_per_window(app_ctx, clock, outbox, signals):
    ada = int(members.enroll(name="Ada").id)
    earn(ada, 100, 20, "a")  # inside 30 days
    earn(ada, 50, 25, "b")  # inside 30 days
    earn(ada, 70, 5, "c")  # inside 7 days already: only the 7-day reminder
    earn(ada, 10, 90, "d")  # not yet
    first = reminders.remind()
    assert sorted((r.window_days, r.points) for r in first) == [(7, 70), (30, 150)]
    assert sorted((m["window_days"], m["points"]) for m in outbox) == [(7, 70), (30, 150)]
    assert len(signals.of("points-expiring")) == 2
    assert reminders.remind() == []
    clock.advance(days=19)  # a and b are now within 7 days
    assert sorted((r.window_days, r.points) for r in reminders.remind()) == [(7, 150)]
    assert reminders.remind() == []
    assert len(outbox) == 3
    assert len(reminders.reminders_of(ada)) == 5  # a, b and c at 7 days; a and b at 30


def test_spent_and_expired_points_are_not_reminded(app_ctx, clock, outbox):
    ada = int(members.enroll(name="Ada").id)
    earn(ada, 100, 20, "a")
    points.redeem(ada, 100, key="spent")
    earn(ada, 40, 3, "b")
    clock.advance(days=4)
    assert reminders.remind() == []


@pytest.mark.settings(LOYALTY_REMINDER_WINDOWS=(14,))
def test_the_windows_come_from_the_configuration(app_ctx, outbox):
    ada = int(members.enroll(name="Ada").id)
    earn(ada, 100, 20, "a")
    earn(ada, 30, 10, "b")
    assert [(r.window_days, r.points) for r in reminders.remind()] == [(14, 30)]


def test_a_failing_hook_does_not_resend(app_ctx, caplog):
    ada = int(members.enroll(name="Ada").id)
    earn(ada, 100, 20, "a")
    extension = current_loyalty.extension
    extension.reminder_sender(lambda **kw: 1 / 0)
    try:
        assert len(reminders.remind()) == 1
    finally:
        extension.reminder_sender_hook = None
    assert "reminder hook failed" in caplog.text
    assert reminders.remind() == []


def test_remind_twice_and_from_two_threads_at_once_sends_each_reminder_once(app, outbox):
    with app.app_context():
        ids = [int(members.enroll(name=f"M{i}").id) for i in range(8)]
        for i, member_id in enumerate(ids):
            earn(member_id, 100 + i, 10 + i, "a")
            earn(member_id, 10, 3, "b")
    results = run_together(app, [lambda: reminders.remind(chunk_size=3)] * 2)
    sent = [r for result in results for r in result]
    assert len(sent) == 16 and len(outbox) == 16
    assert sorted((r.member_id, r.window_days) for r in sent) == sorted(
        (member_id, window) for member_id in ids for window in (7, 30)
    )
    with app.app_context():
        assert reminders.remind() == []


def test_the_remind_command(app, runner, clock):
    with app.app_context():
        ada = int(members.enroll(name="Ada").id)
        earn(ada, 100, 20, "a")
    result = runner.invoke(args=["loyalty", "remind"])
    assert result.exit_code == 0
    assert result.output == (
        f"member {ada}: 100 points expire from 2026-01-21 (30-day reminder)\nSent 1 reminder(s).\n"
    )
    assert runner.invoke(args=["loyalty", "remind"]).output == "Sent 0 reminder(s).\n"


def test_the_expiry_schedule_shows_what_expires_when(app_ctx, clock):
    from flask_loyalty import history

    ada = int(members.enroll(name="Ada").id)
    earn(ada, 100, 20, "a")
    earn(ada, 30, 20, "b")
    earn(ada, 50, 5, "c")
    points.earn(ada, 999, key="forever")
    points.redeem(ada, 40, key="spent")  # from the soonest lot first
    day = dt.timedelta(days=1)
    assert history.expiry_schedule(ada) == [(START + 5 * day, 10), (START + 20 * day, 130)]
    clock.advance(days=6)
    assert history.expiry_schedule(ada) == [(START + 20 * day, 130)]
    assert history.expiring_soon(ada, days=30).points == 130
