"""Referrals: members bring friends, and both earn a bonus once.

Every member has a referral code (:func:`referral_code`). A new member who
signs up with it is recorded with :func:`refer`; self-referrals are refused
at once: the member's own code, the referrer's email however it is written
(case, and dots or ``+tags`` where the mail provider ignores them), or a
payment method the referrer used (:func:`note_payment`).

The referral is decided by :func:`settle_referrals` (``flask loyalty
referrals``, daily) once the referee's first paid order of at least
``LOYALTY_REFERRAL_MINIMUM_ORDER`` has settled: completed, or paid for longer
than ``LOYALTY_PENDING_DAYS`` (the return window). Then the referee earns
``LOYALTY_REFERRAL_REFEREE_BONUS`` and the referrer
``LOYALTY_REFERRAL_REFERRER_BONUS``, each exactly once; a referrer who
already had ``LOYALTY_REFERRAL_CAP`` referrals rewarded in the current
``LOYALTY_REFERRAL_CAP_PERIOD`` earns nothing (``capped``). A qualifying
order refunded or cancelled within the window rejects the referral, and so
does a payment method the two members share.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import secrets
import typing as t

from sqlalchemy.exc import IntegrityError

from . import signals
from .config import config_value
from .errors import InvalidRequest
from .errors import NotFound
from .errors import ReferralRefused
from .member_lock import run_locked_members
from .members import member_for_user
from .money import to_minor
from .points import credit
from .posting import digest
from .posting import Operation
from .posting import to_utc
from .proxies import current_loyalty
from .proxies import get_state
from .rewards import CODE_ALPHABET

__all__ = ["Referral", "referral_code", "canonical_email", "refer", "note_payment", "referral_of",
           "referrals_by", "list_referrals", "settle_referrals"]  # fmt: skip

#: Mail providers that ignore dots in the local part (``a.b@gmail.com`` is ``ab@gmail.com``).
DOTLESS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
#: Mail providers that ignore a ``+tag`` in the local part.
PLUS_TAG_DOMAINS = frozenset({"gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com",
                              "icloud.com", "me.com", "fastmail.com", "proton.me", "protonmail.com",
                              "yahoo.com", "qq.com"})  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Referral:
    """A referral and how it was decided."""

    id: int
    referrer_id: int
    referee_id: int
    referee_name: str
    #: ``pending``, ``rewarded``, ``capped`` or ``rejected``.
    status: str
    #: Why it was rejected or capped: ``same_payment``, ``order_refunded``, ``cap_reached``.
    reason: str | None
    order_reference: str | None
    created_at: dt.datetime
    decided_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: t.Any) -> Referral:
        """Build a referral from a row of :meth:`LoyaltyStore.referrals`."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: getattr(row, name) for name in names})


def canonical_email(email: str) -> str:
    """``email`` as its mailbox receives it: lower case, without ignored dots and ``+tags``."""
    local, _, domain = email.strip().lower().rpartition("@")
    if domain == "googlemail.com":
        domain = "gmail.com"
    if domain in PLUS_TAG_DOMAINS:
        local = local.split("+", 1)[0]
    if domain in DOTLESS_DOMAINS:
        local = local.replace(".", "")
    return f"{local}@{domain}"


def referral_code(member: t.Any) -> str:
    """The member's referral code, made on first use (8 characters from :mod:`secrets`)."""
    member_id = member_for_user(member)
    store = current_loyalty.store
    for _ in range(5):
        row = store.atomic(lambda: store.member_contact(member_id))
        if row is None:
            raise NotFound(f"No member has id {member_id}.")
        if row.referral_code:
            return str(row.referral_code)
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
        try:
            store.atomic(functools.partial(store.set_referral_code, member_id, code))
        except IntegrityError:
            continue  # another member has it: draw again
    raise RuntimeError("Could not draw an unused referral code.")


