"""marshmallow schemas of the JSON API: what requests may carry and what responses hold.

Every schema refuses unknown fields (``unknown = RAISE``). Balances, member
ids, statuses and every other server-side fact appear only in response
schemas, as ``dump_only`` fields: a client can never set them. Money travels
as strings (``"12.50"``), points as JSON integers, times as ISO 8601 strings
in UTC. :mod:`flask_loyalty.openapi` turns these schemas into the API's
OpenAPI document.

.. versionadded:: 0.1
"""

from __future__ import annotations

import datetime as dt
import re
import typing as t
from decimal import Decimal

from marshmallow import fields
from marshmallow import RAISE
from marshmallow import Schema
from marshmallow import validate
from marshmallow import ValidationError

from .errors import InvalidRequest
from .models import ENTRY_KINDS

#: Money in requests: digits with an optional fraction, never negative.
MONEY_PATTERN = r"^[0-9]{1,15}(\.[0-9]{1,4})?$"
#: Order references the API accepts in its paths.
REFERENCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,149}$"
#: A reward's slug, or its id in digits.
REWARD_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
#: The largest id the API looks up (the largest integer JSON keeps exact).
MAX_ID = 2**53 - 1
#: The most points one request may name.
MAX_POINTS = 10**12
#: The most entries or redemptions on one page.
MAX_PAGE = 100


class StrictSchema(Schema):
    """Base of every API schema: unknown fields are an error."""

    class Meta:
        unknown = RAISE


class Money(fields.String):
    """An amount of money as a decimal string (``"12.50"``), in the shop's currency.

    Loading refuses anything but such a string, and amounts finer than the
    currency's minor unit; dumping writes the :class:`~decimal.Decimal` as a
    string.
    """

    def __init__(self, **kwargs: t.Any) -> None:
        metadata = {"example": "12.50", **kwargs.pop("metadata", {})}
        if not kwargs.get("dump_only"):
            metadata["pattern"] = MONEY_PATTERN
        super().__init__(metadata=metadata, **kwargs)

    def _serialize(self, value: t.Any, attr: str | None, obj: t.Any, **kwargs: t.Any) -> str | None:
        from .money import decimals

        if value is None:
            return None
        amount = Decimal(value)
        unit = Decimal(1).scaleb(-decimals())
        if amount == amount.quantize(unit):
            amount = amount.quantize(unit)
        return format(amount, "f")

    def _deserialize(  # type: ignore[override]
        self, value: t.Any, attr: str | None, data: t.Any, **kwargs: t.Any
    ) -> Decimal:
        from .money import parse_amount

        text = super()._deserialize(value, attr, data, **kwargs)
        if not re.fullmatch(MONEY_PATTERN[1:-1], text):
            raise ValidationError('Not an amount of money such as "12.50".')
        try:
            return parse_amount(text)
        except InvalidRequest as error:
            raise ValidationError(error.message) from None


class UtcDateTime(fields.DateTime):
    """A time as ISO 8601; loaded as naive UTC (a naive input is taken as UTC), dumped with ``Z``."""

    def _serialize(self, value: t.Any, attr: str | None, obj: t.Any, **kwargs: t.Any) -> str | None:
        if value is None:
            return None
        return t.cast(dt.datetime, value).replace(tzinfo=None).isoformat() + "Z"

    def _deserialize(self, value: t.Any, attr: str | None, data: t.Any, **kwargs: t.Any) -> dt.datetime:
        when = super()._deserialize(value, attr, data, **kwargs)
        try:
            if when.tzinfo is not None:
                when = when.astimezone(dt.UTC).replace(tzinfo=None)
        except (OverflowError, ValueError):
            raise ValidationError("The time is out of range.") from None
        if not 1970 <= when.year <= 9998:
            raise ValidationError("The time must be between the years 1970 and 9998.")
        return when


def _points(**kwargs: t.Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(1, MAX_POINTS), **kwargs)


def _limit() -> fields.Integer:
    return fields.Integer(
        validate=validate.Range(1, MAX_PAGE), metadata={"description": f"Items per page, 1 to {MAX_PAGE}."}
    )


def _cursor() -> fields.String:
    return fields.String(
        validate=validate.Length(1, 40),
        metadata={"description": "The `next_cursor` of the previous page."},
    )


def _out(field: type[t.Any], **kwargs: t.Any) -> t.Any:
    """A response-only field, nullable unless ``allow_none=False``."""
    kwargs.setdefault("allow_none", True)
    return field(dump_only=True, **kwargs)


# -- requests ------------------------------------------------------------------


class EmptyQuery(StrictSchema):
    """An operation that takes no query parameters."""


class HistoryQuery(StrictSchema):
    """Filters and the page of ``GET /history``."""

    kind = fields.List(
        fields.String(validate=validate.OneOf(ENTRY_KINDS)),
        metadata={"description": "Only entries of these kinds (repeat the parameter for several)."},
    )
    since = UtcDateTime(metadata={"description": "Only entries created at or after this time."})
    until = UtcDateTime(metadata={"description": "Only entries created before this time."})
    cursor = _cursor()
    limit = _limit()


