"""Running a service step under the lock of one member's row.

Services that do more than one ledger operation in a transaction (order
lifecycle steps, checkout holds, reward redemptions) run their work here:
one write transaction that locks the member first, then the signals the work
collected, sent after commit.
"""

from __future__ import annotations

import typing as t

from .posting import Operation
from .proxies import get_state
from .signals import send

T = t.TypeVar("T")


def run_locked(
    member_id: int,
    work: t.Callable[[Operation], T],
    *,
    replayed: t.Callable[[T], bool] = lambda _: False,
    lock: bool = True,
) -> T:
    """Run ``work`` in one write transaction holding the member's lock.

    ``work`` gets an :class:`~flask_loyalty.posting.Operation` with the
    member locked and its balances read (with ``lock=False``, ``work``
    locks the member with its first read and sets
    :attr:`~flask_loyalty.posting.Operation.balances`, or the first use of
    them locks it); it chains ledger steps with
    :meth:`~flask_loyalty.posting.Operation.then` and queues signals with
    :meth:`~flask_loyalty.posting.Operation.notify`. The queued signals are
    sent after commit, unless ``replayed(result)`` says the call repeated an
    earlier one and changed nothing.
    """
    state = get_state()

    def attempt() -> tuple[T, list[t.Any]]:
        op = Operation(state.store, member_id, "service", "service", "", state.now())
        if lock:
            op.balances = state.store.lock_member(member_id)
        return work(op), op.events

    result, events = state.store.atomic(attempt, standalone=not state.runs_hooks_in_transactions())
    if not replayed(result):
        _send(events)
    return result


def run_locked_members(
    member_ids: t.Sequence[int],
    work: t.Callable[[dict[int, Operation]], T],
    *,
    replayed: t.Callable[[T], bool] = lambda _: False,
) -> T:
    """Like :func:`run_locked`, holding the locks of several members.

    The members are locked in id order (so two such calls cannot deadlock);
    ``work`` gets an :class:`~flask_loyalty.posting.Operation` per member.
    """
    state = get_state()
    ids = sorted(set(member_ids))

    def attempt() -> tuple[T, list[t.Any]]:
        now = state.now()
        events: list[t.Any] = []
        ops: dict[int, Operation] = {}
        for member_id in ids:
            op = Operation(state.store, member_id, "service", "service", "", now)
            op.balances = state.store.lock_member(member_id)
            op.events = events
            ops[member_id] = op
        return work(ops), events

    result, events = state.store.atomic(attempt, standalone=not state.runs_hooks_in_transactions())
    if not replayed(result):
        _send(events)
    return result


def _send(events: list[t.Any]) -> None:
    """Send the queued signals: the operation's own first, then the late ones."""
    for after in (False, True):
        for event, payload, late in events:
            if late is after:
                send(event, **payload)
