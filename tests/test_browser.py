"""The example shop in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

One member's story from signing up to a refund, with the shop owner's part
in a second browser context, against the shop served by a real HTTP server.
Screenshots of every member page, at desktop and phone widths, are saved to
``tests/screenshots/`` (git-ignored).

Skipped, with the reason, when Playwright or ``/usr/bin/chromium`` is missing
(``.ci/run`` installs both).
"""

from __future__ import annotations

import os
import re
import threading
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from example_shop import create_app
from example_shop.demo import OWNER

from .conftest import close_app

CHROMIUM = os.environ.get("LOYALTY_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
)
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium", allow_module_level=True)

expect = sync_api.expect


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[tuple[Flask, str]]:
    """The shop with its demo data, served on a free port by a real server in a thread."""
    folder = tmp_path_factory.mktemp("browser")
    app = create_app(
        {"SECRET_KEY": "browser-test", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'shop.sqlite'}"}
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)
    close_app(app)


@pytest.fixture(scope="module")
def browser() -> t.Iterator[t.Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-extensions",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


def screenshot(page: t.Any, name: str) -> None:
    """Save the page at each width (the viewport, not the full page, keeps the files small)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    here = page.viewport_size
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=label == "phone")
    page.set_viewport_size(here)


def figure(page: t.Any, label: str) -> int:
    """A balance card of the dashboard, by its label."""
    card = page.locator(".loyalty-card", has_text=label).locator(".loyalty-figure")
    return int(card.inner_text().replace(",", ""))


def test_a_member_earns_sees_and_spends_points(shop: tuple[Flask, str], browser: t.Any) -> None:
    app, base = shop
    member = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
    owner = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
    member.set_default_timeout(10_000)
    owner.set_default_timeout(10_000)
    page = member.new_page()

    # Sign up: the welcome points arrive at once.
    page.goto("/")
    screenshot(page, "shop-home")
    page.get_by_role("link", name="Join", exact=True).click()
    page.get_by_label("Your name").fill("Grace Browser")
    page.get_by_label("Email").fill("grace@example.com")
    page.get_by_label("Password").fill("correct-horse")
    page.get_by_role("button", name="Create my account").click()
    expect(page.locator(".flash")).to_contain_text("500 points are waiting")

    # Two products in the cart; the product page says what each earns.
    page.goto("/p/WARE-TEAPOT")
    expect(page.get_by_test_id("earn-points")).to_have_text("Earn 320 points")
    screenshot(page, "shop-product")
    page.get_by_role("button", name="Add to cart").click()
    page.goto("/p/COF-COLOMBIA")
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Add to cart").click()
    expect(page.get_by_test_id("cart-earn")).to_have_text("This order earns 590 points")
    page.get_by_role("link", name="Go to checkout").click()

    # Checkout, then pay 3.00 of the 63.95 with 300 points.
    page.get_by_label("Standard delivery").check()
    expect(page.get_by_test_id("checkout-total")).to_have_text("$63.95")
    page.get_by_role("button", name="Continue to payment").click()
    page.get_by_label("Points to apply").fill("300")
    page.get_by_role("button", name="Apply points").click()
    expect(page.get_by_test_id("amount-due")).to_have_text("$60.95")
    screenshot(page, "shop-payment")
    page.get_by_role("button", name="Pay $60.95").click()
    expect(page.locator("h1")).to_contain_text("Paid")
    first = re.search(r"LB-\w+", page.locator("h1").inner_text()).group(0)
    expect(page.get_by_test_id("order-points")).to_have_text("560")

    # The points earned are pending until the order is complete.
    page.goto("/loyalty/")
    assert (figure(page, "Available to spend"), figure(page, "Pending")) == (200, 560)

    # The shop owner completes the order.
    desk = owner.new_page()
    desk.goto("/auth/login")
    desk.get_by_label("Email").fill(OWNER[1])
    desk.get_by_label("Password").fill(OWNER[2])
    desk.get_by_role("button", name="Log in").click()
    desk.goto(f"/admin/orders/{first}")
    desk.get_by_role("button", name="Mark completed").click()
    expect(desk.locator("h1")).to_contain_text("Completed")

    page.reload()
    assert (figure(page, "Available to spend"), figure(page, "Pending")) == (760, 0)
    expect(page.locator("#loyalty-share-link")).to_have_value(re.compile(r"/auth/signup\?ref=[A-Z0-9]{8}$"))
    screenshot(page, "member-dashboard")

    # A review of the teapot bought: review points.
    page.goto("/p/WARE-TEAPOT")
    page.get_by_label("Rating").select_option("5")
    page.get_by_label("Your review").fill("Beautiful, and it pours well.")
    page.get_by_role("button", name="Post my review").click()
    expect(page.locator(".flash")).to_contain_text("It earned you 50 points.")
    expect(page.locator("#reviews")).to_contain_text("Verified purchase")
    page.goto("/loyalty/")

    # Redeem a reward for 500 points, with a confirmation step.
    page.get_by_role("link", name="Rewards", exact=True).first.click()
    screenshot(page, "member-rewards")
    page.goto("/loyalty/rewards/five-off")
    screenshot(page, "member-reward")
    page.get_by_role("button", name=re.compile("Redeem for")).click()
    page.get_by_role("button", name="Confirm").click()
    code = page.locator(".loyalty-code").inner_text().strip()
    assert re.fullmatch(r"[A-Z0-9]{12}", code)
    screenshot(page, "member-redemption")
    page.goto("/loyalty/my-rewards")
    expect(page.locator("main")).to_contain_text(code)
    screenshot(page, "member-my-rewards")

    # A second order with the coupon: 5.00 off.
    page.goto("/p/TEA-SENCHA")
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Add to cart").click()
    page.goto("/p/TREAT-CHOC")
    page.get_by_role("button", name="Add to cart").click()
    page.goto("/checkout/")
    page.get_by_label("Collect from the shop").check()
    page.get_by_label("Coupon code").fill(code)
    page.get_by_role("button", name="Update totals").click()
    expect(page.get_by_test_id("checkout-total")).to_have_text("$24.80")
    page.get_by_role("button", name="Continue to payment").click()
    page.get_by_role("button", name="Pay $24.80").click()
    expect(page.locator("h1")).to_contain_text("Paid")
    second = re.search(r"LB-\w+", page.locator("h1").inner_text()).group(0)

    # The owner refunds the chocolate; its points are reversed.
    desk.goto(f"/admin/orders/{second}")
    desk.locator("input[name='qty-TREAT-CHOC']").fill("1")
    desk.get_by_role("button", name="Refund the units chosen").click()
    expect(desk.locator(".flash")).to_contain_text("points reversed")

    # The owner runs the daily jobs and sees the referrals and reminders page.
    desk.goto("/admin/growth/")
    desk.get_by_role("button", name="Run the daily jobs now").click()
    expect(desk.locator(".flash")).to_contain_text("Daily jobs done")
    screenshot(desk, "owner-growth")

    page.goto("/loyalty/history")
    expect(page.locator("main")).to_contain_text("Reversed")
    screenshot(page, "member-history")
    page.goto(f"/orders/{second}")
    expect(page.locator("main")).to_contain_text("Points reversed by refunds")
    screenshot(page, "shop-order")

    member.close()
    owner.close()
    result = app.test_cli_runner().invoke(args=["loyalty", "verify"])
    assert result.exit_code == 0 and "Ledger consistent" in result.output, result.output
