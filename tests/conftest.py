"""Fixtures: a fresh app per test on each configured database engine.

The ``engine`` parameter runs a test on SQLite (a file, so that threads share
it), and on PostgreSQL and MariaDB/MySQL when ``LOYALTY_TEST_POSTGRESQL_URL``
and ``LOYALTY_TEST_MYSQL_URL`` are set; otherwise those cases are skipped with
the reason shown.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import typing as t

import blinker
import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from jinja2 import StrictUndefined

from flask_loyalty import Loyalty
from flask_loyalty import members
from flask_loyalty import signals as loyalty_signals
from flask_loyalty.testing import FrozenClock

ENGINES = {
    "sqlite": None,
    "postgresql": "LOYALTY_TEST_POSTGRESQL_URL",
    "mysql": "LOYALTY_TEST_MYSQL_URL",
}
START = dt.datetime(2026, 1, 1, 12, 0, 0)
_prepared: set[str] = set()


def engine_url(name: str, tmp_path: t.Any) -> str:
    """The database URL for engine ``name``, or skip the test."""
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'loyalty.sqlite'}"
    url = os.environ.get(ENGINES[name] or "")
    if not url:
        pytest.skip(f"{name}: set {ENGINES[name]} to run this test on {name}")
    return url


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    """The name of the database engine the test runs on."""
    return t.cast(str, request.param)


@pytest.fixture
def clock() -> FrozenClock:
    """The app's clock, frozen at 2026-01-01 12:00 UTC until moved."""
    return FrozenClock(START)


def make_app(url: str, clock: FrozenClock, config: dict[str, t.Any] | None = None) -> tuple[Flask, t.Any]:
    """Build a test app with its own ``db`` and :class:`Loyalty` on ``url``."""
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        WTF_CSRF_ENABLED=False,
        SQLALCHEMY_DATABASE_URI=url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 40, "max_overflow": 0}
        if not url.startswith("sqlite")
        else {},
    )
    app.config.update(config or {})
    app.jinja_env.undefined = StrictUndefined
    db = SQLAlchemy(app)
    Loyalty(app, db=db, clock=clock)
    return app, db


def reset_schema(app: Flask, db: t.Any, name: str) -> None:
    """Empty the tables (creating them the first time an engine is used)."""
    with app.app_context():
        if name == "sqlite" or name not in _prepared:
            db.drop_all()
            db.create_all()
            _prepared.add(name)
            return
        with db.engine.begin() as conn:
            for table in reversed(db.metadata.sorted_tables):
                # MySQL checks a self-referencing foreign key (a reversal's
                # ``reverses_id``) row by row while deleting: clear it first.
                for fk in table.foreign_keys:
                    if fk.column.table is table:
                        conn.execute(table.update().values({fk.parent.name: None}))
                conn.execute(table.delete())


@pytest.fixture
def app(
    engine: str, tmp_path: t.Any, clock: FrozenClock, request: pytest.FixtureRequest
) -> t.Iterator[Flask]:
    """A fresh app with the extension, on the engine under test."""
    marker = request.node.get_closest_marker("settings")
    config = dict(marker.kwargs) if marker else {}
    app, db = make_app(engine_url(engine, tmp_path), clock, config)
    reset_schema(app, db, engine)
    yield app
    close_app(app)


def close_app(app: Flask) -> None:
    """End the app's session and close its connections."""
    with app.app_context():
        db = app.extensions["sqlalchemy"]
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture
def db(app: Flask) -> t.Any:
    """The app's Flask-SQLAlchemy extension."""
    return app.extensions["sqlalchemy"]


@pytest.fixture
def app_ctx(app: Flask) -> t.Iterator[None]:
    """An application context for the test."""
    with app.app_context():
        yield


@pytest.fixture
def client(app: Flask) -> t.Any:
    """A test client."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> t.Any:
    """A CLI runner."""
    return app.test_cli_runner()


@pytest.fixture
def member(app_ctx: None) -> t.Any:
    """An enrolled member with no points."""
    return members.enroll(name="Li Wei", email="li.wei@example.com")


class SignalRecorder:
    """Records every flask-loyalty signal sent while the test runs."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, t.Any, dict[str, t.Any]]] = []

    def names(self) -> list[str]:
        """The names of the signals sent, in order."""
        return [name for name, _, _ in self.sent]

    def of(self, name: str) -> list[dict[str, t.Any]]:
        """The keyword payloads of every send of signal ``name``."""
        return [kwargs for n, _, kwargs in self.sent if n == name]


@pytest.fixture
def statements(db: t.Any) -> t.Iterator[t.Callable[[], list[str]]]:
    """Call it to record the first word of each statement the engine runs from then on."""
    seen: list[str] = []
    engine = db.engine

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    def start() -> list[str]:
        sa.event.listen(engine, "before_cursor_execute", record)
        return seen

    yield start
    if sa.event.contains(engine, "before_cursor_execute", record):
        sa.event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def signals() -> t.Iterator[SignalRecorder]:
    """A :class:`SignalRecorder` connected to every public signal."""
    recorder = SignalRecorder()
    connected = []
    for attr in dir(loyalty_signals):
        sig = getattr(loyalty_signals, attr)
        if isinstance(sig, blinker.Signal):

            def receiver(sender: t.Any, _name: str = sig.name, **kwargs: t.Any) -> None:
                recorder.sent.append((_name, sender, kwargs))

            sig.connect(receiver, weak=False)
            connected.append((sig, receiver))
    yield recorder
    for sig, receiver in connected:
        sig.disconnect(receiver)


def ledger_sum(db: t.Any, member_id: int) -> int:
    """The sum of the member's available deltas in the ledger, read afresh."""
    table = db.metadata.tables["loyalty_ledger_entry"]
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(table.c.delta_available), 0)).where(
                    table.c.member_id == member_id
                )
            ).scalar_one()
        )


def run_together(app: Flask, calls: t.Sequence[t.Callable[[], t.Any]], timeout: float = 120) -> list[t.Any]:
    """Run each call in its own thread and app context, all released at once.

    :returns: per call, what it returned or the exception it raised.
    """
    barrier = threading.Barrier(len(calls))
    outcomes: list[t.Any] = [None] * len(calls)

    def worker(index: int, call: t.Callable[[], t.Any]) -> None:
        with app.app_context():
            try:
                barrier.wait(timeout)
                outcomes[index] = call()
            except Exception as error:  # the caller asserts on it
                outcomes[index] = error

    threads = [threading.Thread(target=worker, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    return outcomes


@pytest.fixture
def api_app(app: Flask) -> Flask:
    """The test app with Flask-Login, for the JSON API's tests."""
    from .api_support import install_login

    install_login(app)
    return app
