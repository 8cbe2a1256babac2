"""Money: exact conversion between Decimal amounts and integer minor units."""

from __future__ import annotations

import typing as t
from decimal import Decimal

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from hypothesis import given
from hypothesis import strategies as st

from flask_loyalty import CurrencyMismatch
from flask_loyalty import InvalidRequest
from flask_loyalty import Loyalty
from flask_loyalty import money

#: The largest number of minor units a BIGINT column holds.
MAX_MINOR = 2**63 - 1


def shop(**config: t.Any) -> Flask:
    """An app with the extension on an in-memory database and the given config."""
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", **config)
    Loyalty(app, db=SQLAlchemy(app))
    return app


USD = shop()
JPY = shop(LOYALTY_CURRENCY="JPY")
BHD = shop(LOYALTY_CURRENCY="BHD")
#: A shop that counts its dollars in whole units.
USD_WHOLE = shop(LOYALTY_CURRENCY_DECIMALS=0)


@pytest.fixture
def usd() -> t.Iterator[None]:
    """An app context of a shop in US dollars (the default currency)."""
    with USD.app_context():
        yield


@pytest.mark.parametrize(
    ("app", "amount", "minor", "back"),
    [
        (USD, Decimal("12.34"), 1234, Decimal("12.34")),
        (USD, Decimal("12.3"), 1230, Decimal("12.30")),
        (USD, "0.01", 1, Decimal("0.01")),
        (USD, 7, 700, Decimal("7.00")),
        (USD, "-3.50", -350, Decimal("-3.50")),
        (JPY, Decimal("1500"), 1500, Decimal("1500")),
        (JPY, "1500.000", 1500, Decimal("1500")),
        (BHD, Decimal("1.005"), 1005, Decimal("1.005")),
        (BHD, "2.5", 2500, Decimal("2.500")),
        (USD_WHOLE, Decimal("12"), 12, Decimal("12")),
    ],
)
def test_to_minor_and_back(app: Flask, amount: t.Any, minor: int, back: Decimal) -> None:
    with app.app_context():
        assert money.to_minor(amount) == minor
        restored = money.from_minor(minor)
        assert restored == back
        assert restored.as_tuple() == back.as_tuple()


@pytest.mark.parametrize(
    ("app", "code", "places"),
    [
        (USD, None, 2),
        (USD, "usd", 2),
        (USD, "JPY", 0),
        (USD, "bhd", 3),
        (USD, "XYZ", 2),
        (JPY, None, 0),
        (BHD, None, 3),
        (USD_WHOLE, None, 0),
        # The override applies to the configured currency only.
        (USD_WHOLE, "EUR", 2),
    ],
)
def test_decimals(app: Flask, code: str | None, places: int) -> None:
    with app.app_context():
        assert money.decimals(code) == places


def test_explicit_currency_uses_its_own_minor_unit(usd: None) -> None:
    assert money.to_minor("1500", "JPY") == 1500
    assert money.to_minor("1.234", "BHD") == 1234
    assert money.from_minor(1234, "BHD") == Decimal("1.234")
    with pytest.raises(InvalidRequest, match="more than 0 decimal"):
        money.to_minor("1.5", "JPY")


