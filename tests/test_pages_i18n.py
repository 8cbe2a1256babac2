"""Languages of the member pages, template helpers for host pages, and the checkout widget."""

# ruff: noqa: F811 -- test arguments are the fixtures imported from pages_support

from __future__ import annotations

import datetime as dt
import re
import typing as t
from decimal import Decimal

import pytest
from flask import render_template_string
from flask import request

from flask_loyalty import i18n
from flask_loyalty import members
from flask_loyalty.checkout_widget import checkout_widget

from .pages_support import extract_messages
from .pages_support import owner  # noqa: F401  (a fixture)
from .pages_support import Pages
from .pages_support import pages  # noqa: F401  (a fixture)
from .pages_support import TRANSLATIONS

babel = pytest.importorskip("babel")
from babel.messages.mofile import read_mo  # noqa: E402
from babel.messages.pofile import read_po  # noqa: E402

PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _catalogue(locale: str | None) -> t.Any:
    path = (
        TRANSLATIONS / "messages.pot"
        if locale is None
        else TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"
    )
    with path.open("rb") as file:
        return read_po(file, locale=locale)


def _key(value: t.Any) -> t.Any:
    return tuple(value) if isinstance(value, list | tuple) else value


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
def test_compiled_catalogues_are_up_to_date(locale: str) -> None:
    po = _catalogue(locale)
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.mo").open("rb") as file:
        mo = read_mo(file)
    expected = {_key(m.id): _key(m.string) for m in po if m.id and m.string and not m.fuzzy}
    compiled = {_key(m.id): _key(m.string) for m in mo if m.id}
    assert compiled == expected


def test_every_message_of_the_pages_is_translated_into_chinese() -> None:
    messages = extract_messages()
    assert len(messages) > 100
    template, chinese = _catalogue(None), _catalogue("zh_CN")
    for message in messages:
        key = message[0] if isinstance(message, tuple) else message
        assert template.get(key) is not None, f"{key!r} is missing from messages.pot"
        found = chinese.get(key)
        assert found is not None and not found.fuzzy, f"{key!r} is missing from zh_CN"
        strings = found.string if isinstance(found.string, tuple) else (found.string,)
        assert all(strings), f"{key!r} has no Chinese translation"
        wanted = set(PLACEHOLDER.findall(key))
        for text in strings:
            assert set(PLACEHOLDER.findall(text)) == wanted, key
            assert re.search(r"[\u4e00-\u9fff]", text), key
    known = {key[0] if isinstance(key, tuple) else key for key in messages}
    stale = [m.id for m in chinese if m.id and (m.id[0] if isinstance(m.id, tuple) else m.id) not in known]
    assert not stale, "messages no longer used: remove them from the catalogues"


def test_the_dashboard_speaks_chinese_without_flask_babel(pages: Pages, owner: t.Any) -> None:
    assert "babel" not in pages.app.extensions
    client = pages.client(owner, accept_language="zh-CN,zh;q=0.9,en;q=0.5")
    body = client.get("/loyalty/").get_data(as_text=True)
    assert '<html lang="zh-CN"' in body
    for text in ("我的积分", "可用积分", "累计获得", "即将过期", "最近动态", "积分明细"):
        assert text in body
    assert "My points" not in body and "Recent activity" not in body
    english = pages.client(owner, accept_language="en-GB").get("/loyalty/").get_data(as_text=True)
    assert "My points" in english and "我的积分" not in english
    for tag, expected in (
        ("zh", "zh_CN"),
        ("zh-Hans-CN", "zh_CN"),
        ("zh-TW", None),
        ("fr", None),
        ("en-US", "en"),
    ):
        assert i18n.catalogue_locale(tag) == expected


def test_the_dashboard_speaks_chinese_with_flask_babel(pages: Pages, owner: t.Any) -> None:
    flask_babel = pytest.importorskip("flask_babel")
    flask_babel.Babel(pages.app, locale_selector=lambda: request.args.get("lang", "zh_CN"))
    pages.host_template("shop.html", "{{ _('Home') }}")
    client = pages.client(owner, accept_language="en")
    body = client.get("/loyalty/").get_data(as_text=True)
    assert "我的积分" in body and "可用积分" in body
    assert "5,000" in body  # numbers formatted for the locale
    assert "2026年1月1日" in body  # dates too
    assert "My points" in client.get("/loyalty/?lang=en").get_data(as_text=True)
    errors = client.post("/loyalty/checkout/apply", data={"points": "abc"})
    assert errors.status_code == 404  # no order: the message is translated too
    assert "目前没有可以用积分支付的订单" in errors.get_data(as_text=True)


