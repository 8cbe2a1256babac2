"""Translated, member-facing messages for the errors the services raise.

The services' own messages are English and meant for logs and developers;
the member pages show these instead, in the request's language, with an HTTP
status that fits the error.

.. versionadded:: 0.1
"""

from __future__ import annotations

import typing as t

from .errors import ConcurrencyError
from .errors import IdempotencyConflict
from .errors import InsufficientPoints
from .errors import InvalidRequest
from .errors import InvalidState
from .errors import LoyaltyError
from .errors import MemberClosed
from .errors import MemberNotFound
from .errors import NotFound
from .errors import RewardUnavailable
from .i18n import format_number
from .i18n import gettext as _
from .i18n import lazy_gettext as _l

#: Why a reward cannot be redeemed, by :attr:`RewardUnavailable.reason`.
UNAVAILABLE = {
    "inactive": _l("%(name)s is not available."),
    "not_started": _l("%(name)s is not available yet."),
    "ended": _l("%(name)s is no longer available."),
    "out_of_stock": _l("%(name)s is out of stock."),
    "limit_reached": _l("You already hold as many of %(name)s as one member may."),
    "tier_required": _l("%(name)s is for %(tier)s members and above."),
}


def unavailable_message(reason: str, reward: t.Any) -> str:
    """Why ``reward`` cannot be redeemed, for :attr:`RewardUnavailable.reason` ``reason``."""
    message = UNAVAILABLE.get(reason)
    if message is None:
        return _("This reward cannot be redeemed now.")
    return _(message.message, name=reward.name, tier=reward.tier or "")


def describe(
    error: LoyaltyError,
    *,
    reward: t.Any = None,
    not_found: str | None = None,
    invalid_state: str | None = None,
    invalid_request: str | None = None,
) -> tuple[int, str]:
    """The HTTP status and the translated message for ``error``.

    :param reward: the reward concerned, to name it in the message.
    :param not_found: the message for :class:`~flask_loyalty.errors.NotFound`.
    :param invalid_state: the message for :class:`~flask_loyalty.errors.InvalidState`.
    :param invalid_request: the message for :class:`~flask_loyalty.errors.InvalidRequest`.
    """
    if isinstance(error, RewardUnavailable):
        return 409, unavailable_message(error.reason, reward)
    if isinstance(error, InsufficientPoints):
        return 409, _(
            "You do not have enough points: this needs %(requested)s and you have %(available)s.",
            requested=format_number(error.requested),
            available=format_number(max(error.available, 0)),
        )
    if isinstance(error, NotFound | MemberNotFound):
        return 404, not_found or _("This page does not exist.")
    if isinstance(error, MemberClosed):
        return 403, _("Your loyalty account is closed.")
    if isinstance(error, IdempotencyConflict):
        return 409, _("This form was already used for something else; reload the page and try again.")
    if isinstance(error, InvalidState):
        return 409, invalid_state or _("This cannot be done any more.")
    if isinstance(error, ConcurrencyError):
        return 503, _("The shop is busy; please try again in a moment.")
    if isinstance(error, InvalidRequest):
        return 400, invalid_request or _("The request is not valid.")
    return 400, _("The request could not be completed.")


def limits_message(offer: t.Any, points: int) -> str:
    """Why ``points`` cannot be applied within a :class:`~flask_loyalty.checkout.PointsOffer`."""
    if not offer.usable:
        return _(
            "Points cannot pay this order: at least %(minimum)s are needed and at most %(maximum)s"
            " can be applied.",
            minimum=format_number(offer.minimum),
            maximum=format_number(max(offer.maximum, 0)),
        )
    if points < offer.minimum:
        return _("Apply at least %(minimum)s points.", minimum=format_number(offer.minimum))
    if points > offer.maximum:
        return _(
            "At most %(maximum)s points can be applied to this order.", maximum=format_number(offer.maximum)
        )
    if points % offer.step:
        return _("Points are applied in steps of %(step)s.", step=format_number(offer.step))
    return _("These points cannot be applied to this order.")
