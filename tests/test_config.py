"""Configuration: defaults declared once, one strict accessor, checked values."""

from __future__ import annotations

import pathlib
import typing as t

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_loyalty import Loyalty
from flask_loyalty.config import config_value
from flask_loyalty.config import DEFAULTS
from flask_loyalty.config import derived
from flask_loyalty.config import PREFIX
from flask_loyalty.earning import configured_rules

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "config.rst"

#: A valid value other than the default for every key.
OTHER_VALUES: dict[str, t.Any] = {
    "TABLE_PREFIX": "shop_points_",
    "CLI_GROUP": "points",
    "CURRENCY": "EUR",
    "CURRENCY_DECIMALS": 3,
    "CLAWBACK_POLICY": "clamp_to_zero",
    "LOCK_RETRIES": 0,
    "LOCK_RETRY_DELAY": 0.5,
    "SQLITE_IMMEDIATE_ENABLED": False,
    "DRIVER_STATEMENTS_ENABLED": False,
    "OWN_CONNECTION_ENABLED": False,
    "JOB_CHUNK_SIZE": 1,
    "EARN_RATE": "12.5",
    "EARN_ROUNDING": "half_up",
    "EARN_BASIS": "paid_total",
    "EARN_MINIMUM": "5.00",
    "SKU_MULTIPLIERS": {"TEA-01": 2},
    "CATEGORY_MULTIPLIERS": {"books": "1.5"},
    "EXCLUDED_SKUS": ("GIFT-CARD",),
    "EXCLUDED_CATEGORIES": ("gift cards",),
    "CAMPAIGNS": ({"name": "weekend", "multiplier": 2, "weekdays": [5, 6]},),
    "DRY_RUN_ENABLED": True,
    "PENDING_DAYS": 14,
    "POINTS_EXPIRY_DAYS": 365,
    "AUTO_ENROLL_ENABLED": False,
    "USER_MODEL": "tests.test_config:ShopUser",
    "ORDER_EVENTS_ENABLED": False,
    "TIERS": ({"name": "Gold", "threshold": 1000},),
    "TIER_METRIC": "amount_spent",
    "TIER_PERIOD": "calendar_year",
    "TIER_GRACE_DAYS": 30,
    "POINT_VALUE": "0.05",
    "REDEEM_MINIMUM": 500,
    "REDEEM_MAX_SHARE": "1",
    "REDEEM_STEP": 1,
    "RESERVATION_TTL": 600,
    "BLUEPRINT_ENABLED": False,
    "BLUEPRINT_NAME": "points",
    "URL_PREFIX": "/members/points",
    "BASE_TEMPLATE": "shop/base.html",
    "PAGE_SIZE": 50,
    "EXPIRING_SOON_DAYS": 14,
    "ACTIONS": {"review": {"points": 20, "cap": 3, "per": "week"}},
    "REFERRAL_REFEREE_BONUS": 500,
    "REFERRAL_REFERRER_BONUS": 1000,
    "REFERRAL_MINIMUM_ORDER": "25.00",
    "REFERRAL_CAP": 5,
    "REFERRAL_CAP_PERIOD": "year",
    "REFERRAL_SIGNUP_URL": "auth.signup",
    "REMINDER_WINDOWS": (14,),
    "API_ENABLED": False,
    "API_BLUEPRINT_NAME": "points_api",
    "API_URL_PREFIX": "/api/points",
}


class ShopUser:
    """A host shop's user model, as named by ``LOYALTY_USER_MODEL``."""

    id: int = 0


def make_app(**config: t.Any) -> Flask:
    """A bare app with Flask-SQLAlchemy on an in-memory database."""
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", **config)
    SQLAlchemy(app)
    return app


def test_other_values_cover_every_key() -> None:
    assert set(OTHER_VALUES) == set(DEFAULTS)
    assert all(OTHER_VALUES[key] != DEFAULTS[key] for key in DEFAULTS)


