"""The ledger operations: exactly once, never overdrawn, lots and expiry."""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t
from decimal import Decimal

import pytest
import sqlalchemy as sa

from flask_loyalty import audit
from flask_loyalty import IdempotencyConflict
from flask_loyalty import InsufficientPoints
from flask_loyalty import InvalidRequest
from flask_loyalty import InvalidState
from flask_loyalty import jobs
from flask_loyalty import MemberClosed
from flask_loyalty import MemberNotFound
from flask_loyalty import members
from flask_loyalty import NotFound
from flask_loyalty import points
from flask_loyalty import signals as loyalty_signals
from flask_loyalty.store import Balances

from .conftest import ledger_sum
from .conftest import START

# -- helpers -------------------------------------------------------------------


def _table(db: t.Any, name: str) -> sa.Table:
    return db.metadata.tables[f"loyalty_{name}"]


def count(db: t.Any, name: str) -> int:
    """The number of rows in table ``loyalty_<name>``, read afresh."""
    with db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(_table(db, name))).scalar_one())


def lots(db: t.Any, member_id: int) -> list[tuple[int, int, bool, bool]]:
    """The member's lots as ``(points, remaining, pending, expired)``, oldest first."""
    lot = _table(db, "points_lot")
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(lot.c.points, lot.c.remaining, lot.c.pending, lot.c.expired)
            .where(lot.c.member_id == member_id)
            .order_by(lot.c.id)
        ).all()
    return [(r.points, r.remaining, bool(r.pending), bool(r.expired)) for r in rows]


def lot_row(db: t.Any, lot_id: int) -> t.Any:
    """One lot row, read afresh."""
    lot = _table(db, "points_lot")
    with db.engine.connect() as conn:
        return conn.execute(sa.select(lot).where(lot.c.id == lot_id)).one()


def entries(db: t.Any, member_id: int) -> list[tuple[str, int, int, int, int, str]]:
    """The member's entries as ``(kind, points, delta_available, delta_pending, delta_reserved, key)``."""
    e = _table(db, "ledger_entry")
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                e.c.kind,
                e.c.points,
                e.c.delta_available,
                e.c.delta_pending,
                e.c.delta_reserved,
                e.c.source_key,
            )
            .where(e.c.member_id == member_id)
            .order_by(e.c.id)
        ).all()
    return [tuple(r) for r in rows]


def reservation_status(db: t.Any, member_id: int, key: str) -> str:
    """The status of the member's reservation ``key``."""
    r = _table(db, "reservation")
    with db.engine.connect() as conn:
        return str(
            conn.execute(
                sa.select(r.c.status).where(r.c.member_id == member_id, r.c.source_key == key)
            ).scalar_one()
        )


def snapshot(db: t.Any, member_id: int) -> tuple[t.Any, ...]:
    """Everything an operation could write, to show that a refused one wrote nothing."""
    return (
        count(db, "ledger_entry"),
        count(db, "points_lot"),
        count(db, "lot_allocation"),
        count(db, "reservation"),
        lots(db, member_id),
        members.balances(member_id),
    )


def bal(available: int = 0, pending: int = 0, reserved: int = 0, lifetime: int = 0) -> Balances:
    """Expected balances."""
    return Balances(available, pending, reserved, lifetime)


# -- exactly once, never overdrawn, expiry -----------------------------------


def test_same_order_paid_five_times_earns_once(db, member, signals):
    results = [points.earn(member, 3000, key="order:1") for _ in range(5)]
    assert [r.replayed for r in results] == [False, True, True, True, True]
    assert len({r.id for r in results}) == 1
    assert members.balances(member).available == 3000
    assert ledger_sum(db, member.id) == 3000
    assert signals.names().count("points-earned") == 1


def test_same_key_other_amount_raises_and_writes_nothing(db, member):
    points.earn(member, 3000, key="order:1")
    with pytest.raises(IdempotencyConflict):
        points.earn(member, 2999, key="order:1")
    assert members.balances(member).available == 3000
    assert ledger_sum(db, member.id) == 3000


def test_redeem_beyond_balance_is_refused(db, member):
    points.earn(member, 100, key="o")
    with pytest.raises(InsufficientPoints) as info:
        points.redeem(member, 101, key="r")
    assert info.value.available == 100
    assert members.balances(member).available == 100
    assert audit.verify() == []


def test_lots_spent_soonest_expiry_first_and_expired_once(db, member, clock):
    later = clock() + dt.timedelta(days=60)
    sooner = clock() + dt.timedelta(days=10)
    points.earn(member, 100, key="a", expires_at=later)
    points.earn(member, 100, key="b", expires_at=sooner)
    points.earn(member, 100, key="c")
    points.redeem(member, 150, key="r")  # all of b, then 50 of a
    clock.advance(days=11)
    assert jobs.expire_points() == 0
    clock.advance(days=50)
    assert jobs.expire_points() == 1
    assert jobs.expire_points() == 0
    assert members.balances(member).available == 100
    assert audit.verify() == []


# -- earn ----------------------------------------------------------------------


def test_earn_is_available_at_once(db, member):
    posting = points.earn(member, 500, key="order:1", actor="shop", reason="order paid")
    assert (posting.kind, posting.points, posting.delta_available, posting.delta_pending) == (
        "earn",
        500,
        500,
        0,
    )
    assert (posting.available_after, posting.pending_after, posting.reserved_after) == (500, 0, 0)
    assert (posting.member_id, posting.source_key, posting.actor, posting.reason) == (
        member.id, "order:1", "shop", "order paid"
    )  # fmt: skip
    assert posting.replayed is False
    assert members.balances(member) == bal(500, lifetime=500)
    assert lots(db, member.id) == [(500, 500, False, False)]
    lot = lot_row(db, posting.lot_id)
    assert (lot.available_from, lot.expires_at) == (START, None)
    assert ledger_sum(db, member.id) == 500