@pytest.mark.parametrize(
    ("app", "amount", "message"),
    [
        (USD, Decimal("1.005"), "more than 2 decimal place"),
        (USD, "0.001", "more than 2 decimal place"),
        (JPY, Decimal("1.5"), "more than 0 decimal place"),
        (BHD, "1.0005", "more than 3 decimal place"),
        (USD_WHOLE, "12.5", "more than 0 decimal place"),
    ],
)
def test_finer_than_minor_unit_is_refused(app: Flask, amount: t.Any, message: str) -> None:
    with app.app_context():
        with pytest.raises(InvalidRequest, match=message):
            money.parse_amount(amount)
        with pytest.raises(InvalidRequest, match=message):
            money.to_minor(amount)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0.1, "must be a Decimal, int or str"),
        (1.5, "must be a Decimal, int or str"),
        (float("nan"), "must be a Decimal, int or str"),
        (True, "must be a Decimal, int or str"),
        (False, "must be a Decimal, int or str"),
        (Decimal("NaN"), "not a finite amount"),
        (Decimal("sNaN"), "not a finite amount"),
        (Decimal("Infinity"), "not a finite amount"),
        (Decimal("-Infinity"), "not a finite amount"),
        ("NaN", "not a finite amount"),
        ("inf", "not a finite amount"),
        ("ten dollars", "not an amount of money"),
        ("", "not an amount of money"),
        ("12,50", "not an amount of money"),
        ("0x10", "not an amount of money"),
        (None, "not an amount of money"),
        ([1], "not an amount of money"),
    ],
)
def test_not_an_amount_is_refused(usd: None, value: t.Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        money.parse_amount(value)
    with pytest.raises(InvalidRequest, match=message):
        money.to_minor(value)


@pytest.mark.parametrize(
    "value",
    [Decimal(MAX_MINOR + 1).scaleb(-2), -Decimal(MAX_MINOR + 1).scaleb(-2), Decimal("1E+40"), "9" * 40],
)
def test_amount_too_large_to_store_is_refused(usd: None, value: t.Any) -> None:
    with pytest.raises(InvalidRequest, match="too large"):
        money.to_minor(value)


def test_largest_storable_amount_is_exact(usd: None) -> None:
    largest = Decimal(MAX_MINOR).scaleb(-2)
    assert money.to_minor(largest) == MAX_MINOR
    assert money.from_minor(MAX_MINOR) == largest


def test_parse_amount_keeps_the_value(usd: None) -> None:
    assert money.parse_amount("19.99") == Decimal("19.99")
    assert money.parse_amount(20) == Decimal(20)
    assert isinstance(money.parse_amount(20), Decimal)


def test_check_currency(usd: None) -> None:
    assert money.currency() == "USD"
    assert money.check_currency("USD") == "USD"
    assert money.check_currency("usd") == "USD"
    for other in ("EUR", "JPY", "US", "", None, 840):
        with pytest.raises(CurrencyMismatch, match="loyalty currency is USD"):
            money.check_currency(other)  # type: ignore[arg-type]


def test_currency_mismatch_is_an_invalid_request() -> None:
    with JPY.app_context(), pytest.raises(InvalidRequest) as info:
        money.check_currency("USD")
    assert info.value.code == "currency_mismatch"
    assert "JPY" in info.value.message


def test_configured_currency_is_upper_cased() -> None:
    with shop(LOYALTY_CURRENCY="eur").app_context():
        assert money.currency() == "EUR"
        assert money.check_currency("Eur") == "EUR"


@pytest.mark.parametrize(("app", "places"), [(USD, 2), (JPY, 0), (BHD, 3), (USD_WHOLE, 0)])
@given(data=st.data())
def test_round_trip_is_exact(app: Flask, places: int, data: st.DataObject) -> None:
    amount = data.draw(
        st.decimals(
            min_value=-Decimal(MAX_MINOR).scaleb(-places),
            max_value=Decimal(MAX_MINOR).scaleb(-places),
            places=places,
            allow_nan=False,
            allow_infinity=False,
        )
    )
    minor = data.draw(st.integers(min_value=-MAX_MINOR, max_value=MAX_MINOR))
    with app.app_context():
        assert money.to_minor(amount) == amount.scaleb(places)
        back = money.from_minor(money.to_minor(amount))
        assert back == amount
        assert back.as_tuple().exponent == -places
        assert money.to_minor(money.from_minor(minor)) == minor
        assert money.to_minor(str(amount)) == money.to_minor(amount)


@pytest.mark.parametrize(
    ("app", "code", "amount", "minor"),
    [(USD, None, "12.34", 1234), (JPY, "jpy", "500", 500), (BHD, None, "1.005", 1005), (USD, "JPY", "7", 7)],
)
def test_a_currency_looked_up_once_converts_as_the_functions_do(
    app: Flask, code: str | None, amount: str, minor: int
) -> None:
    with app.app_context():
        unit = money.Currency.of(code)
        assert unit.code == (code or money.currency()).upper()
        assert unit.parse(amount) == money.parse_amount(amount, code) == Decimal(amount)
        assert unit.to_minor(amount) == money.to_minor(amount, code) == minor


@pytest.mark.parametrize("bad", [0.5, True, "1.001", "NaN", "x", None])
def test_a_currency_refuses_what_parse_amount_refuses(usd: None, bad: t.Any) -> None:
    unit = money.Currency.of()
    with pytest.raises(InvalidRequest):
        unit.parse(bad)
    with pytest.raises(InvalidRequest):
        unit.to_minor(bad)
