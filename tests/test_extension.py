"""The extension object: registration, app factories, models, tables and transactions."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event

from flask_loyalty import current_loyalty
from flask_loyalty import InsufficientPoints
from flask_loyalty import Loyalty
from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty.cli import loyalty_cli
from flask_loyalty.extension import LoyaltyState
from flask_loyalty.models import build_models
from flask_loyalty.store import LoyaltyStore
from flask_loyalty.testing import FrozenClock

from .conftest import engine_url
from .conftest import ledger_sum
from .conftest import make_app
from .conftest import reset_schema
from .test_host_app import TABLES


def bare_app(url: str = "sqlite://", **config: t.Any) -> Flask:
    """An app with configuration only: no extension registered yet."""
    app = Flask(__name__)
    app.config.update(TESTING=True, SQLALCHEMY_DATABASE_URI=url, **config)
    return app


def dispose(app: Flask, db: t.Any) -> None:
    """Close the app's sessions and connections."""
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def count(db: t.Any, table: str) -> int:
    """The number of rows in ``table``, read on a fresh connection."""
    with db.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(db.metadata.tables[table])
        return int(conn.execute(query).scalar_one())


# -- registration ----------------------------------------------------------------


def test_state_is_kept_in_app_extensions(app: Flask, db: t.Any) -> None:
    state = app.extensions["loyalty"]
    assert isinstance(state, LoyaltyState)
    assert isinstance(state.extension, Loyalty)
    assert isinstance(state.store, LoyaltyStore)
    assert state.store.db is db
    assert state.models is build_models("loyalty_")
    assert state.store.models is state.models
    with app.app_context():
        assert current_loyalty.store is state.store
        assert current_loyalty.models is state.models
        assert current_loyalty.now() == state.extension.clock()


def test_app_given_to_constructor() -> None:
    app = bare_app()
    db = SQLAlchemy(app)
    loyalty = Loyalty(app, db=db)
    assert app.extensions["loyalty"].extension is loyalty
    assert loyalty.db is db
    dispose(app, db)


def test_db_taken_from_the_app_when_not_given() -> None:
    app = bare_app()
    db = SQLAlchemy(app)
    loyalty = Loyalty(app)
    assert loyalty.db is None
    assert app.extensions["loyalty"].store.db is db
    dispose(app, db)


def test_options_are_keyword_only() -> None:
    app = bare_app()
    db = SQLAlchemy(app)
    with pytest.raises(TypeError):
        Loyalty(app, db)  # type: ignore[misc]
    assert "loyalty" not in app.extensions
    dispose(app, db)


def test_registering_twice_raises() -> None:
    app = bare_app()
    db = SQLAlchemy(app)
    loyalty = Loyalty(app, db=db)
    with pytest.raises(RuntimeError, match="already registered"):
        loyalty.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        Loyalty(app, db=db)
    assert app.extensions["loyalty"].extension is loyalty
    dispose(app, db)


def test_init_app_without_flask_sqlalchemy_raises() -> None:
    app = bare_app()
    with pytest.raises(RuntimeError, match="Flask-SQLAlchemy"):
        Loyalty(app)
    assert "loyalty" not in app.extensions
    assert "loyalty" not in app.cli.commands


def test_init_app_before_db_init_app_raises_and_can_be_retried() -> None:
    app = bare_app()
    db = SQLAlchemy()
    loyalty = Loyalty(db=db)
    with pytest.raises(RuntimeError, match=r"db\.init_app\(app\)"):
        loyalty.init_app(app)
    assert "loyalty" not in app.extensions
    db.init_app(app)
    loyalty.init_app(app)
    assert app.extensions["loyalty"].extension is loyalty
    dispose(app, db)


def test_db_registered_on_another_app_only_raises() -> None:
    db = SQLAlchemy()
    other = bare_app()
    db.init_app(other)
    app = bare_app()
    SQLAlchemy(app)
    with pytest.raises(RuntimeError, match="Flask-SQLAlchemy"):
        Loyalty(app, db=db)
    assert "loyalty" not in app.extensions
    dispose(other, db)
    dispose(app, app.extensions["sqlalchemy"])


# -- several apps ----------------------------------------------------------------


