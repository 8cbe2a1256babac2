"""The JSON API's Idempotency-Key and CSRF checks."""

from __future__ import annotations

import datetime as dt
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_loyalty import audit
from flask_loyalty import idempotency

from .api_support import ApiClient
from .api_support import enroll
from .api_support import error_of
from .api_support import install_login
from .api_support import make_reward
from .api_support import snapshot
from .conftest import run_together


@pytest.fixture
def shop(api_app: Flask) -> ApiClient:
    with api_app.app_context():
        client = ApiClient(api_app, enroll("Owner", 2000))
        make_reward("coffee", stock=10)
        make_reward("tea", cost=300, stock=10)
        make_reward("jacket", cost=5000, amount="50.00")
    return client


def _count(app: Flask, table: str) -> int:
    db = app.extensions["sqlalchemy"]
    with app.app_context(), db.engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(db.metadata.tables[table])).scalar_one()
        )


def test_a_repeat_gets_the_first_response(api_app: Flask, shop: ApiClient) -> None:
    key = {"Idempotency-Key": "order-7-redeem"}
    first = shop.post("/redemptions", json={"reward": "coffee"}, headers=key)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = shop.client.post(
        "/loyalty/api/redemptions",
        data='{ "reward" :  "coffee" }',
        content_type="application/json",
        headers=shop.headers(key),
    )
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert _count(api_app, "loyalty_redemption") == 1
    assert shop.get("/balance").get_json()["available"] == 1500


def test_the_same_key_with_another_request_is_a_conflict(api_app: Flask, shop: ApiClient) -> None:
    key = {"Idempotency-Key": "k1"}
    assert shop.post("/redemptions", json={"reward": "coffee"}, headers=key).status_code == 201
    before = snapshot(api_app)
    for path, body in (("/redemptions", {"reward": "tea"}), ("/quote", {"lines": []})):
        response = shop.post(path, json=body, headers=key)
        assert response.status_code == 409
        assert error_of(response)["code"] == "idempotency_conflict"
    assert snapshot(api_app) == before


def test_keys_are_per_member(api_app: Flask, shop: ApiClient) -> None:
    with api_app.app_context():
        other = ApiClient(api_app, enroll("Other", 1000))
    key = {"Idempotency-Key": "same"}
    mine = shop.post("/redemptions", json={"reward": "coffee"}, headers=key).get_json()
    theirs = other.post("/redemptions", json={"reward": "coffee"}, headers=key).get_json()
    assert mine["id"] != theirs["id"]


def test_a_refused_request_releases_the_key(api_app: Flask, shop: ApiClient) -> None:
    key = {"Idempotency-Key": "retry-me"}
    assert shop.post("/redemptions", json={"reward": 5}, headers=key).status_code == 422
    assert shop.post("/redemptions", json={}, headers=key).status_code == 422
    assert _count(api_app, "loyalty_api_response") == 0
    assert shop.post("/redemptions", json={"reward": "coffee"}, headers=key).status_code == 201


def test_a_refusal_for_the_state_of_things_is_stored(api_app: Flask, shop: ApiClient) -> None:
    key = {"Idempotency-Key": "too-dear"}
    first = shop.post("/redemptions", json={"reward": "jacket"}, headers=key)
    assert first.status_code == 409
    again = shop.post("/redemptions", json={"reward": "jacket"}, headers=key)
    assert again.status_code == 409 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()


def test_checkout_holds_replay(api_app: Flask, shop: ApiClient) -> None:
    key = {"Idempotency-Key": "hold-1"}
    body = {"points": 500, "payable_total": "20.00"}
    first = shop.post("/reservations/A-1", json=body, headers=key)
    assert first.status_code == 201
    assert shop.post("/reservations/A-1", json=body, headers=key).get_json() == first.get_json()
    assert shop.get("/balance").get_json()["reserved"] == 500