def test_earn_available_from_in_the_past_is_available_at_once(db, member, clock):
    points.earn(member, 50, key="o", available_from=clock() - dt.timedelta(days=1))
    assert members.balances(member) == bal(50, lifetime=50)
    assert lots(db, member.id) == [(50, 50, False, False)]


def test_earn_pending_until_available_from(db, member, clock):
    later = clock() + dt.timedelta(days=14)
    posting = points.earn(member, 300, key="order:1", available_from=later)
    assert (posting.delta_available, posting.delta_pending, posting.pending_after) == (0, 300, 300)
    assert members.balances(member) == bal(0, 300, lifetime=300)
    assert lots(db, member.id) == [(300, 300, True, False)]
    assert lot_row(db, posting.lot_id).available_from == later
    with pytest.raises(InsufficientPoints) as info:
        points.redeem(member, 1, key="r")
    assert (info.value.available, info.value.requested) == (0, 1)
    clock.advance(days=14)
    # Due pending lots are settled inline by the next debit, before the job runs.
    points.redeem(member, 100, key="r2")
    assert members.balances(member) == bal(200, 0, lifetime=300)
    assert lots(db, member.id) == [(300, 200, False, False)]
    assert [e[0] for e in entries(db, member.id)] == ["earn", "activate", "redeem"]
    assert jobs.release_pending() == 0
    assert audit.verify() == []


def test_earn_with_expiry(db, member, clock):
    end = clock() + dt.timedelta(days=365)
    posting = points.earn(member, 80, key="o", expires_at=end)
    assert lot_row(db, posting.lot_id).expires_at == end
    clock.advance(days=365)
    assert jobs.expire_points() == 1
    assert members.balances(member) == bal(0, lifetime=80)
    assert lots(db, member.id) == [(80, 0, False, True)]


