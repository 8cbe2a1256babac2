"""Money as :class:`~decimal.Decimal`, stored as integer minor units.

Floats are refused everywhere: a price such as ``0.1`` has no exact binary
representation. Conversions state their rounding in their docstrings.
"""

from __future__ import annotations

import dataclasses
import decimal
import typing as t
from decimal import Decimal

from flask import Flask

from .config import config_value
from .errors import CurrencyMismatch
from .errors import InvalidRequest

#: Minor-unit exponents of ISO 4217 currencies that do not use two decimals.
_EXPONENTS: dict[str, int] = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0,
    "KRW": 0, "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0,
    "XOF": 0, "XPF": 0, "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3,
    "OMR": 3, "TND": 3,
}  # fmt: skip

MoneyInput: t.TypeAlias = Decimal | int | str

#: The most minor units an amount may have: what a signed 64-bit column holds.
MAX_MINOR = 2**63 - 1


def currency(app: Flask | None = None) -> str:
    """Return the configured ISO 4217 currency code (``LOYALTY_CURRENCY``)."""
    return str(config_value("CURRENCY", app)).upper()


def decimals(code: str | None = None, app: Flask | None = None) -> int:
    """Return the number of decimals of a currency's minor unit.

    ``LOYALTY_CURRENCY_DECIMALS`` overrides the ISO 4217 value for the
    configured currency.
    """
    configured = currency(app)
    code = (code or configured).upper()
    override = config_value("CURRENCY_DECIMALS", app)
    if code == configured and override is not None:
        return int(override)
    return _EXPONENTS.get(code, 2)


@dataclasses.dataclass(frozen=True)
class Currency:
    """A currency and its minor unit, looked up once for many amounts.

    ``Currency.of(code)`` then ``parse`` and ``to_minor`` are
    :func:`parse_amount` and :func:`to_minor` without reading the
    configuration for each amount.
    """

    #: The ISO 4217 code, upper-case.
    code: str
    #: Decimals of the minor unit (see :func:`decimals`).
    exp: int

    @classmethod
    def of(cls, code: str | None = None, app: Flask | None = None) -> Currency:
        """The currency ``code``, the configured one by default."""
        return cls((code or currency(app)).upper(), decimals(code, app))

    def parse(self, value: MoneyInput) -> Decimal:
        """:func:`parse_amount` in this currency."""
        return _exact(value, self.exp)

    def to_minor(self, value: MoneyInput) -> int:
        """:func:`to_minor` in this currency."""
        return int(_exact(value, self.exp).scaleb(self.exp))


def check_currency(code: str, app: Flask | None = None) -> str:
    """Return ``code`` upper-cased if it is the configured currency.

    :raises CurrencyMismatch: for any other currency; amounts are never mixed.
    """
    expected = currency(app)
    if not isinstance(code, str) or code.upper() != expected:
        raise CurrencyMismatch(f"Amount is in {code!r} but this shop's loyalty currency is {expected}.")
    return expected


def parse_amount(value: MoneyInput, code: str | None = None) -> Decimal:
    """Parse ``value`` into a :class:`~decimal.Decimal` of the currency.

    No rounding happens: an amount finer than the minor unit (``1.005`` in a
    two-decimal currency) is refused, as are floats, booleans, NaN, infinity
    and amounts of more than :data:`MAX_MINOR` minor units.

    :raises InvalidRequest: if ``value`` is not an exact amount of the currency.
    """
    return _exact(value, decimals(code))


#: Per number of decimals: the largest amount and the minor unit.
_LIMITS: dict[int, tuple[Decimal, Decimal]] = {}


def _limits(exp: int) -> tuple[Decimal, Decimal]:
    try:
        return _LIMITS[exp]
    except KeyError:
        return _LIMITS.setdefault(exp, (Decimal(MAX_MINOR).scaleb(-exp), Decimal(1).scaleb(-exp)))


def _exact(value: MoneyInput, exp: int) -> Decimal:
    """:func:`parse_amount` for a currency with ``exp`` decimals."""
    if type(value) is Decimal:
        amount = value
    else:
        if isinstance(value, bool) or isinstance(value, float):
            raise InvalidRequest(f"Money must be a Decimal, int or str, not {value!r}.")
        try:
            amount = Decimal(value)
        except (decimal.InvalidOperation, TypeError, ValueError):
            raise InvalidRequest(f"{value!r} is not an amount of money.") from None
    if not amount.is_finite():
        raise InvalidRequest(f"{value!r} is not a finite amount of money.")
    largest, unit = _limits(exp)
    # Checked before quantizing, which fails on more digits than the context holds.
    if amount.copy_abs() > largest:
        raise InvalidRequest(f"{value!r} is too large an amount of money.")
    if amount != amount.quantize(unit, rounding=decimal.ROUND_DOWN):
        raise InvalidRequest(f"{value!r} has more than {exp} decimal place(s).")
    return amount


def to_minor(value: MoneyInput, code: str | None = None) -> int:
    """Convert an amount to integer minor units (``Decimal("12.34")`` → ``1234``).

    Exact: see :func:`parse_amount` for what is refused.
    """
    return Currency.of(code).to_minor(value)


def from_minor(minor: int, code: str | None = None) -> Decimal:
    """Convert integer minor units back to a :class:`~decimal.Decimal`. Exact."""
    exp = decimals(code)
    return Decimal(minor).scaleb(-exp).quantize(Decimal(1).scaleb(-exp))