def test_concurrent_requests_with_one_key_run_once(api_app: Flask, shop: ApiClient) -> None:
    key = {"Idempotency-Key": "double-click"}
    calls = [lambda: shop.post("/redemptions", json={"reward": "coffee"}, headers=key) for _ in range(6)]
    responses = run_together(api_app, calls)
    assert all(not isinstance(r, Exception) for r in responses), responses
    assert {r.status_code for r in responses} == {201}
    assert len({r.get_json()["id"] for r in responses}) == 1
    assert _count(api_app, "loyalty_redemption") == 1
    assert shop.get("/balance").get_json()["available"] == 1500
    with api_app.app_context():
        assert audit.verify() == []


def _claim(app: Flask, member_id: int, key: str) -> None:
    with app.app_context():
        idempotency.claim(member_id, key, "someone else's request that is still running")


def test_a_running_request_makes_a_repeat_wait_then_refuses(
    api_app: Flask, shop: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.2)
    with api_app.app_context():
        print_ = idempotency.fingerprint("POST", "/loyalty/api/redemptions", b"", b'{"reward": "coffee"}')
        idempotency.claim(shop.member_id, "busy", print_)
    response = shop.post("/redemptions", json={"reward": "coffee"}, headers={"Idempotency-Key": "busy"})
    assert response.status_code == 409 and error_of(response)["code"] == "request_in_progress"
    assert _count(api_app, "loyalty_redemption") == 0


def test_a_claim_that_never_finished_is_taken_over(api_app: Flask, shop: ApiClient, clock: t.Any) -> None:
    with api_app.app_context():
        print_ = idempotency.fingerprint("POST", "/loyalty/api/redemptions", b"", b'{"reward":"coffee"}')
        idempotency.claim(shop.member_id, "crashed", print_)
    clock.advance(minutes=5)
    response = shop.post("/redemptions", json={"reward": "coffee"}, headers={"Idempotency-Key": "crashed"})
    assert response.status_code == 201
    assert _count(api_app, "loyalty_api_response") == 1


def test_old_responses_are_purged(api_app: Flask, shop: ApiClient, clock: t.Any) -> None:
    shop.post("/redemptions", json={"reward": "coffee"}, headers={"Idempotency-Key": "old"})
    clock.advance(days=2)
    shop.post("/redemptions", json={"reward": "coffee"}, headers={"Idempotency-Key": "new"})
    with api_app.app_context():
        assert idempotency.purge(older_than=dt.timedelta(days=1), chunk=1) == 1
    assert _count(api_app, "loyalty_api_response") == 1


def test_the_purge_command(api_app: Flask, shop: ApiClient, clock: t.Any) -> None:
    shop.post("/redemptions", json={"reward": "coffee"}, headers={"Idempotency-Key": "old"})
    clock.advance(days=3)
    runner = api_app.test_cli_runner()
    assert runner.invoke(args=["loyalty", "purge-responses", "--days", "4"]).output == (
        "Deleted 0 stored API response(s).\n"
    )
    result = runner.invoke(args=["loyalty", "purge-responses", "--days", "2"])
    assert result.exit_code == 0 and result.output == "Deleted 1 stored API response(s).\n"
    assert _count(api_app, "loyalty_api_response") == 0
    bad = runner.invoke(args=["loyalty", "purge-responses", "--days", "0"])
    assert bad.exit_code == 2 and "--days" in bad.output


def test_a_large_response_is_not_stored(api_app: Flask, shop: ApiClient) -> None:
    lines = [{"sku": f"{i:04d}" + "x" * 60, "quantity": 1, "unit_price": "1.00"} for i in range(500)]
    response = shop.post("/quote", json={"lines": lines}, headers={"Idempotency-Key": "big-quote"})
    assert response.status_code == 200 and len(response.get_data()) > idempotency.MAX_STORED_BODY
    assert _count(api_app, "loyalty_api_response") == 0


# -- CSRF -------------------------------------------------------------------------------


def _by_cookie(app: Flask, member_id: int, **kw: t.Any) -> t.Any:
    client = app.test_client(**kw)
    with client.session_transaction() as session:
        session["_user_id"] = str(member_id)
        session["_fresh"] = True
    return client


WRITES = [
    ("post", "/loyalty/api/redemptions", {"reward": "coffee"}),
    ("post", "/loyalty/api/reservations/A-1", {"points": 100, "payable_total": "20.00"}),
    ("post", "/loyalty/api/redemptions/1/cancel", {}),
    ("delete", "/loyalty/api/reservations/A-1", None),
    ("post", "/loyalty/api/quote", {"lines": [{"sku": "A", "quantity": 1, "unit_price": "1.00"}]}),
]


