"""The ``flask loyalty`` commands: output, exit codes, and bad input that writes nothing."""

from __future__ import annotations

import datetime as dt
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_loyalty import members
from flask_loyalty import points
from flask_loyalty.testing import FrozenClock

from .conftest import ledger_sum
from .conftest import START

T = t.TypeVar("T")


def within(app: Flask, work: t.Callable[[], T]) -> T:
    """Run ``work`` in an app context of its own, closed before any command runs."""
    with app.app_context():
        return work()


def enroll(app: Flask, name: str) -> int:
    """Enroll a member and return its id."""
    return within(app, lambda: int(members.enroll(name=name).id))


def rows(app: Flask, db: t.Any, table: str, *columns: str) -> list[tuple[t.Any, ...]]:
    """``columns`` of every row of ``table``, ordered by id, read on a fresh connection."""
    with app.app_context(), db.engine.connect() as conn:
        tab = db.metadata.tables[table]
        query = sa.select(*(tab.c[name] for name in columns)).order_by(tab.c.id)
        return [tuple(row) for row in conn.execute(query)]


def balances(app: Flask, db: t.Any, member_id: int) -> tuple[int, int, int, int]:
    """``(available, pending, reserved, lifetime_earned)`` of a member, read afresh."""
    found = [
        row[1:]
        for row in rows(
            app, db, "loyalty_member", "id", "available", "pending", "reserved", "lifetime_earned"
        )
        if row[0] == member_id
    ]
    assert len(found) == 1
    return t.cast(tuple[int, int, int, int], found[0])


def snapshot(app: Flask, db: t.Any) -> dict[str, list[tuple[t.Any, ...]]]:
    """Everything a command could write."""
    return {
        "members": rows(
            app, db, "loyalty_member", "id", "available", "pending", "reserved", "lifetime_earned"
        ),
        "entries": rows(app, db, "loyalty_ledger_entry", "id"),
        "lots": rows(app, db, "loyalty_points_lot", "id", "remaining", "pending", "expired"),
        "reservations": rows(app, db, "loyalty_reservation", "id", "status"),
        "repairs": rows(app, db, "loyalty_repair", "id"),
    }


def corrupt(app: Flask, db: t.Any, member_id: int, **values: int) -> None:
    """Overwrite a member's cached balances behind the ledger's back."""
    with app.app_context(), db.engine.begin() as conn:
        member = db.metadata.tables["loyalty_member"]
        conn.execute(member.update().where(member.c.id == member_id).values(**values))


def unknown_member(app: Flask, db: t.Any) -> int:
    """An id that no member has."""
    return max([row[0] for row in rows(app, db, "loyalty_member", "id")], default=0) + 1000


def at(**delta: float) -> str:
    """The ``--now`` argument for ``START + delta``."""
    return (START + dt.timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S")


def invoke(runner: t.Any, *args: str) -> t.Any:
    """Run ``flask loyalty ARGS``."""
    return runner.invoke(args=["loyalty", *args])


# -- verify ----------------------------------------------------------------------


def test_verify_consistent(app: Flask, db: t.Any, runner: t.Any) -> None:
    first, second = enroll(app, "Ann"), enroll(app, "Ben")
    within(app, lambda: points.earn(first, 100, key="order:1"))
    within(app, lambda: points.earn(second, 40, key="order:2", available_from=START + dt.timedelta(days=3)))
    before = snapshot(app, db)
    result = invoke(runner, "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Ledger consistent: every cached balance and lot agrees with the ledger.\n"
    assert result.stderr == "  ... 1 member chunks checked\n"
    assert snapshot(app, db) == before


@pytest.mark.settings(LOYALTY_JOB_CHUNK_SIZE=1)
def test_verify_reports_progress_per_chunk(app: Flask, runner: t.Any) -> None:
    for name in ("Ann", "Ben", "Cy"):
        enroll(app, name)
    result = invoke(runner, "verify")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"  ... {n} member chunks checked" for n in (1, 2, 3)]


def test_verify_lists_a_corrupted_member(app: Flask, db: t.Any, runner: t.Any) -> None:
    good, bad = enroll(app, "Ann"), enroll(app, "Ben")
    within(app, lambda: points.earn(good, 100, key="order:1"))
    within(app, lambda: points.earn(bad, 100, key="order:2"))
    corrupt(app, db, bad, available=999)
    before = snapshot(app, db)
    result = invoke(runner, "verify")
    assert result.exit_code == 1
    assert f"member {bad}: available is 999, ledger says 100\n" in result.stdout
    assert f"member {good}:" not in result.stdout
    assert "Ledger consistent" not in result.output
    assert result.stderr.endswith("Error: 1 discrepancy found.\n")
    assert snapshot(app, db) == before


def test_verify_lists_every_discrepancy(app: Flask, db: t.Any, runner: t.Any) -> None:
    member_id = enroll(app, "Ann")
    within(app, lambda: points.earn(member_id, 100, key="order:1"))
    corrupt(app, db, member_id, available=90, lifetime_earned=0)
    result = invoke(runner, "verify")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"member {member_id}: available is 90, ledger says 100",
        f"member {member_id}: lifetime_earned is 0, ledger says 100",
    ]
    assert "Error: 2 discrepancies found." in result.stderr