def test_app_factory_one_loyalty_two_databases(engine: str, tmp_path: t.Any, clock: FrozenClock) -> None:
    db = SQLAlchemy()
    loyalty = Loyalty(db=db, clock=clock)

    def create_app(url: str) -> Flask:
        app = bare_app(url)
        db.init_app(app)
        loyalty.init_app(app)
        return app

    shop = create_app(engine_url(engine, tmp_path))
    outlet = create_app(f"sqlite:///{tmp_path / 'outlet.sqlite'}")
    reset_schema(shop, db, engine)
    reset_schema(outlet, db, "sqlite")
    try:
        assert shop.extensions["loyalty"].extension is loyalty
        assert outlet.extensions["loyalty"].extension is loyalty
        assert shop.extensions["loyalty"].store is not outlet.extensions["loyalty"].store
        with shop.app_context():
            alice = members.enroll(name="Alice").id
            points.earn(alice, 100, key="order:1")
        with outlet.app_context():
            bob = members.enroll(name="Bob").id
            # The same key in the other app's ledger is a new order, not a repeat.
            assert not points.earn(bob, 250, key="order:1").replayed
            assert members.balances(bob).available == 250
            assert count(db, "loyalty_member") == 1
            assert count(db, "loyalty_ledger_entry") == 1
            assert ledger_sum(db, bob) == 250
        with shop.app_context():
            assert members.balances(alice).available == 100
            assert count(db, "loyalty_member") == 1
            assert count(db, "loyalty_ledger_entry") == 1
            assert ledger_sum(db, alice) == 100
    finally:
        dispose(shop, db)
        dispose(outlet, db)


def test_models_of_the_current_app(tmp_path: t.Any) -> None:
    loyalty = Loyalty()
    with pytest.raises(RuntimeError, match="No app has been initialised"):
        _ = loyalty.models
    first = bare_app(f"sqlite:///{tmp_path / 'first.sqlite'}")
    second = bare_app(f"sqlite:///{tmp_path / 'second.sqlite'}", LOYALTY_TABLE_PREFIX="shop_")
    first_db, second_db = SQLAlchemy(first), SQLAlchemy(second)
    loyalty.init_app(first)
    loyalty.init_app(second)
    try:
        with first.app_context():
            assert loyalty.models is build_models("loyalty_")
            assert loyalty.models.Member.__tablename__ == "loyalty_member"
        with second.app_context():
            assert loyalty.models is build_models("shop_")
            assert loyalty.models.Member.__tablename__ == "shop_member"
            assert loyalty.models.Order.lines.property.mapper.class_ is loyalty.models.OrderLine
        # Outside any app: the first app's models.
        assert loyalty.models is build_models("loyalty_")
        assert {f"loyalty_{name}" for name in TABLES} <= set(first_db.metadata.tables)
        assert not any(name.startswith("shop_") for name in first_db.metadata.tables)
        assert {f"shop_{name}" for name in TABLES} == set(second_db.metadata.tables)
        with second.app_context():
            second_db.create_all()
            member = members.enroll(name="Chen")
            points.earn(member, 40, key="visit:1")
            assert count(second_db, "shop_ledger_entry") == 1
            assert members.balances(member).available == 40
        # Another extension object on the same app does not answer for it.
        with first.app_context(), pytest.raises(RuntimeError, match="No app has been initialised"):
            _ = Loyalty().models
    finally:
        dispose(first, first_db)
        dispose(second, second_db)


# -- CLI group -------------------------------------------------------------------


def test_cli_group_default_name(app: Flask) -> None:
    assert app.cli.commands["loyalty"] is loyalty_cli
    result = app.test_cli_runner().invoke(args=["loyalty", "--help"])
    assert result.exit_code == 0
    for command in ("verify", "rebuild", "expire", "release-pending", "release-reservations", "adjust"):
        assert command in result.output


def test_cli_group_renamed() -> None:
    app = bare_app(LOYALTY_CLI_GROUP="points")
    db = SQLAlchemy(app)
    Loyalty(app, db=db)
    assert app.cli.commands["points"] is loyalty_cli
    assert "loyalty" not in app.cli.commands
    with app.app_context():
        db.create_all()
    result = app.test_cli_runner().invoke(args=["points", "verify"])
    assert result.exit_code == 0, result.output
    assert "Ledger consistent" in result.output
    assert app.test_cli_runner().invoke(args=["loyalty", "verify"]).exit_code == 2
    dispose(app, db)


@pytest.mark.parametrize("group", [None, "", False])
def test_falsy_cli_group_leaves_the_commands_out(group: t.Any) -> None:
    app = bare_app(LOYALTY_CLI_GROUP=group)
    db = SQLAlchemy(app)
    Loyalty(app, db=db)
    assert loyalty_cli not in app.cli.commands.values()
    assert "loyalty" not in app.cli.commands
    dispose(app, db)


# -- tables ----------------------------------------------------------------------


