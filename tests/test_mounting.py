"""Mounting on any host shop: the extension's own models, or the shop's own.

Two test shops run the same story (pay, complete, a partial refund, a
cancelled order, an order partly paid with points and then cancelled, and an
unpaid one cancelled with its points reservation) and must end with the same
ledger, entry for entry:

- :class:`ModelShop` uses the extension's ``Member`` and ``Order`` models and
  only changes ``order.status`` (the lifecycle hooks run by themselves);
- :class:`HostShop` has its own ``User``, ``Order``, ``Item`` and ``Refund``
  models on a customised declarative base (extra ``id`` and timestamp columns
  on the base, a naming convention, table arguments and a listener), read by
  an :class:`~flask_loyalty.adapters.AttributeOrderAdapter`, and calls the
  hooks in one of three ways (``wiring``): from its own code, from receivers
  of its own blinker signals, or from SQLAlchemy events on its models.
"""

from __future__ import annotations

import dataclasses
import random
import re
import threading
import time
import typing as t

import blinker
import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import relationship

from flask_loyalty import audit
from flask_loyalty import ConcurrencyError
from flask_loyalty import CurrencyMismatch
from flask_loyalty import InvalidRequest
from flask_loyalty import InvalidState
from flask_loyalty import Loyalty
from flask_loyalty import MemberNotFound
from flask_loyalty import members
from flask_loyalty import orders
from flask_loyalty import points
from flask_loyalty import signals as loyalty_signals
from flask_loyalty.adapters import AttributeOrderAdapter
from flask_loyalty.autohooks import on_commit
from flask_loyalty.autohooks import STATUS_REFUND_KEY
from flask_loyalty.earning import read_order
from flask_loyalty.models import build_models
from flask_loyalty.testing import FrozenClock
from flask_loyalty.transaction import is_retryable

from .conftest import close_app
from .conftest import make_app
from .conftest import START
from .test_host_app import describe
from .test_host_app import empty_database
from .test_host_app import host_db
from .test_host_app import schema
from .test_host_app import wipe

HOST_TABLES = ("shop_order", "shop_order_item", "shop_refund", "shop_user")
WIRINGS = ("calls", "signals", "events")
CONFIG = {"LOYALTY_PENDING_DAYS": 14}

#: What the story writes, in order: ``(kind, points, source key)``.
STORY_ENTRIES = [
    ("earn", 700, "order:A1"),  # 2 × 12.50 + 45.00 of goods; shipping earns nothing
    ("activate", 700, "lot:1"),  # completed: available before the 14 days
    ("reverse", -125, "refund:A1:R1"),  # one of the two teas (250 points) comes back
    ("earn", 200, "order:A2"),
    ("reverse", -200, "cancel:A2"),
    ("reserve", -500, "order:A3"),  # 5.00 of A3 paid with points
    ("capture", -500, "order:A3"),
    ("earn", 400, "order:A3"),  # 45.00 less the 5.00 paid with points
    ("reverse", -400, "cancel:A3"),
    ("reverse", 500, "cancel:A3:points"),  # the points it was paid with come back
    ("reserve", -200, "order:A4"),
    ("release", 0, "order:A4"),  # cancelled before it was paid
]


class Customer:
    """Not a model: a class for ``LOYALTY_USER_MODEL`` import strings."""


@pytest.fixture
def database(engine: str, tmp_path: t.Any) -> t.Iterator[str]:
    """The URL of an empty database on the engine under test."""
    yield from empty_database(engine, tmp_path)


Line = tuple[str, str, int, int]  # sku, category, quantity, unit price in cents


class Shop(t.Protocol):
    """What the story needs of a shop; each method is the shop's own code."""

    app: Flask
    db: t.Any

    def customer(self, name: str, email: str) -> t.Any: ...
    def place(self, customer: t.Any, ref: str, lines: list[Line], *, shipping: int = 0,
              with_points: int = 0) -> t.Any: ...  # fmt: skip
    def member_id(self, customer: t.Any) -> int: ...
    def pay(self, order: t.Any) -> None: ...
    def complete(self, order: t.Any) -> None: ...
    def refund(self, order: t.Any, number: str, sku: str, quantity: int) -> None: ...
    def cancel(self, order: t.Any) -> None: ...