class PageQuery(StrictSchema):
    """The page of a list."""

    cursor = _cursor()
    limit = _limit()


class OfferQuery(StrictSchema):
    """The order total that ``GET /reservations/{reference}/offer`` works from."""

    payable_total = Money(required=True, metadata={"description": "The order's payable total before points."})


class QuoteLine(StrictSchema):
    """One line of a cart to quote."""

    sku = fields.String(required=True, validate=validate.Length(1, 64))
    quantity = fields.Integer(required=True, strict=True, validate=validate.Range(1, 10**6))
    unit_price = Money(required=True)
    category = fields.String(allow_none=True, validate=validate.Length(0, 64))
    name = fields.String(validate=validate.Length(0, 200))
    discount = Money(metadata={"description": "A discount on the line, taken off its amount."})


class QuoteRequest(StrictSchema):
    """``POST /quote``: the cart's lines."""

    lines = fields.List(fields.Nested(QuoteLine), required=True, validate=validate.Length(1, 500))


class RedeemRequest(StrictSchema):
    """``POST /redemptions``: which reward to redeem."""

    reward = fields.String(
        required=True,
        validate=validate.Regexp(REWARD_PATTERN),
        metadata={"description": "The reward's slug, or its id.", "example": "free-coffee"},
    )


class EmptyBody(StrictSchema):
    """An operation whose JSON body, if any, is an empty object."""


class ApplyPointsRequest(StrictSchema):
    """``POST /reservations/{reference}``: the points to hold for the order."""

    points = _points(required=True)
    payable_total = Money(required=True, metadata={"description": "The order's payable total before points."})


# -- responses -----------------------------------------------------------------


class NextTier(StrictSchema):
    """The next tier up."""

    name = _out(fields.String, allow_none=False)
    minimum = _out(
        fields.Integer,
        allow_none=False,
        metadata={"description": "The metric that reaches it: points, or minor units of money."},
    )


class TierStanding(StrictSchema):
    """The member's tier and the way to the next."""

    name = _out(fields.String)
    since = _out(UtcDateTime)
    metric = _out(
        fields.Integer,
        allow_none=False,
        metadata={"description": "The tier metric now: points, or minor units of money."},
    )
    qualified = _out(fields.String)
    next_tier = _out(fields.Nested, nested=NextTier)
    to_next = _out(fields.Integer)


class Expiring(StrictSchema):
    """Available points that expire soon."""

    points = _out(fields.Integer, allow_none=False)
    soonest = _out(UtcDateTime)
    until = _out(UtcDateTime, allow_none=False)


class Balance(StrictSchema):
    """``GET /balance``."""

    member_id = _out(fields.Integer, allow_none=False)
    available = _out(fields.Integer, allow_none=False)
    pending = _out(fields.Integer, allow_none=False)
    reserved = _out(fields.Integer, allow_none=False)
    lifetime_earned = _out(fields.Integer, allow_none=False)
    tier = _out(fields.Nested, nested=TierStanding, allow_none=False)
    expiring_soon = _out(fields.Nested, nested=Expiring, allow_none=False)


class Entry(StrictSchema):
    """One ledger entry."""

    id = _out(fields.Integer, allow_none=False)
    kind = _out(fields.String, allow_none=False)
    points = _out(fields.Integer, allow_none=False)
    delta_available = _out(fields.Integer, allow_none=False)
    delta_pending = _out(fields.Integer, allow_none=False)
    delta_reserved = _out(fields.Integer, allow_none=False)
    available_after = _out(fields.Integer, allow_none=False)
    pending_after = _out(fields.Integer, allow_none=False)
    reserved_after = _out(fields.Integer, allow_none=False)
    source_key = _out(fields.String, allow_none=False)
    reverses_id = _out(fields.Integer)
    reason = _out(fields.String)
    created_at = _out(UtcDateTime, allow_none=False)


class HistoryPage(StrictSchema):
    """``GET /history``: a page of entries, newest first."""

    entries = _out(fields.List, cls_or_instance=fields.Nested(Entry), allow_none=False)
    next_cursor = _out(fields.String, metadata={"description": "Pass as `cursor` for the next page."})


class QuotedLine(StrictSchema):
    """What one line earns."""

    index = _out(fields.Integer, allow_none=False)
    sku = _out(fields.String, allow_none=False)
    basis = _out(Money, allow_none=False)
    multiplier = _out(fields.String, allow_none=False)
    points = _out(fields.Integer, allow_none=False)


class AppliedRule(StrictSchema):
    """One rule's effect on a quote."""

    rule = _out(fields.String, allow_none=False)
    effect = _out(fields.String, allow_none=False)
    explanation = _out(fields.String, allow_none=False)
    line = _out(fields.Integer)


