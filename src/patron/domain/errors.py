"""One error hierarchy for the whole engine.

Each error has a stable ``code`` (the last segment of the problem ``type`` URI in the API) and a
short ``title``. The API maps each class to an HTTP status in one table (``api/errors.py``); the CLI
prints the message and exits non-zero.
"""

from __future__ import annotations

from typing import Any


class PatronError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "error"
    title = "Error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(PatronError):
    """The thing does not exist, or belongs to another merchant (never say which)."""

    code = "not-found"
    title = "Not found"


class InvalidInput(PatronError):
    """The request is well-formed but breaks a rule (unknown event type, bad quantity...)."""

    code = "invalid-input"
    title = "Invalid input"


class Conflict(PatronError):
    """The request conflicts with the current state."""

    code = "conflict"
    title = "Conflict"


class DuplicateMember(Conflict):
    code = "duplicate-member"
    title = "A member with this identifier already exists"


class IdempotencyConflict(Conflict):
    """The same event id or Idempotency-Key was used before with a different body."""

    code = "idempotency-conflict"
    title = "Idempotency key reused with a different request"


class InsufficientPoints(Conflict):
    code = "insufficient-points"
    title = "Not enough points"


class MemberInactive(Conflict):
    code = "member-inactive"
    title = "Member is not active"


class RefundExceedsPurchase(InvalidInput):
    code = "refund-exceeds-purchase"
    title = "Refund exceeds what was bought"


class Unauthorized(PatronError):
    code = "unauthorized"
    title = "Missing or invalid API key"


class Forbidden(PatronError):
    code = "forbidden"
    title = "The API key lacks the scope for this operation"


class LedgerImbalance(PatronError):
    """A journal that does not sum to zero: a programming error, never user input."""

    code = "ledger-imbalance"
    title = "Ledger imbalance"


class UnknownReward(InvalidInput):
    code = "unknown-reward"
    title = "No such reward in the program"


class RewardUnavailable(Conflict):
    """Outside the reward's valid window, or hidden."""

    code = "reward-unavailable"
    title = "Reward not available now"


class OutOfStock(Conflict):
    code = "out-of-stock"
    title = "Reward out of stock"


class LimitReached(Conflict):
    code = "limit-reached"
    title = "Redemption limit reached"


class NotInTier(Conflict):
    code = "reward-not-in-tier"
    title = "Reward not available in the member's tier"


class NotInSegment(Conflict):
    code = "reward-not-in-segment"
    title = "Reward not available in the member's segment"


class RedemptionRedeemed(Conflict):
    code = "redemption-redeemed"
    title = "Redemption already redeemed"


class RedemptionCancelled(Conflict):
    code = "redemption-cancelled"
    title = "Redemption was cancelled"


class RedemptionExpired(Conflict):
    code = "redemption-expired"
    title = "Reservation lapsed"