def story(shop: Shop, clock: FrozenClock) -> int:
    """Run the story in ``shop``; return Ada's member id."""
    ada = shop.customer("Ada", "ada@example.com")
    a1 = shop.place(ada, "A1", [("tea", "drinks", 2, 1250), ("pot", "kitchen", 1, 4500)], shipping=500)
    shop.pay(a1)
    clock.advance(days=1)
    shop.complete(a1)
    clock.advance(days=1)
    shop.refund(a1, "R1", "tea", 1)
    a2 = shop.place(ada, "A2", [("cup", "kitchen", 1, 2000)])
    shop.pay(a2)
    clock.advance(hours=2)
    shop.cancel(a2)
    # Checkout with points: reserved when the order is placed, captured when it is paid.
    a3 = shop.place(ada, "A3", [("pot", "kitchen", 1, 4500)], with_points=500)
    points.reserve(shop.member_id(ada), 500, key="order:A3")
    shop.pay(a3)
    clock.advance(hours=2)
    shop.cancel(a3)
    a4 = shop.place(ada, "A4", [("tea", "drinks", 1, 1250)], with_points=200)
    points.reserve(shop.member_id(ada), 200, key="order:A4")
    shop.cancel(a4)
    return shop.member_id(ada)


# -- the shop on the extension's own models -----------------------------------


class ModelShop:
    """A shop on the extension's ``Member`` and ``Order``: it only sets statuses."""

    def __init__(self, url: str, clock: FrozenClock, config: dict[str, t.Any] | None = None) -> None:
        self.app, self.db = make_app(url, clock, {**CONFIG, **(config or {})})
        self.models = self.app.extensions["loyalty"].models

    def customer(self, name: str, email: str) -> t.Any:
        return members.enroll(name=name, email=email)

    def member_id(self, customer: t.Any) -> int:
        return int(customer.id)

    def place(self, customer: t.Any, ref: str, lines: list[Line], *, shipping: int = 0,
              with_points: int = 0) -> t.Any:  # fmt: skip
        m = self.models
        order = m.Order(
            member=customer,
            reference=ref,
            currency="USD",
            total_minor=sum(q * p for _, _, q, p in lines) + shipping,
            shipping_minor=shipping,
            points_value_minor=with_points,
            lines=[
                m.OrderLine(sku=s, name=s.title(), category=c, quantity=q, unit_price_minor=p)
                for s, c, q, p in lines
            ],
        )
        self.db.session.add(order)
        self.db.session.commit()
        return order

    def set_status(self, order: t.Any, status: str) -> None:
        order.status = status
        self.db.session.commit()

    def pay(self, order: t.Any) -> None:
        self.set_status(order, "paid")

    def complete(self, order: t.Any) -> None:
        self.set_status(order, "completed")

    def refund(self, order: t.Any, number: str, sku: str, quantity: int) -> None:
        # A partial refund is not a status: the shop calls the hook.
        orders.order_refunded(order, key=number, lines={sku: quantity})

    def cancel(self, order: t.Any) -> None:
        self.set_status(order, "cancelled")


# -- the shop with its own models -----------------------------------------------


