"""Rewards: what a member can redeem, at what cost, and whether they may now.

A redemption is two-phase. Reserving moves the cost from ``available`` to ``reserved``, lot by lot,
soonest-expiring first (the lots stay earmarked, so a cancelled reservation gives back the same
lots with their original expiry). Redeeming moves the reserved points to ``program:redeemed``;
cancelling or lapsing moves them back to ``available``. Redeemed is final.

Invariant: available + reserved + redeemed never exceeds what was credited, and a cancellation
returns exactly what was reserved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from patron.domain.errors import (
    InsufficientPoints,
    LimitReached,
    NotInSegment,
    NotInTier,
    OutOfStock,
    RedemptionCancelled,
    RedemptionExpired,
    RedemptionRedeemed,
    RewardUnavailable,
)
from patron.domain.ledger import Account, Journal, JournalKind, Lot, Posting, draw, returned


class RewardKind(StrEnum):
    FIXED_DISCOUNT = "fixed_discount"
    PERCENT_DISCOUNT = "percent_discount"
    FREE_PRODUCT = "free_product"
    FREE_SHIPPING = "free_shipping"
    STORE_CREDIT = "store_credit"
    EVENT_TICKET = "event_ticket"
    TRAVEL_AWARD = "travel_award"
    PARTNER_PERK = "partner_perk"
    PHYSICAL_GIFT = "physical_gift"


class Status(StrEnum):
    RESERVED = "reserved"
    REDEEMED = "redeemed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class RewardRule:
    """A reward of the catalogue. ``settings`` are the kind's own (amount, percent, sku...)."""

    id: str
    name: str
    kind: RewardKind
    cost: int
    cost_by_tier: tuple[tuple[str, int], ...] = ()
    tiers: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()  # only members whose latest segment is one of these
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    visible_from: datetime | None = None
    visible_until: datetime | None = None
    stock: int | None = None
    limit_per_member: int | None = None
    limit_period: str = "lifetime"
    settings: tuple[tuple[str, Any], ...] = field(default=())

    def cost_for(self, tier_id: str | None) -> int:
        """The points cost for a member in ``tier_id`` (a per-tier price, else the base cost)."""
        return dict(self.cost_by_tier).get(tier_id or "", self.cost)

    def visible(self, at: datetime) -> bool:
        return not (
            (self.visible_from and at < self.visible_from)
            or (self.visible_until and at >= self.visible_until)
        )

    def grants(self, currency: str) -> dict[str, Any]:
        """What the reward gives, in terms a till understands."""
        out: dict[str, Any] = {"kind": str(self.kind), "name": self.name, **dict(self.settings)}
        if self.kind in (RewardKind.FIXED_DISCOUNT, RewardKind.STORE_CREDIT) or "max_amount" in out:
            out["currency"] = currency
        return out


@dataclass(frozen=True, slots=True)
class PointsPayment:
    """Pay with points: ``points`` points are worth ``per_amount`` minor units, up to
    ``max_percent`` of the order."""

    points: int
    per_amount: int
    max_percent: int = 100
    min_points: int = 1

    def value(self, points: int) -> int:
        """The discount ``points`` buy, in minor units (whole units only, rounded down)."""
        return points * self.per_amount // self.points

    def check(self, points: int, *, order_amount: int, available: int) -> int:
        """The discount for paying ``points`` on an order of ``order_amount``, or why not."""
        if points < self.min_points:
            raise PaymentRefused(f"pay at least {self.min_points} points")
        value = self.value(points)
        if value <= 0:
            raise PaymentRefused(
                f"{points} points are worth nothing: {self.points} points buy {self.per_amount}"
            )
        cap = order_amount * self.max_percent // 100
        if value > cap:
            most = cap * self.points // self.per_amount
            raise PaymentRefused(
                f"points can pay at most {self.max_percent}% of the order ({cap}); that is {most} points",
                max_points=most,
            )
        if points > available:
            raise InsufficientPoints(
                f"paying {points} points; {available} available", needed=points, available=available
            )
        return value


