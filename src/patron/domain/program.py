"""A loyalty program as plain, immutable data.

The JSON a merchant posts is validated at the edge (``services/program_schema.py``) and turned
into these dataclasses; the rules of earning, tiers and expiry read only these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, time
from enum import StrEnum
from fractions import Fraction

from patron.domain.expiry import ExpiryPolicy
from patron.domain.milestones import Milestone
from patron.domain.rewards import PointsPayment, RewardRule


class RuleType(StrEnum):
    SPEND = "spend"
    MULTIPLIER = "multiplier"
    ITEM_POINTS = "item_points"
    VISIT = "visit"
    ORDER = "order"
    BONUS = "bonus"
    ACTION = "action"
    DISTANCE = "distance"
    REVENUE = "revenue"
    PUNCH_CARD = "punch_card"


class CapMode(StrEnum):
    REDUCE = "reduce"
    REJECT = "reject"


class Period(StrEnum):
    LIFETIME = "lifetime"
    YEAR = "year"
    MONTH = "month"
    DAY = "day"


@dataclass(frozen=True, slots=True)
class Targeting:
    """When a rule applies. Empty tuples and ``None`` mean "no restriction"."""

    locations: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    weekdays: tuple[int, ...] = ()  # 0 = Monday, in the program's timezone
    hours_from: time | None = None  # local time of day, inclusive
    hours_to: time | None = None  # local time of day, exclusive
    segments: tuple[str, ...] = ()  # the member's latest segment (the segments job)


@dataclass(frozen=True, slots=True)
class Rule:
    """One earning rule. Which fields matter depends on ``type``:

    * ``spend``: ``points`` per ``per_amount`` minor units of each eligible line;
    * ``multiplier``: ``multiplier`` on the spend points of matching lines (``kind`` product) or
      of the whole event (``kind`` promotion);
    * ``item_points``: ``points`` per unit of each matching line;
    * ``visit``: ``points`` per visit event whose ``amount`` is at least ``min_spend``;
    * ``order``: ``points`` per purchase whose eligible amount is at least ``min_spend``;
    * ``bonus``: ``points`` once when a purchase's eligible amount reaches ``threshold``;
    * ``action``: ``points`` for the custom event ``action``, at most ``limit_count`` times
      per ``limit_per``;
    * ``distance``: ``percent_by_fare_class`` of the great-circle miles of a flight, times the
      tier's multiplier when ``tier_bonus`` (the status bonus); the miles before the bonus are
      the flight's status miles;
    * ``revenue``: miles per ``per_amount`` minor units of a flight's fare, at the rate of the
      tier held at the time of travel (``miles_by_tier``; the key ``""`` is the rate without a
      tier);
    * ``punch_card``: each qualifying ``visit`` or ``purchase`` (at least ``min_spend``) punches
      the card; every ``punches``-th punch issues the reward ``reward_id``. With ``once_per_day``
      (also for ``visit``), one punch or visit award per day (program timezone) per location.
    """

    id: str
    type: RuleType
    points: int = 0
    per_amount: int = 100
    multiplier: Fraction = Fraction(1)
    kind: str = "product"
    categories: tuple[str, ...] = ()
    skus: tuple[str, ...] = ()
    min_spend: int = 0
    threshold: int = 0
    action: str | None = None
    limit_count: int | None = None
    limit_per: Period = Period.LIFETIME
    percent_by_fare_class: tuple[tuple[str, int], ...] = ()
    tier_bonus: bool = False
    miles_by_tier: tuple[tuple[str, int], ...] = ()
    punches: int = 0
    reward_id: str | None = None
    once_per_day: bool = False
    valid_days: int = 30  # how long a punch card's reward stays valid
    target: Targeting = field(default_factory=Targeting)

    def matches_line(self, sku: str | None, category: str | None) -> bool:
        if not self.categories and not self.skus:
            return True
        return (category is not None and category in self.categories) or (
            sku is not None and sku in self.skus
        )


@dataclass(frozen=True, slots=True)
class EarningBase:
    """Which parts of a purchase earn. Defaults: net of discounts, no tax, shipping or gift cards."""

    discounts: bool = False  # True: earn on the price before discounts
    tax: bool = False
    shipping: bool = False
    gift_cards: bool = False


@dataclass(frozen=True, slots=True)
class Caps:
    per_event: int | None = None
    per_member: int | None = None
    per_member_period: Period = Period.DAY
    mode: CapMode = CapMode.REDUCE


@dataclass(frozen=True, slots=True)
class TierLevel:
    """A level. ``invite_only`` levels are never reached by a threshold, only by assignment;
    ``permanent`` levels, once held, are never lost."""

    id: str
    name: str
    threshold: int
    multiplier: Fraction = Fraction(1)
    permanent: bool = False
    invite_only: bool = False
    perks: tuple[str, ...] = ()
    discount_percent: int = 0


@dataclass(frozen=True, slots=True)
class Tiers:
    metric: str = "qualifying_spend"  # qualifying_spend | status_points | visits | status_miles | segments
    period: str = "calendar_year"  # calendar_year | rolling_12_months | anniversary
    downgrade: str = "one_level"  # none | one_level | recompute
    levels: tuple[TierLevel, ...] = ()
    grace_days: int = 0  # a downgrade takes effect this many days after the period ends
    # derived: level id -> place from the lowest threshold (folds ask this thousands of times)
    _ranks: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _by_id: dict[str, TierLevel] = field(default_factory=dict, init=False, repr=False, compare=False)
    # derived: rank -> the least value whose reached level ranks above it (folds skip below it)
    _steps: dict[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.levels, key=lambda lv: lv.threshold)
        self._ranks.update({lv.id: i for i, lv in enumerate(ordered)})
        self._by_id.update({lv.id: lv for lv in reversed(self.levels)})
        # ``reached`` is a step function of the value that rises at thresholds
        thresholds = sorted({lv.threshold for lv in self.levels if not lv.invite_only})
        for r in range(-1, len(self.levels)):
            for t in thresholds:
                if self.rank(lv.id if (lv := self.reached(t)) else None) > r:
                    self._steps[r] = t
                    break

    def level(self, tier_id: str | None) -> TierLevel | None:
        return self._by_id.get(tier_id) if tier_id is not None else None

    def reached(self, value: int) -> TierLevel | None:
        """The highest level (not invite-only) whose threshold ``value`` reaches."""
        best = None
        for lv in self.levels:
            if lv.invite_only:
                continue
            if value >= lv.threshold and (best is None or lv.threshold >= best.threshold):
                best = lv
        return best

    def rank(self, tier_id: str | None) -> int:
        return self._ranks.get(tier_id, -1) if tier_id is not None else -1

    def above_rank(self, rank: int) -> float:
        """The least value whose reached level ranks above ``rank`` (infinite if none does):
        below it, :meth:`reached` gives nothing above that rank."""
        return self._steps.get(rank, math.inf)


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    currency: str
    timezone: str = "UTC"
    rules: tuple[Rule, ...] = ()
    tiers: Tiers | None = None
    expiry: ExpiryPolicy | None = None
    pending_days: int = 0
    return_policy: str = "debt"  # debt | write_off
    earning_base: EarningBase = field(default_factory=EarningBase)
    caps: Caps = field(default_factory=Caps)
    rewards: tuple[RewardRule, ...] = ()
    reservation_ttl_minutes: int = 1440
    milestones: tuple[Milestone, ...] = ()
    referrer_points: int = 0
    referee_points: int = 0
    referral_min_spend: int = 0
    referral_max_per_week: int | None = 10  # more completions in 7 days go to review
    referral_max_days_to_first_purchase: int | None = None  # later first purchases go to review
    referral_milestones: tuple[tuple[int, int], ...] = ()  # (completed referrals, bonus points)
    points_payment: PointsPayment | None = None

    @property
    def expiry_months(self) -> int | None:
        return self.expiry.months if self.expiry and self.expiry.policy == "months" else None

    def reward(self, reward_id: str) -> RewardRule | None:
        return next((r for r in self.rewards if r.id == reward_id), None)

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def actions(self) -> frozenset[str]:
        return frozenset(r.action for r in self.rules if r.type == RuleType.ACTION and r.action)
