"""The shipped Alembic migrations produce exactly the schema of ``create_all``."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import logging
import os
import typing as t

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_loyalty import audit
from flask_loyalty import jobs
from flask_loyalty import Loyalty
from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty.migrate import add_version_location
from flask_loyalty.migrate import BRANCH_LABEL
from flask_loyalty.migrate import include_object
from flask_loyalty.migrate import VERSIONS_DIR
from flask_loyalty.models import build_models
from flask_loyalty.testing import FrozenClock

from .conftest import ledger_sum
from .conftest import make_app
from .test_host_app import close_app
from .test_host_app import empty_database
from .test_host_app import schema
from .test_host_app import schema_differences
from .test_host_app import table_names
from .test_host_app import TABLES

#: A naming convention that would rename every constraint a migration left unnamed.
HOSTILE_CONVENTION = {
    "ix": "host_ix_%(column_0_label)s",
    "uq": "host_uq_%(table_name)s_%(column_0_name)s",
    "ck": "host_ck_%(table_name)s_%(constraint_name)s",
    "fk": "host_fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "host_pk_%(table_name)s",
}

#: A minimal plain-Alembic env.py that runs on a connection handed over in
#: ``config.attributes`` (the Alembic cookbook's shared-connection recipe).
ENV_PY = """\
from alembic import context

config = context.config
if context.is_offline_mode():
    context.configure(dialect_name=config.attributes["dialect"], literal_binds=True)
else:
    context.configure(
        connection=config.attributes["connection"],
        target_metadata=config.attributes["target_metadata"],
    )
with context.begin_transaction():
    context.run_migrations()
"""


@pytest.fixture
def database(engine: str, tmp_path: t.Any) -> t.Iterator[str]:
    """The URL of an empty database on the engine under test."""
    yield from empty_database(engine, tmp_path)


@pytest.fixture
def closing() -> t.Iterator[t.Callable[[Flask], Flask]]:
    """Register an app whose connections are closed after the test."""
    apps: list[Flask] = []

    def register(app: Flask) -> Flask:
        apps.append(app)
        return app

    yield register
    for app in apps:
        close_app(app)


def alembic_config(
    tmp_path: t.Any,
    connection: sa.Connection,
    *,
    x: t.Sequence[str] = (),
    target_metadata: sa.MetaData | None = None,
) -> Config:
    """An Alembic config for a host with no revisions of its own, on ``connection``."""
    env = tmp_path / "alembic"
    env.mkdir(exist_ok=True)
    (env / "env.py").write_text(ENV_PY)
    config = Config()
    config.set_main_option("script_location", str(env))
    config.cmd_opts = argparse.Namespace(x=list(x))
    add_version_location(config)
    config.attributes["connection"] = connection
    config.attributes["target_metadata"] = target_metadata if target_metadata is not None else sa.MetaData()
    return config


def migrate_up(url: str, tmp_path: t.Any, *, prefix: str | None = None) -> None:
    """Apply the extension's migrations to the database at ``url``."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            x = [f"loyalty_table_prefix={prefix}"] if prefix else []
            metadata = sa.MetaData(naming_convention=HOSTILE_CONVENTION)
            command.upgrade(alembic_config(tmp_path, conn, x=x, target_metadata=metadata), "loyalty@head")
    finally:
        engine.dispose()


def migrate_down(url: str, tmp_path: t.Any, *, prefix: str | None = None) -> None:
    """Revert the extension's migrations on the database at ``url``."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            x = [f"loyalty_table_prefix={prefix}"] if prefix else []
            command.downgrade(alembic_config(tmp_path, conn, x=x), "loyalty@base")
    finally:
        engine.dispose()


def created_schema(url: str, clock: FrozenClock, prefix: str) -> dict[str, dict[str, t.Any]]:
    """The schema ``db.create_all()`` makes for the extension, then dropped again."""
    app, db = make_app(url, clock, {"LOYALTY_TABLE_PREFIX": prefix})
    with app.app_context():
        db.create_all()
        try:
            return schema(url)
        finally:
            db.drop_all()
            for eng in db.engines.values():
                eng.dispose()


def version_rows(url: str) -> list[str]:
    """The revisions recorded in ``alembic_version``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()


# -- the revision scripts ------------------------------------------------------------


def loyalty_scripts() -> ScriptDirectory:
    """The script directory of the extension's version location alone."""
    config = Config()
    config.set_main_option("script_location", VERSIONS_DIR)
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", VERSIONS_DIR)
    return ScriptDirectory.from_config(config)