# -- rebuild ---------------------------------------------------------------------


def test_rebuild_repairs_and_reports(app: Flask, db: t.Any, runner: t.Any) -> None:
    good, bad = enroll(app, "Ann"), enroll(app, "Ben")
    within(app, lambda: points.earn(good, 100, key="order:1"))
    within(app, lambda: points.earn(bad, 250, key="order:2"))
    corrupt(app, db, bad, available=999)
    result = invoke(runner, "rebuild", "--actor", "ops:ann")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"member {bad}: available 999 -> 250", "Repaired 1 discrepancy."]
    assert "member chunks checked" in result.stderr
    assert balances(app, db, bad) == (250, 0, 0, 250)
    assert balances(app, db, good) == (100, 0, 0, 100)
    repairs = rows(app, db, "loyalty_repair", "member_id", "field", "cached_value", "ledger_value", "actor")
    assert repairs == [(bad, "available", 999, 250, "ops:ann")]
    assert within(app, lambda: ledger_sum(db, bad)) == 250
    verified = invoke(runner, "verify")
    assert verified.exit_code == 0, verified.output
    assert "Ledger consistent" in verified.stdout
    again = invoke(runner, "rebuild")
    assert again.exit_code == 0, again.output
    assert again.stdout == "Repaired 0 discrepancies.\n"
    assert len(rows(app, db, "loyalty_repair", "id")) == 1


def test_rebuild_records_the_default_actor(app: Flask, db: t.Any, runner: t.Any) -> None:
    member_id = enroll(app, "Ann")
    within(app, lambda: points.earn(member_id, 100, key="order:1"))
    corrupt(app, db, member_id, available=0, pending=5)
    result = invoke(runner, "rebuild")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"member {member_id}: available 0 -> 100",
        f"member {member_id}: pending 5 -> 0",
        "Repaired 2 discrepancies.",
    ]
    assert rows(app, db, "loyalty_repair", "field", "actor") == [
        ("available", "cli:rebuild"),
        ("pending", "cli:rebuild"),
    ]
    assert balances(app, db, member_id) == (100, 0, 0, 100)
    assert invoke(runner, "verify").exit_code == 0


# -- expire ----------------------------------------------------------------------


