"""The member pages: who may see what, where ``next`` may lead, and bad input on every form."""

# ruff: noqa: F811 -- test arguments are the fixtures imported from pages_support

from __future__ import annotations

import typing as t

import pytest

from flask_loyalty import checkout
from flask_loyalty import history
from flask_loyalty import members
from flask_loyalty import rewards
from flask_loyalty.redirects import safe_next

from .pages_support import other  # noqa: F401  (a fixture)
from .pages_support import owner  # noqa: F401  (a fixture)
from .pages_support import Pages
from .pages_support import pages  # noqa: F401  (a fixture)
from .pages_support import reward  # noqa: F401  (a fixture)

#: Thirty ``next`` values that must never be followed.
HOSTILE_NEXT = [
    "https://evil.example/",
    "http://evil.example",
    "//evil.example",
    "///evil.example",
    "////evil.example/path",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/\\/evil.example",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "java\nscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "ftp://evil.example",
    "https:evil.example",
    "http:/evil.example",
    "evil.example",
    "../evil",
    "/%2F%2Fevil.example",
    "/%5Cevil.example",
    "%2F%2Fevil.example",
    "/%252F%252Fevil.example",
    "/\tevil",
    "/ /evil.example",
    "/\x00evil",
    "/path\r\nLocation: https://evil.example",
    "https://shop.example@evil.example",
    "/" + "a" * 3000,
]


def test_thirty_hostile_next_values_are_refused() -> None:
    assert len(HOSTILE_NEXT) == 30 and len(set(HOSTILE_NEXT)) == 30
    for value in HOSTILE_NEXT:
        assert safe_next(value) is None, value
    for value in (None, 42, b"/cart", ""):
        assert safe_next(value) is None
    for value in ("/cart", "/loyalty/rewards?page=2", "/checkout#points", "/a/b/c?x=%2Fy"):
        assert safe_next(value) == value


def test_hostile_next_values_are_refused_by_every_redirecting_form(
    pages: Pages, owner: t.Any, reward: t.Any
) -> None:
    pages.orders[owner.id] = ("order-1", "80.00")
    client = pages.client(owner)
    for value in HOSTILE_NEXT:
        response = client.post("/loyalty/checkout/apply", data={"points": "100", "next": value})
        assert response.headers["Location"] == "/loyalty/checkout", value
        response = client.post("/loyalty/checkout/remove", data={"next": value})
        assert response.headers["Location"] == "/loyalty/checkout", value
    issued = rewards.redeem_reward(owner, "five-off", key="next-test")
    response = client.post(f"/loyalty/my-rewards/{issued.id}/cancel", data={"next": "//evil.example"})
    assert response.headers["Location"] == "/loyalty/my-rewards"
    token = "t" * 32
    response = client.post(
        "/loyalty/rewards/five-off/redeem",
        data={"token": token, "confirm": "yes", "next": "https://evil.example"},
    )
    assert response.headers["Location"].startswith("/loyalty/my-rewards/")
    response = client.post("/loyalty/checkout/apply", data={"points": "100", "next": "/cart?step=2"})
    assert response.headers["Location"] == "/cart?step=2"