def test_every_default_is_applied() -> None:
    app = make_app()
    Loyalty(app)
    for key, value in DEFAULTS.items():
        assert app.config[PREFIX + key] == value
        with app.app_context():
            assert config_value(key) == value
        assert config_value(key, app) == value


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_a_set_value_is_kept(key: str) -> None:
    app = make_app(**{PREFIX + key: OTHER_VALUES[key]})
    Loyalty(app)
    assert app.config[PREFIX + key] == OTHER_VALUES[key]
    assert config_value(key, app) == OTHER_VALUES[key]
    for other in set(DEFAULTS) - {key}:
        assert app.config[PREFIX + other] == DEFAULTS[other]


def test_config_value_reads_the_given_app_over_the_current_one() -> None:
    first = make_app(LOYALTY_CURRENCY="JPY")
    second = make_app(LOYALTY_CURRENCY="BHD")
    Loyalty(first)
    Loyalty(second)
    with first.app_context():
        assert config_value("CURRENCY") == "JPY"
        assert config_value("CURRENCY", second) == "BHD"


@pytest.mark.parametrize("key", ["CURRENCEY", "currency", "LOYALTY_CURRENCY", ""])
def test_config_value_rejects_unknown_keys(key: str) -> None:
    app = make_app()
    Loyalty(app)
    with pytest.raises(KeyError, match="Unknown flask-loyalty configuration key"):
        config_value(key, app)


def test_unknown_loyalty_key_in_app_config_makes_init_app_raise() -> None:
    app = make_app(LOYALTY_CURRENCEY="EUR", LOYALTY_URL_PERFIX="/points")
    loyalty = Loyalty()
    with pytest.raises(KeyError) as info:
        loyalty.init_app(app)
    assert "LOYALTY_CURRENCEY" in str(info.value)
    assert "LOYALTY_URL_PERFIX" in str(info.value)
    assert "loyalty" not in app.extensions


def test_other_keys_of_the_app_are_left_alone() -> None:
    app = make_app(LOYALTYPROGRAMME="mine", MY_LOYALTY_CURRENCY="GBP")
    Loyalty(app)
    assert app.config["LOYALTYPROGRAMME"] == "mine"
    assert app.config["MY_LOYALTY_CURRENCY"] == "GBP"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CLAWBACK_POLICY", "bogus"),
        ("CLAWBACK_POLICY", None),
        ("CURRENCY", "dollars"),
        ("CURRENCY", "US"),
        ("CURRENCY", "U$D"),
        ("CURRENCY", 840),
        ("LOCK_RETRIES", -1),
        ("LOCK_RETRIES", 2.5),
        ("LOCK_RETRIES", "3"),
        ("LOCK_RETRIES", True),
        ("JOB_CHUNK_SIZE", 0),
        ("JOB_CHUNK_SIZE", -10),
        ("JOB_CHUNK_SIZE", "100"),
        ("JOB_CHUNK_SIZE", 10.0),
        ("CURRENCY_DECIMALS", -1),
        ("CURRENCY_DECIMALS", "two"),
        ("CURRENCY_DECIMALS", 2.5),
        ("CURRENCY_DECIMALS", True),
        ("LOCK_RETRY_DELAY", -0.1),
        ("LOCK_RETRY_DELAY", "fast"),
        ("LOCK_RETRY_DELAY", float("inf")),
        ("LOCK_RETRY_DELAY", None),
        ("TABLE_PREFIX", ""),
        ("TABLE_PREFIX", "loyalty-"),
        ("TABLE_PREFIX", "a_very_long_table_prefix_"),
        ("POINT_VALUE", "0"),
        ("POINT_VALUE", 0.01),
        ("POINT_VALUE", "-1"),
        ("POINT_VALUE", "cheap"),
        ("REDEEM_MAX_SHARE", "1.5"),
        ("REDEEM_MAX_SHARE", 0.5),
        ("REDEEM_MINIMUM", 0),
        ("REDEEM_STEP", "100"),
        ("RESERVATION_TTL", 0),
        ("PAGE_SIZE", 0),
        ("PAGE_SIZE", 501),
        ("EXPIRING_SOON_DAYS", 0),
        ("URL_PREFIX", "loyalty"),
        ("API_URL_PREFIX", None),
        ("ACTIONS", ["signup"]),
        ("REFERRAL_REFEREE_BONUS", -1),
        ("REFERRAL_REFERRER_BONUS", "500"),
        ("REFERRAL_MINIMUM_ORDER", 20.0),
        ("REFERRAL_CAP", 0),
        ("REFERRAL_CAP_PERIOD", "fortnight"),
        ("REMINDER_WINDOWS", (30, 0)),
        ("REMINDER_WINDOWS", 7),
    ],
)
def test_invalid_values_raise_value_error_naming_the_key(key: str, value: t.Any) -> None:
    app = make_app(**{PREFIX + key: value})
    with pytest.raises(ValueError, match=PREFIX + key) as info:
        Loyalty(app)
    assert repr(value) in str(info.value)
    assert "loyalty" not in app.extensions


