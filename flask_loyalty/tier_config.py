"""The tier settings: ``LOYALTY_TIERS``, ``LOYALTY_TIER_METRIC``,
``LOYALTY_TIER_PERIOD`` and ``LOYALTY_TIER_GRACE_DAYS``, checked.

See :mod:`flask_loyalty.tiers` for what they do.
"""

from __future__ import annotations

import dataclasses
import typing as t
from decimal import Decimal

from flask import Flask

from .config import choice_value
from .config import config_value
from .config import decimal_setting
from .config import derived
from .money import decimals

#: The qualifying metrics accepted by ``LOYALTY_TIER_METRIC``.
TIER_METRICS = ("points_earned", "amount_spent")
#: The qualifying periods accepted by ``LOYALTY_TIER_PERIOD``.
TIER_PERIODS = ("lifetime", "rolling_12_months", "calendar_year")
#: The longest grace period, in days: a lagging window never leaves a gap.
MAX_GRACE_DAYS = 365
#: The longest tier name (the width of ``Member.tier``).
MAX_NAME_LENGTH = 32
#: The configuration keys the tiers are built from.
TIER_CONFIG_KEYS = ("TIERS", "TIER_METRIC", "CURRENCY", "CURRENCY_DECIMALS")
#: The keys a ``LOYALTY_TIERS`` entry may have.
TIER_KEYS = ("name", "threshold", "multiplier", "benefits")


@dataclasses.dataclass(frozen=True)
class Tier:
    """One tier of ``LOYALTY_TIERS``, checked."""

    name: str
    #: The threshold as configured: points, or an amount of money.
    threshold: Decimal
    #: The earning multiplier (``1`` by default).
    multiplier: Decimal
    #: Free text describing the tier's benefits, for member pages.
    benefits: str
    #: The threshold in the metric's unit: points, or minor units of money.
    minimum: int


def _minimum(value: t.Any, what: str, metric: str, places: int) -> tuple[Decimal, int]:
    """The threshold and its value in the metric's unit (points or minor units)."""
    number = decimal_setting(value, what)
    if metric == "points_earned":
        if number != number.to_integral_value():
            raise ValueError(f"{what} must be a whole number of points, not {value!r}.")
        return number, int(number)
    minor = number.scaleb(places)
    if minor != minor.to_integral_value():
        raise ValueError(f"{what} must be an amount with at most {places} decimal place(s), not {value!r}.")
    return number, int(minor)


def tier_metric(app: Flask | None = None) -> str:
    """The checked ``LOYALTY_TIER_METRIC``.

    :raises ValueError: for a value that is not one of :data:`TIER_METRICS`.
    """
    return choice_value("TIER_METRIC", TIER_METRICS, app)


def tier_period(app: Flask | None = None) -> str:
    """The checked ``LOYALTY_TIER_PERIOD``.

    :raises ValueError: for a value that is not one of :data:`TIER_PERIODS`.
    """
    return choice_value("TIER_PERIOD", TIER_PERIODS, app)


def grace_days(app: Flask | None = None) -> int:
    """The checked ``LOYALTY_TIER_GRACE_DAYS``.

    :raises ValueError: unless it is a whole number from 0 to :data:`MAX_GRACE_DAYS`.
    """
    days = config_value("TIER_GRACE_DAYS", app)
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_GRACE_DAYS:
        raise ValueError(
            f"LOYALTY_TIER_GRACE_DAYS must be a whole number from 0 to {MAX_GRACE_DAYS}, not {days!r}."
        )
    return days


def configured_tiers(app: Flask | None = None) -> tuple[Tier, ...]:
    """The tiers of ``LOYALTY_TIERS``, lowest first, checked.

    Each entry is a mapping with ``name`` (required, unique, at most
    :data:`MAX_NAME_LENGTH` characters), ``threshold`` (required: whole
    points for ``points_earned``, an amount of money for ``amount_spent``),
    ``multiplier`` (default 1) and ``benefits`` (text, default empty).
    Numbers are ints, strings or Decimals, never floats. Thresholds must
    strictly increase.

    :raises ValueError: naming ``LOYALTY_TIERS``, the entry and what is wrong.
    """
    return derived(_build_tiers, TIER_CONFIG_KEYS, app)


def _build_tiers(app: Flask) -> tuple[Tier, ...]:
    raw = config_value("TIERS", app)
    if isinstance(raw, str | bytes | t.Mapping) or not isinstance(raw, t.Sequence):
        raise ValueError(f"LOYALTY_TIERS must be a list of mappings, not {raw!r}.")
    metric = tier_metric(app)
    places = decimals(app=app)
    tiers: list[Tier] = []
    for index, entry in enumerate(raw):
        where = f"LOYALTY_TIERS[{index}]"
        if not isinstance(entry, t.Mapping):
            raise ValueError(f"{where} must be a mapping with a name and a threshold, not {entry!r}.")
        unknown = sorted(set(entry) - set(TIER_KEYS), key=str)
        if unknown:
            raise ValueError(f"{where} has unknown key(s): {', '.join(map(str, unknown))}.")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise ValueError(
                f"{where}: name must be a text of 1 to {MAX_NAME_LENGTH} characters, not {name!r}."
            )
        where = f"{where} ({name!r})"
        if any(tier.name == name for tier in tiers):
            raise ValueError(f"{where}: tier names must be unique.")
        if "threshold" not in entry:
            raise ValueError(f"{where} needs a threshold.")
        threshold, minimum = _minimum(entry["threshold"], f"{where}: threshold", metric, places)
        if tiers and minimum <= tiers[-1].minimum:
            raise ValueError(
                f"{where}: thresholds must strictly increase; {threshold} does not exceed"
                f" {tiers[-1].threshold} of {tiers[-1].name!r}."
            )
        benefits = entry.get("benefits", "")
        if not isinstance(benefits, str):
            raise ValueError(f"{where}: benefits must be text, not {benefits!r}.")
        multiplier = decimal_setting(entry.get("multiplier", 1), f"{where}: multiplier")
        tiers.append(Tier(name, threshold, multiplier, benefits, minimum))
    return tuple(tiers)


def check_config(app: Flask) -> None:
    """Check every tier key of ``app``'s configuration (called by ``init_app``).

    :raises ValueError: naming the key whose value is not usable.
    """
    tier_period(app)
    grace_days(app)
    configured_tiers(app)
