"""The API's OpenAPI document: it validates, covers every route, and a property-based
run over it (schemathesis) finds no server error on any operation."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import settings

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")
validate = pytest.importorskip("openapi_spec_validator", reason="in the test extra").validate

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import content_type_conformance  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402
from schemathesis.specs.openapi.checks import status_code_conformance  # noqa: E402

from flask_loyalty.api import ENDPOINTS  # noqa: E402

from .api_support import enroll  # noqa: E402
from .api_support import make_reward  # noqa: E402


def _document(app: Flask) -> dict[str, t.Any]:
    response = app.test_client().get("/loyalty/api/openapi.json")
    assert response.status_code == 200
    return t.cast(dict[str, t.Any], response.get_json())


def test_the_document_validates_and_covers_every_route(api_app: Flask) -> None:
    document = _document(api_app)
    validate(document)
    assert document["openapi"].startswith("3.")
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    routes = {
        (method, rule.rule)
        for rule in api_app.url_map.iter_rules()
        if rule.endpoint.startswith("loyalty_api.") and rule.endpoint != "loyalty_api.not_routed"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    as_openapi = {(m, p.replace("<int:", "<").replace("<", "{").replace(">", "}")) for m, p in routes}
    assert operations == as_openapi
    assert len(operations) == len(ENDPOINTS)
    schemas = document["components"]["schemas"]
    for name in ("Balance", "Redemption", "AppliedPoints", "Error"):
        assert all(prop.get("readOnly") for prop in schemas[name]["properties"].values()), name
    assert schemas["ApplyPointsRequest"]["additionalProperties"] is False
    post = document["paths"]["/loyalty/api/redemptions"]["post"]
    assert {p["name"] for p in post["parameters"]} == {"Idempotency-Key", "X-CSRFToken"}


def test_the_document_is_built_once_per_app(api_app: Flask) -> None:
    assert _document(api_app) == _document(api_app)


@pytest.fixture
def api_schema(api_app: Flask) -> t.Any:
    """The API's schema for schemathesis, calling the app as a member with points."""
    with api_app.app_context():
        member_id = enroll("Fuzz", 5000)
        make_reward("coffee", stock=3)
        make_reward("a1", cost=100, kind="percentage", amount=None, percent=10)
    schema = schemathesis.openapi.from_wsgi("/loyalty/api/openapi.json", api_app)
    schema.config.headers = {"Authorization": f"Bearer member-{member_id}"}
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None
)
def test_no_server_error_on_any_operation(case: t.Any) -> None:
    response = case.call()
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