def _digest(fingerprint: t.Any) -> str:
    if not isinstance(fingerprint, str) or not fingerprint or len(fingerprint) > 500:
        raise InvalidRequest("A payment fingerprint is a non-empty string of at most 500 characters.")
    return hashlib.sha256(fingerprint.encode()).hexdigest()


def note_payment(member: t.Any, fingerprint: str) -> None:
    """Record that ``member`` paid with the method ``fingerprint`` (a card token's hash, say).

    Only its SHA-256 is stored. Referrals between members who share a
    payment method are refused or rejected.
    """
    value = _digest(fingerprint)
    member_id = member_for_user(member)
    state = get_state()
    state.store.atomic(lambda: state.store.add_fingerprint(member_id, value, state.now()))


def refer(referee: t.Any, code: str, *, fingerprint: str | None = None) -> Referral:
    """Record that ``referee`` signed up with referral ``code``.

    :param fingerprint: the referee's payment fingerprint, when the shop has
        one at signup.
    :raises NotFound: for an unknown code.
    :raises ReferralRefused: for a self-referral (own code, same email, same
        payment method) or a member who was referred already; nothing is
        written.
    """
    if not isinstance(code, str) or not 1 <= len(code.strip()) <= 16:
        raise InvalidRequest(f"{code!r} is not a referral code.")
    referee_id = member_for_user(referee)
    state = get_state()
    store = state.store
    referrer = store.atomic(lambda: store.member_by_referral_code(code.strip().upper()))
    if referrer is None or referrer.status != "active":
        raise NotFound(f"There is no referral code {code!r}.")
    referrer_id = int(referrer.id)
    if referrer_id == referee_id:
        raise ReferralRefused("Members cannot use their own referral code.", reason="self_referral")
    value = None if fingerprint is None else _digest(fingerprint)

    def work(ops: dict[int, Operation]) -> Referral:
        me = store.member_contact(referee_id)
        if referrer.email and me.email and canonical_email(referrer.email) == canonical_email(me.email):
            raise ReferralRefused("Members cannot refer themselves by another address.", reason="same_email")
        if value is not None:
            store.add_fingerprint(referee_id, value, ops[referee_id].now)
        if store.shared_fingerprint(referee_id, referrer_id):
            raise ReferralRefused(
                "Members cannot refer themselves by another account.", reason="same_payment"
            )
        if store.find_referral(referee_id=referee_id) is not None:
            raise ReferralRefused("This member was referred already.", reason="already_referred")
        store.insert_referral({"referrer_id": referrer_id, "referee_id": referee_id, "status": "pending",
                               "created_at": ops[referee_id].now})  # fmt: skip
        return Referral.from_row(store.referrals_for_referee(referee_id))

    try:
        return run_locked_members([referrer_id, referee_id], work)
    except IntegrityError:
        raise ReferralRefused("This member was referred already.", reason="already_referred") from None


def referral_of(member: t.Any) -> Referral | None:
    """The referral that brought ``member``, or ``None``."""
    member_id = member_for_user(member)
    store = current_loyalty.store
    row = store.atomic(lambda: store.referrals_for_referee(member_id))
    return None if row is None else Referral.from_row(row)


def referrals_by(member: t.Any, *, limit: int = 50, before_id: int | None = None) -> list[Referral]:
    """The referrals ``member`` made, newest first."""
    member_id = member_for_user(member)
    return list_referrals(limit=limit, before_id=before_id, referrer_id=member_id)


