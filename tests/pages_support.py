"""Shared fixtures and helpers of the member-page tests (``test_pages*.py``)."""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import pathlib
import re
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from flask import has_app_context
from flask.testing import FlaskClient
from flask_login import LoginManager
from jinja2 import Environment
from jinja2.ext import extract_from_ast

from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty import rewards

PACKAGE = pathlib.Path(__file__).parent.parent / "flask_loyalty"
TEMPLATES = PACKAGE / "templates" / "loyalty"
TRANSLATIONS = PACKAGE / "translations"
#: Modules whose strings members see.
PAGE_MODULES = (
    "views.py",
    "forms.py",
    "error_messages.py",
    "templating.py",
    "checkout_widget.py",
    "referral_panel.py",
    "api.py",
    "api_http.py",
    "api_errors.py",
    "idempotency.py",
)
#: Functions whose first argument (and for ``*ngettext`` the second) is a message.
GETTEXT_NAMES = ("_", "_l", "gettext", "lazy_gettext", "ngettext", "loyalty_gettext", "loyalty_ngettext")


class FreshClient(FlaskClient):
    """A test client whose every request gets a fresh app context.

    Tests hold an app context open for the services they call; a request
    would otherwise share its ``g`` (and Flask-Login's cached user) with the
    previous requests, which no real server does.
    """

    def open(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        # End the test's own read transaction: on SQLite it would block the request's writes.
        if has_app_context():
            self.application.extensions["sqlalchemy"].session.commit()
        with self.application.app_context():
            return super().open(*args, **kwargs)


class Pages:
    """The test app of the member pages, with a login manager and a host templates folder."""

    def __init__(self, app: Flask, templates: pathlib.Path) -> None:
        self.app = app
        self.db = app.extensions["sqlalchemy"]
        #: Host templates (``loyalty/dashboard.html`` overrides the page...).
        self.templates = templates
        #: What the checkout loader returns, by user id.
        self.orders: dict[int, tuple[str, str]] = {}

    def client(self, member: t.Any = None, **headers: str) -> t.Any:
        """A test client, logged in as ``member`` (a member or member id) when given."""
        client = self.app.test_client()
        if headers:
            client.environ_base.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
        if member is not None:
            with client.session_transaction() as session:
                session["_user_id"] = str(getattr(member, "id", member))
                session["_fresh"] = True
        return client

    def host_template(self, name: str, source: str) -> None:
        """Write a template into the host's templates folder."""
        path = self.templates / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")

    def count(self) -> int:
        """Ledger entries + redemptions + reservations + stock: what a refused form must not change."""
        tables = self.db.metadata.tables
        with self.db.engine.connect() as conn:
            total = 0
            for name in ("loyalty_ledger_entry", "loyalty_redemption", "loyalty_reservation"):
                total += conn.execute(sa.select(sa.func.count()).select_from(tables[name])).scalar_one()
            stock = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(tables["loyalty_reward"].c.stock), 0))
            )
            return int(total) * 1_000_000 + int(stock.scalar_one())


def make_pages(app: Flask, tmp_path: pathlib.Path, *, login_view: str | None = None) -> Pages:
    """Add Flask-Login, a host templates folder and a checkout loader to ``app``."""
    templates = tmp_path / "host_templates"
    templates.mkdir(exist_ok=True)
    app.template_folder = str(templates)
    app.test_client_class = FreshClient
    manager = LoginManager(app)
    manager.login_view = login_view

    @manager.user_loader
    def load(user_id: str) -> t.Any:
        with contextlib.suppress(Exception):
            return members.get(int(user_id))
        return None

    pages = Pages(app, templates)

    @app.extensions["loyalty"].extension.checkout_loader
    def loader(user: t.Any) -> t.Any:
        return pages.orders.get(user.id)

    if login_view:
        app.add_url_rule("/login", login_view, lambda: "login page")
    return pages


@pytest.fixture
def pages(app: Flask, tmp_path: pathlib.Path) -> Pages:
    """The member pages' test app (no login view: anonymous visitors get 401)."""
    return make_pages(app, tmp_path)


