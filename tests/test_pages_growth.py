"""The dashboard's expiry schedule and referral section, and what the activity table shows per kind."""

# ruff: noqa: F811 -- test arguments are the fixtures imported from pages_support

from __future__ import annotations

import datetime as dt
import typing as t
from decimal import Decimal

import pytest

from flask_loyalty import jobs
from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty import referrals
from flask_loyalty.adapters import OrderData
from flask_loyalty.orders import order_completed
from flask_loyalty.orders import order_paid
from flask_loyalty.orders import order_refunded
from flask_loyalty.referral_panel import REFERRALS_SHOWN
from flask_loyalty.referral_panel import share_url
from flask_loyalty.rules import LineContext

from .conftest import START
from .pages_support import Pages
from .pages_support import pages  # noqa: F401  (a fixture)
from .pages_support import statements

BONUSES = {"LOYALTY_REFERRAL_REFEREE_BONUS": 500, "LOYALTY_REFERRAL_REFERRER_BONUS": 1000,
           "LOYALTY_REFERRAL_MINIMUM_ORDER": "25.00", "LOYALTY_PENDING_DAYS": 14,
           "LOYALTY_REFERRAL_CAP": 1, "LOYALTY_REFERRAL_SIGNUP_URL": "join"}  # fmt: skip


def order(member_id: int, reference: str, total: str = "40.00") -> OrderData:
    line = LineContext(sku="TEA", quantity=1, unit_price=Decimal(total))
    return OrderData(reference=reference, user=member_id, currency="USD", total=Decimal(total), lines=(line,))


def friend(code: str, name: str) -> int:
    """A member who signed up with ``code``."""
    found = int(members.enroll(name=name, email=f"{name.lower()}@example.com").id)
    referrals.refer(found, code)
    return found


def add_signup_page(pages: Pages) -> None:
    pages.app.add_url_rule("/join", "join", lambda: "signup page")


def test_a_new_member_sees_an_empty_schedule_and_their_code(pages: Pages, app_ctx: None) -> None:
    member = members.enroll(name="New", email="new@example.com")
    body = pages.client(member).get("/loyalty/").get_data(as_text=True)
    code = referrals.referral_code(member)
    assert "Invite friends" in body and code in body
    assert "No friends have joined with your code yet." in body
    assert "Share your link with friends who would like to join." in body  # no bonuses configured
    assert "When your points expire" not in body  # nothing expires
    assert 'id="loyalty-share-link"' not in body  # LOYALTY_REFERRAL_SIGNUP_URL is not set
    assert "Your own referral" not in body


@pytest.mark.settings(**BONUSES)
def test_referrals_in_every_state_show_on_both_dashboards(pages: Pages, app_ctx: None, clock: t.Any) -> None:
    add_signup_page(pages)
    ada = int(members.enroll(name="Ada", email="ada@example.com").id)
    code = referrals.referral_code(ada)
    first, second, refunded, waiting = (friend(code, n) for n in ("Bea", "Cai", "Dev", "Eli"))
    for member, reference in ((first, "O1"), (second, "O2"), (refunded, "O3")):
        order_paid(order(member, reference))
    order_completed(order(first, "O1"))
    assert referrals.settle_referrals()["rewarded"] == 1
    order_completed(order(second, "O2"))
    order_refunded(order(refunded, "O3"), key="R3", amount="5.00")
    clock.advance(days=15)
    assert referrals.settle_referrals() == {"rewarded": 0, "capped": 1, "rejected": 1}

    body = pages.client(ada).get("/loyalty/").get_data(as_text=True)
    assert "When a friend who signs up with your link pays a first order of at least $25.00" in body
    assert "they earn 500 points and you earn 1,000 points." in body
    assert f'value="http://localhost/join?ref={code}"' in body
    rows = body[body.index("Friends you referred") :]
    for name, status, note in (
        ("Bea", "Rewarded", "You both earned your bonus."),
        ("Cai", "Limit reached", "you had reached the limit of 1 rewarded referral a month."),
        ("Dev", "Not rewarded", "the first order was refunded or cancelled."),
        ("Eli", "Pending", "Waiting for their first order to be paid and settled."),
    ):
        assert name in rows and status in rows and note in rows, name
    assert rows.index("Eli") < rows.index("Bea")  # newest first
    assert "Your own referral" not in body

    for member, status, note in (
        (first, "Rewarded", "You earned your welcome bonus."),
        (second, "Limit reached", "You earned your welcome bonus."),
        (refunded, "Not rewarded", "the first order was refunded or cancelled."),
        (waiting, "Pending", "Your welcome bonus comes once your first order is paid and settled."),
    ):
        own = pages.client(member).get("/loyalty/").get_data(as_text=True)
        section = own[own.index("Your own referral") : own.index("Friends you referred")]
        assert status in section and note in section, member
        assert "Ada" not in section


@pytest.mark.settings(LOYALTY_EXPIRING_SOON_DAYS=30)
def test_the_schedule_lists_what_expires_when(pages: Pages, app_ctx: None) -> None:
    member = int(members.enroll(name="Ada", email="ada@example.com").id)
    points.earn(member, 300, key="a", expires_at=START + dt.timedelta(days=10))
    points.earn(member, 200, key="b", expires_at=START + dt.timedelta(days=10, hours=3))  # the same day
    points.earn(member, 1250, key="c", expires_at=START + dt.timedelta(days=200))
    points.earn(member, 999, key="d")  # never expires
    body = pages.client(member).get("/loyalty/").get_data(as_text=True)
    assert "500 points expire by" in body  # the figure for the next 30 days
    table = body[body.index("When your points expire") :]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 3  # the header and two dates
    assert "Jan 11, 2026" in table and "500" in table
    assert "Jul 20, 2026" in table and "1,250" in table
    assert "999" not in table