def list_referrals(
    *, limit: int = 50, before_id: int | None = None, referrer_id: int | None = None
) -> list[Referral]:
    """Every referral (for the shop owner), newest first."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 500:
        raise InvalidRequest(f"limit must be a whole number from 1 to 500, not {limit!r}.")
    store = current_loyalty.store
    rows = store.atomic(lambda: store.referrals(referrer_id=referrer_id, limit=limit, before_id=before_id))
    return [Referral.from_row(row) for row in rows]


def period_start(per: str, at: dt.datetime) -> dt.datetime:
    """The start of the ``day``, ISO ``week``, ``month`` or ``year`` that ``at`` falls in."""
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if per == "week":
        return day - dt.timedelta(days=day.weekday())
    if per == "month":
        return day.replace(day=1)
    if per == "year":
        return day.replace(month=1, day=1)
    return day


def _bonus(op: Operation, referral_id: int, role: str, points: int) -> None:
    if points <= 0:
        return
    key = f"referral:{referral_id}:{role}"
    op = op.then("earn", key, digest("earn", {"points": points, "referral": referral_id}))
    posting = credit(op, points, pending=False, lifetime=points, expires_at=None, available_from=op.now,
                     actor=None, reason=f"referral {referral_id} ({role})")  # fmt: skip
    op.notify(signals.points_earned, member_id=op.member_id, entry=posting)


def _decide(ops: dict[int, Operation], referral_id: int, when: dt.datetime) -> str | None:
    """Decide one pending referral; return its new status, or ``None`` while it waits."""
    first = next(iter(ops.values()))
    store = first.store
    row = store.find_referral(referral_id=referral_id)
    if row is None or row.status != "pending":
        return None
    minimum = to_minor(str(config_value("REFERRAL_MINIMUM_ORDER")))
    order = store.first_paid_orders(row.referee_id, minimum)
    if order is None:
        return None
    window_over = order.paid_at + dt.timedelta(days=int(config_value("PENDING_DAYS"))) <= when
    status, reason = "rewarded", None
    if order.status in ("refunded", "cancelled") or order.refunded_minor > 0:
        status, reason = "rejected", "order_refunded"
    elif order.status != "completed" and not window_over:
        return None
    elif store.shared_fingerprint(row.referee_id, row.referrer_id):
        status, reason = "rejected", "same_payment"
    else:
        cap = config_value("REFERRAL_CAP")
        since = period_start(str(config_value("REFERRAL_CAP_PERIOD")), when)
        if cap is not None and store.count_rewarded_referrals(row.referrer_id, since) >= int(cap):
            status, reason = "capped", "cap_reached"
        _bonus(ops[row.referee_id], referral_id, "referee", int(config_value("REFERRAL_REFEREE_BONUS")))
        if status == "rewarded":
            _bonus(
                ops[row.referrer_id], referral_id, "referrer", int(config_value("REFERRAL_REFERRER_BONUS"))
            )
    store.set_referral(referral_id, {"status": status, "reason": reason, "decided_at": when,
                                     "order_reference": order.reference})  # fmt: skip
    decided = Referral.from_row(store.referrals_for_referee(row.referee_id))
    first.notify(signals.referral_decided, after=True, referral=decided)
    return status


def settle_referrals(*, now: dt.datetime | None = None, chunk_size: int | None = None) -> dict[str, int]:
    """Decide every pending referral whose qualifying order has settled.

    Safe to run twice or from several processes at once: each referral is
    decided under the locks of both members, and each bonus is an
    exactly-once ledger credit.

    :returns: how many referrals became ``rewarded``, ``capped`` and ``rejected``.
    """
    state = get_state()
    when = to_utc(now, "now") or state.now()
    size = chunk_size or int(config_value("JOB_CHUNK_SIZE"))
    counts = {"rewarded": 0, "capped": 0, "rejected": 0}

    def chunk(after: int) -> list[t.Any]:
        return state.store.atomic(lambda: state.store.pending_referrals(after, size))

    rows = chunk(0)
    while rows:
        for row in rows:
            decide = functools.partial(_decide, referral_id=row.id, when=when)
            status = run_locked_members(
                [row.referrer_id, row.referee_id], decide, replayed=lambda decided: decided is None
            )
            if status is not None:
                counts[status] += 1
        rows = chunk(rows[-1].id)
    return counts
