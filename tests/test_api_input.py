"""Bad input on every endpoint of the JSON API: a 4xx JSON error naming the problem, nothing written."""

from __future__ import annotations

import datetime as dt
import json
import typing as t

import pytest
from flask import Flask

from .api_support import ApiClient
from .api_support import enroll
from .api_support import error_of
from .api_support import make_reward
from .api_support import snapshot
from .conftest import START

LINE = {"sku": "TEA", "quantity": 1, "unit_price": "4.50"}
HUGE = 10**30


def _line(**change: t.Any) -> dict[str, t.Any]:
    return {"lines": [{**LINE, **change}]}


def _apply(**change: t.Any) -> dict[str, t.Any]:
    return {"points": 100, "payable_total": "30.00", **change}


#: (method, path, body, status, code, a word the message or a field names).
#: A body that is ``bytes`` is sent raw as JSON; a ``str`` is sent as text/plain.
CASES: list[tuple[str, str, t.Any, int, str, str]] = [
    # history
    ("GET", "/history?limit=0", None, 422, "validation_error", "limit"),
    ("GET", "/history?limit=-5", None, 422, "validation_error", "limit"),
    ("GET", f"/history?limit={HUGE}", None, 422, "validation_error", "limit"),
    ("GET", "/history?limit=ten", None, 422, "validation_error", "limit"),
    ("GET", "/history?limit=1&limit=2", None, 422, "validation_error", "limit"),
    ("GET", "/history?kind=gift", None, 422, "validation_error", "kind"),
    ("GET", "/history?since=yesterday", None, 422, "validation_error", "since"),
    ("GET", "/history?since=0001-01-01T00:00:00%2B14:00", None, 422, "validation_error", "since"),
    (
        "GET",
        "/history?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        None,
        422,
        "invalid_request",
        "until",
    ),
    ("GET", "/history?cursor=not-a-cursor", None, 422, "validation_error", "cursor"),
    ("GET", "/history?cursor=MA", None, 422, "validation_error", "cursor"),  # "0"
    ("GET", "/history?page=2", None, 422, "validation_error", "page"),
    ("GET", "/history/0", None, 404, "not_found", ""),
    ("GET", f"/history/{HUGE}", None, 404, "not_found", ""),
    ("GET", "/history/abc", None, 404, "not_found", ""),
    ("GET", "/balance?member_id=2", None, 422, "validation_error", "member_id"),
    # quote
    ("POST", "/quote", {}, 422, "validation_error", "lines"),
    ("POST", "/quote", {"lines": []}, 422, "validation_error", "lines"),
    ("POST", "/quote", _line(quantity=0), 422, "validation_error", "quantity"),
    ("POST", "/quote", _line(quantity=-1), 422, "validation_error", "quantity"),
    ("POST", "/quote", _line(quantity=1.5), 422, "validation_error", "quantity"),
    ("POST", "/quote", _line(quantity="2"), 422, "validation_error", "quantity"),
    ("POST", "/quote", _line(quantity=HUGE), 422, "validation_error", "quantity"),
    ("POST", "/quote", _line(unit_price="-1.00"), 422, "validation_error", "unit_price"),
    ("POST", "/quote", _line(unit_price="abc"), 422, "validation_error", "unit_price"),
    ("POST", "/quote", _line(unit_price=4.5), 422, "validation_error", "unit_price"),
    ("POST", "/quote", _line(unit_price="4.505"), 422, "validation_error", "decimal"),
    ("POST", "/quote", _line(unit_price="9" * 40), 422, "validation_error", "unit_price"),
    ("POST", "/quote", _line(unit_price="1e5"), 422, "validation_error", "unit_price"),
    ("POST", "/quote", _line(discount="9.00"), 422, "invalid_request", "discount"),
    ("POST", "/quote", _line(colour="red"), 422, "validation_error", "colour"),
    ("POST", "/quote", {**_line(), "member_id": 1}, 422, "validation_error", "member_id"),
    ("POST", "/quote", [LINE], 422, "validation_error", "_schema"),
    ("POST", "/quote", b'{"lines": [', 400, "malformed_json", "JSON"),
    ("POST", "/quote", b'{"lines": NaN}', 400, "malformed_json", "JSON"),
    ("POST", "/quote", b"[" * 50_000 + b"]" * 50_000, 413, "payload_too_large", "64"),
    ("POST", "/quote", b"[" * 20_000 + b"]" * 20_000, 400, "malformed_json", "JSON"),
    (
        "POST",
        "/quote",
        b'{"lines": [{"sku": "A", "quantity": ' + b"9" * 5000 + b"}]}",
        400,
        "malformed_json",
        "",
    ),
    ("POST", "/quote", b"\xff\xfe{}", 400, "malformed_json", "JSON"),
    ("POST", "/quote", "lines=TEA", 415, "unsupported_media_type", "application/json"),
    ("PUT", "/quote", {}, 405, "method_not_allowed", ""),
    # rewards
    ("GET", "/rewards/no-such-reward", None, 404, "not_found", "no-such-reward"),
    ("GET", f"/rewards/{HUGE}", None, 404, "not_found", ""),
    ("GET", "/rewards/%E2%98%95", None, 404, "not_found", ""),
    ("GET", "/rewards?active=0", None, 422, "validation_error", "active"),
    # redeem
    ("POST", "/redemptions", {}, 422, "validation_error", "reward"),
    ("POST", "/redemptions", {"reward": 1}, 422, "validation_error", "reward"),
    ("POST", "/redemptions", {"reward": "no-such-reward"}, 404, "not_found", "no-such-reward"),
    ("POST", "/redemptions", {"reward": "a b"}, 422, "validation_error", "reward"),
    ("POST", "/redemptions", {"reward": "sold-out"}, 409, "reward_unavailable", "out of stock"),
    ("POST", "/redemptions", {"reward": "expired"}, 409, "reward_unavailable", "no longer"),
    ("POST", "/redemptions", {"reward": "jacket"}, 409, "insufficient_points", "5000"),
    ("POST", "/redemptions", {"reward": "coffee", "points": 1}, 422, "validation_error", "points"),
    ("POST", "/redemptions", {"reward": "coffee", "status": "used"}, 422, "validation_error", "status"),
    ("POST", "/redemptions", {"reward": "coffee"}, 400, "invalid_idempotency_key", "Idempotency-Key"),
    # redemptions
    ("GET", "/redemptions?limit=0", None, 422, "validation_error", "limit"),
    ("GET", "/redemptions?cursor=%%%", None, 422, "validation_error", "cursor"),
    ("GET", "/redemptions/999", None, 404, "not_found", ""),
    ("GET", f"/redemptions/{HUGE}", None, 404, "not_found", ""),
    ("POST", "/redemptions/999/cancel", None, 404, "not_found", ""),
    ("POST", f"/redemptions/{HUGE}/cancel", None, 404, "not_found", ""),
    ("POST", "/redemptions/999/cancel", {"why": "changed my mind"}, 422, "validation_error", "why"),
    # checkout
    ("GET", "/reservations/A-1/offer", None, 422, "validation_error", "payable_total"),
    ("GET", "/reservations/A-1/offer?payable_total=-1", None, 422, "validation_error", "payable_total"),
    ("GET", "/reservations/A-1/offer?payable_total=1.001", None, 422, "validation_error", "payable_total"),
    ("GET", "/reservations/A%201/offer?payable_total=1.00", None, 422, "invalid_request", "reference"),
    ("GET", "/reservations/A-1", None, 404, "not_found", "A-1"),
    ("POST", "/reservations/A-1", _apply(points=0), 422, "validation_error", "points"),
    ("POST", "/reservations/A-1", _apply(points=-100), 422, "validation_error", "points"),
    ("POST", "/reservations/A-1", _apply(points=HUGE), 422, "validation_error", "points"),
    ("POST", "/reservations/A-1", _apply(points="100"), 422, "validation_error", "points"),
    ("POST", "/reservations/A-1", _apply(points=100.0), 422, "validation_error", "points"),
    ("POST", "/reservations/A-1", _apply(points=150), 422, "invalid_request", "steps of 100"),
    ("POST", "/reservations/A-1", _apply(points=50), 422, "invalid_request", "at least 100"),
    ("POST", "/reservations/A-1", _apply(points=1600), 422, "invalid_request", "At most 1500"),
    (
        "POST",
        "/reservations/A-1",
        _apply(points=3000, payable_total="900.00"),
        409,
        "insufficient_points",
        "2000",
    ),
    ("POST", "/reservations/A-1", _apply(payable_total="-30.00"), 422, "validation_error", "payable_total"),
    ("POST", "/reservations/A-1", _apply(payable_total="thirty"), 422, "validation_error", "payable_total"),
    ("POST", "/reservations/A-1", _apply(status="captured"), 422, "validation_error", "status"),
    ("POST", "/reservations/A-1", {"points": 100}, 422, "validation_error", "payable_total"),
    ("POST", "/reservations/%E2%98%95", _apply(), 422, "invalid_request", "reference"),
    ("POST", "/reservations/" + "x" * 151, _apply(), 422, "invalid_request", "reference"),
    ("DELETE", "/reservations/A-1", None, 404, "not_found", "A-1"),
    # elsewhere under the prefix
    ("GET", "/no-such-thing", None, 404, "not_found", ""),
]


