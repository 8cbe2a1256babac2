"""How the JSON API answers errors: one JSON shape, a stable code, a fitting status.

Every error response of the API has the body::

    {"error": {"code": "insufficient_points", "message": "Free coffee costs 500 points; you have 120."}}

with ``fields`` (per field, what is wrong) for validation errors, ``reason``
for an unavailable reward, and ``available`` and ``requested`` for
insufficient points. :data:`STATUS_BY_ERROR` maps the extension's
:class:`~flask_loyalty.errors.LoyaltyError` classes to HTTP statuses; the
table in ``docs/http_api.rst`` lists every code.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import typing as t

from flask import current_app
from flask import Response
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

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
from .i18n import gettext

__all__ = ["ApiError", "STATUS_BY_ERROR", "error_response", "json_response"]


class ApiError(LoyaltyError):
    """An error of the HTTP exchange itself (authentication, CSRF, the body's format).

    :param status: the HTTP status to answer with.
    :param code: the stable code of the error.
    :param message: a human-readable explanation.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        #: The HTTP status of the response.
        self.status = status
        self.code = code


#: The HTTP status of each kind of :class:`~flask_loyalty.errors.LoyaltyError`;
#: the first class that matches wins. 409 is for a request that is well
#: formed but conflicts with the state of the account, a reward or an order;
#: 422 for a request that is invalid whatever the state.
STATUS_BY_ERROR: tuple[tuple[type[LoyaltyError], int], ...] = (
    (NotFound, 404),
    (MemberNotFound, 403),
    (MemberClosed, 403),
    (InsufficientPoints, 409),
    (RewardUnavailable, 409),
    (IdempotencyConflict, 409),
    (InvalidState, 409),
    (ConcurrencyError, 503),
    (InvalidRequest, 422),
)

#: Codes of the HTTP errors that Werkzeug raises (unknown route, wrong method...).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
}


def json_response(payload: t.Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response that no cache keeps (member data is private)."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    response = current_app.response_class(body, status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers or {})
    return response


def _detail(error: BaseException) -> tuple[int, dict[str, t.Any], dict[str, str]]:
    """The status, the ``error`` object and extra headers for ``error``."""
    detail: dict[str, t.Any]
    if isinstance(error, ApiError):
        return error.status, {"code": error.code, "message": error.message}, {}
    if isinstance(error, ValidationError):
        messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        detail = {
            "code": "validation_error",
            "message": gettext("The request is not valid: see the fields."),
            "fields": messages,
        }
        return 422, detail, {}
    if isinstance(error, LoyaltyError):
        status = next((s for cls, s in STATUS_BY_ERROR if isinstance(error, cls)), 422)
        detail = {"code": error.code, "message": error.message}
        if isinstance(error, RewardUnavailable):
            detail["reason"] = error.reason
        if isinstance(error, InsufficientPoints):
            detail.update(available=error.available, requested=error.requested)
        return status, detail, {"Retry-After": "1"} if status == 503 else {}
    if isinstance(error, HTTPException):
        status = error.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        headers: dict[str, str] = {}
        allowed = getattr(error, "valid_methods", None)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
        return status, {"code": code, "message": error.description or error.name}, headers
    return 500, {"code": "internal_error", "message": gettext("The server failed to answer.")}, {}


def error_response(error: BaseException) -> Response:
    """The JSON response for ``error`` (any exception; unknown ones give a 500)."""
    status, detail, headers = _detail(error)
    return json_response({"error": detail}, status, headers)