def test_tables_are_in_host_metadata_and_created(app: Flask, db: t.Any) -> None:
    models = app.extensions["loyalty"].models
    for name, table in models.metadata.tables.items():
        copy = db.metadata.tables[name]
        assert copy.info["flask_loyalty"] is True
        assert [c.name for c in copy.columns] == [c.name for c in table.columns]
    with app.app_context():
        assert {f"loyalty_{name}" for name in TABLES} <= set(sa.inspect(db.engine).get_table_names())


def test_create_all_creates_the_tables_beside_the_hosts(tmp_path: t.Any) -> None:
    app = bare_app(f"sqlite:///{tmp_path / 'shop.sqlite'}")
    db = SQLAlchemy(app)

    class Product(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "product"
        id = sa.Column(sa.Integer, primary_key=True)

    Loyalty(app, db=db)
    with app.app_context():
        db.create_all()
        created = set(sa.inspect(db.engine).get_table_names())
    assert created == {"product"} | {f"loyalty_{name}" for name in TABLES}
    assert "flask_loyalty" not in db.metadata.tables["product"].info
    dispose(app, db)


def test_host_table_with_the_same_name_raises() -> None:
    app = bare_app()
    db = SQLAlchemy(app)
    sa.Table("loyalty_member", db.metadata, sa.Column("id", sa.Integer, primary_key=True))
    with pytest.raises(RuntimeError, match="already defines a table named 'loyalty_member'"):
        Loyalty(app, db=db)
    dispose(app, db)


# -- current_loyalty -------------------------------------------------------------


def test_current_loyalty_outside_an_app_context_raises() -> None:
    with pytest.raises(RuntimeError, match="application context"):
        _ = current_loyalty.store


def test_current_loyalty_in_an_app_without_the_extension_raises() -> None:
    app = bare_app()
    SQLAlchemy(app)
    with app.app_context(), pytest.raises(RuntimeError, match="flask-loyalty is not initialised on this app"):
        _ = current_loyalty.store
    with app.app_context(), pytest.raises(RuntimeError, match="not initialised"):
        members.get(1)


# -- transactions ----------------------------------------------------------------


class StatementLog:
    """Every statement SQLite runs on the engine's connections (first words normalised).

    Read with SQLite's trace callback, so that it shows what reaches the
    database, ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` included, however each
    was sent.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.lines: list[str] = []
        event.listen(engine.pool, "checkout", self._watch)

    def _watch(self, dbapi_connection: t.Any, record: t.Any, proxy: t.Any) -> None:
        dbapi_connection.set_trace_callback(self._statement)

    def _statement(self, statement: str) -> None:
        self.lines.append(" ".join(statement.split()))

    def take(self) -> list[str]:
        """The lines logged since the last call."""
        lines, self.lines = self.lines, []
        return lines


def begins(lines: list[str]) -> list[str]:
    """The ``BEGIN`` statements in ``lines``."""
    return [line for line in lines if line.startswith("BEGIN")]


def index_of(lines: list[str], prefix: str) -> int:
    """The position of the only line starting with ``prefix``."""
    found = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(found) == 1, (prefix, lines)
    return found[0]


@pytest.fixture
def sqlite_app(tmp_path: t.Any, clock: FrozenClock) -> t.Iterator[tuple[Flask, t.Any, StatementLog]]:
    """A SQLite app in an app context, with a fresh session and a statement log."""
    app, db = make_app(engine_url("sqlite", tmp_path), clock)
    reset_schema(app, db, "sqlite")
    with app.app_context():
        log = StatementLog(db.engine)
        yield app, db, log
    dispose(app, db)


def test_sqlite_write_transactions_begin_immediate(sqlite_app: tuple[Flask, t.Any, StatementLog]) -> None:
    app, db, log = sqlite_app
    member_id = members.enroll(name="Dana").id
    db.session.remove()
    log.take()
    points.earn(member_id, 100, key="order:1")
    lines = log.take()
    assert lines[0] == "BEGIN IMMEDIATE"
    assert begins(lines) == ["BEGIN IMMEDIATE"]
    assert lines[-1] == "COMMIT"
    assert index_of(lines, "INSERT INTO loyalty_ledger_entry") < len(lines) - 1
    points.redeem(member_id, 30, key="reward:1")
    lines = log.take()
    assert begins(lines) == ["BEGIN IMMEDIATE"]
    assert lines[-1] == "COMMIT"


def test_sqlite_engine_gets_no_event_listeners(sqlite_app: tuple[Flask, t.Any, StatementLog]) -> None:
    """The ``BEGIN`` comes from the dialect: the engine dispatches no events of the extension's."""
    app, db, log = sqlite_app
    member_id = members.enroll(name="Gus").id
    points.earn(member_id, 5, key="order:1")
    for name in ("begin", "commit", "rollback", "before_cursor_execute", "engine_connect"):
        assert not getattr(db.engine.dispatch, name), name
    # The driver's autocommit mode is set on each new DB-API connection.
    assert db.engine.pool.dispatch.connect
    assert log.take()[-1] == "COMMIT"


def test_sqlite_reads_begin_deferred(sqlite_app: tuple[Flask, t.Any, StatementLog]) -> None:
    app, db, log = sqlite_app
    member_id = members.enroll(name="Eli").id
    db.session.remove()
    log.take()
    assert members.balances(member_id).available == 0
    lines = log.take()
    assert begins(lines) == ["BEGIN"]
    assert not any(line.startswith(("INSERT", "UPDATE", "DELETE")) for line in lines)


def test_sqlite_operation_after_host_reads_starts_its_own_transaction(
    sqlite_app: tuple[Flask, t.Any, StatementLog],
) -> None:
    app, db, log = sqlite_app
    models = app.extensions["loyalty"].models
    member_id = members.enroll(name="Fay").id
    db.session.remove()
    log.take()
    assert db.session.get(models.Member, member_id).name == "Fay"
    points.earn(member_id, 100, key="order:1")
    lines = log.take()
    # The host's read transaction ends; the operation's own begins with the write lock.
    assert begins(lines) == ["BEGIN", "BEGIN IMMEDIATE"]
    entry = index_of(lines, "INSERT INTO loyalty_ledger_entry")
    assert lines.index("COMMIT") < lines.index("BEGIN IMMEDIATE") < entry
    assert lines[-1] == "COMMIT"
    assert lines.count("COMMIT") == 2


def test_sqlite_operation_joins_host_pending_writes(sqlite_app: tuple[Flask, t.Any, StatementLog]) -> None:
    app, db, log = sqlite_app
    models = app.extensions["loyalty"].models
    member_id = members.enroll(name="Gus").id
    db.session.remove()
    log.take()
    db.session.add(models.Order(reference="A-1", member_id=member_id, currency="USD", total_minor=1000))
    points.earn(member_id, 100, key="order:A-1")
    lines = log.take()
    # One transaction holds the host's order and the ledger entry.
    assert len(begins(lines)) == 1
    assert lines.count("COMMIT") == 1
    assert lines[-1] == "COMMIT"
    assert index_of(lines, "INSERT INTO loyalty_order ") < index_of(lines, "INSERT INTO loyalty_ledger_entry")


def test_operation_joins_host_pending_writes(app: Flask, db: t.Any, member: t.Any) -> None:
    models = app.extensions["loyalty"].models
    member_id = member.id
    db.session.add(models.Order(reference="B-1", member_id=member_id, currency="USD", total_minor=2500))
    points.earn(member_id, 250, key="order:B-1")
    assert not db.session().in_transaction()
    assert count(db, "loyalty_order") == 1
    assert ledger_sum(db, member_id) == 250


def test_operation_joins_host_flushed_writes(app: Flask, db: t.Any, member: t.Any) -> None:
    models = app.extensions["loyalty"].models
    member_id = member.id
    db.session.add(models.Order(reference="C-1", member_id=member_id, currency="USD", total_minor=900))
    db.session.flush()
    points.earn(member_id, 90, key="order:C-1")
    assert not db.session().in_transaction()
    assert count(db, "loyalty_order") == 1
    assert ledger_sum(db, member_id) == 90


def test_failed_joined_operation_leaves_the_host_writes_pending(app: Flask, db: t.Any, member: t.Any) -> None:
    models = app.extensions["loyalty"].models
    member_id = member.id
    points.earn(member_id, 50, key="order:0")
    order = models.Order(reference="D-1", member_id=member_id, currency="USD", total_minor=700)
    db.session.add(order)
    with pytest.raises(InsufficientPoints):
        points.redeem(member_id, 70, key="order:D-1")
    # Only the operation's own writes were undone; the host decides about its order.
    assert count(db, "loyalty_order") == 0
    assert order in db.session
    db.session.commit()
    assert count(db, "loyalty_order") == 1
    assert count(db, "loyalty_ledger_entry") == 1
    assert members.balances(member_id).available == 50


def test_operation_after_host_reads_commits_on_its_own(app: Flask, db: t.Any, member: t.Any) -> None:
    models = app.extensions["loyalty"].models
    member_id = member.id
    assert db.session.get(models.Member, member_id).available == 0
    points.earn(member_id, 100, key="order:1")
    assert not db.session().in_transaction()
    assert ledger_sum(db, member_id) == 100
    assert db.session.get(models.Member, member_id).available == 100
