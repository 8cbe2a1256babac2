"""The JSON API's request plumbing: who is calling, CSRF, bodies, keys and answers.

The views of :mod:`flask_loyalty.api` stay thin: :func:`dispatch` loads the
query and body with the operation's schemas, runs the view for the member
found by :func:`authenticate`, dumps the result, and turns every error into
the JSON of :mod:`flask_loyalty.api_errors`. POST requests with an
``Idempotency-Key`` run through :mod:`flask_loyalty.idempotency`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import typing as t
from urllib.parse import urlsplit

from flask import current_app
from flask import g
from flask import request
from flask import Response
from flask import session
from marshmallow import fields
from marshmallow import Schema
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound

from . import idempotency
from . import rewards
from . import schemas
from .api_errors import ApiError
from .api_errors import error_response
from .api_errors import json_response
from .errors import InvalidRequest
from .errors import LoyaltyError
from .errors import NotFound
from .i18n import gettext
from .members import member_for_user

if t.TYPE_CHECKING:
    from .openapi import Endpoint

__all__ = ["MAX_BODY", "authenticate", "dispatch", "not_routed", "encode_cursor", "decode_cursor",
           "reward_of", "reference_of", "within_ids"]  # fmt: skip

#: The largest request body the API reads, in bytes.
MAX_BODY = 64 * 1024
#: Statuses whose responses are stored for an Idempotency-Key: the request
#: was carried out, or refused for the state of things rather than for itself.
_STORED = frozenset({200, 201, 404, 409})


# -- who is calling --------------------------------------------------------------


def authenticate() -> None:
    """Find the member of the request (Flask-Login's ``current_user``) and check CSRF.

    Runs before every view of the blueprint but the public ones.

    :raises ApiError: 401 when nobody is logged in; 400 when a call that
        writes, authenticated by the session cookie, lacks a valid CSRF token.
    """
    if request.endpoint is None or request.endpoint.rsplit(".", 1)[-1] in ("openapi", "not_routed"):
        return
    if request.method == "OPTIONS":
        return
    user = _current_user()
    if user is None:
        raise ApiError(401, "unauthenticated", gettext("Log in to use this API."))
    g.loyalty_member_id = member_for_user(user)
    if request.method not in ("GET", "HEAD", "OPTIONS") and _by_session_cookie(user):
        _check_csrf()


def _current_user() -> t.Any:
    """The logged-in user, or ``None`` (also when the app has no Flask-Login)."""
    if getattr(current_app, "login_manager", None) is None:
        return None
    from flask_login import current_user

    user = current_user._get_current_object()
    return user if user is not None and user.is_authenticated else None


def _by_session_cookie(user: t.Any) -> bool:
    """Whether Flask-Login found ``user`` in the session (a cookie), not by a request loader."""
    found = session.get("_user_id")
    return found is not None and str(found) == str(user.get_id())


def _check_csrf() -> None:
    config = current_app.config
    if not config.get("WTF_CSRF_ENABLED", True):
        return
    from flask_wtf.csrf import validate_csrf
    from wtforms import ValidationError as CsrfInvalid

    names = config.get("WTF_CSRF_HEADERS") or ["X-CSRFToken", "X-CSRF-Token"]
    token = next((request.headers[name] for name in names if name in request.headers), None)
    try:
        validate_csrf(token)
    except CsrfInvalid:
        raise ApiError(
            400, "csrf_failed", gettext("The CSRF token is missing or invalid: send it in X-CSRFToken.")
        ) from None
    if request.is_secure and config.get("WTF_CSRF_SSL_STRICT", True):
        referrer = urlsplit(request.referrer or "")
        if referrer.scheme != "https" or referrer.netloc != request.host:
            raise ApiError(400, "csrf_failed", gettext("The Referer header does not match this site."))


# -- reading the request ---------------------------------------------------------


def _raw_body() -> bytes:
    if (request.content_length or 0) > MAX_BODY:
        raise ApiError(413, "payload_too_large", gettext("The body is larger than 64 KiB."))
    data = request.get_data(cache=True)
    if len(data) > MAX_BODY:
        raise ApiError(413, "payload_too_large", gettext("The body is larger than 64 KiB."))
    return data


def _refuse_constant(name: str) -> t.NoReturn:
    raise ValueError(name)


def _json_body() -> t.Any:
    """The request's JSON body, or ``{}`` when it has none."""
    data = _raw_body()
    if not data.strip():
        return {}
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", gettext("Send the body as application/json."))
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", gettext("The body is not valid JSON.")) from None


def _query(schema: Schema) -> dict[str, t.Any]:
    data: dict[str, t.Any] = {}
    for name in request.args.keys():
        values = request.args.getlist(name)
        if isinstance(schema.fields.get(name), fields.List):
            data[name] = values
        elif len(values) > 1:
            raise ValidationError({name: [gettext("Give this parameter once.")]})
        else:
            data[name] = values[0]
    return t.cast(dict[str, t.Any], schema.load(data))


def encode_cursor(before: int | None) -> str | None:
    """The opaque cursor of a page that continues before id ``before``."""
    if before is None:
        return None
    return base64.urlsafe_b64encode(str(before).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id a cursor of :func:`encode_cursor` holds.

    :raises ValidationError: if it is not such a cursor.
    """
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    if not re.fullmatch(r"[1-9][0-9]{0,15}", text) or int(text) > schemas.MAX_ID:
        raise ValidationError({"cursor": [gettext("Not a cursor of this list.")]})
    return int(text)


def within_ids(value: int) -> int:
    """``value`` if it can be an id, else :class:`~flask_loyalty.errors.NotFound`."""
    if not 1 <= value <= schemas.MAX_ID:
        raise NotFound(gettext("There is no such item."))
    return value


def reward_of(ref: str) -> rewards.Reward:
    """The reward with slug or id ``ref``.

    :raises NotFound: if there is none.
    """
    if not re.fullmatch(schemas.REWARD_PATTERN[1:-1], ref):
        raise NotFound(gettext("There is no reward %(reward)s.", reward=ref))
    if ref.isdigit() and int(ref) <= schemas.MAX_ID:
        try:
            return rewards.get_reward(int(ref))
        except NotFound:
            pass  # a slug made of digits
    return rewards.get_reward(ref)


def reference_of(ref: str) -> str:
    """``ref`` if the API accepts it as an order reference.

    :raises InvalidRequest: otherwise.
    """
    if not re.fullmatch(schemas.REFERENCE_PATTERN[1:-1], ref):
        raise InvalidRequest(
            gettext("An order reference is 1 to 150 letters, digits and . _ : - characters.")
        )
    return ref


# -- answering -------------------------------------------------------------------


def _run(endpoint: Endpoint, path: dict[str, t.Any]) -> Response:
    """Run the operation and return its response; errors become JSON responses."""
    try:
        query = _query(endpoint.query()) if endpoint.query is not None else {}
        body = endpoint.body().load(_json_body()) if endpoint.body is not None else None
        result = endpoint.view(getattr(g, "loyalty_member_id", None), query, body, **path)
        status = endpoint.status
        if getattr(result, "replayed", False) and status == 201:
            status = 200
        payload = result if endpoint.response is None else endpoint.response().dump(result)
        return json_response(payload, status)
    except (LoyaltyError, ValidationError, HTTPException) as error:
        return error_response(error)


def dispatch(endpoint: Endpoint, path: dict[str, t.Any]) -> Response:
    """Answer a request to ``endpoint``, through its Idempotency-Key if it has one."""
    key = request.headers.get(idempotency.KEY_HEADER)
    if endpoint.method != "POST" or key is None:
        return _run(endpoint, path)
    try:
        idempotency.check_key(key)
    except ValueError:
        message = gettext("Idempotency-Key must be 1 to 128 visible ASCII characters.")
        raise ApiError(400, "invalid_idempotency_key", message) from None
    print_ = idempotency.fingerprint(request.method, request.path, request.query_string, _raw_body())
    outcome = idempotency.claim(g.loyalty_member_id, key, print_)
    if isinstance(outcome, idempotency.StoredResponse):
        response = current_app.response_class(outcome.body, outcome.status_code, mimetype="application/json")
        response.headers.update({"Cache-Control": "no-store", "Idempotent-Replayed": "true"})
        return response
    try:
        response = _run(endpoint, path)
    except BaseException:
        idempotency.release(outcome)
        raise
    if response.status_code in _STORED:
        idempotency.finish(outcome, response.status_code, response.get_data(as_text=True))
    else:
        idempotency.release(outcome)
    return response


def not_routed(path: str) -> Response:
    """Answer a URL under the API's prefix that no operation has: 404, or 405 for a wrong method."""
    adapter = current_app.create_url_adapter(request)
    allowed = []
    for method in ("GET", "POST", "DELETE"):
        try:
            endpoint, _ = adapter.match(request.path, method=method) if adapter else ("", None)
        except (RouteNotFound, MethodNotAllowed):
            continue
        except HTTPException:  # a redirect: not one of ours
            continue
        if not str(endpoint).endswith(".not_routed"):
            allowed.append(method)
    if allowed:
        return error_response(MethodNotAllowed(allowed))
    return error_response(RouteNotFound())