def test_formatting_without_babel(app: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i18n, "_HAVE_BABEL", False)
    with app.test_request_context(headers={"Accept-Language": "zh-CN"}):
        assert i18n.format_number(1234567) == "1,234,567"
        assert i18n.format_currency(Decimal("1234.5"), "USD") == "1,234.50 USD"
        assert i18n.format_currency(Decimal("1234"), "JPY") == "1,234 JPY"
        assert i18n.format_datetime(dt.datetime(2026, 1, 2, 3, 4)) == "2026-01-02 03:04 UTC"
        assert i18n.format_date(dt.date(2026, 1, 2)) == "2026-01-02"
        assert i18n.format_datetime(None) == i18n.format_date(None) == ""
        assert i18n.gettext("My points") == "我的积分"
        assert i18n.ngettext("%(num)s point", "%(num)s points", 1500) == "1,500 积分"
        assert str(i18n.lazy_gettext("Cancel")) == "取消"


def test_gettext_and_lazy_strings(app: t.Any) -> None:
    lazy = i18n.lazy_gettext("Apply at least %(minimum)s points.", minimum=100)
    with app.test_request_context():
        assert i18n.current_locale() == "en"
        assert str(lazy) == "Apply at least 100 points."
        assert i18n.ngettext("%(num)s point", "%(num)s points", 1) == "1 point"
        assert i18n.gettext("Not in any catalogue %(x)s", x=1) == "Not in any catalogue 1"
    with app.test_request_context(headers={"Accept-Language": "zh-CN"}):
        assert str(lazy) == "请至少使用 100 积分。"
        assert lazy.message == "Apply at least %(minimum)s points."
        assert lazy == "请至少使用 100 积分。" and "100" in lazy and len(lazy) == len(str(lazy))
        assert lazy + "!" == "请至少使用 100 积分。!" and hash(lazy) == hash(i18n.lazy_gettext(lazy.message))
        assert lazy.__html__() == str(lazy)
    assert i18n.current_locale() == "en"  # outside a request


def test_template_helpers_for_host_pages(pages: Pages, owner: t.Any) -> None:
    app = pages.app
    product = type("Product", (), {"sku": "TEA", "price": "12.50", "name": "Tea"})()
    source = (
        "{% set b = loyalty_balance() %}{{ b.available if b else 'anonymous' }}|"
        "{{ loyalty_earn_points(product) }}|{{ loyalty_earn_points('TEA', price='3.00') }}|"
        "{% with loyalty_earn = loyalty_earn_points(product) %}"
        "{% include 'loyalty/_earn_points.html' %}{% endwith %}"
    )
    with app.test_request_context():
        out = render_template_string(source, product=product)
        assert out.startswith("anonymous|125|30|")
        assert "Earn 125 points" in out
        with pytest.raises(TypeError):
            render_template_string("{{ loyalty_earn_points('TEA') }}")
    from flask_login import login_user

    with app.test_request_context(headers={"Accept-Language": "zh-CN"}):
        login_user(members.get(owner.id))
        out = render_template_string(source, product=product)
        assert out.startswith("5000|125|30|") and "可获得 125 积分" in out


def test_the_checkout_widget_on_a_host_page(pages: Pages, owner: t.Any) -> None:
    app = pages.app
    pages.orders[owner.id] = ("order-42", "80.00")
    pages.host_template("cart.html", "<h1>Cart</h1>{% include 'loyalty/_checkout_widget.html' %}")

    @app.route("/cart")
    def cart() -> str:
        from flask import render_template

        return render_template("cart.html", loyalty_checkout=checkout_widget(next=request.path))

    @app.route("/plain")
    def plain() -> str:
        return render_template_string("{% include 'loyalty/_checkout_widget.html' %}ok")

    client = pages.client(owner)
    assert client.get("/plain").get_data(as_text=True).strip() == "ok"  # no widget data: nothing shown
    body = client.get("/cart").get_data(as_text=True)
    assert "You can apply 100 to 4,000 points, in steps of 100, for up to $40.00 off." in body
    assert 'action="/loyalty/checkout/apply"' in body and 'name="next" type="hidden" value="/cart"' in body
    applied = client.post("/loyalty/checkout/apply", data={"points": "2500", "next": "/cart"})
    assert applied.status_code == 303 and applied.headers["Location"] == "/cart"
    assert members.balances(owner).reserved == 2500
    body = client.get("/cart").get_data(as_text=True)
    assert "2,500 points applied: $25.00 off." in body
    # Applying another amount replaces the hold.
    assert client.post("/loyalty/checkout/apply", data={"points": "4000"}).status_code == 303
    assert members.balances(owner).reserved == 4000
    assert members.balances(owner).available == 1000
    removed = client.post("/loyalty/checkout/remove", data={"next": "/cart"})
    assert removed.status_code == 303 and removed.headers["Location"] == "/cart"
    assert members.balances(owner).reserved == 0 and members.balances(owner).available == 5000
    assert checkout_widget() is None  # no user in this context
    pages.orders[owner.id] = ("order-42", "0.50")
    assert "You need at least 100 points" in client.get("/loyalty/checkout").get_data(as_text=True)


def test_a_bad_checkout_loader_is_reported(pages: Pages, owner: t.Any) -> None:
    pages.orders[owner.id] = ("", "1.00")  # type: ignore[assignment]
    with pytest.raises(Exception, match="checkout loader"):
        pages.client(owner).get("/loyalty/checkout")
