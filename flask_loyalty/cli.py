"""The ``flask loyalty`` command group.

Attached by :meth:`~flask_loyalty.Loyalty.init_app` under ``LOYALTY_CLI_GROUP``
(default ``loyalty``; a falsy value leaves it out). Commands call the same
services as the pages and the API, print with :func:`click.echo` and fail with
a non-zero exit status and a message naming the problem.
"""

from __future__ import annotations

import datetime as dt
import typing as t
import uuid

import click
from flask.cli import AppGroup

from . import actions
from . import audit
from . import idempotency
from . import jobs
from . import members
from . import points as ledger
from . import referrals
from . import reminders
from . import rewards
from . import tiers
from .errors import LoyaltyError

loyalty_cli = AppGroup("loyalty", help="Manage the loyalty-points ledger.")


def _fail(error: LoyaltyError) -> t.NoReturn:
    raise click.ClickException(f"{error.message} [{error.code}]")


def _progress(label: str) -> t.Callable[[int], None]:
    return lambda total: click.echo(f"  ... {total} {label}", err=True)


@loyalty_cli.command("verify")
def verify_command() -> None:
    """Check cached balances and lots against the ledger; exit 1 on any mismatch."""
    found = audit.verify(progress=_progress("member chunks checked"))
    for d in found:
        click.echo(f"member {d.member_id}: {d.field} is {d.cached}, ledger says {d.ledger}")
    if found:
        raise click.ClickException(f"{len(found)} discrepanc{'y' if len(found) == 1 else 'ies'} found.")
    click.echo("Ledger consistent: every cached balance and lot agrees with the ledger.")


@loyalty_cli.command("rebuild")
@click.option("--actor", default="cli:rebuild", show_default=True, help="Recorded with each repair.")
def rebuild_command(actor: str) -> None:
    """Repair cached balances and lots from the ledger, recording each change."""
    repaired = audit.rebuild(actor=actor, progress=_progress("member chunks checked"))
    for d in repaired:
        click.echo(f"member {d.member_id}: {d.field} {d.cached} -> {d.ledger}")
    click.echo(f"Repaired {len(repaired)} discrepanc{'y' if len(repaired) == 1 else 'ies'}.")
    left = audit.verify()
    if left:
        raise click.ClickException(f"{len(left)} discrepancies need a person (see 'flask loyalty verify').")