@pytest.mark.settings(**BONUSES)
def test_dashboard_statements_do_not_grow_with_referrals_or_expiry_dates(pages: Pages, app_ctx: None) -> None:
    add_signup_page(pages)
    counts = []
    for name, size in (("Few", 1), ("Many", 30)):
        member = int(members.enroll(name=name, email=f"{name.lower()}@example.com").id)
        code = referrals.referral_code(member)
        for i in range(size):
            points.earn(member, 10, key=f"lot-{i}", expires_at=START + dt.timedelta(days=40 + i))
            friend(code, f"{name}{i}")
        client = pages.client(member)
        client.get("/loyalty/")  # warm up: user loading, first-use caches
        with statements(pages.db) as seen:
            body = client.get("/loyalty/").get_data(as_text=True)
        counts.append(len(seen))
        assert f"{name}{size - 1}<" in body  # the newest friend
        assert body.count('class="loyalty-referral-note"') == min(size, REFERRALS_SHOWN)
    assert counts[0] == counts[1]


@pytest.mark.settings(**BONUSES)
def test_the_referral_section_speaks_chinese(pages: Pages, app_ctx: None, clock: t.Any) -> None:
    add_signup_page(pages)
    ada = int(members.enroll(name="Ada", email="ada@example.com").id)
    points.earn(ada, 800, key="a", expires_at=START + dt.timedelta(days=10))
    bea = friend(referrals.referral_code(ada), "Bea")
    order_paid(order(bea, "O1"))
    order_completed(order(bea, "O1"))
    referrals.settle_referrals()
    body = pages.client(ada, accept_language="zh-CN").get("/loyalty/").get_data(as_text=True)
    for text in ("邀请好友", "您的推荐码", "您的分享链接", "您推荐的好友", "已奖励", "你们双方都已获得奖励。",
                 "积分到期时间", "到期日", "对方可获得 500 积分，您可获得 1,000 积分。"):  # fmt: skip
        assert text in body, text
    assert "Invite friends" not in body and "Rewarded" not in body
    own = pages.client(bea, accept_language="zh-CN").get("/loyalty/").get_data(as_text=True)
    assert "您的推荐记录" in own and "您已获得欢迎奖励。" in own


def test_share_links_from_a_url_a_path_or_an_endpoint(pages: Pages) -> None:
    add_signup_page(pages)
    app = pages.app
    for setting, expected in (
        ("https://shop.example/signup", "https://shop.example/signup?ref=K7M2"),
        ("https://shop.example/signup?lang=en&ref=OLD", "https://shop.example/signup?lang=en&ref=K7M2"),
        ("/join?src=club", "http://shop.test/join?src=club&ref=K7M2"),
        ("join", "http://shop.test/join?ref=K7M2"),
        (None, None),
    ):
        app.config["LOYALTY_REFERRAL_SIGNUP_URL"] = setting
        with app.test_request_context(base_url="http://shop.test/"):
            assert share_url("K7M2") == expected, setting
    app.config["LOYALTY_REFERRAL_SIGNUP_URL"] = "no_such_endpoint"
    with app.test_request_context(), pytest.raises(ValueError, match="LOYALTY_REFERRAL_SIGNUP_URL"):
        share_url("K7M2")


@pytest.mark.settings(LOYALTY_PENDING_DAYS=14)
def test_activity_shows_the_change_that_matters_for_each_kind(
    pages: Pages, app_ctx: None, clock: t.Any
) -> None:
    member = int(members.enroll(name="Ada", email="ada@example.com").id)
    points.earn(member, 1000, key="start")
    points.earn(member, 560, key="order", available_from=START + dt.timedelta(days=14))
    points.reserve(member, 300, key="hold")
    points.capture(member, key="hold")
    clock.advance(days=15)
    jobs.release_pending()
    body = pages.client(member).get("/loyalty/").get_data(as_text=True)
    activity = body[body.index('id="loyalty-activity"') :]
    activity = activity[: activity.index("</table>")]
    assert "<caption>" not in activity and 'aria-labelledby="loyalty-activity"' in activity
    assert "loyalty-delta-none" not in activity  # no "0" for activate and capture rows
    rows = activity.split("<tr>")[2:]  # newest first, after the header row
    became, paid, held = rows[0], rows[1], rows[2]
    assert "Became available" in became and "+560" in became and "from pending to available" in became
    assert "Paid at checkout" in paid and "−300" in paid and "spent from the hold" in paid
    assert "Held at checkout" in held and "−300" in held
    entry_id = became.split("/loyalty/history/")[1].split('"')[0]
    entry = pages.client(member).get(f"/loyalty/history/{entry_id}").get_data(as_text=True)
    assert "+560" in entry and "from pending to available" in entry
    chinese = pages.client(member, accept_language="zh-CN").get("/loyalty/").get_data(as_text=True)
    assert "由待生效转为可用" in chinese and "从冻结积分中支付" in chinese
