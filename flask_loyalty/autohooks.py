"""Lifecycle hooks that run inside the host's own commits.

**Order status events.** A shop on the extension's own ``Order`` model only
changes an order's ``status`` and commits: the matching lifecycle hook runs
in that same transaction, just before it commits, so the order's new status
and its points are committed together or not at all.

=============  ================================================================
new status     what runs
=============  ================================================================
``paid``       :func:`~flask_loyalty.orders.order_paid`, which also
               captures the points held for the order at checkout (an
               order with ``points_value_minor`` set must have them held)
``completed``  :func:`~flask_loyalty.orders.order_completed`, after the
               ``paid`` steps if the order was still placed
``refunded``   :func:`~flask_loyalty.orders.order_refunded` of all that is
               left to refund, with the refund key :data:`STATUS_REFUND_KEY`
``cancelled``  :func:`~flask_loyalty.orders.order_cancelled`
=============  ================================================================

The ``status`` column belongs to the lifecycle: the host's assignment is a
request. The flush leaves the column as it was (the object shows the new
status meanwhile), and the hook writes it when the transaction commits. A
change the lifecycle does not allow (``refunded`` before ``paid``, anything
after ``cancelled``, back to ``placed``) makes the commit raise
:class:`~flask_loyalty.errors.InvalidState`, and so does any error of the
hook; nothing is committed then, and the host rolls back. The switch is
``LOYALTY_ORDER_EVENTS_ENABLED``.

**Hooks from the host's own SQLAlchemy events.** :func:`on_commit` schedules
any hook call (``order_paid(order)`` from an ``after_update`` listener on the
host's order model, say) to run the same way: inside the host's transaction,
just before it commits.

Hooks run here run in the host's transaction, in the
:data:`~flask_loyalty.transaction.IN_HOST_COMMIT` mode of
:func:`~flask_loyalty.transaction.run_atomic`: each ledger operation in a
savepoint, none committed by itself. Their signals are held until the
transaction has committed, and dropped if it rolls back.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import typing as t

import sqlalchemy as sa
from flask import current_app
from flask import has_app_context
from sqlalchemy.orm import Session
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.orm.attributes import set_committed_value

from . import signals
from .errors import InvalidState
from .shop import ORDER_STATUSES
from .transaction import IN_HOST_COMMIT

if t.TYPE_CHECKING:
    from .extension import LoyaltyState

log = logging.getLogger("flask_loyalty")

#: The refund key of the refund that setting an order's status to
#: ``refunded`` records.
STATUS_REFUND_KEY = "status"

#: The statuses an order may come from, by the status it moves to.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "placed": (),
    "paid": ("placed",),
    "completed": ("placed", "paid"),
    "refunded": ("paid", "completed"),
    "cancelled": ("placed", "paid"),
}

# session.info keys
_REQUESTS = "loyalty_status_requests"  # status changes seen by before_flush, for after the flush
_PENDING = "loyalty_pending_hooks"  # hook calls waiting for the commit
_HELD = "loyalty_held_signals"  # signals of the hooks that ran, until the commit
_READY = "loyalty_signals_ready"  # signals of a committed transaction, until it has ended


@dataclasses.dataclass(frozen=True)
class _Pending:
    call: t.Callable[[], object]
    #: The (sub)transaction it was scheduled in: a rollback of it drops the call.
    transaction: SessionTransaction | None


def _state() -> LoyaltyState | None:
    if not has_app_context():
        return None
    return t.cast("LoyaltyState | None", current_app.extensions.get("loyalty"))


def install(session_class: type[Session], order_model: type[t.Any] | None = None) -> None:
    """Register the listeners (internal; :meth:`~flask_loyalty.Loyalty.init_app` calls it).

    :param session_class: the host's session class; the commit listeners run
        the scheduled hooks. Installing twice is harmless.
    :param order_model: the extension's ``Order`` model, to watch its status
        changes (``LOYALTY_ORDER_EVENTS_ENABLED``).
    """
    if not getattr(session_class, "_loyalty_autohooks", False):
        session_class._loyalty_autohooks = True  # type: ignore[attr-defined]
        for name, listener in (
            ("before_flush", _before_flush),
            ("after_flush_postexec", _after_flush_postexec),
            ("before_commit", _before_commit),
            ("after_commit", _after_commit),
            ("after_soft_rollback", _after_soft_rollback),
            ("after_transaction_end", _after_transaction_end),
        ):
            sa.event.listen(session_class, name, listener)
    if order_model is not None and not sa.event.contains(order_model.status, "set", _load_replaced):
        sa.event.listen(order_model.status, "set", _load_replaced, active_history=True)


def _load_replaced(target: t.Any, value: t.Any, oldvalue: t.Any, initiator: t.Any) -> None:
    """Registered with ``active_history``: an order's replaced status is loaded
    when it is set, so that a change always knows the status it came from."""


def on_commit(hook: t.Callable[..., object], /, *args: t.Any, **kwargs: t.Any) -> None:
    """Call ``hook(*args, **kwargs)`` in the current transaction, just before it commits.

    For lifecycle hooks called from the host's SQLAlchemy events (mapper or
    attribute events fire during a flush or an assignment, where no
    transaction of the extension's own may run)::

        @sa.event.listens_for(ShopOrder, "after_update")
        def order_changed(mapper, connection, order):
            if sa.inspect(order).attrs.state.history.added == ["paid"]:
                on_commit(orders.order_paid, order)

    The call runs when the app's session commits, inside that transaction;
    if it raises, the commit raises and nothing is committed (roll back).
    Its signals are sent after the commit.
    Calls scheduled in a savepoint that rolls back are dropped, and all of
    them when the transaction rolls back.
    """
    from .proxies import current_loyalty

    session = current_loyalty.store.session
    install(type(session))
    _schedule(session, functools.partial(hook, *args, **kwargs))


def _schedule(session: Session, call: t.Callable[[], object]) -> None:
    if not session.in_transaction():
        # Belongs to the transaction that begins now: its rollback drops it.
        session.begin()
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append(_Pending(call, transaction))


def _before_flush(session: Session, flush_context: t.Any, instances: t.Any) -> None:
    """Turn status assignments on the extension's orders into requests."""
    state = _state()
    if state is None or not state.order_events:
        return
    order_model = state.models.Order
    for order in [*session.new, *session.dirty]:
        if not isinstance(order, order_model):
            continue
        history = sa.inspect(order).attrs.status.history
        if not history.added or history.added[0] not in ORDER_STATUSES:
            continue  # unchanged, or not a status (the check constraint refuses it)
        old = history.deleted[0] if history.deleted else "placed"
        if old == history.added[0]:
            continue
        session.info.setdefault(_REQUESTS, []).append((order, old, history.added[0]))
        # The column keeps its status until the hook writes the new one.
        order.status = old