class HostShop:
    """A shop with its own users and orders on a customised base.

    :param wiring: how the shop's code reaches the lifecycle hooks:
        ``"calls"`` (its own code calls them, joining its transaction),
        ``"signals"`` (receivers of its own blinker signals call them after
        its commit), ``"events"`` (its SQLAlchemy listeners schedule them with
        :func:`~flask_loyalty.autohooks.on_commit`).
    """

    def __init__(self, url: str, clock: FrozenClock, wiring: str = "calls", *,
                 config: dict[str, t.Any] | None = None, mount: bool = True) -> None:  # fmt: skip
        self.wiring = wiring
        self.clock = clock
        #: ``(event, class name)`` each time the host's base listener fired.
        self.fired: list[tuple[str, str]] = []

        db = host_db(clock, self.fired)

        class User(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "shop_user"
            email: Mapped[str] = mapped_column(sa.String(254), unique=True)
            name: Mapped[str] = mapped_column(sa.String(100))

        class Order(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "shop_order"
            number: Mapped[str] = mapped_column(sa.String(20), unique=True)
            user_id: Mapped[int] = mapped_column(sa.ForeignKey("shop_user.id"), index=True)
            user: Mapped[User] = relationship()
            state: Mapped[str] = mapped_column(sa.String(20), default="new")
            currency: Mapped[str] = mapped_column(sa.String(3), default="USD")
            total_cents: Mapped[int]
            shipping_cents: Mapped[int] = mapped_column(default=0)
            points_cents: Mapped[int] = mapped_column(default=0)
            items: Mapped[list[Item]] = relationship(order_by="Item.id", cascade="all, delete-orphan")

        class Item(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "shop_order_item"
            order_id: Mapped[int] = mapped_column(sa.ForeignKey("shop_order.id"), index=True)
            sku: Mapped[str] = mapped_column(sa.String(40))
            title: Mapped[str] = mapped_column(sa.String(100))
            category: Mapped[str] = mapped_column(sa.String(40))
            quantity: Mapped[int]
            price_cents: Mapped[int]

        class Refund(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "shop_refund"
            order_id: Mapped[int] = mapped_column(sa.ForeignKey("shop_order.id"), index=True)
            order: Mapped[Order] = relationship()
            number: Mapped[str] = mapped_column(sa.String(20))
            sku: Mapped[str] = mapped_column(sa.String(40))
            quantity: Mapped[int]

        self.db, self.User, self.Order, self.Item, self.Refund = db, User, Order, Item, Refund
        self.app = Flask(__name__)
        self.app.config.update(
            TESTING=True,
            SQLALCHEMY_DATABASE_URI=url,
            SQLALCHEMY_ENGINE_OPTIONS={} if url.startswith("sqlite") else {"pool_size": 20},
            LOYALTY_USER_MODEL=User,
            **CONFIG,
            **(config or {}),
        )
        db.init_app(self.app)
        # The shop's own signals, and what its code does on each.
        events = blinker.Namespace()
        self.signals = {name: events.signal(name) for name in ("paid", "delivered", "cancelled", "refunded")}
        self.loyalty = Loyalty(db=db, clock=clock)
        self.loyalty.order_adapter(
            AttributeOrderAdapter(
                reference="number",
                user="user",
                total="total_cents",
                lines="items",
                shipping="shipping_cents",
                paid_with_points="points_cents",
                line_name="title",
                line_unit_price="price_cents",
                minor_units=True,
            )
        )
        self.wire()
        if mount:
            self.mount()

    def mount(self) -> None:
        """Initialise the extension on the shop's app."""
        self.loyalty.init_app(self.app)

    def loyalty_paid(self, order: t.Any) -> None:
        """The loyalty side of a payment: earn, and capture the points it was paid with."""
        orders.order_paid(order)

    def loyalty_refunded(self, refund: t.Any) -> None:
        orders.order_refunded(refund.order, key=refund.number, lines={refund.sku: refund.quantity})

    def hook_for(self, state: str) -> t.Callable[[t.Any], object]:
        return {
            "paid": self.loyalty_paid,
            "delivered": orders.order_completed,
            "cancelled": orders.order_cancelled,
        }[state]

    def wire(self) -> None:
        if self.wiring == "signals":
            for state in ("paid", "delivered", "cancelled"):
                hook = self.hook_for(state)
                self.signals[state].connect(
                    lambda sender, order, _hook=hook, **extra: _hook(order), weak=False
                )
            self.signals["refunded"].connect(
                lambda sender, refund, **extra: self.loyalty_refunded(refund), weak=False
            )
        elif self.wiring == "events":

            @sa.event.listens_for(self.Order, "after_update")
            def order_changed(mapper: t.Any, connection: t.Any, order: t.Any) -> None:
                added = sa.inspect(order).attrs.state.history.added
                if added:
                    on_commit(self.hook_for(added[0]), order)

            @sa.event.listens_for(self.Refund, "after_insert")
            def refund_recorded(mapper: t.Any, connection: t.Any, refund: t.Any) -> None:
                on_commit(self.loyalty_refunded, refund)

    # The shop's own code.

    def customer(self, name: str, email: str) -> t.Any:
        user = self.User(name=name, email=email)
        self.db.session.add(user)
        self.db.session.commit()
        return user

    def member_id(self, customer: t.Any) -> int:
        return members.member_for_user(customer, auto_enroll=False)

    def place(self, customer: t.Any, ref: str, lines: list[Line], *, shipping: int = 0,
              with_points: int = 0) -> t.Any:  # fmt: skip
        order = self.Order(
            number=ref,
            user=customer,
            total_cents=sum(q * p for _, _, q, p in lines) + shipping,
            shipping_cents=shipping,
            points_cents=with_points,
            items=[
                self.Item(sku=s, title=s.title(), category=c, quantity=q, price_cents=p)
                for s, c, q, p in lines
            ],
        )
        self.db.session.add(order)
        self.db.session.commit()
        return order

    def set_state(self, order: t.Any, state: str) -> None:
        order.state = state
        if self.wiring == "calls":
            # Joins the shop's transaction: its new state and the points commit together.
            self.hook_for(state)(order)
        self.db.session.commit()
        if self.wiring == "signals":
            self.signals[state].send(self.app, order=order)

    def pay(self, order: t.Any) -> None:
        self.set_state(order, "paid")

    def complete(self, order: t.Any) -> None:
        self.set_state(order, "delivered")

    def refund(self, order: t.Any, number: str, sku: str, quantity: int) -> None:
        refund = self.Refund(order=order, number=number, sku=sku, quantity=quantity)
        self.db.session.add(refund)
        if self.wiring == "calls":
            self.loyalty_refunded(refund)
        self.db.session.commit()
        if self.wiring == "signals":
            self.signals["refunded"].send(self.app, refund=refund)

    def cancel(self, order: t.Any) -> None:
        self.set_state(order, "cancelled")


# -- reading the results ---------------------------------------------------------

ENTRY_FIELDS = (
    "kind", "points", "delta_available", "delta_pending", "delta_reserved", "available_after",
    "pending_after", "reserved_after", "source_key", "shortfall", "actor", "reason", "created_at",
)  # fmt: skip


def ledger(db: t.Any) -> list[tuple[t.Any, ...]]:
    """Every ledger entry, oldest first, without ids."""
    e = db.metadata.tables["loyalty_ledger_entry"]
    with db.engine.connect() as conn:
        return [
            tuple(row) for row in conn.execute(sa.select(*(e.c[f] for f in ENTRY_FIELDS)).order_by(e.c.id))
        ]


def loyalty_orders(db: t.Any) -> dict[str, t.Any]:
    """The loyalty view of each order, and of the lines of those that were paid."""
    o, ln = db.metadata.tables["loyalty_order"], db.metadata.tables["loyalty_order_line"]
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(o.c.id, o.c.reference, o.c.status, o.c.points, o.c.total_minor, o.c.refunded_minor,
                      o.c.paid_at, o.c.completed_at, o.c.cancelled_at, o.c.params_hash != "")
            .order_by(o.c.reference)
        ).all()  # fmt: skip
        seen = {}
        for row in rows:
            lines = conn.execute(
                sa.select(ln.c.sku, ln.c.quantity, ln.c.points, ln.c.refunded_quantity, ln.c.refunded_points)
                .where(ln.c.order_id == row.id)
                .order_by(ln.c.id)
            ).all()
            seen[row.reference] = (tuple(row)[2:], [tuple(line) for line in lines] if row[-1] else None)
        return seen


def with_retries(session: t.Any, work: t.Callable[[], None], attempts: int = 30) -> None:
    """The shop's own retry loop: roll back and try again, after a random back-off,
    when the database refused the transaction (SQLite refuses a second writer of
    the shop's own rows; any engine may report a deadlock)."""
    for attempt in range(attempts):
        try:
            work()
            return
        except (ConcurrencyError, sa.exc.OperationalError) as error:
            if not (isinstance(error, ConcurrencyError) or is_retryable(error)):
                raise
            session.rollback()
            time.sleep(0.005 * 2 ** min(attempt, 6) * random.random())
    raise AssertionError(f"the transaction failed {attempts} times")


def member_count(db: t.Any) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(db.metadata.tables["loyalty_member"])
            ).scalar_one()
        )


# -- the two shapes end the same -------------------------------------------------


@pytest.mark.parametrize("wiring", WIRINGS)
def test_both_shop_shapes_end_with_identical_ledgers(database, wiring, signals):
    model_clock = FrozenClock(START)
    shop = ModelShop(database, model_clock)
    with shop.app.app_context():
        shop.db.create_all()
        member_id = story(shop, model_clock)
        model_ledger, model_orders = ledger(shop.db), loyalty_orders(shop.db)
        model_balances = members.balances(member_id)
        assert audit.verify() == []
    model_signals = signals.names()
    close_app(shop.app)
    wipe(database)
    signals.sent.clear()

    host_clock = FrozenClock(START)
    host = HostShop(database, host_clock, wiring, mount=False)
    with host.app.app_context():
        host.db.create_all()
    declared = describe(host.db.metadata, HOST_TABLES)
    before = schema(database)
    assert set(before) - {"<sequences>"} == set(HOST_TABLES)

    host.mount()
    with host.app.app_context():
        host.db.create_all()
        member_id = story(host, host_clock)
        host_ledger, host_orders = ledger(host.db), loyalty_orders(host.db)
        host_balances = members.balances(member_id)
        assert audit.verify() == []
    host_signals = signals.names()
    after = schema(database)
    close_app(host.app)

    # The story wrote exactly this, and the same in both shops.
    assert [(e[0], e[1], e[8]) for e in model_ledger] == STORY_ENTRIES
    assert host_ledger == model_ledger
    assert (model_balances.available, model_balances.pending, model_balances.reserved) == (575, 0, 0)
    assert model_balances.lifetime_earned == 575
    assert host_balances == model_balances
    assert host_orders == model_orders
    assert [(ref, state[0], state[1]) for ref, (state, _) in model_orders.items()] == [
        ("A1", "completed", 700),
        ("A2", "cancelled", 200),
        ("A3", "cancelled", 400),
        ("A4", "cancelled", 0),
    ]
    assert model_orders["A1"][1] == [("tea", 2, 250, 1, 125), ("pot", 1, 450, 0, 0)]
    assert host_signals == model_signals
    assert model_signals.count("member-enrolled") == 1
    assert model_signals.count("order-recorded") == 3

    # The shop's own tables are as it declared and created them; the
    # extension's tables have exactly the extension's columns.
    assert {name: after[name] for name in HOST_TABLES} == {name: before[name] for name in HOST_TABLES}
    if "<sequences>" in before:  # PostgreSQL: the serial columns' sequences
        shop_sequences = [n for n in after["<sequences>"]["names"] if not n.startswith("loyalty_")]
        assert shop_sequences == before["<sequences>"]["names"]
    assert describe(host.db.metadata, HOST_TABLES) == declared
    extension = build_models("loyalty_").metadata
    assert set(after) - set(HOST_TABLES) - {"<sequences>"} == set(extension.tables)
    for name, table in extension.tables.items():
        assert [column[0] for column in after[name]["columns"]] == [c.name for c in table.columns]
        assert after[name].get("comment") is None
        names = [fk[0] for fk in after[name]["foreign_keys"]] + [ix[0] for ix in after[name]["indexes"]]
        assert not [n for n in names if n and n.startswith("shop_")]
    # The shop's listener saw its own rows only.
    assert {cls for _, cls in host.fired} == {"User", "Order", "Item", "Refund"}


# -- members of the shop's own users ---------------------------------------------


@pytest.fixture
def host(database: str, clock: FrozenClock) -> t.Iterator[HostShop]:
    """The shop with its own models, its code calling the hooks, with its tables created."""
    shop = HostShop(database, clock)
    with shop.app.app_context():
        shop.db.create_all()
        yield shop
    close_app(shop.app)


def test_a_user_is_enrolled_on_the_first_order(host, signals):
    mei = host.customer("Mei", "mei@example.com")
    with pytest.raises(MemberNotFound, match="is not a member"):
        members.member_for_user(mei, auto_enroll=False)
    first = host.place(mei, "B1", [("tea", "drinks", 1, 1250)])
    host.pay(first)
    member_id = members.member_for_user(mei, auto_enroll=False)
    member = members.get(member_id)
    assert (member.user_id, member.name, member.email) == (str(mei.id), "Mei", "mei@example.com")
    second = host.place(mei, "B2", [("pot", "kitchen", 1, 4500)])
    host.pay(second)
    assert member_count(host.db) == 1
    assert members.balances(member_id).pending == 125 + 450
    assert [kw["member"].id for kw in signals.of("member-enrolled")] == [member_id]


def test_an_explicitly_enrolled_user_earns_on_that_member(host):
    ola = host.customer("Ola", "ola@example.com")
    member = members.enroll(name="Ola N.", email="ola.n@example.com", user_id=ola.id)
    with pytest.raises(InvalidRequest, match=f"user id '{ola.id}' already exists"):
        members.enroll(name="Ola", user_id=ola.id)
    host.pay(host.place(ola, "C1", [("cup", "kitchen", 3, 2000)]))
    assert member_count(host.db) == 1
    assert members.member_for_user(ola) == member.id
    assert members.balances(member).pending == 600
    assert members.get(member.id).email == "ola.n@example.com"


def test_enrolment_can_be_left_to_the_shop(database, clock):
    host = HostShop(database, clock, config={"LOYALTY_AUTO_ENROLL_ENABLED": False})
    with host.app.app_context():
        host.db.create_all()
        kim = host.customer("Kim", "kim@example.com")
        order = host.place(kim, "D1", [("tea", "drinks", 1, 1250)])
        with pytest.raises(MemberNotFound, match=f"User {kim.id!r} is not a member"):
            host.pay(order)
        host.db.session.rollback()
        assert member_count(host.db) == 0 and ledger(host.db) == []
        members.enroll(name="Kim", user_id=kim.id)
        host.pay(host.db.session.get(host.Order, order.id))
        assert [e[0:2] for e in ledger(host.db)] == [("earn", 125)]
    close_app(host.app)


def test_a_user_not_of_the_user_model_is_refused(host):
    class Admin:
        id = 7
        name = "Root"
        email = "root@example.com"

    ada = host.customer("Ada", "ada@example.com")
    data = read_order(host.place(ada, "E1", [("tea", "drinks", 1, 1250)]))
    message = "is not a tests.test_mounting.HostShop.__init__.<locals>.User (LOYALTY_USER_MODEL), a member"
    for stranger in (Admin(), "ada@example.com", None):
        with pytest.raises(InvalidRequest, match=re.escape(message)):
            orders.order_paid(dataclasses.replace(data, user=stranger))
        with pytest.raises(InvalidRequest, match=re.escape(message)):
            members.member_for_user(stranger)
    assert member_count(host.db) == 0
    assert ledger(host.db) == []
    assert loyalty_orders(host.db) == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tests.test_mounting:Customer", Customer),
        ("tests.test_mounting.Customer", Customer),
        (Customer, Customer),
        (None, None),
    ],
)
def test_the_user_model_is_a_class_or_an_import_string(value, expected):
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", LOYALTY_USER_MODEL=value)
    SQLAlchemy(app)
    Loyalty(app)
    assert app.extensions["loyalty"].user_model is expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tests.test_mounting:Nobody", "LOYALTY_USER_MODEL 'tests.test_mounting:Nobody' cannot be imported"),
        (
            "no_such_package.models:User",
            "LOYALTY_USER_MODEL 'no_such_package.models:User' cannot be imported",
        ),
        (
            "tests.test_mounting:HOST_TABLES",
            "LOYALTY_USER_MODEL 'tests.test_mounting:HOST_TABLES' is not a class",
        ),
        ("", "LOYALTY_USER_MODEL must be a class or an import string"),
        (42, "LOYALTY_USER_MODEL must be a class or an import string such as 'shop.models:User', not 42"),
    ],
)
def test_an_unusable_user_model_is_refused_by_init_app(value, message):
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", LOYALTY_USER_MODEL=value)
    db = SQLAlchemy(app)
    with pytest.raises(ValueError, match=re.escape(message)):
        Loyalty(app)
    # Nothing was registered: the call can be made again once the setting is fixed.
    assert "loyalty" not in app.extensions and not db.metadata.tables
    app.config["LOYALTY_USER_MODEL"] = Customer
    Loyalty(app)
    assert app.extensions["loyalty"].user_model is Customer


