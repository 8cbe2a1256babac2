"""The reward catalogue: redeeming points for coupons and goods.

A member redeems a reward with :func:`redeem_reward`: in one transaction,
under the member's lock, the reward's window, tier restriction and
per-member limit are checked, one of its stock is taken (a conditional
``UPDATE``, so concurrent redemptions never oversell), its cost is debited
from the ledger and a :class:`Redemption` is issued with an unguessable code
from :mod:`secrets`. The shop's checkout validates the code with
:func:`check_code` and consumes it for an order with :func:`use_code`, once.
:func:`cancel_redemption` of an unused code returns the points, once.

Rewards are created with :func:`create_reward` (or as rows of
``loyalty.models.Reward``) and changed with :func:`update_reward`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import typing as t
from decimal import Decimal

from sqlalchemy.exc import IntegrityError

from . import signals
from .errors import IdempotencyConflict
from .errors import InsufficientPoints
from .errors import InvalidRequest
from .errors import InvalidState
from .errors import NotFound
from .errors import RewardUnavailable
from .member_lock import run_locked
from .members import member_for_user
from .money import from_minor
from .money import to_minor
from .points import reverse_within
from .posting import check_key
from .posting import check_text
from .posting import digest
from .posting import Operation
from .posting import to_utc
from .proxies import current_loyalty
from .proxies import get_state
from .reward_models import REWARD_KINDS
from .tier_config import configured_tiers

__all__ = ["Reward", "Redemption", "create_reward", "update_reward", "list_rewards", "get_reward",
           "availability", "redeem_reward", "cancel_redemption", "member_redemptions", "get_redemption",
           "check_code", "use_code", "expire_redemptions"]  # fmt: skip

#: Characters of redemption codes: no 0/O or 1/I/L to misread.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
#: Characters per code: 12 of 31 symbols, about 59 bits of randomness.
CODE_LENGTH = 12


@dataclasses.dataclass(frozen=True)
class Reward:
    """A reward of the catalogue, as plain data for pages and the API."""

    id: int
    slug: str
    name: str
    description: str
    kind: str
    cost: int
    #: The coupon's value (``fixed_amount``), else ``None``.
    amount: Decimal | None
    percent: int | None
    sku: str | None
    stock: int | None
    per_member_limit: int | None
    tier: str | None
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    valid_days: int | None
    active: bool

    @classmethod
    def from_row(cls, row: t.Any) -> Reward:
        """Build a reward from a row of the reward table."""
        names = {f.name for f in dataclasses.fields(cls)} - {"amount"}
        amount = None if row.amount_minor is None else from_minor(row.amount_minor)
        return cls(amount=amount, **{name: getattr(row, name) for name in names})


@dataclasses.dataclass(frozen=True)
class Redemption:
    """A reward a member bought: its code, status and what it gives."""

    id: int
    member_id: int
    reward_id: int
    reward_slug: str
    reward_name: str
    kind: str
    amount: Decimal | None
    percent: int | None
    sku: str | None
    code: str
    points: int
    #: ``issued``, ``used``, ``cancelled`` or ``expired``.
    status: str
    expires_at: dt.datetime | None
    order_reference: str | None
    used_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    created_at: dt.datetime
    replayed: bool = False

    @classmethod
    def from_row(cls, row: t.Any, *, replayed: bool = False) -> Redemption:
        """Build a redemption from a row of :meth:`LoyaltyStore.find_redemption`."""
        amount = None if row.reward_amount_minor is None else from_minor(row.reward_amount_minor)
        return cls(id=row.id, member_id=row.member_id, reward_id=row.reward_id, reward_slug=row.reward_slug,
                   reward_name=row.reward_name, kind=row.reward_kind, amount=amount,
                   percent=row.reward_percent, sku=row.reward_sku, code=row.code, points=row.points,
                   status=row.status,
                   expires_at=row.expires_at, order_reference=row.order_reference, used_at=row.used_at,
                   cancelled_at=row.cancelled_at, created_at=row.created_at, replayed=replayed)  # fmt: skip


def _whole(value: t.Any, name: str, least: int, most: int = 10**15, *, optional: bool = True) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise InvalidRequest(f"{name} must be a whole number from {least} to {most}, not {value!r}.")
    return value


def _reward_values(values: dict[str, t.Any], current: t.Any = None) -> dict[str, t.Any]:
    """Check reward fields (merged over the ``current`` row) and return the columns to write."""
    known = {"slug", "name", "description", "kind", "cost", "amount", "percent", "sku", "stock",
             "per_member_limit", "tier", "starts_at", "ends_at", "valid_days", "active"}  # fmt: skip
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidRequest(f"Unknown reward field(s): {', '.join(unknown)}.")
    merged = dict(Reward.from_row(current).__dict__) if current is not None else {}
    merged.update(values)
    out: dict[str, t.Any] = {}
    slug = merged.get("slug")
    if not isinstance(slug, str) or not slug or len(slug) > 64 or not slug.replace("-", "").isalnum():
        raise InvalidRequest(f"slug must be 1 to 64 letters, digits and dashes, not {slug!r}.")
    out["slug"] = slug
    name = check_text(merged.get("name"), "name", 120)
    if not name:
        raise InvalidRequest("A reward needs a name.")
    out["name"], out["description"] = name, check_text(merged.get("description") or "", "description", 2000)
    kind = merged.get("kind")
    if kind not in REWARD_KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(REWARD_KINDS)}, not {kind!r}.")
    out["kind"] = kind
    out["cost"] = _whole(merged.get("cost"), "cost", 1, optional=False)
    amount = merged.get("amount")
    if kind == "fixed_amount":
        if amount is None:
            raise InvalidRequest("A fixed_amount reward needs an amount.")
        out["amount_minor"] = to_minor(amount)
        if out["amount_minor"] <= 0:
            raise InvalidRequest("A reward's amount must be greater than 0.")
    else:
        out["amount_minor"] = None
    out["percent"] = _whole(merged.get("percent"), "percent", 1, 100, optional=kind != "percentage")
    out["sku"] = check_text(merged.get("sku"), "sku", 64) if kind == "free_product" else None
    if kind == "free_product" and not out["sku"]:
        raise InvalidRequest("A free_product reward needs a sku.")
    if kind != "percentage":
        out["percent"] = None
    out["stock"] = _whole(merged.get("stock"), "stock", 0)
    out["per_member_limit"] = _whole(merged.get("per_member_limit"), "per_member_limit", 1, 10**6)
    out["valid_days"] = _whole(merged.get("valid_days"), "valid_days", 1, 36500)
    tier = merged.get("tier")
    if tier is not None and tier not in {t_.name for t_ in configured_tiers()}:
        raise InvalidRequest(f"tier {tier!r} is not one of LOYALTY_TIERS.")
    out["tier"] = tier
    out["starts_at"], out["ends_at"] = (
        to_utc(merged.get("starts_at"), "starts_at"),
        to_utc(merged.get("ends_at"), "ends_at"),
    )
    if out["starts_at"] and out["ends_at"] and out["ends_at"] <= out["starts_at"]:
        raise InvalidRequest("ends_at must be after starts_at.")
    active = merged.get("active", True)
    if not isinstance(active, bool):
        raise InvalidRequest(f"active must be true or false, not {active!r}.")
    out["active"] = active
    return out


def _write(work: t.Callable[[], t.Any], slug: t.Any) -> t.Any:
    try:
        return current_loyalty.store.atomic(work)
    except IntegrityError as error:
        raise InvalidRequest(f"A reward with slug {slug!r} already exists.") from error


def create_reward(**values: t.Any) -> Reward:
    """Add a reward to the catalogue and return it.

    :param values: ``slug``, ``name``, ``kind``, ``cost`` and what the kind
        needs (``amount`` as money, ``percent`` or ``sku``); optionally
        ``description``, ``stock``, ``per_member_limit``, ``tier``,
        ``starts_at``, ``ends_at``, ``valid_days`` and ``active``.
    :raises InvalidRequest: for a malformed or missing field, or a slug in use.
    """
    columns = _reward_values(values)
    store = current_loyalty.store

    def work() -> t.Any:
        reward_id = store.insert_reward({**columns, "created_at": current_loyalty.now()})
        return store.find_reward(reward_id=reward_id)

    return Reward.from_row(_write(work, columns["slug"]))


def update_reward(reward: int | str, **values: t.Any) -> Reward:
    """Change fields of a reward (by id or slug) and return it.

    :raises NotFound: if there is no such reward.
    :raises InvalidRequest: as :func:`create_reward`.
    """
    store = current_loyalty.store
    row = _find(reward)

    def work() -> t.Any:
        store.update_reward(row.id, _reward_values(values, row))
        return store.find_reward(reward_id=row.id)

    return Reward.from_row(_write(work, values.get("slug")))


def _find(reward: t.Any) -> t.Any:
    store = current_loyalty.store
    if isinstance(reward, Reward):
        reward = reward.id
    if isinstance(reward, int) and not isinstance(reward, bool):
        row = store.atomic(lambda: store.find_reward(reward_id=reward))
    elif isinstance(reward, str) and 0 < len(reward) <= 64:
        row = store.atomic(lambda: store.find_reward(slug=reward))
    else:
        raise InvalidRequest(f"{reward!r} is not a reward id or slug.")
    if row is None:
        raise NotFound(f"There is no reward {reward!r}.")
    return row


def list_rewards(*, include_inactive: bool = False, at: dt.datetime | None = None) -> list[Reward]:
    """The catalogue, cheapest first: active rewards whose window includes ``at`` (now).

    :param include_inactive: every reward, whatever its switch and window.
    """
    state = get_state()
    when = to_utc(at, "at") or state.now()
    rows = state.store.atomic(lambda: state.store.rewards(include_inactive=include_inactive))
    rewards = [Reward.from_row(row) for row in rows]
    if include_inactive:
        return rewards
    return [
        r
        for r in rewards
        if (r.starts_at is None or r.starts_at <= when) and (r.ends_at is None or when < r.ends_at)
    ]


def get_reward(reward: int | str) -> Reward:
    """One reward, by id or slug, active or not.

    :raises NotFound: if there is no such reward.
    """
    return Reward.from_row(_find(reward))


def _unavailable(reward: Reward, when: dt.datetime, tier: str | None, held: int) -> RewardUnavailable | None:
    """Why the member cannot redeem ``reward`` now (ignoring points), or ``None``."""
    if not reward.active:
        return RewardUnavailable(f"{reward.name} is not available.", reason="inactive")
    if reward.starts_at is not None and when < reward.starts_at:
        return RewardUnavailable(f"{reward.name} is not available yet.", reason="not_started")
    if reward.ends_at is not None and when >= reward.ends_at:
        return RewardUnavailable(f"{reward.name} is no longer available.", reason="ended")
    if reward.stock is not None and reward.stock <= 0:
        return RewardUnavailable(f"{reward.name} is out of stock.", reason="out_of_stock")
    if reward.per_member_limit is not None and held >= reward.per_member_limit:
        return RewardUnavailable(
            f"You already hold {held} of {reward.name}, the most one member may.", reason="limit_reached"
        )
    if reward.tier is not None:
        ranks = {tier_.name: i for i, tier_ in enumerate(configured_tiers())}
        if ranks.get(tier or "", -1) < ranks.get(reward.tier, len(ranks)):
            return RewardUnavailable(
                f"{reward.name} is for {reward.tier} members and above.", reason="tier_required"
            )
    return None


def availability(member: t.Any, rewards: t.Sequence[Reward]) -> dict[int, RewardUnavailable | None]:
    """For each reward, why ``member`` cannot redeem it now, or ``None`` if they can.

    Points are not counted: compare :attr:`Reward.cost` with the balance.
    Two queries whatever the number of rewards.
    """
    state = get_state()
    member_id = member_for_user(member)
    when = state.now()
    tier = state.store.atomic(lambda: state.store.member_tier(member_id)[0])
    held = state.store.atomic(lambda: state.store.held_counts(member_id))
    return {r.id: _unavailable(r, when, tier, held.get(r.id, 0)) for r in rewards}


def _new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def redeem_reward(
    member: t.Any, reward: int | str | Reward, *, key: str, actor: str | None = None
) -> Redemption:
    """Spend ``member``'s points on ``reward`` and issue a redemption code.

    Exactly once per ``key``: a repeat returns the first call's redemption
    with ``replayed=True``; the same key for another reward raises
    :class:`~flask_loyalty.errors.IdempotencyConflict`.

    :param key: the redemption's idempotency key (a form token, the API's
        ``Idempotency-Key``), unique per member.
    :raises NotFound: if there is no such reward.
    :raises RewardUnavailable: if it is inactive, outside its window, out of
        stock, above the member's tier, or the member holds the most allowed.
    :raises InsufficientPoints: if the member cannot afford it.
    """
    key = check_key(key)
    if len(key) > 150:
        raise InvalidRequest("A redemption key is at most 150 characters.")
    row = _find(reward)
    member_id = member_for_user(member)
    ledger_key = f"reward:{key}"
    refs: dict[str, t.Any] = {"actor": check_text(actor, "actor", 191), "reason": f"reward {row.slug}"}

    def work(op: Operation) -> Redemption:
        store = op.store
        prior = store.find_redemption(member_id=member_id, source_key=key)
        if prior is not None:
            if prior.reward_id != row.id:
                raise IdempotencyConflict(f"Key {key!r} was already used to redeem another reward.")
            return Redemption.from_row(prior, replayed=True)
        current = Reward.from_row(store.find_reward(reward_id=row.id))
        held = store.held_count(member_id, current.id)
        problem = _unavailable(current, op.now, store.member_tier(member_id)[0], held)
        if problem is not None:
            raise problem
        op.settle()
        if op.balances.available < current.cost:
            raise InsufficientPoints(
                f"{current.name} costs {current.cost} points; you have {max(op.balances.available, 0)}.",
                available=op.balances.available,
                requested=current.cost,
            )
        if not store.take_stock(current.id):
            raise RewardUnavailable(f"{current.name} is out of stock.", reason="out_of_stock")
        op = op.then("redeem", ledger_key, digest("redeem", {"points": current.cost}))
        changes, _ = op.take(current.cost)
        posting = op.write(-current.cost, available=-current.cost, lot_changes=changes, **refs)
        op.notify(signals.points_redeemed, member_id=member_id, entry=posting)
        expires = None if current.valid_days is None else op.now + dt.timedelta(days=current.valid_days)
        redemption_id = store.insert_redemption({
            "member_id": member_id, "reward_id": current.id, "code": _new_code(), "source_key": key,
            "points": current.cost, "status": "issued", "expires_at": expires, "created_at": op.now,
        })  # fmt: skip
        issued = Redemption.from_row(store.find_redemption(redemption_id=redemption_id))
        op.notify(signals.reward_redeemed, after=True, member_id=member_id, redemption=issued)
        return issued

    return run_locked(member_id, work, replayed=lambda r: r.replayed)


def _own(op: Operation, redemption: t.Any) -> t.Any:
    """The member's redemption by id (locked), or :class:`NotFound`."""
    if isinstance(redemption, Redemption):
        redemption = redemption.id
    if isinstance(redemption, bool) or not isinstance(redemption, int):
        raise InvalidRequest(f"{redemption!r} is not a redemption id.")
    row = op.store.find_redemption(redemption_id=redemption, member_id=op.member_id, lock=True)
    if row is None:
        raise NotFound(f"There is no redemption {redemption!r}.")
    return row