def test_revisions_form_one_labelled_branch_from_base():
    scripts = loyalty_scripts()
    revisions = list(scripts.walk_revisions("base", "heads"))
    files = sorted(
        name for name in os.listdir(VERSIONS_DIR) if name.endswith(".py") and name != "__init__.py"
    )
    assert len(revisions) == len(files) >= 1
    assert [r.revision for r in revisions][-1] == "loyalty_0001"
    assert scripts.get_revisions("heads") == scripts.get_revisions(f"{BRANCH_LABEL}@head")
    base = scripts.get_revision("loyalty_0001")
    assert base.down_revision is None
    assert base.branch_labels == {"loyalty"}
    for rev in revisions:
        # Fits alembic_version.version_num (VARCHAR(32)) and cannot collide with a host's hex ids.
        assert rev.revision.startswith("loyalty_") and len(rev.revision) <= 32
        assert BRANCH_LABEL in rev.branch_labels
        assert os.path.dirname(rev.path) == VERSIONS_DIR


def version_locations(config: Config) -> list[str]:
    """The version locations Alembic reads from ``config`` (with warnings as errors)."""
    return [str(location) for location in ScriptDirectory.from_config(config).version_locations]


#: The option naming the separator of ``version_locations`` (renamed in Alembic 1.16).
SEPARATOR_OPTION = (
    "path_separator" if hasattr(Config, "get_version_locations_list") else "version_path_separator"
)


def test_add_version_location_keeps_the_hosts_directory(tmp_path):
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    assert add_version_location(config) is config
    expected = [str(tmp_path / "versions"), VERSIONS_DIR]
    assert version_locations(config) == expected
    assert config.get_main_option(SEPARATOR_OPTION) == "os"
    add_version_location(config)
    assert version_locations(config) == expected


def test_add_version_location_keeps_configured_locations_and_separator(tmp_path):
    (tmp_path / "app").mkdir()
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        "[alembic]\n"
        "script_location = %(here)s/app\n"
        f"{SEPARATOR_OPTION} = ;\n"
        "version_locations = %(here)s/app/versions;%(here)s/plugins%%20\n"
    )
    config = add_version_location(Config(str(ini)))
    assert config.get_main_option(SEPARATOR_OPTION) == ";"
    assert version_locations(config) == [f"{tmp_path}/app/versions", f"{tmp_path}/plugins%20", VERSIONS_DIR]


def test_plain_alembic_ini_can_name_the_package_resource(tmp_path):
    (tmp_path / "alembic").mkdir()
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        "[alembic]\n"
        "script_location = %(here)s/alembic\n"
        f"{SEPARATOR_OPTION} = ;\n"
        "version_locations = %(here)s/alembic/versions;flask_loyalty:migrations\n"
    )
    scripts = ScriptDirectory.from_config(Config(str(ini)))
    assert [r.revision for r in scripts.walk_revisions("base", "heads")][-1] == "loyalty_0001"
    assert os.path.dirname(scripts.get_revision("loyalty@head").path) == VERSIONS_DIR


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_offline_sql_script(tmp_path, dialect):
    output = io.StringIO()
    (tmp_path / "alembic").mkdir()
    (tmp_path / "alembic" / "env.py").write_text(ENV_PY)
    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(tmp_path / "alembic"))
    config.cmd_opts = argparse.Namespace(x=["loyalty_table_prefix=pts_"])
    config.attributes["dialect"] = dialect
    command.upgrade(add_version_location(config), "loyalty@head", sql=True)
    sql = output.getvalue()
    assert sql.count("CREATE TABLE ") == len(TABLES) + 1  # and alembic_version
    assert "CREATE TABLE pts_order (" in sql
    assert "CONSTRAINT ck_pts_member_status CHECK (status IN ('active', 'closed'))" in sql
    assert "CREATE INDEX ix_pts_points_lot_expired_expires_at ON pts_points_lot (expired, expires_at)" in sql
    assert "INSERT INTO alembic_version (version_num) VALUES ('loyalty_0001')" in sql