def test_expire_with_now_and_chunk_size(app: Flask, db: t.Any, runner: t.Any) -> None:
    ann, ben = enroll(app, "Ann"), enroll(app, "Ben")
    soon, later = START + dt.timedelta(days=10), START + dt.timedelta(days=20)
    within(app, lambda: points.earn(ann, 100, key="order:1", expires_at=soon))
    within(app, lambda: points.earn(ann, 50, key="order:2", expires_at=later))
    within(app, lambda: points.earn(ben, 70, key="order:3", expires_at=soon))
    within(app, lambda: points.earn(ben, 30, key="order:4"))
    result = invoke(runner, "expire", "--now", at(days=15), "--chunk-size", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Expired 2 lot(s).\n"
    assert result.stderr.splitlines() == ["  ... 1 lots expired", "  ... 2 lots expired"]
    assert balances(app, db, ann) == (50, 0, 0, 150)
    assert balances(app, db, ben) == (30, 0, 0, 100)
    again = invoke(runner, "expire", "--now", at(days=15), "--chunk-size", "1")
    assert again.exit_code == 0, again.output
    assert again.stdout == "Expired 0 lot(s).\n"
    assert again.stderr == ""
    assert invoke(runner, "verify").exit_code == 0


def test_expire_uses_the_app_clock_by_default(
    app: Flask, db: t.Any, runner: t.Any, clock: FrozenClock
) -> None:
    member_id = enroll(app, "Ann")
    within(app, lambda: points.earn(member_id, 100, key="order:1", expires_at=START + dt.timedelta(days=10)))
    result = invoke(runner, "expire")
    assert (result.exit_code, result.stdout) == (0, "Expired 0 lot(s).\n")
    clock.advance(days=10)
    result = invoke(runner, "expire")
    assert (result.exit_code, result.stdout) == (0, "Expired 1 lot(s).\n")
    assert result.stderr == "  ... 1 lots expired\n"
    assert balances(app, db, member_id) == (0, 0, 0, 100)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--now", "next tuesday"], "Invalid value for '--now'"),
        (["--now", "2026-13-01"], "Invalid value for '--now'"),
        (["--chunk-size", "0"], "Invalid value for '--chunk-size'"),
        (["--chunk-size", "-5"], "Invalid value for '--chunk-size'"),
        (["--chunk-size", "many"], "Invalid value for '--chunk-size'"),
        (["--everything"], "No such option"),
    ],
)
@pytest.mark.parametrize("command", ["expire", "release-pending", "release-reservations"])
def test_job_usage_errors_write_nothing(
    app: Flask, db: t.Any, runner: t.Any, command: str, args: list[str], message: str
) -> None:
    member_id = enroll(app, "Ann")
    within(app, lambda: points.earn(member_id, 100, key="order:1", expires_at=START + dt.timedelta(days=1)))
    within(
        app, lambda: points.earn(member_id, 10, key="order:2", available_from=START + dt.timedelta(days=1))
    )
    within(app, lambda: points.reserve(member_id, 5, key="order:3", expires_at=START + dt.timedelta(hours=1)))
    before = snapshot(app, db)
    result = invoke(runner, command, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert snapshot(app, db) == before


# -- release-pending -------------------------------------------------------------


def test_release_pending(app: Flask, db: t.Any, runner: t.Any) -> None:
    ann, ben = enroll(app, "Ann"), enroll(app, "Ben")
    within(app, lambda: points.earn(ann, 100, key="order:1", available_from=START + dt.timedelta(days=5)))
    within(app, lambda: points.earn(ben, 60, key="order:2", available_from=START + dt.timedelta(days=5)))
    within(app, lambda: points.earn(ben, 40, key="order:3", available_from=START + dt.timedelta(days=30)))
    assert balances(app, db, ben) == (0, 100, 0, 100)
    result = invoke(runner, "release-pending", "--now", at(days=6), "--chunk-size", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Released 2 pending lot(s).\n"
    assert result.stderr.splitlines() == ["  ... 1 lots released", "  ... 2 lots released"]
    assert balances(app, db, ann) == (100, 0, 0, 100)
    assert balances(app, db, ben) == (60, 40, 0, 100)
    again = invoke(runner, "release-pending", "--now", at(days=6))
    assert (again.exit_code, again.stdout, again.stderr) == (0, "Released 0 pending lot(s).\n", "")
    assert invoke(runner, "verify").exit_code == 0


# -- release-reservations --------------------------------------------------------


def test_release_reservations(app: Flask, db: t.Any, runner: t.Any) -> None:
    member_id = enroll(app, "Ann")
    within(app, lambda: points.earn(member_id, 100, key="order:1"))
    within(
        app, lambda: points.reserve(member_id, 40, key="order:2", expires_at=START + dt.timedelta(hours=1))
    )
    within(app, lambda: points.reserve(member_id, 10, key="order:3", expires_at=START + dt.timedelta(days=1)))
    assert balances(app, db, member_id) == (50, 0, 50, 100)
    result = invoke(runner, "release-reservations", "--now", at(hours=2), "--chunk-size", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Released 1 reservation(s).\n"
    assert result.stderr == "  ... 1 reservations\n"
    assert balances(app, db, member_id) == (90, 0, 10, 100)
    assert rows(app, db, "loyalty_reservation", "source_key", "status") == [
        ("order:2", "released"),
        ("order:3", "held"),
    ]
    again = invoke(runner, "release-reservations", "--now", at(hours=2))
    assert (again.exit_code, again.stdout, again.stderr) == (0, "Released 0 reservation(s).\n", "")
    assert balances(app, db, member_id) == (90, 0, 10, 100)
    assert invoke(runner, "verify").exit_code == 0


# -- adjust ----------------------------------------------------------------------


def adjustments(app: Flask, db: t.Any) -> list[tuple[t.Any, ...]]:
    """``(member_id, kind, points, actor, reason)`` of every entry."""
    return rows(app, db, "loyalty_ledger_entry", "member_id", "kind", "points", "actor", "reason")


def test_adjust_adds_points(app: Flask, db: t.Any, runner: t.Any) -> None:
    member_id = enroll(app, "Ann")
    result = invoke(runner, "adjust", str(member_id), "50", "--reason", "goodwill", "--actor", "admin:ann")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Member {member_id}: +50 points, available 50.\n"
    assert adjustments(app, db) == [(member_id, "adjust", 50, "admin:ann", "goodwill")]
    # Adjustments are not earnings.
    assert balances(app, db, member_id) == (50, 0, 0, 0)
    assert invoke(runner, "verify").exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["{id}", "-30", "--reason", "typo", "--actor", "admin:ann"],
        ["--reason", "typo", "--actor", "admin:ann", "{id}", "-30"],
        ["--reason", "typo", "--actor", "admin:ann", "--", "{id}", "-30"],
    ],
    ids=["before-options", "after-options", "after-double-dash"],
)
def test_adjust_removes_points(app: Flask, db: t.Any, runner: t.Any, args: list[str]) -> None:
    member_id = enroll(app, "Ann")
    within(app, lambda: points.earn(member_id, 100, key="order:1"))
    result = invoke(runner, "adjust", *(arg.format(id=member_id) for arg in args))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Member {member_id}: -30 points, available 70.\n"
    assert adjustments(app, db)[-1] == (member_id, "adjust", -30, "admin:ann", "typo")
    assert balances(app, db, member_id) == (70, 0, 0, 100)
    assert invoke(runner, "verify").exit_code == 0


def test_adjust_with_key_is_done_once(app: Flask, db: t.Any, runner: t.Any) -> None:
    member_id = enroll(app, "Ann")
    args = ["adjust", str(member_id), "25", "--reason", "survey", "--actor", "admin:ann", "--key", "ticket:7"]
    first = invoke(runner, *args)
    assert first.exit_code == 0, first.output
    assert first.stdout == f"Member {member_id}: +25 points, available 25.\n"
    before = snapshot(app, db)
    repeat = invoke(runner, *args)
    assert repeat.exit_code == 0, repeat.output
    assert repeat.stdout == (
        f"Member {member_id}: +25 points, available 25 (repeat of an earlier adjustment; nothing changed).\n"
    )
    assert snapshot(app, db) == before
    other = invoke(
        runner, "adjust", str(member_id), "26", "--reason", "survey", "--actor", "x", "--key", "ticket:7"
    )
    assert other.exit_code == 1
    assert "[idempotency_conflict]" in other.stderr
    assert snapshot(app, db) == before


def test_adjust_below_zero_needs_allow_negative(app: Flask, db: t.Any, runner: t.Any) -> None:
    member_id = enroll(app, "Ann")
    within(app, lambda: points.earn(member_id, 20, key="order:1"))
    before = snapshot(app, db)
    refused = invoke(runner, "adjust", str(member_id), "-50", "--reason", "fraud", "--actor", "admin:ann")
    assert refused.exit_code == 1
    assert "[insufficient_points]" in refused.stderr
    assert snapshot(app, db) == before
    allowed = invoke(
        runner,
        "adjust",
        str(member_id),
        "-50",
        "--reason",
        "fraud",
        "--actor",
        "admin:ann",
        "--allow-negative",
    )
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stdout == f"Member {member_id}: -50 points, available -30.\n"
    assert balances(app, db, member_id) == (-30, 0, 0, 20)
    assert invoke(runner, "verify").exit_code == 0


def test_adjust_with_expiry(app: Flask, db: t.Any, runner: t.Any) -> None:
    member_id = enroll(app, "Ann")
    args = ["adjust", str(member_id), "20", "--reason", "promo", "--actor", "admin:ann"]
    result = invoke(runner, *args, "--expires-at", "2026-02-01")
    assert result.exit_code == 0, result.output
    assert rows(app, db, "loyalty_points_lot", "points", "expires_at") == [(20, dt.datetime(2026, 2, 1))]
    expired = invoke(runner, "expire", "--now", "2026-02-02")
    assert expired.stdout == "Expired 1 lot(s).\n"
    assert balances(app, db, member_id) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{id}", "50", "--actor", "admin:ann"], "Missing option '--reason'"),
        (["{id}", "50", "--reason", "goodwill"], "Missing option '--actor'"),
        (["{id}", "--reason", "goodwill", "--actor", "admin:ann"], "Missing argument 'POINTS'"),
        (["{id}", "ten", "--reason", "goodwill", "--actor", "admin:ann"], "'ten' is not a valid integer"),
        (["{id}", "1.5", "--reason", "goodwill", "--actor", "admin:ann"], "'1.5' is not a valid integer"),
        (["{id}", "", "--reason", "goodwill", "--actor", "admin:ann"], "'' is not a valid integer"),
        (["Ann", "50", "--reason", "goodwill", "--actor", "admin:ann"], "'Ann' is not a valid integer"),
        (["0", "50", "--reason", "goodwill", "--actor", "admin:ann"], "Invalid value for 'MEMBER_ID'"),
        (
            ["{id}", "50", "--reason", "r", "--actor", "a", "--expires-at", "soon"],
            "Invalid value for '--expires-at'",
        ),
        (["{id}", "50", "--reason", "r", "--actor", "a", "--reasn", "x"], "(--reasn x)"),
    ],
)
def test_adjust_usage_errors_write_nothing(
    app: Flask, db: t.Any, runner: t.Any, args: list[str], message: str
) -> None:
    member_id = enroll(app, "Ann")
    within(app, lambda: points.earn(member_id, 100, key="order:1"))
    before = snapshot(app, db)
    result = invoke(runner, "adjust", *(arg.format(id=member_id) for arg in args))
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert snapshot(app, db) == before