def cancel_redemption(member: t.Any, redemption: int | Redemption, *, actor: str | None = None) -> Redemption:
    """Cancel an unused redemption: its points go back to the member, once.

    Cancelling a cancelled redemption again changes nothing.

    :raises NotFound: if the member has no such redemption.
    :raises InvalidState: if its code was used or has expired.
    """
    member_id = member_for_user(member)

    def work(op: Operation) -> Redemption:
        row = _own(op, redemption)
        if row.status == "cancelled":
            return Redemption.from_row(row, replayed=True)
        if row.status != "issued":
            raise InvalidState(f"Redemption {row.code} is {row.status}; it cannot be cancelled.")
        op = op.then("reverse", f"reward-cancel:{row.id}")
        refs = {"actor": check_text(actor, "actor", 191), "reason": f"reward {row.reward_slug} cancelled"}
        posting = reverse_within(op, ("redeem", f"reward:{row.source_key}"), None, None, refs)
        op.notify(signals.points_reversed, member_id=member_id, entry=posting,
                  original=("redeem", f"reward:{row.source_key}"))  # fmt: skip
        op.store.return_stock(row.reward_id)
        op.store.set_redemption(row.id, {"status": "cancelled", "cancelled_at": op.now})
        cancelled = Redemption.from_row(op.store.find_redemption(redemption_id=row.id))
        op.notify(signals.redemption_cancelled, after=True, member_id=member_id, redemption=cancelled)
        return cancelled

    return run_locked(member_id, work, replayed=lambda r: r.replayed)