def test_include_object_skips_only_the_extensions_tables(tmp_path, clock):
    app, db = make_app(f"sqlite:///{tmp_path / 'x.sqlite'}", clock)
    host = sa.Table("host_thing", db.metadata, sa.Column("id", sa.Integer, primary_key=True))
    member = db.metadata.tables["loyalty_member"]
    assert include_object(member, "loyalty_member", "table", False, None) is False
    assert include_object(member.c.email, "email", "column", False, None) is False
    index = next(iter(db.metadata.tables["loyalty_cart"].indexes))
    assert include_object(index, index.name, "index", False, None) is False
    assert include_object(host, "host_thing", "table", False, None) is True
    assert include_object(host.c.id, "id", "column", False, None) is True


# -- on the databases ----------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["loyalty_", "acme_points_"])
def test_migrations_equal_create_all(database, tmp_path, clock, prefix):
    expected = created_schema(database, clock, prefix)
    assert schema(database) == {}
    migrate_up(database, tmp_path, prefix=None if prefix == "loyalty_" else prefix)
    migrated = schema(database)
    assert schema_differences(migrated, expected) == []
    assert migrated == expected
    names = {name for name in migrated if not name.startswith("<")}
    assert names == {prefix + name for name in TABLES} == set(build_models(prefix).metadata.tables)
    member = migrated[f"{prefix}member"]
    timestamp = {"sqlite": "DATETIME", "postgresql": "TIMESTAMP WITHOUT TIME ZONE", "mysql": "DATETIME(6)"}
    kind = sa.make_url(database).get_backend_name()
    assert [c[:3] for c in member["columns"]][-2:] == [
        ("created_at", timestamp[kind], False),
        ("closed_at", timestamp[kind], True),
    ]
    # MariaDB reports a display width: BIGINT(20).
    assert member["columns"][0][:3] == ("id", {"sqlite": "INTEGER"}.get(kind, member["columns"][0][1]), False)
    assert member["columns"][0][1].startswith("INTEGER" if kind == "sqlite" else "BIGINT")
    assert [name for name, _ in member["checks"]] == [f"ck_{prefix}member_status"]
    assert [name for name, _ in member["unique"]] == [
        f"uq_{prefix}member_email",
        f"uq_{prefix}member_referral_code",
        f"uq_{prefix}member_user_id",
    ]
    entry = migrated[f"{prefix}ledger_entry"]
    assert [fk[0] for fk in entry["foreign_keys"]] == [
        f"fk_{prefix}ledger_entry_{column}"
        for column in ("lot_id", "member_id", "reservation_id", "reverses_id")
    ]
    assert version_rows(database) == ["loyalty_0001"]


def test_compare_metadata_finds_no_difference(database, tmp_path, clock, closing):
    migrate_up(database, tmp_path)
    app, db = make_app(database, clock)
    closing(app)
    with app.app_context():
        with db.engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(context, build_models("loyalty_").metadata) == []
            # The host's metadata holds copies of the tables: the same answer.
            assert compare_metadata(context, db.metadata) == []


def test_compare_metadata_sees_a_missing_index(database, tmp_path):
    # The comparison above would notice a schema that differs.
    migrate_up(database, tmp_path)
    engine = sa.create_engine(database)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "DROP INDEX ix_loyalty_points_lot_expired_expires_at"
                    + (" ON loyalty_points_lot" if engine.dialect.name == "mysql" else "")
                )
            )
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            diff = compare_metadata(context, build_models("loyalty_").metadata)
        assert [(d[0], d[1].name) for d in diff] == [
            ("add_index", "ix_loyalty_points_lot_expired_expires_at")
        ]
    finally:
        engine.dispose()


@pytest.mark.parametrize("prefix", [None, "acme_points_"])
def test_downgrade_to_base_removes_every_table(database, tmp_path, prefix):
    migrate_up(database, tmp_path, prefix=prefix)
    assert len(schema(database)) >= len(TABLES)
    migrate_down(database, tmp_path, prefix=prefix)
    assert schema(database) == {}  # no table, and no sequence on PostgreSQL
    assert version_rows(database) == []
    # And up again from base.
    migrate_up(database, tmp_path, prefix=prefix)
    assert version_rows(database) == ["loyalty_0001"]


def test_ledger_runs_on_the_migrated_schema(database, tmp_path, clock, closing):
    migrate_up(database, tmp_path)
    app, db = make_app(database, clock)
    closing(app)
    with app.app_context():
        member = members.enroll(name="Ana Lima", email="ana@example.com")
        points.earn(member, 500, key="order:1", expires_at=clock() + dt.timedelta(days=30))
        points.earn(member, 300, key="order:2")
        points.redeem(member, 600, key="reward:1")
        points.reserve(member, 100, key="checkout:1")
        points.capture(member, key="checkout:1")
        clock.advance(days=31)
        assert jobs.expire_points() == 0  # the expiring lot was spent first
        assert members.balances(member).available == 100
        assert ledger_sum(db, member.id) == 100
        assert audit.verify() == []