@pytest.fixture
def shop(api_app: Flask) -> ApiClient:
    with api_app.app_context():
        client = ApiClient(api_app, enroll("Owner", 2000))
        make_reward("coffee", stock=10)
        make_reward("sold-out", stock=0)
        make_reward("jacket", cost=5000, amount="50.00")
        make_reward("expired", starts_at=START - dt.timedelta(days=30), ends_at=START - dt.timedelta(days=1))
    return client


def _send(client: ApiClient, method: str, path: str, body: t.Any, code: str) -> t.Any:
    headers = {"Idempotency-Key": "bad key with spaces"} if code == "invalid_idempotency_key" else {}
    kw: dict[str, t.Any] = {}
    if isinstance(body, bytes):
        kw.update(data=body, content_type="application/json")
    elif isinstance(body, str):
        kw.update(data=body, content_type="text/plain")
    elif body is not None:
        kw.update(data=json.dumps(body), content_type="application/json")
    return client.client.open("/loyalty/api" + path, method=method, headers=client.headers(headers), **kw)


def test_bad_input_is_refused_and_nothing_is_written(api_app: Flask, shop: ApiClient) -> None:
    before = snapshot(api_app)
    failures = []
    for method, path, body, status, code, word in CASES:
        response = _send(shop, method, path, body, code)
        try:
            error = error_of(response)
            assert response.status_code == status, response.status_code
            assert error["code"] == code, error
            text = error["message"] + json.dumps(error.get("fields", {}))
            assert word in text, text
        except AssertionError as failure:
            failures.append((method, path[:60], str(failure)[:300]))
    assert failures == []
    assert snapshot(api_app) == before


def test_errors_say_why(api_app: Flask, shop: ApiClient) -> None:
    out = error_of(shop.post("/redemptions", json={"reward": "sold-out"}))
    assert out["reason"] == "out_of_stock"
    poor = error_of(shop.post("/redemptions", json={"reward": "jacket"}))
    assert (poor["available"], poor["requested"]) == (2000, 5000)
    fields = error_of(shop.post("/quote", json=_line(quantity=0, sku="")))["fields"]
    assert set(fields["lines"]["0"]) == {"quantity", "sku"}


def test_a_server_error_is_json_too(api_app: Flask, shop: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_loyalty import members

    def broken(member: t.Any) -> t.Any:
        raise RuntimeError("the database is on fire")

    monkeypatch.setattr(members, "balances", broken)
    api_app.config["PROPAGATE_EXCEPTIONS"] = False
    response = shop.get("/balance")
    assert response.status_code == 500
    assert error_of(response)["code"] == "internal_error"