def member_redemptions(member: t.Any, *, limit: int = 50, before_id: int | None = None) -> list[Redemption]:
    """The member's redemptions, newest first (``before_id`` pages back)."""
    member_id = member_for_user(member)
    store = current_loyalty.store
    size = _whole(limit, "limit", 1, 500, optional=False)
    rows = store.atomic(
        lambda: store.member_redemptions(member_id, limit=t.cast(int, size), before_id=before_id)
    )
    return [Redemption.from_row(row) for row in rows]


def get_redemption(member: t.Any, redemption_id: int) -> Redemption:
    """One of the member's redemptions.

    :raises NotFound: if the member has no such redemption (another
        member's included).
    """
    member_id = member_for_user(member)
    store = current_loyalty.store
    row = store.atomic(lambda: store.find_redemption(redemption_id=redemption_id, member_id=member_id))
    if row is None:
        raise NotFound(f"There is no redemption {redemption_id!r}.")
    return Redemption.from_row(row)


def _check_code(code: t.Any) -> str:
    if not isinstance(code, str) or not code.strip() or len(code) > 32:
        raise InvalidRequest(f"{code!r} is not a redemption code.")
    return code.strip().upper().replace("-", "")


def _by_code(code: t.Any, member: t.Any) -> t.Any:
    """The redemption row with ``code`` (the member's, when given), or :class:`NotFound`."""
    found = _check_code(code)
    member_id = None if member is None else member_for_user(member)
    store = current_loyalty.store
    row = store.atomic(lambda: store.find_redemption(code=found, member_id=member_id))
    if row is None:
        raise NotFound(f"There is no redemption code {code!r}.")
    return row