@pytest.mark.parametrize(
    ("points_arg", "extra", "message"),
    [
        ("0", [], "points must be non-zero, not 0. [invalid_request]"),
        ("50", ["--reason", ""], "An adjustment needs an actor and a reason. [invalid_request]"),
        ("50", ["--actor", "  "], "An adjustment needs an actor and a reason. [invalid_request]"),
        (
            "50",
            ["--reason", "x" * 501],
            "reason must be a string of at most 500 characters. [invalid_request]",
        ),
        ("50", ["--expires-at", "2025-12-31"], "expires_at must be in the future. [invalid_request]"),
        ("10000000000000000", [], "points 10000000000000000 is out of range. [invalid_request]"),
    ],
)
def test_adjust_invalid_requests_fail_and_write_nothing(
    app: Flask, db: t.Any, runner: t.Any, points_arg: str, extra: list[str], message: str
) -> None:
    member_id = enroll(app, "Ann")
    within(app, lambda: points.earn(member_id, 100, key="order:1"))
    before = snapshot(app, db)
    # Later options win, so ``extra`` replaces the valid defaults.
    args = ["adjust", str(member_id), points_arg, "--reason", "goodwill", "--actor", "admin:ann", *extra]
    result = invoke(runner, *args)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {message}\n"
    assert snapshot(app, db) == before