def _routes(pages: Pages) -> list[tuple[str, str]]:
    """``(method, rule)`` of every route of the blueprint."""
    found = []
    for rule in pages.app.url_map.iter_rules():
        if rule.endpoint.startswith("loyalty."):
            found += [(method, rule.rule) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def test_route_and_role_matrix(pages: Pages, owner: t.Any, other: t.Any, reward: t.Any) -> None:
    """Every route, as an anonymous visitor, the owner and another member."""
    pages.orders[owner.id] = ("order-1", "80.00")
    pages.orders[other.id] = ("order-1", "80.00")
    issued = rewards.redeem_reward(owner, "five-off", key="matrix")
    entry_id = history.history(owner, limit=1).entries[0].id
    values = {"<int:redemption_id>": str(issued.id), "<int:entry_id>": str(entry_id), "<slug>": "five-off"}
    owned = ("<int:redemption_id>", "<int:entry_id>")
    routes = _routes(pages)
    assert len(routes) == 12
    anonymous, mine, theirs = pages.client(), pages.client(owner), pages.client(other)
    data = {"points": "100", "token": "m" * 32, "confirm": ""}
    for method, rule in routes:
        url = rule
        for key, value in values.items():
            url = url.replace(key, value)
        call = {"GET": lambda c, u: c.get(u), "POST": lambda c, u: c.post(u, data=data)}[method]
        assert call(anonymous, url).status_code == 401, (method, rule)
        if any(key in rule for key in owned):
            response = call(theirs, url)
            assert response.status_code == 404, (method, rule)
            assert call(mine, url).status_code in (200, 303), (method, rule)
        else:
            for client in (mine, theirs):
                assert call(client, url).status_code in (200, 303), (method, rule)
    # Another member's objects were left alone.
    assert rewards.get_redemption(owner, issued.id).status == "cancelled"  # by the owner's own post
    assert checkout.applied_points(owner, reference="order-1") is None  # applied, then removed
    assert members.balances(other).available == 5000 - 100 + 100


def _post(client: t.Any, url: str, data: dict[str, str]) -> t.Any:
    return client.post(url, data=data)


@pytest.mark.parametrize("points", ["-100", "0", "", "abc", "1.5", "1e3", "10" * 10, "99999999999999999999"])
def test_bad_points_at_checkout_are_refused(pages: Pages, owner: t.Any, points: str) -> None:
    pages.orders[owner.id] = ("order-1", "80.00")
    before = pages.count()
    response = pages.client(owner).post("/loyalty/checkout/apply", data={"points": points})
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert 'role="alert"' in body and "points" in body.lower()
    assert pages.count() == before


def test_points_outside_the_checkout_limits_are_refused(pages: Pages, owner: t.Any) -> None:
    pages.orders[owner.id] = ("order-1", "80.00")  # at most 50% of 80.00 = 4,000 points
    client = pages.client(owner)
    before = pages.count()
    for points, message in (
        ("50", "Apply at least 100 points."),
        ("150", "Points are applied in steps of 100."),
        ("4100", "At most 4,000 points can be applied to this order."),
    ):
        response = client.post("/loyalty/checkout/apply", data={"points": points})
        assert response.status_code == 400 and message in response.get_data(as_text=True), points
    pages.orders[owner.id] = ("order-1", "1.00")
    response = client.post("/loyalty/checkout/apply", data={"points": "100"})
    assert response.status_code == 400
    assert "Points cannot pay this order" in response.get_data(as_text=True)
    assert pages.count() == before


def test_no_order_at_checkout_answers_404(pages: Pages, owner: t.Any) -> None:
    client = pages.client(owner)
    assert client.post("/loyalty/checkout/apply", data={"points": "100"}).status_code == 404
    assert client.post("/loyalty/checkout/remove").status_code == 404
    body = client.get("/loyalty/checkout").get_data(as_text=True)
    assert "There is no order to pay with points right now." in body
    pages.orders[owner.id] = ("order-1", "80.00")
    response = client.post("/loyalty/checkout/remove")
    assert response.status_code == 404 and "No points are applied to this order." in response.get_data(
        as_text=True
    )


def test_bad_redemptions_are_refused(pages: Pages, owner: t.Any, clock: t.Any, app_ctx: None) -> None:
    rewards.create_reward(slug="gone", name="Gone", kind="free_shipping", cost=100, stock=0)
    rewards.create_reward(slug="old", name="Old", kind="free_shipping", cost=100,
                          ends_at=clock() - __import__("datetime").timedelta(days=1))  # fmt: skip
    rewards.create_reward(slug="dear", name="Dear", kind="percentage", percent=10, cost=50_000)
    rewards.create_reward(slug="off", name="Off", kind="free_shipping", cost=100, active=False)
    client = pages.client(owner)
    before = pages.count()
    token = "b" * 32
    cases = [
        ("nope", {"token": token, "confirm": "yes"}, 404, "There is no such reward."),
        ("x" * 100, {"token": token, "confirm": "yes"}, 404, "There is no such reward."),
        ("gone", {"token": token, "confirm": "yes"}, 409, "Gone is out of stock."),
        ("old", {"token": token, "confirm": "yes"}, 409, "Old is no longer available."),
        ("off", {"token": token, "confirm": "yes"}, 409, "Off is not available."),
        ("dear", {"token": token, "confirm": "yes"}, 409, "You do not have enough points"),
        ("dear", {"token": "short", "confirm": "yes"}, 400, "This form is out of date"),
        ("dear", {"confirm": "yes"}, 400, "This form is out of date"),
        ("dear", {"token": "-1" * 20 + "<>", "confirm": "yes"}, 400, "This form is out of date"),
    ]
    for slug, data, status, message in cases:
        response = client.post(f"/loyalty/rewards/{slug}/redeem", data=data)
        assert response.status_code == status, slug
        assert message in response.get_data(as_text=True), slug
    for slug in ("gone", "old", "dear"):
        body = client.get(f"/loyalty/rewards/{slug}").get_data(as_text=True)
        assert '<form method="post"' not in body
    assert pages.count() == before


def test_bad_cancellations_and_page_links_are_refused(pages: Pages, owner: t.Any, reward: t.Any) -> None:
    issued = rewards.redeem_reward(owner, "five-off", key="used-one")
    rewards.use_code(issued.code, order_reference="order-7")
    client = pages.client(owner)
    before = pages.count()
    response = client.post(f"/loyalty/my-rewards/{issued.id}/cancel")
    assert response.status_code == 409
    assert "it cannot be cancelled" in response.get_data(as_text=True)
    assert client.post("/loyalty/my-rewards/999999/cancel").status_code == 404
    assert client.post("/loyalty/my-rewards/-1/cancel").status_code == 404
    assert client.post(f"/loyalty/my-rewards/{2**70}/cancel").status_code == 404
    assert client.get("/loyalty/my-rewards?before=abc").status_code == 400
    assert client.get(f"/loyalty/history/{2**70}").status_code == 404
    for query in ("kind=bogus", "since=yesterday", "until=2026-13-01", "before=-5", "before=x",
                  "since=2026-02-01&until=2026-01-01", f"before={2**70}"):  # fmt: skip
        response = client.get(f"/loyalty/history?{query}")
        assert response.status_code == 400, query
        assert 'role="alert"' in response.get_data(as_text=True), query
    assert pages.count() == before
