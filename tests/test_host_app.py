"""A host shop with its own models and a customised ``db.Model`` base mounts the extension.

The host's base class adds ``id``, ``created_at`` and ``updated_at`` columns,
table arguments and insert/update listeners to every model, and its metadata
has a naming convention of its own. None of it may reach the extension's
tables, and mounting the extension and using the ledger must leave the host's
tables as they were.

The schema helpers here (:func:`schema`, :func:`empty_database`...) are shared
with ``test_migrations.py``; this module itself needs no Alembic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_loyalty import audit
from flask_loyalty import current_loyalty
from flask_loyalty import InsufficientPoints
from flask_loyalty import jobs
from flask_loyalty import Loyalty
from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty.models import build_models
from flask_loyalty.testing import FrozenClock

from .conftest import _prepared
from .conftest import close_app
from .conftest import engine_url

#: The extension's tables, without the prefix.
TABLES = (
    "campaign",
    "cart",
    "cart_item",
    "ledger_entry",
    "lot_allocation",
    "member",
    "order",
    "order_line",
    "points_lot",
    "refund",
    "repair",
    "reservation",
    "reward",
    "redemption",
    "api_response",
    "referral",
    "action_award",
    "reminder",
    "payment_fingerprint",
)

#: The host's own naming convention: nothing of the extension may follow it.
HOST_CONVENTION = {
    "ix": "shop_ix_%(column_0_label)s",
    "uq": "shop_uq_%(table_name)s_%(column_0_name)s",
    "ck": "shop_ck_%(table_name)s_%(constraint_name)s",
    "fk": "shop_fk_%(table_name)s_%(column_0_name)s",
    "pk": "shop_pk_%(table_name)s",
}
HOST_TABLES = {"shop_user", "shop_order"}


def wipe(url: str) -> None:
    """Drop every table of the test database."""
    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        metadata.drop_all(engine)
    finally:
        engine.dispose()


def empty_database(engine: str, tmp_path: t.Any) -> t.Iterator[str]:
    """Yield the URL of an empty database on ``engine``, and empty it again after."""
    url = engine_url(engine, tmp_path)
    wipe(url)
    yield url
    wipe(url)
    # The shared fixtures create their tables again on the next test.
    _prepared.discard(engine)


def schema(url: str, *, skip: t.Collection[str] = ("alembic_version",)) -> dict[str, dict[str, t.Any]]:
    """Everything the inspector reports about each table of the database at ``url``."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        dialect = engine.dialect
        tables: dict[str, dict[str, t.Any]] = {}
        for name in sorted(inspector.get_table_names()):
            if name in skip:
                continue
            info: dict[str, t.Any] = {
                "columns": [
                    (
                        c["name"],
                        c["type"].compile(dialect=dialect),
                        c["nullable"],
                        c.get("default"),
                        c.get("autoincrement"),
                        c.get("comment"),
                    )
                    for c in inspector.get_columns(name)
                ],
                "primary_key": inspector.get_pk_constraint(name),
                "foreign_keys": sorted(
                    (
                        fk["name"],
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        tuple(fk["referred_columns"]),
                        sorted(fk["options"].items()),
                    )
                    for fk in inspector.get_foreign_keys(name)
                ),
                "indexes": sorted(
                    (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                    for ix in inspector.get_indexes(name)
                ),
                "unique": sorted(
                    (uq["name"], tuple(uq["column_names"])) for uq in inspector.get_unique_constraints(name)
                ),
                "checks": sorted((ck["name"], ck["sqltext"]) for ck in inspector.get_check_constraints(name)),
            }
            try:
                info["options"] = inspector.get_table_options(name)
            except NotImplementedError:  # only MySQL has them before SQLAlchemy 2.0.30 or so
                pass
            if dialect.supports_comments:
                info["comment"] = inspector.get_table_comment(name)["text"]
            tables[name] = info
        if dialect.name == "postgresql" and inspector.get_sequence_names():
            tables["<sequences>"] = {"names": sorted(inspector.get_sequence_names())}
        return tables
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    """The names of the tables of the database at ``url``, but ``alembic_version``."""
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def schema_differences(
    actual: dict[str, dict[str, t.Any]], expected: dict[str, dict[str, t.Any]]
) -> list[str]:
    """Each table and aspect on which two :func:`schema` results differ."""
    problems = [f"{name}: only in one schema" for name in sorted(set(actual) ^ set(expected))]
    for name in sorted(set(actual) & set(expected)):
        for key in sorted(set(actual[name]) | set(expected[name])):
            if actual[name].get(key) != expected[name].get(key):
                problems.append(f"{name}.{key}: {actual[name].get(key)!r} != {expected[name].get(key)!r}")
    return problems


@pytest.fixture
def database(engine: str, tmp_path: t.Any) -> t.Iterator[str]:
    """The URL of an empty database on the engine under test."""
    yield from empty_database(engine, tmp_path)


@dataclasses.dataclass
class Host:
    """A host shop: its app, ``db``, models and what its listeners saw."""

    app: Flask
    db: t.Any
    User: type[t.Any]
    Order: type[t.Any]
    #: ``(event, class name)`` for each time a host listener fired.
    fired: list[tuple[str, str]]


def host_db(clock: FrozenClock, fired: list[tuple[str, str]]) -> t.Any:
    """The host's ``db``: a custom base with its own naming convention, table
    arguments and columns, and listeners that stamp ``updated_at`` and record
    ``(event, class name)`` in ``fired`` for every insert and update."""

    class HostBase(DeclarativeBase):
        metadata = sa.MetaData(naming_convention=HOST_CONVENTION)
        __table_args__ = {"comment": "shop table", "mysql_engine": "InnoDB"}

        id: Mapped[int] = mapped_column(primary_key=True)
        created_at: Mapped[dt.datetime] = mapped_column(default=clock)
        updated_at: Mapped[dt.datetime] = mapped_column(default=clock)

    db = SQLAlchemy(model_class=HostBase)

    def stamp(event: str) -> t.Callable[..., None]:
        def listener(mapper: t.Any, connection: t.Any, target: t.Any) -> None:
            fired.append((event, type(target).__name__))
            target.updated_at = clock()

        return listener

    sa.event.listen(db.Model, "before_insert", stamp("insert"), propagate=True)
    sa.event.listen(db.Model, "before_update", stamp("update"), propagate=True)
    return db


def make_host(url: str, clock: FrozenClock, config: dict[str, t.Any] | None = None, *,
              mount: bool = True, clash: str | None = None) -> Host:  # fmt: skip
    """Build the host shop on ``url``; ``mount`` adds the extension, ``clash`` a host table of that name."""

    fired: list[tuple[str, str]] = []
    db = host_db(clock, fired)

    class User(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "shop_user"
        email: Mapped[str] = mapped_column(sa.String(254), unique=True)
        name: Mapped[str] = mapped_column(sa.String(100))

    class Order(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "shop_order"
        user_id: Mapped[int] = mapped_column(sa.ForeignKey("shop_user.id"), index=True)
        total_cents: Mapped[int]

    if clash is not None:
        type("Clash", (db.Model,), {"__tablename__": clash, "note": mapped_column(sa.String(20))})

    app = Flask(__name__)
    app.config.update(TESTING=True, SQLALCHEMY_DATABASE_URI=url, **(config or {}))
    db.init_app(app)
    if mount:
        Loyalty(app, db=db, clock=clock)
    return Host(app, db, User, Order, fired)


@pytest.fixture
def new_host(clock: FrozenClock) -> t.Iterator[t.Callable[..., Host]]:
    """Build hosts with :func:`make_host` on the test's clock; close them after the test."""
    made: list[Host] = []

    def build(url: str, config: dict[str, t.Any] | None = None, **kwargs: t.Any) -> Host:
        host = make_host(url, clock, config, **kwargs)
        made.append(host)
        return host

    yield build
    for host in made:
        close_app(host.app)


def describe(metadata: sa.MetaData, names: t.Iterable[str]) -> dict[str, t.Any]:
    """The declared shape of the named tables of ``metadata``."""
    shapes = {}
    for name in sorted(names):
        table = metadata.tables[name]
        shapes[name] = {
            "columns": [
                (c.name, repr(c.type), c.nullable, c.primary_key, c.default is not None)
                for c in table.columns
            ],
            "constraints": sorted(str(c.name) for c in table.constraints),
            "indexes": sorted(str(i.name) for i in table.indexes),
            "foreign_keys": sorted(fk.target_fullname for fk in table.foreign_keys),
            "comment": table.comment,
            "kwargs": dict(table.kwargs),
        }
    return shapes


def test_extension_tables_are_exactly_the_extensions(database, new_host):
    host = new_host(database)
    with host.app.app_context():
        host.db.create_all()
    mounted = schema(database)
    close_app(host.app)
    assert set(mounted) - {"<sequences>"} == HOST_TABLES | {f"loyalty_{name}" for name in TABLES}

    models = build_models("loyalty_")
    for name, table in models.metadata.tables.items():
        assert [c[0] for c in mounted[name]["columns"]] == [c.name for c in table.columns]
        assert mounted[name].get("comment") is None
        constraint_names = [fk[0] for fk in mounted[name]["foreign_keys"]] + [
            ix[0] for ix in mounted[name]["indexes"]
        ]
        assert not [n for n in constraint_names if n.startswith("shop_")]
    member_columns = [c[0] for c in mounted["loyalty_member"]["columns"]]
    assert "updated_at" not in member_columns and member_columns.count("id") == 1
    # The host's base did reach the host's own tables.
    host_columns = {c[0] for c in mounted["shop_user"]["columns"]}
    assert host_columns == {"id", "created_at", "updated_at", "email", "name"}
    assert [uq[0] for uq in mounted["shop_user"]["unique"]] == ["shop_uq_shop_user_email"]
    if "comment" in mounted["shop_user"]:
        assert mounted["shop_user"]["comment"] == "shop table"

    # Exactly what the extension's own metadata creates on an empty database.
    wipe(database)
    engine = sa.create_engine(database)
    try:
        models.metadata.create_all(engine)
    finally:
        engine.dispose()
    alone = schema(database)
    loyalty_part = {name: info for name, info in mounted.items() if name.startswith("loyalty_")}
    if "<sequences>" in mounted:  # PostgreSQL: the serial columns' sequences
        loyalty_part["<sequences>"] = {
            "names": [n for n in mounted["<sequences>"]["names"] if n.startswith("loyalty_")]
        }
    assert schema_differences(loyalty_part, alone) == []


def test_host_tables_are_untouched(database, new_host, clock):
    host = new_host(database, mount=False)
    host_tables = {name: host.db.metadata.tables[name] for name in HOST_TABLES}
    declared = describe(host.db.metadata, HOST_TABLES)
    Loyalty(host.app, db=host.db, clock=clock)
    assert describe(host.db.metadata, HOST_TABLES) == declared
    assert all(host.db.metadata.tables[name] is table for name, table in host_tables.items())
    assert [c.key for c in host.User.__table__.columns] == ["email", "name", "id", "created_at", "updated_at"]

    with host.app.app_context():
        host.db.create_all()
        created = {name: info for name, info in schema(database).items() if name in HOST_TABLES}
        user = host.User(email="mei@example.com", name="Mei")
        host.db.session.add(user)
        host.db.session.commit()
        host.db.session.add(host.Order(user_id=user.id, total_cents=4200))
        host.db.session.commit()
        member = members.enroll(name="Mei", email="mei@example.com", user_id=user.id)
        points.earn(member, 420, key="order:1")
        points.redeem(member, 20, key="reward:1")
        jobs.expire_points()
    assert {name: info for name, info in schema(database).items() if name in HOST_TABLES} == created
    assert describe(host.db.metadata, HOST_TABLES) == declared


def test_ledger_works_and_host_listeners_skip_loyalty_rows(database, new_host, clock):
    host = new_host(database)
    db = host.db
    with host.app.app_context():
        db.create_all()
        user = host.User(email="sam@example.com", name="Sam")
        db.session.add(user)
        db.session.commit()
        order = host.Order(user_id=user.id, total_cents=12_345)
        db.session.add(order)
        db.session.commit()

        member = members.enroll(name=user.name, email=user.email, user_id=user.id)
        points.earn(member, 1230, key=f"order:{order.id}", expires_at=clock() + dt.timedelta(days=30))
        points.earn(member, 1230, key=f"order:{order.id}", expires_at=clock() + dt.timedelta(days=30))
        points.earn(member, 100, key="signup", available_from=clock() + dt.timedelta(days=14))
        points.redeem(member, 200, key="reward:1")
        with pytest.raises(InsufficientPoints):
            points.redeem(member, 1031, key="reward:2")
        points.reserve(member, 300, key="checkout:7")
        points.capture(member, key="checkout:7")
        points.adjust(member, -30, key="goodwill:1", actor="admin", reason="duplicate signup")
        clock.advance(days=15)
        assert jobs.release_pending() == 1
        clock.advance(days=20)
        assert jobs.expire_points() == 1

        user.name = "Sam Lee"
        db.session.commit()

        balances = members.balances(member)
        # 1230 - 200 - 300 - 30 = 700 of the expiring lot expired; the 100 signup points stay.
        assert (balances.available, balances.pending, balances.reserved) == (100, 0, 0)
        assert balances.lifetime_earned == 1330
        assert audit.verify() == []
        member_model = current_loyalty.models.Member
        assert not hasattr(member_model, "updated_at")
        assert member_model.__table__.c.keys() == build_models("loyalty_").Member.__table__.c.keys()
        assert db.session.get(host.User, user.id).updated_at == clock()

    # The host's listeners fired for the host's rows only.
    assert host.fired == [("insert", "User"), ("insert", "Order"), ("update", "User")]


def test_table_name_clash_with_a_host_table_is_refused(tmp_path, new_host, clock):
    host = new_host(f"sqlite:///{tmp_path / 'clash.sqlite'}", mount=False, clash="loyalty_order")
    before = set(host.db.metadata.tables)
    message = r"already defines a table named 'loyalty_order'.*LOYALTY_TABLE_PREFIX"
    with pytest.raises(RuntimeError, match=message):
        Loyalty(host.app, db=host.db, clock=clock)
    assert set(host.db.metadata.tables) == before
    assert "loyalty" not in host.app.extensions

    # The remedy the message names: another prefix.
    host.app.config["LOYALTY_TABLE_PREFIX"] = "pts_"
    Loyalty(host.app, db=host.db, clock=clock)
    assert set(host.db.metadata.tables) == before | {f"pts_{name}" for name in TABLES}


def test_host_table_declared_after_mounting_with_a_taken_name_is_refused(new_host):
    host = new_host("sqlite://")
    with pytest.raises(sa.exc.InvalidRequestError, match="Table 'loyalty_member' is already defined"):
        type(
            "Members",
            (host.db.Model,),
            {"__tablename__": "loyalty_member", "note": mapped_column(sa.String(20))},
        )


def test_custom_prefix_creates_prefixed_tables(database, new_host):
    host = new_host(database, {"LOYALTY_TABLE_PREFIX": "shop_pts_"})
    with host.app.app_context():
        host.db.create_all()
        assert table_names(database) == HOST_TABLES | {f"shop_pts_{name}" for name in TABLES}
        assert current_loyalty.models.Member.__tablename__ == "shop_pts_member"
        member = members.enroll(name="Ola", email="ola@example.com")
        points.earn(member, 250, key="order:9")
        points.redeem(member, 50, key="reward:9")
        entries = host.db.metadata.tables["shop_pts_ledger_entry"]
        with host.db.engine.connect() as conn:
            rows = conn.execute(sa.select(entries.c.kind, entries.c.points).order_by(entries.c.id)).all()
        assert [tuple(row) for row in rows] == [("earn", 250), ("redeem", -50)]
        assert members.balances(member).available == 200
        assert audit.verify() == []