def test_invalid_prefix_is_refused_and_nothing_is_created(tmp_path):
    url = f"sqlite:///{tmp_path / 'bad.sqlite'}"
    with pytest.raises(ValueError, match="not a usable table prefix"):
        migrate_up(url, tmp_path, prefix="bad-prefix")
    assert schema(url) == {}
    assert version_rows(url) == []


def test_prefix_from_the_ini_option(tmp_path):
    url = f"sqlite:///{tmp_path / 'ini.sqlite'}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            config = alembic_config(tmp_path, conn)
            config.set_main_option("loyalty_table_prefix", "ini_")
            command.upgrade(config, "loyalty@head")
    finally:
        engine.dispose()
    assert table_names(url) == {f"ini_{name}" for name in TABLES}


# -- with Flask-Migrate --------------------------------------------------------------


@contextlib.contextmanager
def preserved_logging() -> t.Iterator[None]:
    """Undo what Flask-Migrate's env.py does to logging (``logging.config.fileConfig``)."""
    manager = logging.Logger.manager
    root = logging.getLogger()
    saved = {
        name: (lg.disabled, lg.level, list(lg.handlers), lg.propagate)
        for name, lg in manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    root_state = (root.level, list(root.handlers))
    try:
        yield
    finally:
        for name, lg in list(manager.loggerDict.items()):
            if isinstance(lg, logging.Logger):
                disabled, level, handlers, propagate = saved.get(name, (False, logging.NOTSET, [], True))
                lg.disabled = disabled
                lg.setLevel(level)
                lg.handlers[:] = handlers
                lg.propagate = propagate
        root.setLevel(root_state[0])
        root.handlers[:] = root_state[1]


def host_app(url: str, directory: str, clock: FrozenClock) -> tuple[Flask, t.Any]:
    """A host shop with its own model, Flask-Migrate and the extension (prefix ``shop_``)."""

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class Customer(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "shop_customer"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(sa.String(254), unique=True)

    app = Flask(__name__)
    app.config.update(TESTING=True, SQLALCHEMY_DATABASE_URI=url, LOYALTY_TABLE_PREFIX="shop_")
    db.init_app(app)
    migrate = Migrate(app, db, directory=directory, include_object=include_object)
    migrate.configure(add_version_location)
    Loyalty(app, db=db, clock=clock)
    return app, db


# Flask-Migrate's env.py template tries the deprecated ``db.get_engine()`` first.
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_flask_migrate_host_workflow(database, tmp_path, clock, closing):
    directory = str(tmp_path / "migrations")
    app, db = host_app(database, directory, clock)
    closing(app)
    runner = app.test_cli_runner()
    before = sorted(os.listdir(VERSIONS_DIR))

    def flask_db(*args: str) -> str:
        result = runner.invoke(args=["db", *args])
        assert result.exit_code == 0, result.output
        return t.cast(str, result.output)

    with preserved_logging():
        flask_db("init")
        # The prefix comes from the app's LOYALTY_TABLE_PREFIX.
        flask_db("upgrade", "loyalty@head")
        assert table_names(database) == {f"shop_{name}" for name in TABLES}
        # The host's first revision starts its own labelled branch in its own directory,
        # and the filter keeps the extension's tables out of it.
        versions = os.path.join(directory, "versions")
        flask_db(
            "migrate",
            "-m",
            "customers",
            "--head",
            "base",
            "--branch-label",
            "app",
            *("--version-path", versions),
        )
        (host_revision,) = os.listdir(versions)
        text = (tmp_path / "migrations" / "versions" / host_revision).read_text()
        assert "shop_customer" in text and "shop_member" not in text and "loyalty" not in text
        assert sorted(os.listdir(VERSIONS_DIR)) == before
        flask_db("upgrade", "heads")
        assert table_names(database) == {"shop_customer", *(f"shop_{name}" for name in TABLES)}
        host_id = host_revision.split("_")[0]
        assert version_rows(database) == sorted(["loyalty_0001", host_id])
        with app.app_context(), db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, db.metadata) == []
        flask_db("downgrade", "loyalty@base")
        assert table_names(database) == {"shop_customer"}
        assert version_rows(database) == [host_id]
