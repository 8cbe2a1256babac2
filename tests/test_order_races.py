"""Paying an order while another transaction holds the member's lock.

``orders.order_paid`` locks the member and reads the order's state in one
statement. On PostgreSQL a statement that waits for a row lock reads the
other tables as they were when it started, before the transaction holding
the lock committed. These tests make the payment wait for exactly such a
transaction, one that holds points for the order or records the order, and
check that the payment still sees what that transaction committed. They run
on every engine: on SQLite and MariaDB the same sequence must give the same
result.
"""

from __future__ import annotations

import threading
import time
import typing as t
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_loyalty import audit
from flask_loyalty import InvalidState
from flask_loyalty import members
from flask_loyalty import orders
from flask_loyalty import points
from flask_loyalty.adapters import OrderData
from flask_loyalty.rules import LineContext

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REFERENCE = "R-1001"


def order(member_id: int) -> OrderData:
    """A paid order of 12.00 with one line."""
    line = LineContext(sku="TEA-01", quantity=1, unit_price=Decimal("12.00"))
    total = Decimal("12.00")
    return OrderData(reference=REFERENCE, user=member_id, currency="USD", total=total, lines=(line,))


def waiting_for_a_lock(app: Flask, db: t.Any, engine: str) -> None:
    """Return once another connection waits for a row lock (on PostgreSQL; a pause elsewhere)."""
    if engine != "postgresql":
        time.sleep(0.5)
        return
    with app.app_context(), db.engine.connect() as conn:
        for _ in range(200):
            waiting = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            ).scalar_one()
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("the payment never waited for the member's lock")


def pay_while(app: Flask, db: t.Any, engine: str, holder: t.Callable[[], t.Any], member_id: int) -> t.Any:
    """Run ``holder`` in a thread; pay the order while ``holder`` waits to commit, holding the lock.

    :returns: what paying the order returned or raised.
    """
    with app.app_context():
        sa_engine = db.engine
    locked = threading.Event()
    payment_waits = threading.Event()
    holder_thread: list[threading.Thread] = []

    def before_commit(conn: t.Any) -> None:
        if holder_thread and threading.current_thread() is holder_thread[0]:
            locked.set()
            payment_waits.wait(30)

    def hold() -> None:
        with app.app_context():
            holder()

    # The engine's commit event fires just before the DB-API commit, whether
    # the operation runs through the session or on a connection of its own.
    sa.event.listen(sa_engine, "commit", before_commit)
    outcome: list[t.Any] = []

    def pay() -> None:
        with app.app_context():
            try:
                outcome.append(orders.order_paid(order(member_id)))
            except Exception as error:  # asserted on by the test
                outcome.append(error)

    try:
        holder_thread.append(threading.Thread(target=hold))
        holder_thread[0].start()
        assert locked.wait(30), "the holder never reached its commit"
        payer = threading.Thread(target=pay)
        payer.start()
        waiting_for_a_lock(app, db, engine)
        payment_waits.set()
        holder_thread[0].join(30)
        payer.join(30)
    finally:
        payment_waits.set()
        sa.event.remove(sa_engine, "commit", before_commit)
    assert not payer.is_alive() and not holder_thread[0].is_alive()
    return outcome[0]


def enrolled(app: Flask, points_: int) -> int:
    with app.app_context():
        member = members.enroll(name="Li Wei", email="li.wei@example.com")
        points.earn(member, points_, key="welcome")
        return int(member.id)


def test_a_hold_committed_while_the_payment_waits_is_captured(app: Flask, db: t.Any, engine: str) -> None:
    member_id = enrolled(app, 500)

    def hold_points() -> None:
        points.reserve(member_id, 200, key=f"order:{REFERENCE}")

    paid = pay_while(app, db, engine, hold_points, member_id)

    assert not isinstance(paid, Exception), paid
    assert [p.kind for p in paid.postings] == ["capture", "earn"]
    with app.app_context():
        balances = members.balances(member_id)
        # The 200 held points were taken; the order's points were earned.
        assert balances.reserved == 0
        assert balances.available + balances.pending == 500 - 200 + paid.points == 420
        assert audit.verify() == []


def test_an_order_cancelled_while_the_payment_waits_stays_cancelled(
    app: Flask, db: t.Any, engine: str
) -> None:
    member_id = enrolled(app, 50)

    def cancel() -> None:
        # An order never paid is recorded as cancelled: the member is locked,
        # its balances are not changed.
        orders.order_cancelled(order(member_id))

    paid = pay_while(app, db, engine, cancel, member_id)

    assert isinstance(paid, InvalidState), paid
    with app.app_context():
        assert members.balances(member_id).available == 50
        assert audit.verify() == []