def test_earn_aware_datetimes_are_stored_as_utc(db, member):
    end = dt.datetime(2026, 6, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    posting = points.earn(member, 10, key="o", expires_at=end)
    assert lot_row(db, posting.lot_id).expires_at == dt.datetime(2026, 6, 1, 12, 0)


@pytest.mark.parametrize(
    ("available_from", "expires_at"),
    [
        (None, START),
        (None, START - dt.timedelta(days=1)),
        (START + dt.timedelta(days=5), START + dt.timedelta(days=5)),
    ],
)
def test_earn_expiry_not_after_availability_is_refused(db, member, available_from, expires_at):
    before = snapshot(db, member.id)
    with pytest.raises(InvalidRequest, match="expires_at must be after the time the points become available"):
        points.earn(member, 10, key="o", available_from=available_from, expires_at=expires_at)
    assert snapshot(db, member.id) == before


def test_lifetime_earned_counts_earns_less_reversed_earns(db, member):
    points.earn(member, 100, key="a")
    points.earn(member, 50, key="b")
    points.redeem(member, 120, key="r")
    points.adjust(member, 40, key="adj", actor="admin", reason="goodwill")
    points.reverse(member, key="refund", original=("earn", "b"), points=20)
    assert members.balances(member) == bal(50, lifetime=130)
    assert audit.verify() == []


def test_earn_after_negative_balance_pays_the_debt_first(db, member):
    points.earn(member, 100, key="o1")
    points.redeem(member, 80, key="r1")
    points.reverse(member, key="refund1", original=("earn", "o1"), policy="allow_negative")
    assert members.balances(member) == bal(-80, lifetime=0)
    small = points.earn(member, 50, key="o2")
    assert (small.delta_available, small.available_after) == (50, -30)
    assert lot_row(db, small.lot_id).remaining == 0
    big = points.earn(member, 100, key="o3")
    assert big.available_after == 70
    assert lot_row(db, big.lot_id).remaining == 70
    assert members.balances(member) == bal(70, lifetime=150)
    assert ledger_sum(db, member.id) == 70
    assert audit.verify() == []


def test_earn_replay_returns_the_same_posting(db, member, clock):
    first = points.earn(member, 100, key="o", expires_at=clock() + dt.timedelta(days=30), actor="shop")
    clock.advance(hours=1)
    same_end = clock() + dt.timedelta(days=30) - dt.timedelta(hours=1)
    again = points.earn(member, 100, key="o", expires_at=same_end, actor="someone else")
    assert again.replayed is True
    assert dataclasses.replace(again, replayed=False) == first
    assert count(db, "ledger_entry") == 1
    assert count(db, "points_lot") == 1


@pytest.mark.parametrize(
    "other",
    [
        {"points": 101},
        {"available_from": START + dt.timedelta(days=1)},
        {"expires_at": START + dt.timedelta(days=30)},
    ],
)
def test_earn_same_key_other_params_conflicts(db, member, other):
    points.earn(member, 100, key="o")
    before = snapshot(db, member.id)
    kwargs: dict[str, t.Any] = {"points": 100, **other}
    with pytest.raises(
        IdempotencyConflict, match=f"'o' was already used for a different earn of member {member.id}"
    ):
        points.earn(member, kwargs.pop("points"), key="o", **kwargs)
    assert snapshot(db, member.id) == before


def test_keys_are_unique_per_member_and_kind(db, member):
    other = members.enroll(name="Ana", email="ana@example.com")
    a = points.earn(member, 100, key="k")
    b = points.earn(other, 70, key="k")
    c = points.redeem(member, 30, key="k")
    assert len({a.id, b.id, c.id}) == 3
    assert not (a.replayed or b.replayed or c.replayed)
    assert members.balances(member) == bal(70, lifetime=100)
    assert members.balances(other) == bal(70, lifetime=70)


def test_key_of_maximum_length_is_accepted(db, member):
    key = "k" * 191
    assert points.earn(member, 1, key=key).source_key == key
    assert points.earn(member, 1, key=key).replayed is True


def test_each_operation_sends_its_signal_once(app, member, signals):
    earned = points.earn(member, 500, key="o")
    redeemed = points.redeem(member, 100, key="r")
    reserved = points.reserve(member, 100, key="c1")
    captured = points.capture(member, key="c1")
    held = points.reserve(member, 50, key="c2")
    released = points.release(member, key="c2")
    reversed_ = points.reverse(member, key="refund", original=("earn", "o"), points=10)
    adjusted = points.adjust(member, 5, key="adj", actor="admin", reason="typo")
    replays = [
        points.earn(member, 500, key="o"),
        points.redeem(member, 100, key="r"),
        points.reserve(member, 100, key="c1"),
        points.capture(member, key="c1"),
        points.release(member, key="c2"),
        points.reverse(member, key="refund", original=("earn", "o"), points=10),
        points.adjust(member, 5, key="adj", actor="admin", reason="typo"),
    ]
    assert [r.replayed for r in replays] == [True] * 7
    m = member.id
    assert signals.sent == [
        ("points-earned", app, {"member_id": m, "entry": earned}),
        ("points-redeemed", app, {"member_id": m, "entry": redeemed}),
        ("points-reserved", app, {"member_id": m, "entry": reserved}),
        ("points-captured", app, {"member_id": m, "entry": captured}),
        ("points-reserved", app, {"member_id": m, "entry": held}),
        ("points-released", app, {"member_id": m, "entry": released}),
        ("points-reversed", app, {"member_id": m, "entry": reversed_, "original": ("earn", "o")}),
        ("points-adjusted", app, {"member_id": m, "entry": adjusted}),
    ]


def test_signals_are_sent_after_commit(db, member):
    seen: list[int] = []

    def receiver(sender: t.Any, **kwargs: t.Any) -> None:
        # A fresh connection already sees the entry: the transaction committed.
        seen.append(count(db, "ledger_entry"))

    loyalty_signals.points_earned.connect(receiver, weak=False)
    try:
        points.earn(member, 10, key="a")
        points.earn(member, 10, key="b")
    finally:
        loyalty_signals.points_earned.disconnect(receiver)
    assert seen == [1, 2]


def test_earn_signal_payload(app, member, signals):
    posting = points.earn(member, 10, key="o")
    points.earn(member, 10, key="o")
    assert signals.sent == [("points-earned", app, {"member_id": member.id, "entry": posting})]


# -- redeem --------------------------------------------------------------------


def test_redeem_takes_soonest_expiry_first_and_never_expiring_last(db, member, clock):
    now = clock()
    points.earn(member, 100, key="a", expires_at=now + dt.timedelta(days=60))
    points.earn(member, 100, key="b", expires_at=now + dt.timedelta(days=10))
    points.earn(member, 100, key="c")
    points.earn(member, 100, key="d", expires_at=now + dt.timedelta(days=30))
    posting = points.redeem(member, 250, key="r1", actor="shop", reason="reward")
    assert (posting.points, posting.delta_available, posting.available_after) == (-250, -250, 150)
    assert [remaining for _, remaining, _, _ in lots(db, member.id)] == [50, 0, 100, 0]
    points.redeem(member, 100, key="r2")
    assert [remaining for _, remaining, _, _ in lots(db, member.id)] == [0, 0, 50, 0]
    assert members.balances(member) == bal(50, lifetime=400)
    assert audit.verify() == []


def test_expired_lot_is_not_spendable_before_the_sweep(db, member, clock):
    points.earn(member, 100, key="soon", expires_at=clock() + dt.timedelta(days=10))
    points.earn(member, 50, key="never")
    clock.advance(days=11)
    assert members.balances(member) == bal(150, lifetime=150)  # the sweep has not run
    before = snapshot(db, member.id)
    with pytest.raises(InsufficientPoints) as info:
        points.redeem(member, 100, key="r1")
    assert (info.value.available, info.value.requested) == (50, 100)
    assert snapshot(db, member.id) == before  # the inline settle was rolled back too
    points.redeem(member, 50, key="r2")
    assert members.balances(member) == bal(0, lifetime=150)
    assert lots(db, member.id) == [(100, 0, False, True), (50, 0, False, False)]
    assert [e[:3] for e in entries(db, member.id)] == [
        ("earn", 100, 100), ("earn", 50, 50), ("expire", -100, -100), ("redeem", -50, -50)
    ]  # fmt: skip
    assert jobs.expire_points() == 0
    assert audit.verify() == []


def test_insufficient_points_writes_nothing(db, member, signals):
    points.earn(member, 100, key="o")
    points.reserve(member, 30, key="c")
    before = snapshot(db, member.id)
    for call in (lambda: points.redeem(member, 71, key="r"), lambda: points.reserve(member, 71, key="c2")):
        with pytest.raises(
            InsufficientPoints, match=f"Member {member.id} has 70 points available; 71 were"
        ) as info:
            call()
        assert (info.value.available, info.value.requested, info.value.code) == (
            70,
            71,
            "insufficient_points",
        )
    assert snapshot(db, member.id) == before
    assert signals.names() == ["points-earned", "points-reserved"]
    # The refused key is still free.
    assert points.redeem(member, 70, key="r").replayed is False
    assert members.balances(member) == bal(0, reserved=30, lifetime=100)


def test_redeem_replay_and_conflict(db, member):
    points.earn(member, 100, key="o")
    first = points.redeem(member, 40, key="r")
    assert dataclasses.replace(points.redeem(member, 40, key="r"), replayed=False) == first
    with pytest.raises(IdempotencyConflict):
        points.redeem(member, 41, key="r")
    assert members.balances(member) == bal(60, lifetime=100)
    assert count(db, "ledger_entry") == 2


# -- reserve, capture, release -------------------------------------------------


def test_reserve_moves_points_to_the_reserved_bucket(db, member, clock):
    points.earn(member, 1000, key="o")
    posting = points.reserve(member, 300, key="cart:1", expires_at=clock() + dt.timedelta(minutes=15))
    assert (posting.points, posting.delta_available, posting.delta_reserved) == (-300, -300, 300)
    assert (posting.available_after, posting.reserved_after) == (700, 300)
    assert members.balances(member) == bal(700, reserved=300, lifetime=1000)
    assert lots(db, member.id) == [(1000, 700, False, False)]
    assert reservation_status(db, member.id, "cart:1") == "held"
    assert audit.verify() == []


def test_full_capture(db, member):
    points.earn(member, 1000, key="o")
    points.reserve(member, 300, key="cart:1")
    posting = points.capture(member, key="cart:1")
    assert (posting.kind, posting.points, posting.delta_available, posting.delta_reserved) == (
        "capture",
        -300,
        0,
        -300,
    )
    assert members.balances(member) == bal(700, lifetime=1000)
    assert lots(db, member.id) == [(1000, 700, False, False)]
    assert reservation_status(db, member.id, "cart:1") == "captured"
    assert dataclasses.replace(points.capture(member, key="cart:1"), replayed=False) == posting
    with pytest.raises(IdempotencyConflict):
        points.capture(member, key="cart:1", points=300)
    assert audit.verify() == []


def test_partial_capture_releases_the_rest_in_the_same_transaction(db, member, clock, signals):
    now = clock()
    points.earn(member, 100, key="soon", expires_at=now + dt.timedelta(days=10))
    points.earn(member, 100, key="never")
    points.reserve(member, 150, key="cart:1")
    assert [r for _, r, _, _ in lots(db, member.id)] == [0, 50]
    posting = points.capture(member, key="cart:1", points=120)
    assert (posting.points, posting.delta_reserved, posting.reserved_after) == (-120, -120, 30)
    assert entries(db, member.id)[-2:] == [
        ("capture", -120, 0, 0, -120, "cart:1"), ("release", 0, 30, 0, -30, "cart:1")
    ]  # fmt: skip
    # The 30 go back to the lot they came from last (the never-expiring one).
    assert [r for _, r, _, _ in lots(db, member.id)] == [0, 80]
    assert members.balances(member) == bal(80, lifetime=200)
    assert reservation_status(db, member.id, "cart:1") == "captured"
    assert signals.names()[-2:] == ["points-captured", "points-released"]
    assert signals.of("points-released")[-1]["entry"].delta_available == 30
    with pytest.raises(InvalidState, match="'cart:1' is already captured"):
        points.release(member, key="cart:1")
    assert audit.verify() == []


def test_capture_more_than_reserved_is_refused(db, member):
    points.earn(member, 1000, key="o")
    points.reserve(member, 300, key="c")
    before = snapshot(db, member.id)
    with pytest.raises(InvalidState, match="holds only 300 points"):
        points.capture(member, key="c", points=301)
    assert snapshot(db, member.id) == before


def test_release_returns_points_to_their_lots(db, member, clock):
    now = clock()
    points.earn(member, 100, key="a", expires_at=now + dt.timedelta(days=10))
    points.earn(member, 100, key="b", expires_at=now + dt.timedelta(days=20))
    points.earn(member, 100, key="c")
    points.reserve(member, 250, key="cart")
    assert [r for _, r, _, _ in lots(db, member.id)] == [0, 0, 50]
    posting = points.release(member, key="cart")
    assert (posting.kind, posting.points, posting.delta_available, posting.delta_reserved) == (
        "release",
        0,
        250,
        -250,
    )
    assert [r for _, r, _, _ in lots(db, member.id)] == [100, 100, 100]
    assert members.balances(member) == bal(300, lifetime=300)
    assert reservation_status(db, member.id, "cart") == "released"
    assert dataclasses.replace(points.release(member, key="cart"), replayed=False) == posting
    with pytest.raises(InvalidState, match="'cart' is already released"):
        points.capture(member, key="cart")
    assert [r for _, r, _, _ in lots(db, member.id)] == [100, 100, 100]
    assert audit.verify() == []


def test_release_after_capture_is_invalid(db, member):
    points.earn(member, 100, key="o")
    points.reserve(member, 60, key="c")
    points.capture(member, key="c")
    before = snapshot(db, member.id)
    with pytest.raises(InvalidState, match="Reservation 'c' is already captured"):
        points.release(member, key="c")
    assert snapshot(db, member.id) == before


@pytest.mark.parametrize("operation", ["capture", "release"])
def test_unknown_reservation_is_not_found(db, member, operation):
    points.earn(member, 100, key="o")
    before = snapshot(db, member.id)
    with pytest.raises(NotFound, match=f"Member {member.id} has no reservation 'nope'"):
        getattr(points, operation)(member, key="nope")
    assert snapshot(db, member.id) == before


def test_released_points_of_an_expired_lot_go_to_a_lot_the_next_sweep_expires(db, member, clock):
    end = clock() + dt.timedelta(days=10)
    points.earn(member, 100, key="o", expires_at=end)
    points.earn(member, 20, key="never")
    points.reserve(member, 100, key="cart")
    clock.advance(days=11)
    points.release(member, key="cart")
    assert lots(db, member.id) == [(100, 0, False, False), (20, 20, False, False), (100, 100, False, False)]
    assert lot_row(db, lot_row_id(db, member.id, 2)).expires_at == end
    # The returned points cannot be spent: they have expired.
    with pytest.raises(InsufficientPoints) as info:
        points.redeem(member, 21, key="r")
    assert info.value.available == 20
    assert jobs.expire_points() == 1
    assert members.balances(member) == bal(20, lifetime=120)
    assert lots(db, member.id) == [(100, 0, False, False), (20, 20, False, False), (100, 0, False, True)]
    assert audit.verify() == []


def test_release_while_the_balance_is_negative_pays_the_debt_first(db, member):
    points.earn(member, 100, key="o1")
    points.reserve(member, 80, key="cart")
    points.reverse(member, key="refund", original=("earn", "o1"), policy="allow_negative")
    assert members.balances(member) == bal(-80, reserved=80, lifetime=0)
    posting = points.release(member, key="cart")
    assert (posting.delta_available, posting.available_after) == (80, 0)
    assert lots(db, member.id) == [(100, 0, False, False)]
    assert members.balances(member) == bal(0, lifetime=0)
    assert audit.verify() == []


def lot_row_id(db: t.Any, member_id: int, index: int) -> int:
    """The id of the member's ``index``-th lot (0-based, oldest first)."""
    lot = _table(db, "points_lot")
    with db.engine.connect() as conn:
        ids = conn.execute(
            sa.select(lot.c.id).where(lot.c.member_id == member_id).order_by(lot.c.id)
        ).scalars()
        return int(list(ids)[index])


def test_reservation_ttl_job_releases_timed_out_holds(db, member, clock, signals):
    points.earn(member, 1000, key="o")
    now = clock()
    points.reserve(member, 100, key="short", expires_at=now + dt.timedelta(minutes=15))
    points.reserve(member, 200, key="long", expires_at=now + dt.timedelta(hours=2))
    points.reserve(member, 300, key="forever")
    points.reserve(member, 50, key="paid", expires_at=now + dt.timedelta(minutes=15))
    points.capture(member, key="paid")
    assert jobs.release_reservations() == 0
    clock.advance(minutes=15)
    progress: list[int] = []
    assert jobs.release_reservations(progress=progress.append) == 1
    assert progress == [1]
    assert reservation_status(db, member.id, "short") == "released"
    assert members.balances(member) == bal(450, reserved=500, lifetime=1000)
    assert jobs.release_reservations() == 0
    assert jobs.release_reservations(now=now + dt.timedelta(days=365)) == 1
    assert [reservation_status(db, member.id, k) for k in ("short", "long", "forever", "paid")] == [
        "released", "released", "held", "captured"
    ]  # fmt: skip
    assert members.balances(member) == bal(650, reserved=300, lifetime=1000)
    released = signals.of("points-released")
    assert [(p["member_id"], p["entry"].source_key, p["entry"].actor) for p in released] == [
        (member.id, "short", "job:release-reservations"), (member.id, "long", "job:release-reservations")
    ]  # fmt: skip
    assert audit.verify() == []


def test_reservation_ttl_job_works_in_chunks(db, app_ctx, clock):
    people = [members.enroll(name=f"m{i}") for i in range(5)]
    for person in people:
        points.earn(person, 100, key="o")
        points.reserve(person, 40, key="a", expires_at=clock() + dt.timedelta(minutes=5))
        points.reserve(person, 60, key="b", expires_at=clock() + dt.timedelta(minutes=5))
    clock.advance(minutes=5)
    progress: list[int] = []
    assert jobs.release_reservations(chunk_size=3, progress=progress.append) == 10
    assert progress == [3, 6, 9, 10]
    assert [members.balances(p) for p in people] == [bal(100, lifetime=100)] * 5
    assert jobs.release_reservations(chunk_size=3) == 0


# -- reverse -------------------------------------------------------------------


def test_reverse_an_earn_in_full(db, member, signals):
    earned = points.earn(member, 100, key="order:1")
    posting = points.reverse(
        member, key="refund:1", original=("earn", "order:1"), actor="shop", reason="refund"
    )
    assert (posting.kind, posting.points, posting.delta_available) == ("reverse", -100, -100)
    assert posting.reverses_id == earned.id
    assert posting.shortfall == 0
    assert members.balances(member) == bal(0, lifetime=0)
    assert lots(db, member.id) == [(100, 0, False, False)]
    assert signals.of("points-reversed") == [
        {"member_id": member.id, "entry": posting, "original": ("earn", "order:1")}
    ]
    with pytest.raises(InvalidState, match="Only 0 points of earn 'order:1' are left to reverse"):
        points.reverse(member, key="refund:2", original=("earn", "order:1"))
    assert audit.verify() == []


def test_partial_reversals_never_exceed_the_earn(db, member):
    points.earn(member, 100, key="o")
    points.reverse(member, key="r1", original=("earn", "o"), points=30)
    points.reverse(member, key="r2", original=("earn", "o"), points=50)
    before = snapshot(db, member.id)
    with pytest.raises(InvalidState, match="Only 20 points of earn 'o' are left to reverse"):
        points.reverse(member, key="r3", original=("earn", "o"), points=21)
    assert snapshot(db, member.id) == before
    last = points.reverse(member, key="r3", original=("earn", "o"))
    assert last.points == -20
    with pytest.raises(InvalidState):
        points.reverse(member, key="r4", original=("earn", "o"), points=1)
    assert members.balances(member) == bal(0, lifetime=0)
    assert lots(db, member.id) == [(100, 0, False, False)]
    # A replayed reversal does not count twice.
    assert points.reverse(member, key="r1", original=("earn", "o"), points=30).replayed is True
    assert audit.verify() == []


def test_reverse_a_pending_earn_takes_from_the_pending_bucket(db, member, clock):
    points.earn(member, 50, key="other")
    points.earn(member, 100, key="o", available_from=clock() + dt.timedelta(days=14))
    posting = points.reverse(member, key="refund", original=("earn", "o"), points=40)
    assert (posting.delta_available, posting.delta_pending, posting.pending_after) == (0, -40, 60)
    assert members.balances(member) == bal(50, 60, lifetime=110)
    assert lots(db, member.id) == [(50, 50, False, False), (100, 60, True, False)]
    clock.advance(days=14)
    assert jobs.release_pending() == 1
    assert members.balances(member) == bal(110, 0, lifetime=110)
    assert audit.verify() == []


def test_clawback_of_spent_points_allow_negative(db, member):
    points.earn(member, 100, key="o1")
    points.earn(member, 50, key="o2")
    points.redeem(member, 80, key="r")  # 80 of o1's lot
    posting = points.reverse(member, key="refund", original=("earn", "o1"), policy="allow_negative")
    assert (posting.points, posting.delta_available, posting.available_after) == (-100, -100, -30)
    assert posting.shortfall == 0
    assert members.balances(member) == bal(-30, lifetime=50)
    assert lots(db, member.id) == [(100, 0, False, False), (50, 0, False, False)]
    assert ledger_sum(db, member.id) == -30
    with pytest.raises(InsufficientPoints):
        points.redeem(member, 1, key="r2")
    assert audit.verify() == []


def test_clawback_of_spent_points_clamp_to_zero(db, member):
    points.earn(member, 100, key="o1")
    points.redeem(member, 80, key="r")
    posting = points.reverse(member, key="refund", original=("earn", "o1"), policy="clamp_to_zero")
    assert (posting.points, posting.delta_available, posting.available_after) == (-100, -20, 0)
    assert posting.shortfall == 80
    assert members.balances(member) == bal(0, lifetime=0)
    assert lots(db, member.id) == [(100, 0, False, False)]
    assert audit.verify() == []


@pytest.mark.settings(LOYALTY_CLAWBACK_POLICY="clamp_to_zero")
def test_clawback_policy_comes_from_config(db, member):
    points.earn(member, 100, key="o1")
    points.redeem(member, 70, key="r")
    assert points.reverse(member, key="refund", original=("earn", "o1")).shortfall == 70
    assert members.balances(member) == bal(0, lifetime=0)


def test_reverse_a_redeem_returns_points_to_their_lots_exactly_once(db, member, clock):
    points.earn(member, 100, key="a", expires_at=clock() + dt.timedelta(days=10))
    points.earn(member, 100, key="b")
    points.redeem(member, 150, key="r")
    assert [r for _, r, _, _ in lots(db, member.id)] == [0, 50]
    first = points.reverse(member, key="cancel:1", original=("redeem", "r"), points=50)
    assert (first.points, first.delta_available, first.delta_reserved) == (50, 50, 0)
    assert [r for _, r, _, _ in lots(db, member.id)] == [0, 100]  # the newest allocation first
    second = points.reverse(member, key="cancel:2", original=("redeem", "r"))
    assert second.points == 100
    assert [r for _, r, _, _ in lots(db, member.id)] == [100, 100]
    with pytest.raises(InvalidState, match="Only 0 points of redeem 'r' are left to reverse"):
        points.reverse(member, key="cancel:3", original=("redeem", "r"))
    assert points.reverse(member, key="cancel:2", original=("redeem", "r")).replayed is True
    assert members.balances(member) == bal(200, lifetime=200)
    assert audit.verify() == []


def test_reverse_a_capture_returns_points_to_their_lots_exactly_once(db, member, clock):
    points.earn(member, 100, key="a", expires_at=clock() + dt.timedelta(days=10))
    points.earn(member, 100, key="b")
    points.reserve(member, 150, key="cart")
    points.capture(member, key="cart", points=100)  # 50 released to lot b
    assert [r for _, r, _, _ in lots(db, member.id)] == [0, 100]
    posting = points.reverse(member, key="cancel", original=("capture", "cart"))
    assert (posting.points, posting.delta_available, posting.delta_reserved) == (100, 100, 0)
    assert [r for _, r, _, _ in lots(db, member.id)] == [100, 100]
    with pytest.raises(InvalidState, match="Only 0 points of capture 'cart' are left to reverse"):
        points.reverse(member, key="cancel:again", original=("capture", "cart"))
    assert members.balances(member) == bal(200, lifetime=200)
    assert audit.verify() == []


def test_reverse_a_redeem_after_its_lot_expired(db, member, clock):
    end = clock() + dt.timedelta(days=10)
    points.earn(member, 100, key="a", expires_at=end)
    points.redeem(member, 60, key="r")
    clock.advance(days=11)
    assert jobs.expire_points() == 1
    points.reverse(member, key="cancel", original=("redeem", "r"))
    assert members.balances(member) == bal(60, lifetime=100)
    assert lots(db, member.id) == [(100, 0, False, True), (60, 60, False, False)]
    assert jobs.expire_points() == 1
    assert members.balances(member) == bal(0, lifetime=100)
    assert audit.verify() == []


@pytest.mark.parametrize("kind", ["earn", "redeem", "capture"])
def test_reverse_of_a_missing_original_is_not_found(db, member, kind):
    points.earn(member, 100, key="o")
    before = snapshot(db, member.id)
    with pytest.raises(NotFound, match=f"Member {member.id} has no {kind} entry 'missing'"):
        points.reverse(member, key="x", original=(kind, "missing"))
    assert snapshot(db, member.id) == before


@pytest.mark.parametrize("kind", ["reserve", "release", "expire", "adjust", "activate", "reverse"])
def test_only_earn_redeem_and_capture_can_be_reversed(db, member, kind):
    before = snapshot(db, member.id)
    with pytest.raises(
        InvalidRequest, match=f"Only earn, redeem and capture entries can be reversed, not '{kind}'"
    ):
        points.reverse(member, key="x", original=(kind, "o"))
    assert snapshot(db, member.id) == before


def test_reverse_with_an_unknown_policy_is_refused(db, member):
    points.earn(member, 100, key="o")
    with pytest.raises(InvalidRequest, match="policy must be one of"):
        points.reverse(member, key="x", original=("earn", "o"), policy="forgive")


def test_reverse_replay_with_other_params_conflicts(db, member):
    points.earn(member, 100, key="o")
    points.reverse(member, key="x", original=("earn", "o"), points=10)
    with pytest.raises(IdempotencyConflict):
        points.reverse(member, key="x", original=("earn", "o"), points=11)
    assert members.balances(member) == bal(90, lifetime=90)


# -- adjust --------------------------------------------------------------------


def test_positive_adjustment_creates_a_lot_not_counted_as_earned(db, member, clock):
    end = clock() + dt.timedelta(days=30)
    posting = points.adjust(member, 40, key="adj:1", actor="admin:7", reason="goodwill", expires_at=end)
    assert (posting.kind, posting.points, posting.delta_available) == ("adjust", 40, 40)
    assert (posting.actor, posting.reason) == ("admin:7", "goodwill")
    assert members.balances(member) == bal(40, lifetime=0)
    assert lots(db, member.id) == [(40, 40, False, False)]
    assert lot_row(db, posting.lot_id).expires_at == end
    assert audit.verify() == []


def test_negative_adjustment_takes_from_lots(db, member, clock):
    points.earn(member, 100, key="a", expires_at=clock() + dt.timedelta(days=10))
    points.earn(member, 100, key="b")
    posting = points.adjust(member, -130, key="adj", actor="admin", reason="fraud")
    assert (posting.points, posting.delta_available, posting.available_after) == (-130, -130, 70)
    assert [r for _, r, _, _ in lots(db, member.id)] == [0, 70]
    assert members.balances(member) == bal(70, lifetime=200)
    assert audit.verify() == []


def test_negative_adjustment_beyond_the_balance(db, member):
    points.earn(member, 100, key="a")
    before = snapshot(db, member.id)
    with pytest.raises(InsufficientPoints) as info:
        points.adjust(member, -150, key="adj", actor="admin", reason="fraud")
    assert (info.value.available, info.value.requested) == (100, 150)
    assert snapshot(db, member.id) == before
    posting = points.adjust(member, -150, key="adj", actor="admin", reason="fraud", allow_negative=True)
    assert posting.available_after == -50
    assert members.balances(member) == bal(-50, lifetime=100)
    assert lots(db, member.id) == [(100, 0, False, False)]
    # A later credit pays the debt first.
    credit = points.adjust(member, 80, key="adj:2", actor="admin", reason="correction")
    assert lot_row(db, credit.lot_id).remaining == 30
    assert members.balances(member) == bal(30, lifetime=100)
    assert audit.verify() == []


@pytest.mark.parametrize(
    ("actor", "reason"),
    [
        (None, "why"),
        ("", "why"),
        ("admin", None),
        ("admin", ""),
        (None, None),
        ("  ", "why"),
        ("admin", " \n"),
    ],
)
def test_adjustment_needs_an_actor_and_a_reason(db, member, actor, reason):
    before = snapshot(db, member.id)
    with pytest.raises(InvalidRequest, match="An adjustment needs an actor and a reason"):
        points.adjust(member, 10, key="adj", actor=actor, reason=reason)
    assert snapshot(db, member.id) == before


def test_positive_adjustment_expiring_in_the_past_is_refused(db, member, clock):
    before = snapshot(db, member.id)
    with pytest.raises(InvalidRequest, match="expires_at must be in the future"):
        points.adjust(member, 10, key="adj", actor="a", reason="r", expires_at=clock())
    assert snapshot(db, member.id) == before


# -- bad input -----------------------------------------------------------------

#: Every operation that takes a points amount, called with ``points``.
AMOUNT_CALLS: dict[str, t.Callable[[t.Any, t.Any], t.Any]] = {
    "earn": lambda m, p: points.earn(m, p, key="new"),
    "redeem": lambda m, p: points.redeem(m, p, key="new"),
    "reserve": lambda m, p: points.reserve(m, p, key="new"),
    "capture": lambda m, p: points.capture(m, key="held", points=p),
    "reverse": lambda m, p: points.reverse(m, key="new", original=("earn", "seed"), points=p),
    "adjust": lambda m, p: points.adjust(m, p, key="new", actor="admin", reason="test"),
}

#: Every operation, called with a source ``key``.
KEY_CALLS: dict[str, t.Callable[[t.Any, t.Any], t.Any]] = {
    "earn": lambda m, k: points.earn(m, 10, key=k),
    "redeem": lambda m, k: points.redeem(m, 10, key=k),
    "reserve": lambda m, k: points.reserve(m, 10, key=k),
    "capture": lambda m, k: points.capture(m, key=k),
    "release": lambda m, k: points.release(m, key=k),
    "reverse": lambda m, k: points.reverse(m, key=k, original=("earn", "seed"), points=1),
    "adjust": lambda m, k: points.adjust(m, 10, key=k, actor="admin", reason="test"),
}

#: Every operation, called with a valid request for a member.
MEMBER_CALLS: dict[str, t.Callable[[t.Any], t.Any]] = {
    "earn": lambda m: points.earn(m, 10, key="new"),
    "redeem": lambda m: points.redeem(m, 10, key="new"),
    "reserve": lambda m: points.reserve(m, 10, key="new"),
    "capture": lambda m: points.capture(m, key="held"),
    "release": lambda m: points.release(m, key="held"),
    "reverse": lambda m: points.reverse(m, key="new", original=("earn", "seed"), points=1),
    "adjust": lambda m: points.adjust(m, 10, key="new", actor="admin", reason="test"),
}

BAD_AMOUNTS = [
    pytest.param(0, "must be (positive|non-zero), not 0", id="zero"),
    pytest.param(-5, "must be positive, not -5", id="negative"),
    pytest.param(1.5, "must be a whole number of points, not 1.5", id="float"),
    pytest.param(Decimal("1.5"), r"must be a whole number of points, not Decimal\('1.5'\)", id="decimal"),
    pytest.param(Decimal("10"), r"must be a whole number of points, not Decimal\('10'\)", id="whole-decimal"),
    pytest.param(10.0, "must be a whole number of points, not 10.0", id="whole-float"),
    pytest.param("10", "must be a whole number of points, not '10'", id="string"),
    pytest.param(None, "must be a whole number of points, not None", id="none"),
    pytest.param(True, "must be a whole number of points, not True", id="bool"),
    pytest.param(10**16, "points 10000000000000000 is out of range", id="huge"),
]


@pytest.fixture
def seeded(db: t.Any, member: t.Any, signals: t.Any) -> t.Any:
    """The member with 1000 points earned (``seed``) and 100 held (``held``)."""
    points.earn(member, 1000, key="seed")
    points.reserve(member, 100, key="held")
    signals.sent.clear()
    return member


def _bad_amount_cases() -> list[t.Any]:
    cases = []
    for operation in AMOUNT_CALLS:
        for param in BAD_AMOUNTS:
            amount, message = param.values
            if amount is None and operation in ("capture", "reverse"):
                continue  # None means "all of it" there
            if operation == "adjust" and amount == -5:
                continue  # adjustments may be negative
            cases.append(pytest.param(operation, amount, message, id=f"{operation}-{param.id}"))
    return cases


@pytest.mark.parametrize(("operation", "amount", "message"), _bad_amount_cases())
def test_bad_points_are_refused_and_nothing_is_written(db, seeded, signals, operation, amount, message):
    before = snapshot(db, seeded.id)
    with pytest.raises(InvalidRequest, match=message) as info:
        AMOUNT_CALLS[operation](seeded, amount)
    assert info.value.code == "invalid_request"
    assert snapshot(db, seeded.id) == before
    assert signals.sent == []


@pytest.mark.parametrize(
    "key,message",
    [
        pytest.param("", r"A source key \(a non-empty string\) is required", id="empty"),
        pytest.param("   ", r"A source key \(a non-empty string\) is required", id="blank"),
        pytest.param(None, r"A source key \(a non-empty string\) is required", id="none"),
        pytest.param(42, r"A source key \(a non-empty string\) is required", id="int"),
        pytest.param("k" * 192, "Source keys are at most 191 characters", id="overlong"),
    ],
)
@pytest.mark.parametrize("operation", list(KEY_CALLS))
def test_bad_keys_are_refused_and_nothing_is_written(db, seeded, signals, operation, key, message):
    before = snapshot(db, seeded.id)
    with pytest.raises(InvalidRequest, match=message):
        KEY_CALLS[operation](seeded, key)
    assert snapshot(db, seeded.id) == before
    assert signals.sent == []


@pytest.mark.parametrize("operation", list(MEMBER_CALLS))
def test_unknown_member_is_refused(db, seeded, signals, operation):
    before = snapshot(db, seeded.id)
    with pytest.raises(MemberNotFound, match="No member has id 999999999") as info:
        MEMBER_CALLS[operation](999999999)
    assert info.value.code == "member_not_found"
    assert snapshot(db, seeded.id) == before
    assert signals.sent == []


@pytest.mark.parametrize("ref", [0, -1, "1", None, True, 1.0, object()])
@pytest.mark.parametrize("operation", list(MEMBER_CALLS))
def test_malformed_member_is_refused(db, seeded, signals, operation, ref):
    before = snapshot(db, seeded.id)
    with pytest.raises(InvalidRequest, match="is not a member or a member id"):
        MEMBER_CALLS[operation](ref)
    assert snapshot(db, seeded.id) == before
    assert signals.sent == []


@pytest.mark.parametrize("operation", list(MEMBER_CALLS))
def test_closed_member_is_refused(db, seeded, signals, operation):
    members.close(seeded)
    before = snapshot(db, seeded.id)
    with pytest.raises(MemberClosed, match=f"Member {seeded.id} is closed") as info:
        MEMBER_CALLS[operation](seeded)
    assert info.value.code == "member_closed"
    assert snapshot(db, seeded.id) == before
    assert signals.sent == []


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda m: points.earn(m, 10, key="n", available_from="2026-02-01"), id="earn-available_from"
        ),
        pytest.param(
            lambda m: points.earn(m, 10, key="n", expires_at=dt.date(2027, 1, 1)), id="earn-expires_at"
        ),
        pytest.param(lambda m: points.reserve(m, 10, key="n", expires_at=3600), id="reserve-expires_at"),
        pytest.param(
            lambda m: points.adjust(m, 10, key="n", actor="a", reason="r", expires_at="x"), id="adjust"
        ),
        pytest.param(lambda m: points.earn(m, 10, key="n", actor="a" * 192), id="actor-too-long"),
        pytest.param(lambda m: points.redeem(m, 10, key="n", reason="r" * 501), id="reason-too-long"),
        pytest.param(lambda m: points.redeem(m, 10, key="n", reason=5), id="reason-not-text"),
    ],
)
def test_bad_dates_and_texts_are_refused(db, seeded, signals, call):
    before = snapshot(db, seeded.id)
    with pytest.raises(InvalidRequest, match="must be a"):
        call(seeded)
    assert snapshot(db, seeded.id) == before
    assert signals.sent == []


@pytest.mark.parametrize(
    ("policy", "refunds", "available", "shortfalls"),
    [
        ("allow_negative", [100], -30, [0]),
        ("clamp_to_zero", [100], 0, [30]),
        ("allow_negative", [50, 50], -30, [0, 0]),
        ("clamp_to_zero", [50, 30, 20], 0, [0, 10, 20]),
    ],
)
def test_refund_after_the_earned_points_expired_takes_only_what_was_spent(
    db, member, clock, policy, refunds, available, shortfalls
):
    points.earn(member, 100, key="order:1", expires_at=clock() + dt.timedelta(days=30))
    points.redeem(member, 30, key="spend")
    clock.advance(days=31)
    assert jobs.expire_points() == 1  # the other 70 are gone
    postings = [
        points.reverse(member, key=f"refund:{i}", original=("earn", "order:1"), points=n, policy=policy)
        for i, n in enumerate(refunds)
    ]
    assert [p.shortfall for p in postings] == shortfalls
    assert sum(p.points for p in postings) == -100
    assert members.balances(member).available == available
    assert members.balances(member).lifetime_earned == 0
    assert audit.verify() == []
