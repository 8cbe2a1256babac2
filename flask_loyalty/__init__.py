"""flask-loyalty: a membership and loyalty-points programme for Flask shops."""

from __future__ import annotations

from .errors import ActionCapReached
from .errors import ConcurrencyError
from .errors import CurrencyMismatch
from .errors import IdempotencyConflict
from .errors import InsufficientPoints
from .errors import InvalidRequest
from .errors import InvalidState
from .errors import LoyaltyError
from .errors import MemberClosed
from .errors import MemberNotFound
from .errors import NotFound
from .errors import ReferralRefused
from .errors import RewardUnavailable
from .extension import Loyalty
from .posting import Posting
from .proxies import current_loyalty

__all__ = [
    "ActionCapReached",
    "ConcurrencyError",
    "CurrencyMismatch",
    "IdempotencyConflict",
    "InsufficientPoints",
    "InvalidRequest",
    "InvalidState",
    "Loyalty",
    "LoyaltyError",
    "MemberClosed",
    "MemberNotFound",
    "NotFound",
    "Posting",
    "ReferralRefused",
    "RewardUnavailable",
    "current_loyalty",
]
