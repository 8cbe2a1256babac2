"""Reading a host shop's orders in loyalty terms.

An order adapter turns whatever object a shop calls an order into
:class:`OrderData`. The extension's own :class:`~flask_loyalty.models.OrderMixin`
model needs none; a shop with its own order model either registers an
:class:`AttributeOrderAdapter` that names its attributes, or a callable that
builds :class:`OrderData` itself::

    loyalty.order_adapter(AttributeOrderAdapter(reference="number", user="customer",
                                                 total="grand_total", lines="items"))

Amounts are read as :class:`~decimal.Decimal` (or, with ``minor_units=True``,
as integer minor units) and checked by :mod:`flask_loyalty.money`: floats and
amounts finer than the currency's minor unit are refused.
"""

from __future__ import annotations

import dataclasses
import typing as t
from decimal import Decimal

from .errors import InvalidRequest
from .money import from_minor
from .money import parse_amount
from .rules import LineContext


@dataclasses.dataclass(frozen=True)
class OrderData:
    """An order as the loyalty programme sees it.

    ``total`` is the order's grand total before any part paid with points
    (goods less discounts, plus shipping and tax); ``paid_with_points`` is the
    money value of that part.
    """

    reference: str
    #: The buyer: the extension's ``Member``, or the host's user object.
    user: t.Any
    currency: str
    total: Decimal
    lines: tuple[LineContext, ...]
    shipping: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    discount: Decimal = Decimal(0)
    paid_with_points: Decimal = Decimal(0)


class OrderAdapter(t.Protocol):
    """What reads a host order: anything with a ``read(order)`` method."""

    def read(self, order: t.Any) -> OrderData:
        """Return the loyalty view of ``order``."""


def _get(obj: t.Any, name: str | None, default: t.Any = None) -> t.Any:
    if name is None:
        return default
    value = getattr(obj, name)
    return value() if callable(value) else value


class AttributeOrderAdapter:
    """Reads an order, and its lines, by attribute names.

    Each name may also name a method taking no arguments. ``None`` for an
    optional amount means the shop has no such amount (it counts as 0).

    :param minor_units: the shop stores amounts as integer minor units
        (cents), not decimals.
    :param currency: the attribute holding the order's currency code; the
        configured currency is assumed when ``None``.
    """

    def __init__(
        self,
        *,
        reference: str = "id",
        user: str = "user",
        total: str = "total",
        lines: str = "lines",
        currency: str | None = "currency",
        shipping: str | None = None,
        tax: str | None = None,
        discount: str | None = None,
        paid_with_points: str | None = None,
        line_sku: str = "sku",
        line_quantity: str = "quantity",
        line_unit_price: str = "unit_price",
        line_category: str | None = "category",
        line_name: str | None = "name",
        line_discount: str | None = None,
        minor_units: bool = False,
    ) -> None:
        self.names = dict(locals())
        del self.names["self"]

    def _money(self, value: t.Any, code: str) -> Decimal:
        if self.names["minor_units"]:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRequest(f"Amounts in minor units must be whole numbers, not {value!r}.")
            return from_minor(value, code)
        return parse_amount(value, code)

    def read(self, order: t.Any) -> OrderData:
        """Read ``order`` into :class:`OrderData`."""
        from .money import currency as configured

        n = self.names
        code = str(_get(order, n["currency"], None) or configured())

        def money(obj: t.Any, key: str) -> Decimal:
            return self._money(_get(obj, n[key], 0) or 0, code)

        def category(line: t.Any) -> str | None:
            value = _get(line, n["line_category"])
            return None if value is None else str(value)

        lines = tuple(
            LineContext(
                sku=str(_get(line, n["line_sku"])),
                quantity=_get(line, n["line_quantity"]),
                unit_price=money(line, "line_unit_price"),
                category=category(line),
                name=str(_get(line, n["line_name"], "") or ""),
                discount=money(line, "line_discount"),
            )
            for line in _get(order, n["lines"]) or ()
        )
        return OrderData(
            reference=str(_get(order, n["reference"])),
            user=_get(order, n["user"]),
            currency=code,
            total=money(order, "total"),
            lines=lines,
            shipping=money(order, "shipping"),
            tax=money(order, "tax"),
            discount=money(order, "discount"),
            paid_with_points=money(order, "paid_with_points"),
        )


#: Reads the extension's own ``Order`` model (amounts in minor units).
MODEL_ADAPTER = AttributeOrderAdapter(
    reference="reference",
    user="member",
    total="total_minor",
    lines="lines",
    shipping="shipping_minor",
    tax="tax_minor",
    discount="discount_minor",
    paid_with_points="points_value_minor",
    line_unit_price="unit_price_minor",
    line_discount="discount_minor",
    minor_units=True,
)