@pytest.mark.parametrize("wiring", ["calls", "events"])
def test_concurrent_first_orders_of_a_new_user_enrol_once(database, clock, wiring, signals):
    host = HostShop(database, clock, wiring)
    rounds, per_user = 4, 3
    with host.app.app_context():
        host.db.create_all()
        users = [host.customer(f"New {n}", f"new{n}@example.com") for n in range(rounds)]
        placed = [
            [host.place(user, f"F{n}-{k}", [("tea", "drinks", 1, 1000 + k)]).id for k in range(per_user)]
            for n, user in enumerate(users)
        ]
        user_ids = [user.id for user in users]
    errors: list[BaseException] = []

    def pay(order_id: int, barrier: threading.Barrier) -> None:
        try:
            with host.app.app_context():
                barrier.wait(timeout=30)
                with_retries(host.db.session, lambda: host.pay(host.db.session.get(host.Order, order_id)))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    for order_ids in placed:
        barrier = threading.Barrier(per_user)
        threads = [threading.Thread(target=pay, args=(order_id, barrier)) for order_id in order_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert errors == []
    with host.app.app_context():
        assert member_count(host.db) == rounds
        for user_id in user_ids:
            member_id = members.member_for_user(host.db.session.get(host.User, user_id), auto_enroll=False)
            assert members.balances(member_id).pending == 300  # 10.00, 10.01 and 10.02 earn 100 each
        assert sorted(e[8] for e in ledger(host.db)) == sorted(
            f"order:F{n}-{k}" for n in range(rounds) for k in range(per_user)
        )
        assert audit.verify() == []
    assert len(signals.of("member-enrolled")) == rounds
    close_app(host.app)


# -- status changes of the extension's own orders ---------------------------------


@pytest.fixture
def shop(database: str, clock: FrozenClock) -> t.Iterator[ModelShop]:
    """The shop on the extension's models, with its tables created."""
    made = ModelShop(database, clock)
    with made.app.app_context():
        made.db.create_all()
        yield made
    close_app(made.app)


TEA_AND_POT: list[Line] = [("tea", "drinks", 2, 1250), ("pot", "kitchen", 1, 4500)]


def test_an_order_placed_as_paid_earns_and_placed_to_completed_pays_first(shop, clock):
    ada = shop.customer("Ada", "ada@example.com")
    m = shop.models
    paid = m.Order(member=ada, reference="G1", currency="USD", total_minor=1250, status="paid",
                   lines=[m.OrderLine(sku="tea", quantity=1, unit_price_minor=1250)])  # fmt: skip
    shop.db.session.add(paid)
    shop.db.session.commit()
    assert (paid.status, paid.points, paid.paid_at) == ("paid", 125, clock())
    done = shop.place(ada, "G2", TEA_AND_POT)
    clock.advance(minutes=5)
    shop.complete(done)
    assert (done.status, done.points, done.paid_at, done.completed_at) == ("completed", 700, clock(), clock())
    assert [(e[0], e[1], e[8]) for e in ledger(shop.db)] == [
        ("earn", 125, "order:G1"),
        ("earn", 700, "order:G2"),
        ("activate", 700, "lot:2"),
    ]
    balances = members.balances(ada)
    assert (balances.available, balances.pending) == (700, 125)


def test_the_shop_sees_the_status_it_set_until_the_commit_writes_it(shop):
    ada = shop.customer("Ada", "ada@example.com")
    order = shop.place(ada, "G3", TEA_AND_POT)
    order.status = "paid"
    shop.db.session.flush()
    assert order.status == "paid"
    assert ledger(shop.db) == []  # nothing earned before the commit
    shop.db.session.commit()
    assert [(e[0], e[1]) for e in ledger(shop.db)] == [("earn", 700)]
    assert (order.status, [line.points for line in order.lines]) == ("paid", [250, 450])


@pytest.mark.parametrize(
    ("steps", "bad", "message"),
    [
        ((), "refunded", "Order 'H1' is placed; it cannot become refunded."),
        ((), "placed", None),
        (("paid",), "placed", "Order 'H1' is paid; it cannot become placed."),
        (("paid", "cancelled"), "paid", "Order 'H1' is cancelled; it cannot become paid."),
        (("paid", "completed"), "cancelled", "Order 'H1' is completed; it cannot become cancelled."),
        (("paid", "cancelled"), "refunded", "Order 'H1' is cancelled; it cannot become refunded."),
    ],
)
def test_a_status_change_out_of_order_fails_the_commit_and_writes_nothing(shop, signals, steps, bad, message):
    ada = shop.customer("Ada", "ada@example.com")
    order = shop.place(ada, "H1", TEA_AND_POT)
    for step in steps:
        shop.set_status(order, step)
    before, sent, status = ledger(shop.db), list(signals.names()), order.status
    order.status = bad
    if message is None:  # no change at all
        shop.db.session.commit()
        assert order.status == "placed"
        return
    # The shop's other writes of the transaction are not committed either.
    m = shop.models
    other = m.Order(member=ada, reference="H2", currency="USD", total_minor=100,
                    lines=[m.OrderLine(sku="x", quantity=1, unit_price_minor=100)])  # fmt: skip
    shop.db.session.add(other)
    with pytest.raises(InvalidState, match=re.escape(message)):
        shop.db.session.commit()
    # A commit retried without a rollback fails again: the status never lands without its points.
    with pytest.raises(InvalidState, match=re.escape(message)):
        shop.db.session.commit()
    shop.db.session.rollback()
    assert order.status == status
    assert ledger(shop.db) == before
    assert signals.names() == sent
    assert set(loyalty_orders(shop.db)) == {"H1"}


def test_a_failing_hook_drops_the_signals_of_the_hooks_before_it(shop, signals):
    ada = shop.customer("Ada", "ada@example.com")
    first, second = shop.place(ada, "J1", TEA_AND_POT), shop.place(ada, "J2", TEA_AND_POT)
    first.status = "paid"
    shop.db.session.flush()
    second.status = "refunded"
    sent = list(signals.names())
    with pytest.raises(InvalidState, match="Order 'J2' is placed; it cannot become refunded"):
        shop.db.session.commit()
    shop.db.session.rollback()
    assert signals.names() == sent
    assert ledger(shop.db) == []
    assert (first.status, second.status) == ("placed", "placed")


def test_signals_are_sent_once_the_transaction_has_committed(shop, signals):
    ada = shop.customer("Ada", "ada@example.com")
    order = shop.place(ada, "K1", TEA_AND_POT)
    seen: list[tuple[int, int]] = []

    def on_earned(sender: t.Any, member_id: int, **extra: t.Any) -> None:
        # Another connection sees the points: the transaction has committed.
        m = shop.db.metadata.tables["loyalty_member"]
        with shop.db.engine.connect() as conn:
            committed = conn.execute(sa.select(m.c.pending).where(m.c.id == member_id)).scalar_one()
        # And the shop's session is free for the receiver's own work.
        seen.append((committed, members.balances(member_id).pending))

    loyalty_signals.points_earned.connect(on_earned)
    try:
        shop.pay(order)
    finally:
        loyalty_signals.points_earned.disconnect(on_earned)
    assert seen == [(700, 700)]
    assert signals.names()[-2:] == ["points-earned", "order-recorded"]


def test_a_status_change_in_a_rolled_back_savepoint_runs_no_hook(shop):
    ada = shop.customer("Ada", "ada@example.com")
    order = shop.place(ada, "L1", TEA_AND_POT)
    savepoint = shop.db.session.begin_nested()
    order.status = "paid"
    shop.db.session.flush()
    savepoint.rollback()
    shop.db.session.commit()
    assert order.status == "placed"
    assert ledger(shop.db) == []


def test_the_refunded_status_refunds_what_is_left(shop):
    ada = shop.customer("Ada", "ada@example.com")
    order = shop.place(ada, "M1", TEA_AND_POT)
    shop.pay(order)
    shop.refund(order, "R1", "tea", 1)
    shop.set_status(order, "refunded")
    assert (order.status, order.refunded_minor) == ("refunded", 7000)
    assert [(e[0], e[1], e[8]) for e in ledger(shop.db)] == [
        ("earn", 700, "order:M1"),
        ("reverse", -125, "refund:M1:R1"),
        ("reverse", -575, f"refund:M1:{STATUS_REFUND_KEY}"),
    ]
    assert members.balances(ada).lifetime_earned == 0


def test_paying_with_points_that_are_not_held_fails_the_commit(shop):
    ada = shop.customer("Ada", "ada@example.com")
    points.earn(ada, 1000, key="gift")
    order = shop.place(ada, "N1", TEA_AND_POT, with_points=300)
    order.status = "paid"
    with pytest.raises(Exception, match="no reservation 'order:N1'"):
        shop.db.session.commit()
    shop.db.session.rollback()
    assert [e[0] for e in ledger(shop.db)] == ["earn"]
    points.reserve(ada, 300, key="order:N1")
    shop.pay(order)
    assert [(e[0], e[1]) for e in ledger(shop.db)] == [
        ("earn", 1000),
        ("reserve", -300),
        ("capture", -300),
        ("earn", 670),
    ]


def test_order_events_can_be_switched_off(database, clock):
    shop = ModelShop(database, clock, {"LOYALTY_ORDER_EVENTS_ENABLED": False})
    with shop.app.app_context():
        shop.db.create_all()
        ada = shop.customer("Ada", "ada@example.com")
        order = shop.place(ada, "P1", TEA_AND_POT)
        shop.pay(order)
        assert ledger(shop.db) == []  # the status is the shop's own business now
        outcome = orders.order_paid(order)
        assert (outcome.status, outcome.points) == ("paid", 700)
        assert [(e[0], e[1]) for e in ledger(shop.db)] == [("earn", 700)]
    close_app(shop.app)


def test_the_same_status_change_committed_by_several_threads_at_once_earns_once(shop, clock):
    ada = shop.customer("Ada", "ada@example.com")
    order_id = shop.place(ada, "Q1", TEA_AND_POT).id
    shop.db.session.commit()  # ends the read of ``id``: SQLite's writers wait for every reader
    threads_count = 4
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def pay() -> None:
        try:
            with shop.app.app_context():
                session = shop.db.session
                barrier.wait(timeout=30)

                def work() -> None:
                    order = session.get(shop.models.Order, order_id)
                    if order.status == "placed":
                        shop.pay(order)

                with_retries(session, work)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=pay) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    shop.db.session.expire_all()
    assert [(e[0], e[1]) for e in ledger(shop.db)] == [("earn", 700)]
    assert shop.db.session.get(shop.models.Order, order_id).status == "paid"
    assert audit.verify() == []