def _now_option(f: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    return click.option(
        "--now",
        type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
        default=None,
        help="Run as of this UTC time instead of the current time.",
    )(f)


def _chunk_option(f: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    return click.option(
        "--chunk-size", type=click.IntRange(min=1), default=None, help="Rows per transaction."
    )(f)


@loyalty_cli.command("expire")
@_now_option
@_chunk_option
def expire_command(now: dt.datetime | None, chunk_size: int | None) -> None:
    """Expire what is left of every lot whose expiry has passed."""
    count = jobs.expire_points(now=now, chunk_size=chunk_size, progress=_progress("lots expired"))
    click.echo(f"Expired {count} lot(s).")


@loyalty_cli.command("release-pending")
@_now_option
@_chunk_option
def release_pending_command(now: dt.datetime | None, chunk_size: int | None) -> None:
    """Make pending points available once their return window has passed."""
    count = jobs.release_pending(now=now, chunk_size=chunk_size, progress=_progress("lots released"))
    click.echo(f"Released {count} pending lot(s).")


@loyalty_cli.command("release-reservations")
@_now_option
@_chunk_option
def release_reservations_command(now: dt.datetime | None, chunk_size: int | None) -> None:
    """Release checkout reservations whose time-to-live has run out."""
    count = jobs.release_reservations(now=now, chunk_size=chunk_size, progress=_progress("reservations"))
    click.echo(f"Released {count} reservation(s).")


@loyalty_cli.command("expire-codes")
@_now_option
def expire_codes_command(now: dt.datetime | None) -> None:
    """Mark issued reward codes whose validity has run out as expired."""
    count = rewards.expire_redemptions(now=now)
    click.echo(f"Expired {count} reward code(s).")


@loyalty_cli.command("birthdays")
@_now_option
@_chunk_option
def birthdays_command(now: dt.datetime | None, chunk_size: int | None) -> None:
    """Award the birthday action to members whose birthday is today."""
    count = actions.award_birthdays(now=now, chunk_size=chunk_size)
    click.echo(f"Awarded the birthday bonus to {count} member(s).")


@loyalty_cli.command("referrals")
@_now_option
@_chunk_option
def referrals_command(now: dt.datetime | None, chunk_size: int | None) -> None:
    """Decide pending referrals whose qualifying order has settled."""
    counts = referrals.settle_referrals(now=now, chunk_size=chunk_size)
    click.echo(f"Referrals rewarded: {counts['rewarded']}, capped: {counts['capped']}, "
               f"rejected: {counts['rejected']}.")  # fmt: skip


@loyalty_cli.command("remind")
@_now_option
@_chunk_option
def remind_command(now: dt.datetime | None, chunk_size: int | None) -> None:
    """Send the reminders of points about to expire, once per lot and window."""
    sent = reminders.remind(now=now, chunk_size=chunk_size)
    for r in sent:
        click.echo(f"member {r.member_id}: {r.points} points expire from {r.expires_at:%Y-%m-%d} "
                   f"({r.window_days}-day reminder)")  # fmt: skip
    click.echo(f"Sent {len(sent)} reminder(s).")


@loyalty_cli.command("purge-responses")
@click.option("--days", type=click.IntRange(min=1), default=1, show_default=True,
              help="Delete responses stored more than this many days ago.")  # fmt: skip
def purge_responses_command(days: int) -> None:
    """Delete the API's stored Idempotency-Key responses older than --days."""
    count = idempotency.purge(older_than=dt.timedelta(days=days))
    click.echo(f"Deleted {count} stored API response(s).")


@loyalty_cli.command("evaluate-tiers")
@_now_option
@_chunk_option
def evaluate_tiers_command(now: dt.datetime | None, chunk_size: int | None) -> None:
    """Move every member to the tier they qualify for: upgrades and due downgrades."""
    try:
        count = tiers.evaluate_tiers(now=now, chunk_size=chunk_size, progress=_progress("tiers changed"))
    except LoyaltyError as error:
        _fail(error)
    except ValueError as error:  # the tier settings changed since init_app checked them
        raise click.ClickException(str(error)) from None
    click.echo(f"Changed the tier of {count} member(s).")


# Negative POINTS ("-500") must parse as an argument, not as an unknown option.
@loyalty_cli.command("adjust", context_settings={"ignore_unknown_options": True})
@click.argument("member_id", type=click.IntRange(min=1))
@click.argument("points", type=int)
@click.option("--reason", required=True, help="Why the balance changes (recorded).")
@click.option("--actor", required=True, help="Who is making the change (recorded).")
@click.option("--key", default=None, help="Idempotency key; a repeat with the same key changes nothing.")
@click.option("--expires-at", type=click.DateTime(), default=None, help="Expiry of added points (UTC).")
@click.option("--allow-negative", is_flag=True, help="Let a removal take the balance below zero.")
def adjust_command(
    member_id: int,
    points: int,
    reason: str,
    actor: str,
    key: str | None,
    expires_at: dt.datetime | None,
    allow_negative: bool,
) -> None:
    """Add (positive POINTS) or remove (negative POINTS) points by hand."""
    try:
        posting = ledger.adjust(
            member_id,
            points,
            key=key or f"cli:{uuid.uuid4()}",
            actor=actor,
            reason=reason,
            expires_at=expires_at,
            allow_negative=allow_negative,
        )
    except LoyaltyError as error:
        _fail(error)
    note = " (repeat of an earlier adjustment; nothing changed)" if posting.replayed else ""
    click.echo(f"Member {member_id}: {posting.points:+d} points, available {posting.available_after}{note}.")


@loyalty_cli.command("balance")
@click.argument("member_id", type=click.IntRange(min=1))
def balance_command(member_id: int) -> None:
    """Show a member's balances."""
    try:
        b = members.balances(member_id)
    except LoyaltyError as error:
        _fail(error)
    click.echo(
        f"Member {member_id}: available {b.available}, pending {b.pending}, "
        f"reserved {b.reserved}, lifetime earned {b.lifetime_earned}"
    )