@pytest.mark.parametrize(
    ("actions", "problem"),
    [
        ({"signup": 100}, "['signup'] must be a mapping with points, cap and per, not 100."),
        (
            {"review": {"points": 0}},
            "['review']: Action 'review': points must be a whole number from 1, not 0.",
        ),
        (
            {"review": {"points": 5, "cap": 1}},
            "['review']: Action 'review': give both cap and per, or neither.",
        ),
        ({"review": {"points": 5, "cap": 1, "per": "fortnight"}}, "['review']: Action 'review': per must be"),
        ({"review": {"points": 5, "bonus": 1}}, "['review'] must be a mapping with points, cap and per"),
    ],
)
def test_invalid_actions_name_the_entry_and_the_problem(actions: t.Any, problem: str) -> None:
    app = make_app(LOYALTY_ACTIONS=actions)
    with pytest.raises(ValueError) as info:
        Loyalty(app)
    assert str(info.value).startswith("LOYALTY_ACTIONS" + problem)
    assert "loyalty" not in app.extensions


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("LOCK_RETRIES", -1, "a whole number of at least 0"),
        ("JOB_CHUNK_SIZE", 0, "a whole number of at least 1"),
        ("CURRENCY_DECIMALS", -1, "None or a whole number of at least 0"),
        ("LOCK_RETRY_DELAY", -0.1, "a finite number of seconds of at least 0"),
    ],
)
def test_invalid_value_messages_state_the_rule(key: str, value: t.Any, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        Loyalty(make_app(**{PREFIX + key: value}))
    assert str(info.value) == f"{PREFIX}{key} must be {expected}, not {value!r}."


@pytest.mark.parametrize(
    ("key", "value"),
    [("CURRENCY_DECIMALS", 0), ("CURRENCY_DECIMALS", None), ("LOCK_RETRY_DELAY", 0), ("LOCK_RETRIES", 0)],
)
def test_boundary_values_are_accepted(key: str, value: t.Any) -> None:
    app = make_app(**{PREFIX + key: value})
    Loyalty(app)
    assert config_value(key, app) == value


def test_every_key_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [PREFIX + key for key in DEFAULTS if PREFIX + key not in text]
    assert missing == []


def test_derived_settings_are_built_once_and_again_when_a_key_changes() -> None:
    app = make_app(LOYALTY_EXCLUDED_SKUS=["GIFT-CARD"])
    built: list[t.Any] = []

    def build(app: Flask) -> tuple[str, ...]:
        value = tuple(config_value("EXCLUDED_SKUS", app))
        built.append(value)
        return value

    keys = ("EXCLUDED_SKUS",)
    with app.app_context():
        assert derived(build, keys) == ("GIFT-CARD",)
        assert derived(build, keys) == ("GIFT-CARD",)
        assert len(built) == 1
        app.config["LOYALTY_EXCLUDED_SKUS"] = ["GIFT-CARD", "SAMPLE"]
        assert derived(build, keys) == ("GIFT-CARD", "SAMPLE")
        # A list changed in place is a change too.
        app.config["LOYALTY_EXCLUDED_SKUS"].append("BAG")
        assert derived(build, keys) == ("GIFT-CARD", "SAMPLE", "BAG")
        assert len(built) == 3
    # Each app has its own.
    other = make_app()
    assert derived(build, keys, other) == ()
    assert len(built) == 4


def test_a_derived_setting_that_fails_is_not_remembered() -> None:
    app = make_app(LOYALTY_EARN_RATE="ten")
    with app.app_context():
        for _ in range(2):
            with pytest.raises(ValueError, match="LOYALTY_EARN_RATE"):
                configured_rules()
        app.config["LOYALTY_EARN_RATE"] = 5
        assert configured_rules().rate == 5