class Quote(StrictSchema):
    """``POST /quote``: the points the cart would earn."""

    points = _out(fields.Integer, allow_none=False)
    vetoed = _out(fields.Boolean, allow_none=False)
    lines = _out(fields.List, cls_or_instance=fields.Nested(QuotedLine), allow_none=False)
    applied = _out(fields.List, cls_or_instance=fields.Nested(AppliedRule), allow_none=False)


class Reward(StrictSchema):
    """A reward of the catalogue, with whether the member can redeem it now."""

    id = _out(fields.Integer, allow_none=False)
    slug = _out(fields.String, allow_none=False)
    name = _out(fields.String, allow_none=False)
    description = _out(fields.String, allow_none=False)
    kind = _out(fields.String, allow_none=False)
    cost = _out(fields.Integer, allow_none=False)
    amount = _out(Money)
    percent = _out(fields.Integer)
    sku = _out(fields.String)
    stock = _out(fields.Integer)
    per_member_limit = _out(fields.Integer)
    tier = _out(fields.String)
    starts_at = _out(UtcDateTime)
    ends_at = _out(UtcDateTime)
    valid_days = _out(fields.Integer)
    available = _out(
        fields.Boolean, allow_none=False, metadata={"description": "Redeemable now, points aside"}
    )
    unavailable_reason = _out(fields.String, metadata={"description": "Why not, as a stable code."})
    unavailable_message = _out(fields.String)
    affordable = _out(fields.Boolean, allow_none=False, metadata={"description": "The balance covers it."})


class RewardList(StrictSchema):
    """``GET /rewards``: the catalogue, cheapest first."""

    rewards = _out(fields.List, cls_or_instance=fields.Nested(Reward), allow_none=False)


class Redemption(StrictSchema):
    """A reward the member bought, with its code."""

    id = _out(fields.Integer, allow_none=False)
    reward_id = _out(fields.Integer, allow_none=False)
    reward_slug = _out(fields.String, allow_none=False)
    reward_name = _out(fields.String, allow_none=False)
    kind = _out(fields.String, allow_none=False)
    amount = _out(Money)
    percent = _out(fields.Integer)
    sku = _out(fields.String)
    code = _out(fields.String, allow_none=False)
    points = _out(fields.Integer, allow_none=False)
    status = _out(fields.String, allow_none=False)
    expires_at = _out(UtcDateTime)
    order_reference = _out(fields.String)
    used_at = _out(UtcDateTime)
    cancelled_at = _out(UtcDateTime)
    created_at = _out(UtcDateTime, allow_none=False)


class RedemptionList(StrictSchema):
    """``GET /redemptions``: the member's redemptions, newest first."""

    redemptions = _out(fields.List, cls_or_instance=fields.Nested(Redemption), allow_none=False)
    next_cursor = _out(fields.String)


class AppliedPoints(StrictSchema):
    """Points held for (or captured by) an order."""

    reference = _out(fields.String, allow_none=False)
    points = _out(fields.Integer, allow_none=False)
    discount = _out(Money, allow_none=False)
    currency = _out(fields.String, allow_none=False)
    status = _out(fields.String, allow_none=False)
    expires_at = _out(UtcDateTime)


class Offer(StrictSchema):
    """How many points the member may apply to an order."""

    payable = _out(Money, allow_none=False)
    currency = _out(fields.String, allow_none=False)
    available = _out(fields.Integer, allow_none=False)
    minimum = _out(fields.Integer, allow_none=False)
    maximum = _out(fields.Integer, allow_none=False)
    step = _out(fields.Integer, allow_none=False)
    point_value = _out(fields.String, allow_none=False)
    applied = _out(fields.Integer, allow_none=False)
    usable = _out(fields.Boolean, allow_none=False)
    max_discount = _out(Money, allow_none=False)


class CsrfToken(StrictSchema):
    """``GET /csrf-token``: a token for the ``X-CSRFToken`` header."""

    csrf_token = _out(fields.String, allow_none=False)


class ErrorDetail(StrictSchema):
    """What went wrong."""

    code = _out(fields.String, allow_none=False, metadata={"description": "A stable machine-readable code."})
    message = _out(fields.String, allow_none=False, metadata={"description": "A human-readable explanation."})
    reason = _out(fields.String, allow_none=False, metadata={"description": "Why a reward is unavailable."})
    available = _out(fields.Integer, allow_none=False, metadata={"description": "Insufficient: the balance."})
    requested = _out(fields.Integer, allow_none=False, metadata={"description": "Insufficient: the cost."})
    field_errors = _out(
        fields.Dict,
        data_key="fields",
        allow_none=False,
        metadata={"description": "Per field, what is wrong with it (validation errors only)."},
    )


class Error(StrictSchema):
    """Every error response."""

    error = _out(fields.Nested, nested=ErrorDetail, allow_none=False)