class PaymentRefused(RewardUnavailable):
    code = "points-payment-refused"
    title = "Points cannot pay this much"


FULFILMENT = ("ordered", "shipped", "delivered", "cancelled")
FULFILMENT_NEXT = {
    "ordered": ("shipped", "cancelled"),
    "shipped": ("delivered",),
    "delivered": (),
    "cancelled": (),
}


@dataclass(frozen=True, slots=True)
class Standing:
    """What the caller knows about the member and the reward at the moment of reserving."""

    at: datetime
    tier_id: str | None
    available: int
    stock_used: int
    member_used_in_period: int
    segment: str | None = None


def check_reservable(reward: RewardRule, s: Standing) -> int:
    """The cost to reserve ``reward`` now, or the reason why not (a domain error)."""
    if not reward.visible(s.at) or (reward.valid_from and s.at < reward.valid_from):
        raise RewardUnavailable(f"reward {reward.id} is not available yet")
    if reward.valid_until and s.at >= reward.valid_until:
        raise RewardUnavailable(f"reward {reward.id} is no longer available")
    if reward.tiers and s.tier_id not in reward.tiers:
        raise NotInTier(
            f"reward {reward.id} is for tiers {', '.join(reward.tiers)}", tiers=list(reward.tiers)
        )
    if reward.segments and s.segment not in reward.segments:
        raise NotInSegment(
            f"reward {reward.id} is for members in the segments {', '.join(reward.segments)}",
            segments=list(reward.segments),
        )
    if reward.stock is not None and s.stock_used >= reward.stock:
        raise OutOfStock(f"reward {reward.id} is out of stock")
    if reward.limit_per_member is not None and s.member_used_in_period >= reward.limit_per_member:
        raise LimitReached(
            f"reward {reward.id} can be redeemed {reward.limit_per_member} time(s) per {reward.limit_period}"
        )
    cost = reward.cost_for(s.tier_id)
    if s.available < cost:
        raise InsufficientPoints(
            f"reward {reward.id} costs {cost} points; {s.available} available",
            needed=cost,
            available=s.available,
        )
    return cost


def reservation(cost: int, lots: Sequence[Lot]) -> Journal:
    """Move ``cost`` from available to reserved, lot by lot (lots already in spending order)."""
    postings = [
        posting
        for lot_id, take in draw(lots, cost)
        for posting in (Posting(Account.AVAILABLE, -take, lot_id), Posting(Account.RESERVED, take, lot_id))
    ]
    return Journal(JournalKind.RESERVATION, tuple(postings), "reserved for a reward")


def settle(held: Sequence[tuple[str, int]], *, status: Status, reason: str, debt: int = 0) -> Journal:
    """Close a reservation holding ``held`` (lot id, points): redeem, or give the points back
    (repaying first the ``debt`` the member owes, say after a refund took back points they had
    reserved)."""
    if status == Status.REDEEMED:
        postings = [Posting(Account.RESERVED, -p, lot) for lot, p in held]
        postings.append(Posting(Account.REDEEMED, sum(p for _, p in held)))
        return Journal(JournalKind.REDEMPTION, tuple(postings), reason)
    back = [Posting(Account.RESERVED, -p, lot) for lot, p in held] + returned(held, debt=debt)
    kind = JournalKind.LAPSE if status == Status.EXPIRED else JournalKind.CANCELLATION
    return Journal(kind, tuple(back), reason)


def check_transition(status: str, target: Status, *, expires_at: datetime, now: datetime) -> None:
    """Reserved can become redeemed (before it lapses), cancelled or expired; nothing else moves."""
    if status == Status.REDEEMED:
        raise RedemptionRedeemed("this redemption was already redeemed; redeemed is final")
    if status == Status.CANCELLED:
        raise RedemptionCancelled("this redemption was cancelled")
    if status == Status.EXPIRED:
        raise RedemptionExpired("this reservation lapsed and its points went back")
    if target == Status.REDEEMED and now >= expires_at:
        raise RedemptionExpired(f"this reservation lapsed at {expires_at.isoformat()}")
