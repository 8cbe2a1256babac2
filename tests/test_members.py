"""Enrolling, finding and closing members."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from flask_loyalty import audit
from flask_loyalty import InvalidRequest
from flask_loyalty import MemberClosed
from flask_loyalty import MemberNotFound
from flask_loyalty import members
from flask_loyalty import points

from .conftest import START
from .test_points import bal
from .test_points import count


def test_enroll(app, db, app_ctx, signals):
    member = members.enroll(name="Li Wei", email="  Li.Wei@Example.COM ", phone="+44 20 7946 0000")
    assert member.id > 0
    assert (member.name, member.email, member.phone, member.user_id) == (
        "Li Wei", "li.wei@example.com", "+44 20 7946 0000", None
    )  # fmt: skip
    assert (member.status, member.is_active, member.created_at, member.closed_at) == (
        "active",
        True,
        START,
        None,
    )
    assert members.balances(member) == bal()
    assert signals.sent == [("member-enrolled", app, {"member": member})]
    assert count(db, "member") == 1


def test_enroll_with_defaults(db, app_ctx):
    member = members.enroll()
    assert (member.name, member.email, member.phone, member.password_hash) == ("", None, None, None)
    assert members.enroll(email="   ").email is None  # blank is no email
    assert count(db, "member") == 2


def test_enroll_for_a_host_user(db, app_ctx):
    member = members.enroll(name="Ana", user_id=42)
    assert member.user_id == "42"
    assert members.get(member.id) is member


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (
            {"email": "li@example.com"},
            {"email": "LI@example.com "},
            "A member with email 'li@example.com' already",
        ),
        ({"user_id": 7}, {"user_id": "7"}, "A member with user id '7' already exists"),
        (
            {"email": "li@example.com", "user_id": 7},
            {"email": "other@example.com", "user_id": 7},
            "A member with email 'other@example.com' or user id '7' already exists",
        ),
    ],
)
def test_duplicate_email_or_user_is_refused_and_nothing_is_written(
    db, app_ctx, signals, first, second, message
):
    kept = members.enroll(name="First", **first)
    signals.sent.clear()
    with pytest.raises(InvalidRequest, match=message) as info:
        members.enroll(name="Second", password="secret", **second)
    assert info.value.code == "invalid_request"
    assert count(db, "member") == 1
    assert signals.sent == []
    # The session is usable again, and the first member is intact.
    assert members.get(kept.id).name == "First"
    assert members.enroll(name="Third", email="third@example.com").id > kept.id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"email": "not-an-address"}, "'not-an-address' is not an email address"),
        ({"email": 12}, "email must be a string of at most 254 characters"),
        ({"email": "a@" + "b" * 253}, "email must be a string of at most 254 characters"),
        ({"name": "n" * 121}, "name must be a string of at most 120 characters"),
        ({"name": None, "email": "x@example.com", "phone": 5}, "phone must be a string of at most 40"),
    ],
)
def test_malformed_enrolment_is_refused(db, app_ctx, signals, kwargs, message):
    with pytest.raises(InvalidRequest, match=message):
        members.enroll(**kwargs)
    assert count(db, "member") == 0
    assert signals.sent == []


def test_password_set_and_check(db, app_ctx):
    member = members.enroll(name="Li", email="li@example.com", password="correct horse")
    assert member.password_hash and "correct horse" not in member.password_hash
    assert member.check_password("correct horse") is True
    assert member.check_password("Correct horse") is False
    assert member.check_password("") is False
    member.set_password("battery staple")
    assert member.check_password("battery staple") is True
    assert member.check_password("correct horse") is False
    assert members.enroll(name="No password").check_password("") is False


def test_member_is_a_login_user(db, app_ctx):
    member = members.enroll(name="Li")
    assert member.get_id() == str(member.id)
    assert member.is_authenticated is True
    assert member.is_anonymous is False


def test_get(db, app_ctx):
    member = members.enroll(name="Li")
    assert members.get(member) is member
    assert members.get(member.id) is member
    with pytest.raises(MemberNotFound, match=f"No member has id {member.id + 1}"):
        members.get(member.id + 1)
    for bad in (0, -3, "1", None, True):
        with pytest.raises(InvalidRequest, match="is not a member or a member id"):
            members.get(bad)


def test_balances_are_read_from_the_cache(db, member):
    points.earn(member, 100, key="o")
    points.earn(member, 40, key="p", available_from=START + dt.timedelta(days=3))
    points.reserve(member, 30, key="c")
    assert members.balances(member) == bal(70, 40, 30, 140)
    assert members.balances(member.id) == bal(70, 40, 30, 140)
    with pytest.raises(MemberNotFound):
        members.balances(10**9)


def test_close(db, member, clock):
    points.earn(member, 100, key="o")
    clock.advance(days=1)
    assert members.close(member) is None
    closed = members.get(member.id)
    assert (closed.status, closed.is_active, closed.closed_at) == (
        "closed",
        False,
        START + dt.timedelta(days=1),
    )
    # The ledger stays and can still be read and verified.
    assert members.balances(member) == bal(100, lifetime=100)
    assert audit.verify() == []
    entries = count(db, "ledger_entry")
    with pytest.raises(MemberClosed, match=f"Member {member.id} is closed"):
        points.earn(member, 10, key="o2")
    assert count(db, "ledger_entry") == entries
    # Closing again changes nothing.
    clock.advance(days=1)
    members.close(member.id)
    assert members.get(member.id).closed_at == START + dt.timedelta(days=1)


def test_close_unknown_or_malformed_member(db, app_ctx):
    with pytest.raises(MemberNotFound, match="No member has id 123456"):
        members.close(123456)
    with pytest.raises(InvalidRequest, match="is not a member or a member id"):
        members.close("123456")


def test_concurrent_enrolments_with_one_email_make_one_member(app, db):
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def enroll(i: int) -> None:
        with app.app_context():
            barrier.wait()
            try:
                members.enroll(name=f"try {i}", email="same@example.com")
                outcomes.append("ok")
            except InvalidRequest as error:
                outcomes.append(error.message)

    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["A member with email 'same@example.com' already exists."] * 7 + ["ok"]
    with app.app_context():
        assert count(db, "member") == 1