@pytest.mark.settings(WTF_CSRF_ENABLED=True)
def test_session_calls_need_the_csrf_token(api_app: Flask, shop: ApiClient) -> None:
    client = _by_cookie(api_app, shop.member_id)
    before = snapshot(api_app)
    for token in (None, "not-a-token", ""):
        headers = {} if token is None else {"X-CSRFToken": token}
        for method, path, body in WRITES:
            response = getattr(client, method)(path, json=body, headers=headers)
            assert response.status_code == 400, (method, path, token)
            assert error_of(response)["code"] == "csrf_failed"
    assert snapshot(api_app) == before
    assert client.get("/loyalty/api/balance").status_code == 200  # reads need none
    token = client.get("/loyalty/api/csrf-token").get_json()["csrf_token"]
    made = client.post("/loyalty/api/redemptions", json={"reward": "coffee"}, headers={"X-CSRFToken": token})
    assert made.status_code == 201
    assert (
        client.post(
            f"/loyalty/api/redemptions/{made.get_json()['id']}/cancel", headers={"X-CSRF-Token": token}
        ).status_code
        == 200
    )


@pytest.mark.settings(WTF_CSRF_ENABLED=True)
def test_token_calls_need_no_csrf_token(api_app: Flask, shop: ApiClient) -> None:
    assert shop.post("/redemptions", json={"reward": "coffee"}).status_code == 201


@pytest.mark.settings(WTF_CSRF_ENABLED=True)
def test_over_https_the_referrer_must_be_this_site(api_app: Flask, shop: ApiClient) -> None:
    client = _by_cookie(api_app, shop.member_id, use_cookies=True)
    base = "https://localhost"
    token = client.get("/loyalty/api/csrf-token", base_url=base).get_json()["csrf_token"]
    for referrer in (None, "https://evil.example/", "http://localhost/"):
        headers = {"X-CSRFToken": token, **({"Referer": referrer} if referrer else {})}
        response = client.post(
            "/loyalty/api/redemptions", json={"reward": "coffee"}, headers=headers, base_url=base
        )
        assert response.status_code == 400 and error_of(response)["code"] == "csrf_failed", referrer
    headers = {"X-CSRFToken": token, "Referer": "https://localhost/loyalty/rewards"}
    response = client.post(
        "/loyalty/api/redemptions", json={"reward": "coffee"}, headers=headers, base_url=base
    )
    assert response.status_code == 201


def _check_csrf_protect_leaves_the_api_alone(app: Flask, member_id: int) -> None:
    client = ApiClient(app, member_id)
    assert client.post("/redemptions", json={"reward": "coffee"}).status_code == 201
    response = _by_cookie(app, member_id).post("/loyalty/api/redemptions", json={"reward": "coffee"})
    assert response.status_code == 400 and error_of(response)["code"] == "csrf_failed"


@pytest.mark.settings(WTF_CSRF_ENABLED=True)
def test_csrf_protect_set_up_after_the_extension_leaves_the_api_alone(
    api_app: Flask, shop: ApiClient
) -> None:
    from flask_wtf.csrf import CSRFProtect

    CSRFProtect(api_app)
    _check_csrf_protect_leaves_the_api_alone(api_app, t.cast(int, shop.member_id))


def test_csrf_protect_set_up_before_the_extension_leaves_the_api_alone(tmp_path: t.Any, clock: t.Any) -> None:
    from flask_sqlalchemy import SQLAlchemy
    from flask_wtf.csrf import CSRFProtect

    from flask_loyalty import Loyalty

    app = Flask(__name__)
    app.config.update(SECRET_KEY="x", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'csrf.sqlite'}")
    db = SQLAlchemy(app)
    CSRFProtect(app)
    Loyalty(app, db=db, clock=clock)
    install_login(app)
    with app.app_context():
        db.create_all()
        member_id = enroll("Owner", 2000)
        make_reward("coffee", stock=10)
    _check_csrf_protect_leaves_the_api_alone(app, member_id)