def _check_usable(row: t.Any, now: dt.datetime) -> None:
    """Refuse a code that was used, cancelled or has expired."""
    if row.status == "issued" and row.expires_at is not None and row.expires_at <= now:
        raise InvalidState(f"Code {row.code} has expired.")
    if row.status != "issued":
        raise InvalidState(f"Code {row.code} is {row.status}.")


def check_code(code: str, *, member: t.Any = None) -> Redemption:
    """The redemption with ``code`` if it can be used now.

    :param member: when given, the code must be this member's.
    :raises NotFound: for an unknown code (or another member's).
    :raises InvalidState: if it was used, cancelled or has expired.
    """
    row = _by_code(code, member)
    _check_usable(row, current_loyalty.now())
    return Redemption.from_row(row)


def use_code(code: str, *, order_reference: str, member: t.Any = None) -> Redemption:
    """Consume the code for order ``order_reference``, once.

    Using it again for the same order returns it with ``replayed=True``.

    :raises NotFound: for an unknown code (or another member's).
    :raises InvalidState: if it was used for another order, cancelled or has
        expired.
    """
    reference = check_key(order_reference)
    row = _by_code(code, member)

    def work(op: Operation) -> Redemption:
        locked = op.store.find_redemption(redemption_id=row.id, lock=True)
        if locked.status == "used" and locked.order_reference == reference:
            return Redemption.from_row(locked, replayed=True)
        _check_usable(locked, op.now)
        op.store.set_redemption(
            locked.id, {"status": "used", "used_at": op.now, "order_reference": reference}
        )
        used = Redemption.from_row(op.store.find_redemption(redemption_id=locked.id))
        op.notify(signals.redemption_used, member_id=used.member_id, redemption=used)
        return used

    return run_locked(int(row.member_id), work, replayed=lambda r: r.replayed)


def expire_redemptions(*, now: dt.datetime | None = None) -> int:
    """Mark issued codes past their expiry as expired; return how many.

    Their points are not returned: the member had the reward until it expired.
    """
    state = get_state()
    when = to_utc(now, "now") or state.now()
    return int(state.store.atomic(lambda: state.store.expire_redemptions(when)))