def test_adjust_unknown_member(app: Flask, db: t.Any, runner: t.Any) -> None:
    enroll(app, "Ann")
    missing = unknown_member(app, db)
    before = snapshot(app, db)
    result = invoke(runner, "adjust", str(missing), "50", "--reason", "goodwill", "--actor", "admin:ann")
    assert result.exit_code == 1
    assert result.stderr == f"Error: No member has id {missing}. [member_not_found]\n"
    assert snapshot(app, db) == before


def test_adjust_closed_member(app: Flask, db: t.Any, runner: t.Any) -> None:
    member_id = enroll(app, "Ann")
    within(app, lambda: members.close(member_id))
    before = snapshot(app, db)
    result = invoke(runner, "adjust", str(member_id), "50", "--reason", "goodwill", "--actor", "admin:ann")
    assert result.exit_code == 1
    assert result.stderr == f"Error: Member {member_id} is closed. [member_closed]\n"
    assert snapshot(app, db) == before


# -- balance ---------------------------------------------------------------------


def test_balance_of_a_member(app: Flask, runner: t.Any) -> None:
    member_id = enroll(app, "Ann")
    within(app, lambda: points.earn(member_id, 100, key="order:1"))
    within(
        app, lambda: points.earn(member_id, 20, key="order:2", available_from=START + dt.timedelta(days=5))
    )
    within(app, lambda: points.reserve(member_id, 10, key="order:3"))
    result = invoke(runner, "balance", str(member_id))
    assert result.exit_code == 0, result.output
    assert (
        result.stdout == f"Member {member_id}: available 90, pending 20, reserved 10, lifetime earned 120\n"
    )


def test_balance_of_a_new_member(app: Flask, runner: t.Any) -> None:
    member_id = enroll(app, "Ann")
    result = invoke(runner, "balance", str(member_id))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Member {member_id}: available 0, pending 0, reserved 0, lifetime earned 0\n"


def test_balance_of_an_unknown_member(app: Flask, db: t.Any, runner: t.Any) -> None:
    enroll(app, "Ann")
    missing = unknown_member(app, db)
    result = invoke(runner, "balance", str(missing))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"Error: No member has id {missing}. [member_not_found]\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Ann"], "Invalid value for 'MEMBER_ID': 'Ann' is not a valid integer"),
        (["0"], "Invalid value for 'MEMBER_ID': 0 is not in the range x>=1"),
        ([], "Missing argument 'MEMBER_ID'"),
    ],
)
def test_balance_usage_errors(app: Flask, runner: t.Any, args: list[str], message: str) -> None:
    result = invoke(runner, "balance", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""
