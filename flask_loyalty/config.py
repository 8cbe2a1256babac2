"""Configuration defaults and the one accessor that reads them.

Every ``LOYALTY_*`` key is declared once, unprefixed, in :data:`DEFAULTS`.
:meth:`flask_loyalty.Loyalty.init_app` applies them with ``setdefault`` and
:func:`config_value` reads them back, refusing keys that are not declared here.
"""

from __future__ import annotations

import copy
import decimal
import typing as t
import weakref
from decimal import Decimal

from flask import current_app
from flask import Flask

T = t.TypeVar("T")

#: The prefix shared by every configuration key of the extension.
PREFIX = "LOYALTY_"

#: Unprefixed defaults of every configuration key. See ``docs/config.rst``.
DEFAULTS: dict[str, t.Any] = {
    # Shape of the app: read once in init_app.
    "TABLE_PREFIX": "loyalty_",
    "CLI_GROUP": "loyalty",
    # Money.
    "CURRENCY": "USD",
    "CURRENCY_DECIMALS": None,
    # Ledger behaviour.
    "CLAWBACK_POLICY": "allow_negative",
    "LOCK_RETRIES": 5,
    "LOCK_RETRY_DELAY": 0.05,
    "SQLITE_IMMEDIATE_ENABLED": True,
    "JOB_CHUNK_SIZE": 5000,
    "DRIVER_STATEMENTS_ENABLED": True,
    "OWN_CONNECTION_ENABLED": True,
    # Earning rules.
    "EARN_RATE": 10,
    "EARN_ROUNDING": "floor",
    "EARN_BASIS": "goods",
    "EARN_MINIMUM": None,
    "SKU_MULTIPLIERS": {},
    "CATEGORY_MULTIPLIERS": {},
    "EXCLUDED_SKUS": (),
    "EXCLUDED_CATEGORIES": (),
    "CAMPAIGNS": (),
    "DRY_RUN_ENABLED": False,
    # Orders.
    "PENDING_DAYS": 0,
    "POINTS_EXPIRY_DAYS": None,
    "AUTO_ENROLL_ENABLED": True,
    # Mounting on the host shop: read once in init_app.
    "USER_MODEL": None,
    "ORDER_EVENTS_ENABLED": True,
    # Tiers.
    "TIERS": (),
    "TIER_METRIC": "points_earned",
    "TIER_PERIOD": "lifetime",
    "TIER_GRACE_DAYS": 0,
    # Paying with points at checkout.
    "POINT_VALUE": "0.01",
    "REDEEM_MINIMUM": 100,
    "REDEEM_MAX_SHARE": "0.5",
    "REDEEM_STEP": 100,
    "RESERVATION_TTL": 1800,
    # Member pages: read once in init_app, but for the templates.
    "BLUEPRINT_ENABLED": True,
    "BLUEPRINT_NAME": "loyalty",
    "URL_PREFIX": "/loyalty",
    "BASE_TEMPLATE": "loyalty/base.html",
    "PAGE_SIZE": 25,
    "EXPIRING_SOON_DAYS": 30,
    # Action points, referrals and expiry reminders.
    "ACTIONS": {},
    "REFERRAL_REFEREE_BONUS": 0,
    "REFERRAL_REFERRER_BONUS": 0,
    "REFERRAL_MINIMUM_ORDER": "0",
    "REFERRAL_CAP": None,
    "REFERRAL_CAP_PERIOD": "month",
    "REFERRAL_SIGNUP_URL": None,
    "REMINDER_WINDOWS": (30, 7),
    # The JSON API: read once in init_app.
    "API_ENABLED": True,
    "API_BLUEPRINT_NAME": "loyalty_api",
    "API_URL_PREFIX": "/loyalty/api",
}

#: The clawback policies accepted by ``LOYALTY_CLAWBACK_POLICY``.
CLAWBACK_POLICIES = ("allow_negative", "clamp_to_zero")


def apply_defaults(app: Flask) -> None:
    """Set every undeclared ``LOYALTY_*`` key of ``app`` to its default.

    :param app: the application being initialised.
    :raises KeyError: if the app sets a ``LOYALTY_*`` key that is not declared,
        which is almost always a typo.
    """
    for key, value in DEFAULTS.items():
        app.config.setdefault(PREFIX + key, value)
    unknown = sorted(
        key
        for key in app.config
        if key.startswith(PREFIX)
        and key[len(PREFIX) :] not in DEFAULTS
        and not key.startswith(PREFIX + "TEST_")
    )
    if unknown:
        raise KeyError(f"Unknown flask-loyalty configuration key(s): {', '.join(unknown)}")


def config_value(key: str, app: Flask | None = None) -> t.Any:
    """Return the value of the unprefixed configuration ``key``.

    :param key: the key without its ``LOYALTY_`` prefix, e.g. ``"CURRENCY"``.
    :param app: the application to read from; the current app by default.
    :raises KeyError: if ``key`` is not a declared configuration key.
    """
    if key not in DEFAULTS:
        raise KeyError(f"Unknown flask-loyalty configuration key: {PREFIX}{key}")
    config = (app or current_app).config
    return config.get(PREFIX + key, DEFAULTS[key])


#: Per app: what :func:`derived` built, with the configuration values it was built from.
_DERIVED: weakref.WeakKeyDictionary[Flask, dict[t.Any, tuple[t.Any, t.Any]]] = weakref.WeakKeyDictionary()


def derived(build: t.Callable[[Flask], T], keys: tuple[str, ...], app: Flask | None = None) -> T:
    """``build(app)``, made once per app and made again whenever a value of ``keys`` changes.

    For settings that take work to check and convert (the earning rules) and
    are read on every order. ``build`` must read no configuration but
    ``keys`` (unprefixed, as for :func:`config_value`). The values are
    compared with a deep copy taken when ``build`` ran, so a list changed in
    place counts as a change. A ``build`` that raises is not remembered: it
    raises again on the next call.

    :param app: the application; the current app by default.
    """
    app = app or t.cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
    config = app.config
    values = tuple(config.get(PREFIX + key, DEFAULTS[key]) for key in keys)
    made = _DERIVED.get(app)
    if made is None:
        made = _DERIVED.setdefault(app, {})
    hit = made.get(build)
    if hit is not None and hit[0] == values:
        return t.cast(T, hit[1])
    result = build(app)
    try:
        made[build] = (copy.deepcopy(values), result)
    except Exception:  # noqa: BLE001 - a value that cannot be copied is read anew each time
        made.pop(build, None)
    return result


def decimal_setting(value: t.Any, what: str) -> Decimal:
    """Check a numeric setting and return it as a :class:`~decimal.Decimal`.

    :param what: names the setting in the error message.
    :raises ValueError: unless ``value`` is an int, str or Decimal holding a
        finite number of at least 0 (floats are refused: ``0.1`` is not exact).
    """
    if isinstance(value, bool | float) or not isinstance(value, int | str | Decimal):
        raise ValueError(f"{what} must be a Decimal, int or str, not {value!r}.")
    try:
        number = Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"{what} must be a number, not {value!r}.") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{what} must be a finite number of at least 0, not {value!r}.")
    return number


def choice_value(key: str, choices: t.Sequence[str], app: Flask | None = None) -> str:
    """Return the configuration ``key`` if it is one of ``choices``.

    :raises ValueError: naming the key and the choices, for any other value.
    """
    value = config_value(key, app)
    if value not in choices:
        raise ValueError(f"{PREFIX}{key} must be one of {tuple(choices)}, not {value!r}.")
    return t.cast(str, value)
