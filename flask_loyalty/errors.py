"""Exceptions raised by flask-loyalty.

Every error the extension raises on purpose derives from :class:`LoyaltyError`
and carries a stable machine-readable :attr:`~LoyaltyError.code` and a message
meant for humans. An operation that raises has written nothing.
"""

from __future__ import annotations


class LoyaltyError(Exception):
    """Base class of every error raised by flask-loyalty.

    :param message: a human-readable explanation.
    """

    #: A stable identifier of the error kind, used by the CLI and the JSON API.
    code: str = "loyalty_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        #: The human-readable explanation.
        self.message = message


class InvalidRequest(LoyaltyError, ValueError):
    """An argument is malformed: zero, negative, fractional or non-numeric
    points, money with too many decimals, an unknown kind, a naive misuse."""

    code = "invalid_request"


class CurrencyMismatch(InvalidRequest):
    """An amount is in a currency other than the configured one."""

    code = "currency_mismatch"


class MemberNotFound(LoyaltyError, LookupError):
    """No member has the given id."""

    code = "member_not_found"


class MemberClosed(LoyaltyError):
    """The member's account is closed and takes no more ledger operations."""

    code = "member_closed"


class InsufficientPoints(LoyaltyError):
    """The member's available balance does not cover the debit.

    :param message: a human-readable explanation.
    :param available: the available balance at the time of the check.
    :param requested: the points that were asked for.
    """

    code = "insufficient_points"

    def __init__(self, message: str, *, available: int, requested: int) -> None:
        super().__init__(message)
        #: The available balance when the debit was refused.
        self.available = available
        #: The points the refused debit asked for.
        self.requested = requested


class IdempotencyConflict(LoyaltyError):
    """The source key was used before with different parameters."""

    code = "idempotency_conflict"


class NotFound(LoyaltyError, LookupError):
    """A referenced ledger object (entry, reservation) does not exist."""

    code = "not_found"


class RewardUnavailable(LoyaltyError):
    """The member cannot redeem the reward now.

    :param message: a human-readable explanation.
    :param reason: why, one of :data:`REASONS`.
    """

    code = "reward_unavailable"

    #: The reasons a reward can be unavailable: ``"inactive"`` (switched off),
    #: ``"not_started"``, ``"ended"``, ``"out_of_stock"``, ``"limit_reached"``
    #: (the member holds as many as one member may) and ``"tier_required"``.
    REASONS = ("inactive", "not_started", "ended", "out_of_stock", "limit_reached", "tier_required")

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        #: Why the reward is unavailable, one of :data:`REASONS`.
        self.reason = reason


class ActionCapReached(LoyaltyError):
    """The member has earned an action's points as often as its cap allows this period.

    :param message: a human-readable explanation.
    :param action: the action's name.
    """

    code = "action_cap_reached"

    def __init__(self, message: str, *, action: str) -> None:
        super().__init__(message)
        #: The action's name.
        self.action = action


class ReferralRefused(LoyaltyError):
    """A referral code cannot be used for this member.

    :param message: a human-readable explanation.
    :param reason: why, one of :data:`REASONS`.
    """

    code = "referral_refused"

    #: ``"self_referral"`` (the member's own code), ``"same_email"`` (the
    #: referrer's email, however it is written), ``"same_payment"`` (a payment
    #: method the referrer used) and ``"already_referred"``.
    REASONS = ("self_referral", "same_email", "same_payment", "already_referred")

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        #: Why the referral was refused, one of :data:`REASONS`.
        self.reason = reason


class InvalidState(LoyaltyError):
    """The operation does not fit the current state (a reservation already
    captured, a reversal larger than what is left to reverse)."""

    code = "invalid_state"


class ConcurrencyError(LoyaltyError):
    """The database kept reporting deadlocks, serialization failures or busy
    locks after the configured number of retries; nothing was written."""

    code = "concurrency_error"
