"""The OpenAPI 3 document of the JSON API, generated from its marshmallow schemas.

The API (:mod:`flask_loyalty.api`) declares each operation as an
:class:`Endpoint`; :func:`build_document` turns them, with the schemas of
:mod:`flask_loyalty.schemas`, into the document served at
``<LOYALTY_API_URL_PREFIX>/openapi.json`` (with apispec's marshmallow plugin).

.. versionadded:: 0.1
"""

from __future__ import annotations

import dataclasses
import re
import typing as t

from marshmallow import Schema

from . import schemas
from .idempotency import KEY_HEADER
from .idempotency import KEY_PATTERN

__all__ = ["Endpoint", "PATH_PARAMETERS", "build_document"]

#: The OpenAPI version of the document.
OPENAPI_VERSION = "3.0.3"

#: The schema of each path parameter of the API's routes.
PATH_PARAMETERS: dict[str, dict[str, t.Any]] = {
    "reward": {"type": "string", "pattern": schemas.REWARD_PATTERN, "description": "A reward's slug or id."},
    "redemption_id": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_ID},
    "entry_id": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_ID},
    "reference": {
        "type": "string",
        "pattern": schemas.REFERENCE_PATTERN,
        "description": "The shop's order reference.",
    },
}

_DESCRIPTIONS = {
    400: "The request cannot be read: malformed JSON, a bad header, or a missing or invalid CSRF token.",
    401: "Not logged in.",
    403: "The user is not a member, or the member's account is closed.",
    404: "No such resource for this member.",
    409: "The request conflicts with the state of the account, a reward or an order.",
    413: "The body is too large.",
    415: "The body is not JSON.",
    422: "The request is not valid.",
    503: "The database stayed busy; try again.",
}


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One operation of the API."""

    #: ``GET``, ``POST`` or ``DELETE``.
    method: str
    #: The Flask rule under the API's prefix, e.g. ``/redemptions/<int:redemption_id>``.
    rule: str
    #: The view's endpoint name in the blueprint.
    name: str
    summary: str
    #: The view: called with the member id, the loaded query and body, and the path values.
    view: t.Callable[..., t.Any]
    #: The schema of the successful response, or ``None`` for a document of its own.
    response: type[Schema] | None
    status: int = 200
    query: type[Schema] | None = schemas.EmptyQuery
    body: type[Schema] | None = None
    #: Statuses it may answer besides the ones every operation may.
    errors: tuple[int, ...] = ()
    #: Whether anonymous callers may use it.
    public: bool = False
    description: str = ""

    @property
    def path(self) -> str:
        """The rule as an OpenAPI path: ``/redemptions/{redemption_id}``."""
        return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", self.rule)

    @property
    def path_names(self) -> list[str]:
        """The names of the rule's path parameters."""
        return re.findall(r"<(?:[a-z]+:)?([a-z_]+)>", self.rule)

    @property
    def writes(self) -> bool:
        """Whether it is an unsafe method (CSRF applies)."""
        return self.method not in ("GET", "HEAD", "OPTIONS")


def _error(status: int) -> dict[str, t.Any]:
    return {"description": _DESCRIPTIONS[status], "content": {"application/json": {"schema": schemas.Error}}}


def _operation(endpoint: Endpoint) -> dict[str, t.Any]:
    parameters: list[dict[str, t.Any]] = [
        {"in": "path", "name": name, "required": True, "schema": PATH_PARAMETERS[name]}
        for name in endpoint.path_names
    ]
    if endpoint.query is not None and endpoint.query().fields:
        parameters.append({"in": "query", "schema": endpoint.query})
    if endpoint.method == "POST":
        parameters.append({
            "in": "header", "name": KEY_HEADER, "required": False,
            "schema": {"type": "string", "pattern": KEY_PATTERN},
            "description": "Makes the request safe to retry: a repeat gets the first response back.",
        })  # fmt: skip
    if endpoint.writes:
        parameters.append({
            "in": "header", "name": "X-CSRFToken", "required": False, "schema": {"type": "string"},
            "description": "Required when the call is authenticated by the session cookie.",
        })  # fmt: skip
    ok: dict[str, t.Any] = {"description": endpoint.summary}
    if endpoint.response is not None:
        ok["content"] = {"application/json": {"schema": endpoint.response}}
    responses: dict[str, t.Any] = {str(endpoint.status): ok}
    statuses = set(endpoint.errors)
    if not endpoint.public:
        statuses |= {401, 403, 503}
    if endpoint.query is not None and endpoint.query().fields or endpoint.body is not None:
        statuses.add(422)
    if "reference" in endpoint.path_names:
        statuses.add(422)
    if endpoint.writes:
        statuses |= {400, 409}
    if endpoint.body is not None:
        statuses |= {413, 415}
    for status in sorted(statuses):
        responses[str(status)] = _error(status)
    operation: dict[str, t.Any] = {
        "operationId": endpoint.name,
        "summary": endpoint.summary,
        "responses": responses,
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": bool(endpoint.body().fields),
            "content": {"application/json": {"schema": endpoint.body}},
        }
    if endpoint.public:
        operation["security"] = []
    return operation


def build_document(
    endpoints: t.Sequence[Endpoint], *, prefix: str, title: str, version: str, cookie: str
) -> dict[str, t.Any]:
    """The OpenAPI document of ``endpoints`` mounted at ``prefix``.

    :param cookie: the name of the session cookie, for the security scheme.
    """
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    spec = APISpec(
        title=title,
        version=version,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={
            "description": (
                "The member's points, history, rewards and checkout holds. Authenticate with the"
                " shop's session cookie (and send its CSRF token in X-CSRFToken on POST and DELETE),"
                " or as the shop's login setup allows for API clients (a Flask-Login request_loader)."
            )
        },
        security=[{"session": []}],
    )
    spec.components.security_scheme("session", {"type": "apiKey", "in": "cookie", "name": cookie})
    base = prefix.rstrip("/")
    for endpoint in endpoints:
        spec.path(path=base + endpoint.path, operations={endpoint.method.lower(): _operation(endpoint)})
    document: dict[str, t.Any] = spec.to_dict()
    return document
