"""The JSON API: a blueprint of thin views over the services.

:func:`create_api_blueprint` builds it; :meth:`~flask_loyalty.Loyalty.init_app`
registers it at ``LOYALTY_API_URL_PREFIX`` (``/loyalty/api``) as
``LOYALTY_API_BLUEPRINT_NAME`` unless ``LOYALTY_API_ENABLED`` is false.

Each view parses its query and body with a schema of
:mod:`flask_loyalty.schemas`, calls one service function and dumps the
result; the request plumbing (authentication, CSRF, JSON bodies,
``Idempotency-Key``, errors) lives in :mod:`flask_loyalty.api_http`. The
operations are listed in :data:`ENDPOINTS`, from which
:mod:`flask_loyalty.openapi` builds the OpenAPI document. See
``docs/http_api.rst``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import secrets
import typing as t
import weakref
from decimal import Decimal

from flask import Blueprint
from flask import current_app
from flask import Flask
from flask import request
from flask_wtf.csrf import generate_csrf
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from . import checkout
from . import earning
from . import history
from . import members
from . import rewards
from . import schemas
from . import tiers
from .api_errors import error_response
from .api_http import authenticate
from .api_http import decode_cursor
from .api_http import dispatch
from .api_http import encode_cursor
from .api_http import not_routed
from .api_http import reference_of
from .api_http import reward_of
from .api_http import within_ids
from .config import config_value
from .errors import LoyaltyError
from .errors import NotFound
from .i18n import gettext
from .idempotency import KEY_HEADER
from .openapi import build_document
from .openapi import Endpoint
from .rules import LineContext

__all__ = ["ENDPOINTS", "create_api_blueprint"]

#: Every operation of the API, in the order of the OpenAPI document.
ENDPOINTS: list[Endpoint] = []

V = t.TypeVar("V", bound=t.Callable[..., t.Any])


def _endpoint(
    method: str, rule: str, summary: str, response: type[t.Any] | None, **options: t.Any
) -> t.Callable[[V], V]:
    def register(view: V) -> V:
        ENDPOINTS.append(Endpoint(method, rule, view.__name__, summary, view, response, **options))
        return view

    return register


# -- the member's points -------------------------------------------------------


@_endpoint("GET", "/balance", "The member's balances, tier and points expiring soon.", schemas.Balance)
def balance(member_id: int, query: dict[str, t.Any], body: t.Any) -> dict[str, t.Any]:
    held = members.balances(member_id)
    standing = tiers.standing(member_id)
    next_tier = standing.next_tier
    return {
        "member_id": member_id,
        "available": held.available,
        "pending": held.pending,
        "reserved": held.reserved,
        "lifetime_earned": held.lifetime_earned,
        "tier": {
            "name": standing.tier,
            "since": standing.since,
            "metric": standing.metric,
            "qualified": standing.qualified,
            "next_tier": next_tier and {"name": next_tier.name, "minimum": next_tier.minimum},
            "to_next": standing.to_next,
        },
        "expiring_soon": history.expiring_soon(member_id),
    }


@_endpoint(
    "GET", "/history", "The member's ledger entries, newest first.", schemas.HistoryPage,
    query=schemas.HistoryQuery,
    description="Cursor pagination: pass a page's `next_cursor` as `cursor` for the next page.",
)  # fmt: skip
def entries(member_id: int, query: dict[str, t.Any], body: t.Any) -> dict[str, t.Any]:
    before = decode_cursor(query.get("cursor"))
    page = history.history(member_id, kinds=query.get("kind", ()), since=query.get("since"),
                           until=query.get("until"), limit=query.get("limit"), before=before)  # fmt: skip
    return {"entries": page.entries, "next_cursor": encode_cursor(page.next_before)}


@_endpoint("GET", "/history/<int:entry_id>", "One of the member's ledger entries.", schemas.Entry,
           errors=(404,))  # fmt: skip
def entry(member_id: int, query: dict[str, t.Any], body: t.Any, entry_id: int) -> t.Any:
    page = history.history(member_id, before=within_ids(entry_id) + 1, limit=1)
    if not page.entries or page.entries[0].id != entry_id:
        raise NotFound(gettext("There is no entry %(id)s.", id=entry_id))
    return page.entries[0]


@_endpoint(
    "POST", "/quote", "The points a cart would earn if it were paid now.", schemas.Quote,
    body=schemas.QuoteRequest,
)  # fmt: skip
def quote(member_id: int, query: dict[str, t.Any], body: dict[str, t.Any]) -> t.Any:
    lines = [
        LineContext(
            line["sku"],
            line["quantity"],
            line["unit_price"],
            line.get("category"),
            line.get("name", ""),
            line.get("discount") or Decimal(0),
        )  # fmt: skip
        for line in body["lines"]
    ]
    return earning.quote(lines, member=member_id)


# -- rewards -------------------------------------------------------------------


def _rewards(member_id: int, found: list[rewards.Reward]) -> list[dict[str, t.Any]]:
    why = rewards.availability(member_id, found)
    available = members.balances(member_id).available
    out = []
    for reward in found:
        problem = why.get(reward.id)
        out.append({
            **reward.__dict__, "available": problem is None, "affordable": available >= reward.cost,
            "unavailable_reason": None if problem is None else problem.reason,
            "unavailable_message": None if problem is None else problem.message,
        })  # fmt: skip
    return out


@_endpoint("GET", "/rewards", "The reward catalogue, cheapest first.", schemas.RewardList)
def reward_list(member_id: int, query: dict[str, t.Any], body: t.Any) -> dict[str, t.Any]:
    return {"rewards": _rewards(member_id, rewards.list_rewards())}


@_endpoint("GET", "/rewards/<reward>", "One reward, by slug or id.", schemas.Reward, errors=(404,))
def reward_detail(member_id: int, query: dict[str, t.Any], body: t.Any, reward: str) -> dict[str, t.Any]:
    return _rewards(member_id, [reward_of(reward)])[0]


@_endpoint(
    "POST", "/redemptions", "Redeem points for a reward.", schemas.Redemption, status=201,
    body=schemas.RedeemRequest, errors=(404,),
    description="The Idempotency-Key, if any, is also the redemption's key: one reward per key.",
)  # fmt: skip
def redeem(member_id: int, query: dict[str, t.Any], body: dict[str, t.Any]) -> t.Any:
    reward = reward_of(body["reward"])
    key = request.headers.get(KEY_HEADER) or secrets.token_urlsafe(24)
    return rewards.redeem_reward(member_id, reward.id, key=f"api:{key}", actor="api")


@_endpoint(
    "GET", "/redemptions", "The member's redemptions, newest first.", schemas.RedemptionList,
    query=schemas.PageQuery,
)  # fmt: skip
def redemption_list(member_id: int, query: dict[str, t.Any], body: t.Any) -> dict[str, t.Any]:
    size = query.get("limit") or min(int(config_value("PAGE_SIZE")), schemas.MAX_PAGE)
    before = decode_cursor(query.get("cursor"))
    found = rewards.member_redemptions(member_id, limit=size + 1, before_id=before)
    more = len(found) > size
    return {"redemptions": found[:size], "next_cursor": encode_cursor(found[size - 1].id if more else None)}


@_endpoint(
    "GET", "/redemptions/<int:redemption_id>", "One of the member's redemptions.", schemas.Redemption,
    errors=(404,),
)  # fmt: skip
def redemption_detail(member_id: int, query: dict[str, t.Any], body: t.Any, redemption_id: int) -> t.Any:
    return rewards.get_redemption(member_id, within_ids(redemption_id))


@_endpoint(
    "POST", "/redemptions/<int:redemption_id>/cancel", "Cancel an unused redemption; its points come back.",
    schemas.Redemption, body=schemas.EmptyBody, errors=(404,),
)  # fmt: skip
def cancel(member_id: int, query: dict[str, t.Any], body: t.Any, redemption_id: int) -> t.Any:
    return rewards.cancel_redemption(member_id, within_ids(redemption_id), actor="api")


# -- paying with points at checkout ---------------------------------------------


@_endpoint(
    "GET", "/reservations/<reference>/offer", "How many points may pay part of the order.", schemas.Offer,
    query=schemas.OfferQuery,
)  # fmt: skip
def offer(member_id: int, query: dict[str, t.Any], body: t.Any, reference: str) -> t.Any:
    return checkout.offer(member_id, reference=reference_of(reference), payable_total=query["payable_total"])


@_endpoint(
    "GET", "/reservations/<reference>", "The points held for the order.", schemas.AppliedPoints, errors=(404,)
)
def applied(member_id: int, query: dict[str, t.Any], body: t.Any, reference: str) -> t.Any:
    held = checkout.applied_points(member_id, reference=reference_of(reference))
    if held is None:
        raise NotFound(gettext("No points are held for order %(reference)s.", reference=reference))
    return held


@_endpoint(
    "POST", "/reservations/<reference>", "Hold points to pay part of the order.", schemas.AppliedPoints,
    status=201, body=schemas.ApplyPointsRequest,
    description="Another amount replaces the hold; the same amount again changes nothing.",
)  # fmt: skip
def apply(member_id: int, query: dict[str, t.Any], body: dict[str, t.Any], reference: str) -> t.Any:
    return checkout.apply_points(member_id, reference=reference_of(reference), points=body["points"],
                                 payable_total=body["payable_total"], actor="api")  # fmt: skip


@_endpoint(
    "DELETE", "/reservations/<reference>", "Release the points held for the order.", schemas.AppliedPoints,
    errors=(404,),
)  # fmt: skip
def remove(member_id: int, query: dict[str, t.Any], body: t.Any, reference: str) -> t.Any:
    return checkout.remove_points(member_id, reference=reference_of(reference), actor="api")


@_endpoint("GET", "/csrf-token", "A CSRF token for calls authenticated by the session cookie.",
           schemas.CsrfToken)  # fmt: skip
def csrf_token(member_id: int, query: dict[str, t.Any], body: t.Any) -> dict[str, t.Any]:
    return {"csrf_token": generate_csrf()}


@_endpoint("GET", "/openapi.json", "This API's OpenAPI 3 document.", None, public=True)
def openapi(member_id: None, query: dict[str, t.Any], body: t.Any) -> dict[str, t.Any]:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    document = _documents.get(app)
    if document is None:
        document = _documents[app] = build_document(
            ENDPOINTS,
            prefix=str(config_value("API_URL_PREFIX")),
            title="Loyalty API",
            version="1",
            cookie=str(current_app.config.get("SESSION_COOKIE_NAME") or "session"),
        )
    return document


#: The OpenAPI document of each app, built on first request.
_documents: weakref.WeakKeyDictionary[Flask, dict[str, t.Any]] = weakref.WeakKeyDictionary()


class AnyPath(PathConverter):
    """A path converter that matches any characters, newlines included."""

    regex = "(?s:.+)"
    part_isolating = False


def create_api_blueprint(app: Flask) -> Blueprint:
    """Build the JSON API's blueprint for ``app``.

    Its name is ``LOYALTY_API_BLUEPRINT_NAME`` and its prefix
    ``LOYALTY_API_URL_PREFIX``. The blueprint is exempt from Flask-WTF's
    ``CSRFProtect`` (registered before or after the extension): it checks the
    CSRF token itself, of calls authenticated by the session cookie only.
    """
    name = str(config_value("API_BLUEPRINT_NAME", app))
    prefix = str(config_value("API_URL_PREFIX", app))
    bp = Blueprint(name, __name__, url_prefix=prefix)
    for endpoint in ENDPOINTS:

        def view(_endpoint: Endpoint = endpoint, **path: t.Any) -> t.Any:
            return dispatch(_endpoint, path)

        bp.add_url_rule(endpoint.rule, endpoint.name, view, methods=[endpoint.method])
    # Werkzeug's ``path`` converter stops at a newline; this one takes anything,
    # so that every URL under the prefix gets a JSON answer.
    app.url_map.converters.setdefault("loyalty_any", AnyPath)
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    bp.add_url_rule("/", "not_routed", not_routed, methods=methods, defaults={"path": ""})
    bp.add_url_rule("/<loyalty_any:path>", "not_routed", not_routed, methods=methods)
    bp.before_request(authenticate)
    for error in (LoyaltyError, ValidationError, HTTPException):
        bp.register_error_handler(error, error_response)

    @bp.before_app_request
    def exempt_from_csrf_protect() -> None:
        csrf = current_app.extensions.get("csrf")
        if csrf is not None and request.blueprint == name:
            csrf.exempt(bp)

    if "csrf" in app.extensions:
        app.extensions["csrf"].exempt(bp)
    return bp
