"""The order lifecycle: paid, completed, refunded, cancelled.

A shop calls these hooks from its own order code (or connects them to its
signals); each runs in one transaction with the member locked, records the
loyalty view of the order (the extension's ``Order`` row and its lines), and
writes the ledger entries:

- :func:`order_paid` earns what :func:`~flask_loyalty.earning.quote` says,
  pending for ``LOYALTY_PENDING_DAYS`` (the return window) and expiring after
  ``LOYALTY_POINTS_EXPIRY_DAYS``;
- :func:`order_completed` makes the order's pending points available at once;
- :func:`order_refunded` reverses what the refunded lines (or amount) earned,
  once per refund reference;
- :func:`order_cancelled` reverses what the order earned and gives back the
  points it was paid with (its checkout hold, see :mod:`flask_loyalty.checkout`).

Each is exactly once: repeating a call with the same order changes nothing.
Calls out of order (a refund before payment, a payment after cancellation)
raise :class:`~flask_loyalty.errors.InvalidState` and change nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import typing as t
from decimal import Decimal
from fractions import Fraction

from . import signals
from .adapters import OrderData
from .config import CLAWBACK_POLICIES
from .config import config_value
from .earning import check_order
from .earning import context
from .earning import read_order
from .earning import rules_at
from .errors import IdempotencyConflict
from .errors import InvalidRequest
from .errors import InvalidState
from .errors import MemberNotFound
from .errors import NotFound
from .member_lock import run_locked
from .members import member_for_user
from .money import parse_amount
from .money import to_minor
from .points import capture_within
from .points import credit
from .points import release_within
from .points import reverse_within
from .posting import check_key
from .posting import digest
from .posting import Operation
from .posting import Posting
from .posting import to_utc
from .rules import evaluate
from .rules import Quote
from .rules import share
from .tiers import promote_within

log = logging.getLogger("flask_loyalty")


@dataclasses.dataclass(frozen=True)
class OrderOutcome:
    """What a lifecycle hook did to an order."""

    reference: str
    member_id: int
    #: The order's status afterwards.
    status: str
    #: Points earned (paid), or taken back (refunded, cancelled).
    points: int
    #: The ledger entries written (or, for a repeat, found).
    postings: tuple[Posting, ...] = ()
    #: The earning quote, for :func:`order_paid`.
    quote: Quote | None = None
    #: True when the call repeated an earlier one and changed nothing.
    replayed: bool = False


def _fingerprint(data: OrderData, member_id: int) -> str:
    lines = [[ln.sku, ln.quantity, str(ln.unit_price), str(ln.discount), ln.category] for ln in data.lines]
    return digest("order", {
        "member": member_id, "currency": data.currency.upper(), "total": str(data.total), "lines": lines,
        "shipping": str(data.shipping), "tax": str(data.tax), "discount": str(data.discount),
        "paid_with_points": str(data.paid_with_points),
    })  # fmt: skip


def _run(
    member_id: int, work: t.Callable[[Operation], OrderOutcome], signal: t.Any, *, lock: bool = True
) -> OrderOutcome:
    """Run a lifecycle step in one write transaction, then send its signals.

    :param lock: lock the member before ``work``; ``False`` when ``work``
        locks it with its first read (see :func:`~flask_loyalty.member_lock.run_locked`).
    """

    def step(op: Operation) -> OrderOutcome:
        outcome = work(op)
        op.notify(signal, after=True, member_id=member_id, order=outcome)
        return outcome

    return run_locked(member_id, step, replayed=lambda outcome: outcome.replayed, lock=lock)


def _recorded_member(data: OrderData) -> int:
    """The member of an order that must have been paid: nobody is enrolled for it."""
    try:
        return member_for_user(data.user, auto_enroll=False)
    except MemberNotFound:
        raise NotFound(f"There is no order {data.reference!r}.") from None


def _check_policy(policy: str | None) -> None:
    if policy is not None and policy not in CLAWBACK_POLICIES:
        raise InvalidRequest(f"policy must be one of {CLAWBACK_POLICIES}, not {policy!r}.")


def _locked_order(op: Operation, reference: str) -> t.Any:
    row = op.store.find_order(reference)
    if row is None:
        raise NotFound(f"There is no order {reference!r}.")
    if row.member_id != op.member_id:
        raise InvalidRequest(f"Order {reference!r} belongs to another member.")
    return row


def order_paid(order: t.Any, *, at: dt.datetime | None = None) -> OrderOutcome:
    """Record that ``order`` was paid, credit the points it earns and capture
    the points held for it at checkout (see :mod:`flask_loyalty.checkout`).

    :param order: the extension's ``Order``, a host order (read by the
        registered adapter), or :class:`~flask_loyalty.adapters.OrderData`.
    :param at: when it was paid, for campaign windows; now by default.
    :raises CurrencyMismatch: for an order in another currency.
    :raises InvalidRequest: for an inconsistent order (see
        :func:`~flask_loyalty.earning.check_order`).
    :raises InvalidState: if the order was cancelled.
    :raises IdempotencyConflict: if the order was paid before with other
        amounts or lines.
    """
    data = read_order(order)
    minor = check_order(data).to_minor
    member_id = member_for_user(data.user)
    fingerprint = _fingerprint(data, member_id)
    paid_at = to_utc(at, "at")
    key = f"order:{data.reference}"

    def work(op: Operation) -> OrderOutcome:
        store = op.store
        when = paid_at or op.now
        # The member's lock and the order's state in one read.
        state = store.paid_order_state(member_id, data.reference, when)
        op.balances = state.balances
        row = state.order
        if row is not None and row.member_id != member_id:
            raise InvalidRequest(f"Order {data.reference!r} belongs to another member.")
        if row is not None and row.status == "cancelled":
            raise InvalidState(f"Order {data.reference!r} was cancelled; it cannot be paid.")
        if row is not None and row.params_hash:
            if row.params_hash != fingerprint:
                raise IdempotencyConflict(f"Order {data.reference!r} was paid before with other amounts.")
            prior = store.find_entry(member_id, "earn", key)
            found = (Posting.from_row(prior, replayed=True),) if prior else ()
            return OrderOutcome(data.reference, member_id, row.status, row.points, found, replayed=True)
        postings: tuple[Posting, ...] = ()
        if state.held:
            op = op.then("capture", state.held[0].source_key)
            captured = capture_within(op, None, {"actor": None, "reason": f"order {data.reference} paid"})
            op.notify(signals.points_captured, member_id=member_id, entry=captured)
            postings = (captured,)
        tier = state.tier
        quote = evaluate(context(data, member_id, when, tier), rules_at(when, state.campaigns))
        dry = bool(config_value("DRY_RUN_ENABLED"))
        if dry:
            log.info("Dry run: order %s would earn %s points: %s", data.reference, quote.points, quote)
        earned = 0 if dry else quote.points
        order = {
            "member_id": member_id, "reference": data.reference, "currency": data.currency.upper(),
            "total_minor": minor(data.total), "shipping_minor": minor(data.shipping),
            "tax_minor": minor(data.tax), "discount_minor": minor(data.discount),
            "points_value_minor": minor(data.paid_with_points), "refunded_minor": 0,
            "status": "paid" if row is None or row.status == "placed" else row.status,
            "points": earned, "params_hash": fingerprint, "paid_at": when,
            **({"created_at": op.now} if row is None else {}),
        }  # fmt: skip
        lines = [
            {"sku": ln.sku, "name": ln.name, "category": ln.category, "quantity": ln.quantity,
             "unit_price_minor": minor(ln.unit_price), "discount_minor": minor(ln.discount),
             "points": 0 if dry else part.points, "refunded_quantity": 0, "refunded_points": 0}
            for ln, part in zip(data.lines, quote.lines, strict=True)
        ]  # fmt: skip
        if row is None:
            store.insert_paid_order(order, lines)
        else:
            store.save_order(row.id, order)
            store.replace_order_lines(row.id, lines)
        if earned:
            pending_days = int(config_value("PENDING_DAYS"))
            expiry_days = config_value("POINTS_EXPIRY_DAYS")
            op = op.then("earn", key, fingerprint)
            posting = credit(
                op,
                earned,
                pending=pending_days > 0,
                lifetime=earned,
                available_from=op.now + dt.timedelta(days=pending_days),
                expires_at=None if expiry_days is None else op.now + dt.timedelta(days=int(expiry_days)),
                reason=f"order {data.reference}",
            )
            op.notify(signals.points_earned, member_id=member_id, entry=posting)
            postings = (*postings, posting)
        if not dry:
            # After the earn: this order was priced at the old tier, the next one at the new.
            promote_within(op, tier)
        return OrderOutcome(data.reference, member_id, "paid", earned, postings, quote)

    return _run(member_id, work, signals.order_recorded, lock=False)


def order_completed(order: t.Any) -> OrderOutcome:
    """Record that ``order`` is complete: its pending points become available now.

    :raises NotFound: if the order was never paid.
    :raises InvalidState: if it was cancelled or refunded.
    """
    from .sweeps import activate_lots

    data = read_order(order)
    member_id = _recorded_member(data)

    def work(op: Operation) -> OrderOutcome:
        row = _locked_order(op, data.reference)
        if row.status == "completed":
            return OrderOutcome(data.reference, member_id, "completed", 0, replayed=True)
        if row.status != "paid":
            raise InvalidState(f"Order {data.reference!r} is {row.status}; only a paid order can complete.")
        entry = op.store.find_entry(member_id, "earn", f"order:{data.reference}")
        if entry is not None and activate_lots(
            op.store, [entry.lot_id], op.now, "order completed", early=True
        ):
            op.notify(signals.points_activated, member_ids=[member_id], count=1)
        op.store.save_order(row.id, {"status": "completed", "completed_at": op.now})
        return OrderOutcome(data.reference, member_id, "completed", 0)

    return _run(member_id, work, signals.order_completed)


def _refund_plan(
    row: t.Any, lines: list[t.Any], quantities: t.Mapping[str, int] | None, amount: Decimal | None
) -> tuple[int, list[dict[str, t.Any]]]:
    """The money refunded (minor units) and the lines' new refunded quantities and points."""
    paid = row.total_minor - row.points_value_minor
    if quantities is not None:
        if not quantities:
            raise InvalidRequest("A refund by lines needs at least one line.")
        by_sku: dict[str, t.Any] = {}
        for line in lines:
            if line.sku in by_sku:
                raise InvalidRequest(
                    f"Order {row.reference!r} has several lines of {line.sku!r}; refund by amount."
                )
            by_sku[line.sku] = line
        # What each line was paid in money: its amount less its share (by
        # amount, as in the earning basis) of the order's discount and of the
        # part paid with points.
        amounts = [ln.quantity * ln.unit_price_minor - ln.discount_minor for ln in lines]
        taken = share(row.discount_minor + row.points_value_minor, [Fraction(a) for a in amounts])
        net = {ln.id: max(0, a - d) for ln, a, d in zip(lines, amounts, taken, strict=True)}
        changes, money = [], 0
        for sku, quantity in quantities.items():
            line = by_sku.get(sku)
            if line is None:
                raise InvalidRequest(f"Order {row.reference!r} has no line {sku!r}.")
            if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
                raise InvalidRequest(f"Refund quantity of {sku!r} must be a positive whole number.")
            done = line.refunded_quantity + quantity
            if done > line.quantity:
                raise InvalidRequest(
                    f"Only {line.quantity - line.refunded_quantity} of {sku!r} are left to refund."
                )
            # Cumulative rounding down: the refunds of a line never reverse
            # more than it earned, and never less than earlier refunds of it
            # (by amount) already did.
            reversed_after = max(line.refunded_points, line.points * done // line.quantity)
            paid_for = net[line.id]
            money += paid_for * done // line.quantity - paid_for * line.refunded_quantity // line.quantity
            changes.append({"id": line.id, "refunded_quantity": done, "refunded_points": reversed_after})
        minor = min(money, paid - row.refunded_minor)
        if paid and row.refunded_minor + minor >= paid:
            # Everything paid has been refunded: nothing the order earned stays.
            done_by_id = {c["id"]: c["refunded_quantity"] for c in changes}
            changes = [
                {"id": ln.id, "refunded_quantity": done_by_id.get(ln.id, ln.refunded_quantity),
                 "refunded_points": ln.points}
                for ln in lines
            ]  # fmt: skip
        return minor, changes
    minor = paid - row.refunded_minor if amount is None else to_minor(amount)
    if minor <= 0 and amount is not None:
        raise InvalidRequest("A refund amount must be positive.")
    if row.refunded_minor + minor > paid:
        raise InvalidRequest(
            f"Only {paid - row.refunded_minor} (minor units) of order {row.reference!r} are left to refund."
        )
    # Integer floor division: exact for any amount (a float quotient can round up to a whole point).
    target = row.points if row.refunded_minor + minor == paid or not paid else (
        row.points * (row.refunded_minor + minor) // paid)  # fmt: skip
    already = sum(line.refunded_points for line in lines)
    extra = share(max(0, target - already), [line.points - line.refunded_points for line in lines])
    changes = [
        {"id": ln.id, "refunded_quantity": ln.refunded_quantity, "refunded_points": ln.refunded_points + x}
        for ln, x in zip(lines, extra, strict=True)
    ]
    return minor, changes


def order_refunded(
    order: t.Any,
    *,
    key: str,
    lines: t.Mapping[str, int] | None = None,
    amount: Decimal | int | str | None = None,
    policy: str | None = None,
) -> OrderOutcome:
    """Reverse what the refunded part of ``order`` earned, once per refund ``key``.

    :param key: the host's refund id; a repeat changes nothing.
    :param lines: ``{sku: quantity}`` refunded. Each line's refunds together
        reverse at most what it earned, rounding down as they go.
    :param amount: a refunded amount instead of lines: the points reversed are
        proportional to the share of the money paid that is refunded.
        Neither: refund everything that is left.
    :param policy: the clawback policy for points already spent;
        ``LOYALTY_CLAWBACK_POLICY`` by default.
    :raises NotFound: for an order that was never paid (its buyer is not
        enrolled for it).
    :raises InvalidState: if it is not paid or completed.
    :raises InvalidRequest: for unknown lines, too many units, or more money
        than is left to refund.
    """
    if lines is not None and amount is not None:
        raise InvalidRequest("Refund either lines or an amount, not both.")
    _check_policy(policy)
    data = read_order(order)
    member_id = _recorded_member(data)
    refund_key = check_key(key)
    money = None if amount is None else parse_amount(amount)
    params = digest("refund", {"lines": dict(lines or {}), "amount": str(money)})

    def work(op: Operation) -> OrderOutcome:
        row = _locked_order(op, data.reference)
        prior = op.store.find_refund(row.id, refund_key)
        if prior is not None:
            if prior.params_hash != params:
                raise IdempotencyConflict(
                    f"Refund {refund_key!r} of order {data.reference!r} was recorded differently."
                )
            return OrderOutcome(data.reference, member_id, row.status, prior.points, replayed=True)
        if row.status not in ("paid", "completed"):
            raise InvalidState(
                f"Order {data.reference!r} is {row.status}; only a paid order can be refunded."
            )
        current = op.store.order_lines(row.id)
        minor, changes = _refund_plan(row, current, lines, money)
        points = sum(c["refunded_points"] for c in changes) - sum(
            ln.refunded_points for ln in current if ln.id in {c["id"] for c in changes}
        )
        postings: tuple[Posting, ...] = ()
        if points:
            posting = reverse_within(
                op.then("reverse", f"refund:{data.reference}:{refund_key}", params),
                ("earn", f"order:{data.reference}"),
                points,
                policy,
                {"actor": None, "reason": f"refund {refund_key} of order {data.reference}"},
            )
            op.notify(signals.points_reversed, member_id=member_id, entry=posting,
                      original=("earn", f"order:{data.reference}"))  # fmt: skip
            postings = (posting,)
        op.store.update_order_lines(changes)
        refunded = row.refunded_minor + minor
        status = "refunded" if refunded >= row.total_minor - row.points_value_minor else row.status
        op.store.save_order(row.id, {"refunded_minor": refunded, "status": status})
        op.store.insert_refund({"order_id": row.id, "reference": refund_key, "amount_minor": minor,
                                "points": points, "params_hash": params, "created_at": op.now})  # fmt: skip
        return OrderOutcome(data.reference, member_id, status, points, postings)

    return _run(member_id, work, signals.order_refunded)


def order_cancelled(order: t.Any, *, policy: str | None = None) -> OrderOutcome:
    """Cancel ``order``: reverse what it earned and give back the points it used.

    The points it was paid with are its checkout hold (see
    :mod:`flask_loyalty.checkout`, or a reservation keyed
    ``order:<reference>``): a held one is released, a captured one
    reversed. Exactly once.
    An order that was never paid is recorded as cancelled, so that a late
    payment of it is refused.

    :param policy: the clawback policy for earned points already spent;
        ``LOYALTY_CLAWBACK_POLICY`` by default.
    :raises InvalidState: if the order was completed (refund it instead).
    :raises InvalidRequest: for an unknown policy.
    """
    _check_policy(policy)
    data = read_order(order)
    member_id = member_for_user(data.user)
    ref = data.reference

    def work(op: Operation) -> OrderOutcome:
        row = op.store.find_order(ref)
        if row is not None and row.member_id != member_id:
            raise InvalidRequest(f"Order {ref!r} belongs to another member.")
        if row is not None and row.status == "cancelled":
            return OrderOutcome(ref, member_id, "cancelled", 0, replayed=True)
        if row is not None and row.status == "completed":
            raise InvalidState(f"Order {ref!r} is completed; refund it instead of cancelling it.")
        postings: list[Posting] = []
        refs = {"actor": None, "reason": f"order {ref} cancelled"}
        left = 0
        if row is not None:
            left = row.points - sum(ln.refunded_points for ln in op.store.order_lines(row.id))

        def give_back(key: str, original: tuple[str, str], amount: int | None) -> None:
            nonlocal op
            op = op.then("reverse", key)
            postings.append(reverse_within(op, original, amount, policy, refs))
            op.notify(signals.points_reversed, member_id=member_id, entry=postings[-1], original=original)

        if left > 0:
            give_back(f"cancel:{ref}", ("earn", f"order:{ref}"), left)
        for reservation in op.store.order_reservations(member_id, ref):
            if reservation.status == "held":
                op = op.then("release", reservation.source_key)
                postings.append(release_within(op, refs))
                op.notify(signals.points_released, member_id=member_id, entry=postings[-1])
            elif reservation.status == "captured":
                give_back(f"cancel:{ref}:points", ("capture", reservation.source_key), None)
        if row is None:
            op.store.save_order(None, {
                "member_id": member_id, "reference": ref, "currency": data.currency.upper(),
                "total_minor": to_minor(data.total), "status": "cancelled", "created_at": op.now,
                "cancelled_at": op.now,
            })  # fmt: skip
        else:
            op.store.save_order(row.id, {"status": "cancelled", "cancelled_at": op.now})
        return OrderOutcome(ref, member_id, "cancelled", left, tuple(postings))

    return _run(member_id, work, signals.order_cancelled)