@pytest.fixture
def owner(app_ctx: None) -> t.Any:
    """A member with 5,000 points."""
    member = members.enroll(name="Li Wei", email="li.wei@example.com")
    points.earn(member, 5000, key="order:1", expires_at=dt.datetime(2026, 1, 20))
    return member


@pytest.fixture
def other(app_ctx: None) -> t.Any:
    """Another member, with 5,000 points."""
    member = members.enroll(name="Zhang San", email="zhang.san@example.com")
    points.earn(member, 5000, key="order:2")
    return member


@pytest.fixture
def reward(app_ctx: None) -> rewards.Reward:
    """A 500-point coupon with 3 in stock."""
    return rewards.create_reward(
        slug="five-off", name="5 off", kind="fixed_amount", amount="5.00", cost=500, stock=3
    )


def bulk_history(db: t.Any, member_id: int, count: int, start: dt.datetime) -> None:
    """Give the member ``count`` earn entries of 10 points with bulk SQL, cache and lots consistent."""
    tables = db.metadata.tables
    entry, lot, member = (
        tables["loyalty_ledger_entry"],
        tables["loyalty_points_lot"],
        tables["loyalty_member"],
    )
    # Through the app's session: on SQLite a second connection would wait for its lock.
    conn = db.session
    before = conn.execute(sa.select(member.c.available).where(member.c.id == member_id)).scalar_one()
    lot_id = conn.execute(
        lot.insert().values(member_id=member_id, points=10 * count, remaining=10 * count, pending=False,
                            expired=False, available_from=start, expires_at=None, created_at=start)
    ).inserted_primary_key[0]  # fmt: skip
    rows = [
        {"member_id": member_id, "kind": "earn", "points": 10, "delta_available": 10, "delta_pending": 0,
         "delta_reserved": 0, "available_after": before + 10 * (i + 1), "pending_after": 0,
         "reserved_after": 0, "source_key": f"bulk:{i}", "params_hash": "bulk", "shortfall": 0,
         "lot_id": lot_id, "created_at": start + dt.timedelta(minutes=i)}
        for i in range(count)
    ]  # fmt: skip
    for chunk in range(0, count, 2000):
        conn.execute(entry.insert(), rows[chunk : chunk + 2000])
    conn.execute(
        member.update()
        .where(member.c.id == member_id)
        .values(
            available=member.c.available + 10 * count, lifetime_earned=member.c.lifetime_earned + 10 * count
        )
    )
    db.session.commit()


@contextlib.contextmanager
def statements(db: t.Any) -> t.Iterator[list[str]]:
    """Record every SQL statement sent while the block runs."""
    seen: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        seen.append(statement)

    engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def form_values(html: str) -> dict[str, str]:
    """The hidden inputs of the first form of a page, by name."""
    form = html[html.index('<form method="post"') :]
    form = form[: form.index("</form>")]
    return dict(re.findall(r'<input name="([^"]+)" type="hidden" value="([^"]*)"', form))


def _python_messages(path: pathlib.Path) -> list[t.Any]:
    found: list[t.Any] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in GETTEXT_NAMES:
            texts = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if texts:
                found.append(tuple(texts[:2]) if "ngettext" in node.func.id else texts[0])
    return found


def _template_messages(path: pathlib.Path) -> list[t.Any]:
    env = Environment(extensions=["jinja2.ext.i18n"])
    found: list[t.Any] = []
    tree = env.parse(path.read_text(encoding="utf-8"))
    for _line, _name, message in extract_from_ast(tree, gettext_functions=GETTEXT_NAMES):
        if isinstance(message, tuple):
            texts = tuple(m for m in message if m is not None)
            found.append(texts if len(texts) > 1 else texts[0])
        else:
            found.append(message)
    return found


def extract_messages() -> list[t.Any]:
    """Every message of the pages: strings, or ``(singular, plural)`` pairs."""
    found: list[t.Any] = []
    for name in PAGE_MODULES:
        found += _python_messages(PACKAGE / name)
    for path in sorted(TEMPLATES.glob("*.html")):
        found += _template_messages(path)
    return list(dict.fromkeys(found))