@pytest.mark.parametrize("order_events", [True, False])
def test_hooks_from_the_shops_sqlalchemy_events_join_its_transaction(database, clock, signals, order_events):
    host = HostShop(database, clock, "events", config={"LOYALTY_ORDER_EVENTS_ENABLED": order_events})
    with host.app.app_context():
        host.db.create_all()
        ada = host.customer("Ada", "ada@example.com")
        euros = host.place(ada, "S1", [("tea", "drinks", 1, 1250)])
        euros.currency = "EUR"
        host.db.session.commit()
        sent = list(signals.names())
        with pytest.raises(CurrencyMismatch):
            host.pay(euros)
        host.db.session.rollback()
        # The shop's own change was not committed without its points.
        assert host.db.session.get(host.Order, euros.id).state == "new"
        assert ledger(host.db) == [] and member_count(host.db) == 0
        assert signals.names() == sent
        dollars = host.place(ada, "S2", [("tea", "drinks", 1, 1250)])
        host.pay(dollars)
        assert dollars.state == "paid"
        assert [(e[0], e[1], e[8]) for e in ledger(host.db)] == [("earn", 125, "order:S2")]
        assert signals.names()[len(sent) :] == ["member-enrolled", "points-earned", "order-recorded"]
    close_app(host.app)


def test_calls_scheduled_in_a_rolled_back_savepoint_or_transaction_do_not_run(shop, signals):
    ada = shop.customer("Ada", "ada@example.com")
    session = shop.db.session
    savepoint = session.begin_nested()
    on_commit(points.earn, ada, 10, key="dropped-with-the-savepoint")
    savepoint.rollback()
    on_commit(points.earn, ada, 20, key="kept")
    session.commit()
    on_commit(points.earn, ada, 30, key="dropped-with-the-transaction")
    session.rollback()
    session.commit()
    assert [(e[0], e[1], e[8]) for e in ledger(shop.db)] == [("earn", 20, "kept")]
    assert signals.names()[-1] == "points-earned"
    assert len(signals.of("points-earned")) == 1