def _after_flush_postexec(session: Session, flush_context: t.Any) -> None:
    for order, old, new in session.info.pop(_REQUESTS, ()):
        # The host sees the status it set; the hook writes it at commit.
        set_committed_value(order, "status", new)
        _schedule(session, functools.partial(_apply_status, order, old, new))


def _apply_status(order: t.Any, old: str, new: str) -> None:
    """Run the hooks that move ``order`` from ``old`` to ``new``."""
    from . import checkout
    from . import orders

    if old not in TRANSITIONS[new]:
        raise InvalidState(f"Order {order.reference!r} is {old}; it cannot become {new}.")
    if new == "paid" or (new == "completed" and old == "placed"):
        held = checkout.applied_points(order.member, reference=order.reference)
        if order.points_value_minor and held is None:
            raise InvalidState(
                f"Order {order.reference!r} was paid with points, but the member has no reservation"
                f" 'order:{order.reference}' holding them."
            )
        orders.order_paid(order)
    if new == "completed":
        orders.order_completed(order)
    elif new == "refunded":
        orders.order_refunded(order, key=STATUS_REFUND_KEY)
    elif new == "cancelled":
        orders.order_cancelled(order)
    # The hooks wrote the order and its lines with Core statements.
    session = sa.orm.object_session(order)
    if session is not None:
        for line in order.lines:
            session.expire(line)
        session.expire(order)


def _before_commit(session: Session) -> None:
    """Run the scheduled hooks in the transaction being committed."""
    if session.info.get(IN_HOST_COMMIT) or session.in_nested_transaction():
        return  # a savepoint of a hook, or of the host: the outermost commit runs them
    if not session.info.get(_PENDING) and (
        not (session.new or session.dirty or session.deleted) or _state() is None
    ):
        return
    # The commit would flush after this event: flush first, so that the
    # changes of this flush are seen and their hooks run too.
    session.flush()
    pending: list[_Pending] = session.info.setdefault(_PENDING, [])
    while pending:
        session.info[IN_HOST_COMMIT] = True
        try:
            with signals.held() as queue:
                pending[0].call()
        finally:
            del session.info[IN_HOST_COMMIT]
        # Only once it has succeeded: a failed call stays (its signals do not)
        # and runs again if the host commits again without rolling back, so
        # the transaction never commits without it. Its operations are exactly
        # once: what it wrote before it failed is not written twice.
        pending.pop(0)
        session.info.setdefault(_HELD, []).extend(queue)
        session.flush()


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    if session.info.get(_PENDING):
        # Scheduled by a flush after the commit had run the hooks (a listener
        # of the host's that changed objects in before_commit, after this one).
        log.error(
            "%d lifecycle hook call(s) scheduled while the transaction was committing did not run: %r",
            len(session.info[_PENDING]),
            [p.call for p in session.info[_PENDING]],
        )
    if _HELD in session.info:
        session.info[_READY] = session.info.pop(_HELD)


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    pending = session.info.get(_PENDING)
    if pending and previous_transaction.nested:
        pending[:] = [p for p in pending if not _within(p.transaction, previous_transaction)]


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    for key in (_REQUESTS, _PENDING, _HELD):
        session.info.pop(key, None)
    # Sent once the transaction has ended, so that receivers may use the session.
    signals.send_held(session.info.pop(_READY, ()))
