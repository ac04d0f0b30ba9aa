"""The program JSON: validated by Pydantic, published as a JSON Schema, turned into domain data.

Every field has a default except ``name`` and ``currency``; see ``docs/program-reference.md``.
"""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from patron.domain import program as d
from patron.domain.expiry import ExpiryPolicy
from patron.domain.households import HouseholdSpec
from patron.domain.milestones import Milestone
from patron.domain.rewards import PointsPayment, RewardKind, RewardRule
from patron.services.instant import Instant
from patron.services.membership_settings import DividendSpec, MembershipPlanSpec, check_plans
from patron.services.notifications import NotificationsSpec
from patron.services.surveys import AtRiskSettings, SurveySettings

Slug = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")]
Points = Annotated[int, Field(ge=0, le=1_000_000_000)]
Money = Annotated[int, Field(ge=0, le=10**15)]
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Hours(Strict):
    from_: time = Field(alias="from", description="Local time of day the rule starts (inclusive).")
    to: time = Field(description="Local time of day the rule ends (exclusive).")

    @field_validator("from_", "to")
    @classmethod
    def _local(cls, value: time) -> time:
        if value.tzinfo is not None:  # hours are read on the program's clock, not at an offset
            raise ValueError("a local time of day such as 14:00, without an offset")
        return value

    @model_validator(mode="after")
    def _span(self) -> Hours:
        if self.from_ == self.to:
            raise ValueError("from and to are the same time: the window would never open")
        return self


#: The RFM segments (``analytics/segments.py``) that rules and rewards can target.
Segment = Literal["champions", "loyal", "promising", "need_attention", "at_risk", "hibernating", "lost"]


class RuleBase(Strict):
    id: Slug = Field(description="Stable id of the rule; appears in per-rule attribution.")
    name: str | None = None
    locations: list[str] = Field(default_factory=list, description="Only at these locations.")
    channels: list[str] = Field(default_factory=list, description="Only on these channels.")
    tiers: list[str] = Field(default_factory=list, description="Only for members in these tiers.")
    valid_from: Instant | None = None
    valid_until: Instant | None = None
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=list, description="Only on these weekdays (program timezone)."
    )
    hours: Hours | None = Field(default=None, description="Only at these times of day.")
    segments: list[Segment] = Field(
        default_factory=list,
        description="Only for members whose latest RFM segment (the `segments` job) is one of these.",
    )
    categories: list[str] = Field(default_factory=list)
    skus: list[str] = Field(default_factory=list)

    def target(self) -> d.Targeting:
        return d.Targeting(
            locations=tuple(self.locations),
            channels=tuple(self.channels),
            tiers=tuple(self.tiers),
            valid_from=self.valid_from,
            valid_until=self.valid_until,
            weekdays=tuple(WEEKDAYS.index(w) for w in self.weekdays),
            hours_from=self.hours.from_ if self.hours else None,
            hours_to=self.hours.to if self.hours else None,
            segments=tuple(self.segments),
        )

    def common(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "categories": tuple(self.categories),
            "skus": tuple(self.skus),
            "target": self.target(),
        }


class SpendRule(RuleBase):
    """``points`` per ``per_amount`` minor units of each eligible line (exact, floored per event)."""

    type: Literal["spend"]
    points: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    per_amount: Annotated[int, Field(ge=1, le=10**9)] = 100

    def to_domain(self) -> d.Rule:
        return d.Rule(type=d.RuleType.SPEND, points=self.points, per_amount=self.per_amount, **self.common())


class MultiplierRule(RuleBase):
    """Multiplies spend points: of matching lines (product) or of the whole event (promotion)."""

    type: Literal["multiplier"]
    multiplier: Annotated[Decimal, Field(ge=1, le=100)]
    kind: Literal["product", "promotion"] | None = Field(
        default=None,
        description="Defaults to product when categories or skus are given, else promotion.",
    )

    def to_domain(self) -> d.Rule:
        kind = self.kind or ("product" if self.categories or self.skus else "promotion")
        return d.Rule(
            type=d.RuleType.MULTIPLIER,
            multiplier=Fraction(self.multiplier),
            kind=kind,
            **self.common(),
        )


class ItemPointsRule(RuleBase):
    """Fixed ``points`` per unit of each line matching ``categories`` or ``skus``."""

    type: Literal["item_points"]
    points: Points

    def to_domain(self) -> d.Rule:
        return d.Rule(type=d.RuleType.ITEM_POINTS, points=self.points, **self.common())


class VisitRule(RuleBase):
    """Fixed ``points`` per ``visit`` event whose ``amount`` is at least ``min_spend``; at most
    one visit a day per location unless ``once_per_day`` is false."""

    type: Literal["visit"]
    points: Points
    min_spend: Money = 0
    once_per_day: bool = Field(True, description="One award per day (program timezone) per location.")

    def to_domain(self) -> d.Rule:
        return d.Rule(
            type=d.RuleType.VISIT,
            points=self.points,
            min_spend=self.min_spend,
            once_per_day=self.once_per_day,
            **self.common(),
        )


class PunchCardRule(RuleBase):
    """A punch card: each ``visit`` or ``purchase`` of at least ``min_spend`` is a punch, and
    every ``punches``-th punch issues the reward ``reward_id`` (free, valid ``valid_days``)."""

    type: Literal["punch_card"]
    punches: Annotated[int, Field(ge=1, le=1000, description="Punches that fill the card.")]
    reward_id: Slug
    min_spend: Money = 0
    once_per_day: bool = Field(True, description="One punch per day (program timezone) per location.")
    valid_days: Annotated[int, Field(ge=1, le=3650)] = Field(30, description="Days the reward stays valid.")

    def to_domain(self) -> d.Rule:
        return d.Rule(
            type=d.RuleType.PUNCH_CARD,
            punches=self.punches,
            reward_id=self.reward_id,
            min_spend=self.min_spend,
            once_per_day=self.once_per_day,
            valid_days=self.valid_days,
            **self.common(),
        )


class OrderRule(RuleBase):
    """Fixed ``points`` per purchase whose eligible amount is at least ``min_spend``."""

    type: Literal["order"]
    points: Points
    min_spend: Money = 0

    def to_domain(self) -> d.Rule:
        return d.Rule(type=d.RuleType.ORDER, points=self.points, min_spend=self.min_spend, **self.common())


class BonusRule(RuleBase):
    """``points`` once when a purchase's eligible amount reaches ``threshold``."""

    type: Literal["bonus"]
    points: Points
    threshold: Annotated[int, Field(ge=1, le=10**15)]

    def to_domain(self) -> d.Rule:
        return d.Rule(type=d.RuleType.BONUS, points=self.points, threshold=self.threshold, **self.common())


class Limit(Strict):
    count: Annotated[int, Field(ge=1, le=10_000)] = 1
    per: Literal["lifetime", "year", "month", "day"] = "lifetime"


class ActionRule(RuleBase):
    """``points`` for the custom event type ``action``, at most ``limit.count`` per ``limit.per``."""

    type: Literal["action"]
    action: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    points: Points
    limit: Limit | None = None

    @field_validator("action")
    @classmethod
    def _not_builtin(cls, v: str) -> str:
        if v in {"purchase", "refund", "cancel", "visit", "flight"}:
            raise ValueError(f"{v!r} is a built-in event type, not a custom action")
        return v

    def to_domain(self) -> d.Rule:
        return d.Rule(
            type=d.RuleType.ACTION,
            points=self.points,
            action=self.action,
            limit_count=self.limit.count if self.limit else None,
            limit_per=d.Period(self.limit.per) if self.limit else d.Period.LIFETIME,
            **self.common(),
        )


class DistanceRule(RuleBase):
    """Miles for flights: great-circle distance times a percentage by fare class."""

    type: Literal["distance"]
    percent_by_fare_class: dict[str, Annotated[int, Field(ge=0, le=1000)]]
    tier_bonus: bool = Field(
        False,
        description="Status bonus: award miles times the multiplier of the tier held when flying. "
        "Status miles (the tier metric `status_miles`) never include the bonus.",
    )

    def to_domain(self) -> d.Rule:
        return d.Rule(
            type=d.RuleType.DISTANCE,
            percent_by_fare_class=tuple(sorted(self.percent_by_fare_class.items())),
            tier_bonus=self.tier_bonus,
            **self.common(),
        )


class RevenueRule(RuleBase):
    """Revenue-based miles: ``miles_by_tier[tier]`` miles per ``per_amount`` minor units of a
    flight's ``fare``, by the tier held at the time of travel (``"default"``: without a tier)."""

    type: Literal["revenue"]
    miles_by_tier: Annotated[dict[str, Annotated[int, Field(ge=0, le=1000)]], Field(min_length=1)]
    per_amount: Annotated[int, Field(ge=1, le=10**9)] = 100

    def to_domain(self) -> d.Rule:
        rates = tuple(sorted(("" if k == "default" else k, v) for k, v in self.miles_by_tier.items()))
        return d.Rule(
            type=d.RuleType.REVENUE, miles_by_tier=rates, per_amount=self.per_amount, **self.common()
        )


RuleSpec = Annotated[
    SpendRule
    | MultiplierRule
    | ItemPointsRule
    | VisitRule
    | OrderRule
    | BonusRule
    | ActionRule
    | DistanceRule
    | RevenueRule
    | PunchCardRule,
    Field(discriminator="type"),
]


class TierLevelSpec(Strict):
    id: Slug
    name: Annotated[str, Field(min_length=1, max_length=100)]
    threshold: Annotated[int, Field(ge=0, le=10**15)]
    multiplier: Annotated[Decimal, Field(ge=1, le=100)] = Decimal(1)
    permanent: bool = Field(False, description="Once held, never lost.")
    invite_only: bool = Field(False, description="Only given by assignment, never by threshold.")
    perks: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list)
    discount_percent: Annotated[int, Field(ge=0, le=100)] = 0


class TiersSpec(Strict):
    metric: Literal["qualifying_spend", "status_points", "visits", "status_miles", "segments"] = Field(
        "qualifying_spend",
        description="qualifying_spend (minor units), status_points (points earned), visits, "
        "status_miles (flight miles before any status bonus) or segments (flights).",
    )
    period: Literal["calendar_year", "rolling_12_months", "anniversary"] = "calendar_year"
    downgrade: Literal["none", "one_level", "recompute"] = "one_level"
    grace_days: Annotated[int, Field(ge=0, le=365)] = Field(
        0, description="Days after a period ends before a downgrade."
    )
    levels: Annotated[list[TierLevelSpec], Field(min_length=1, max_length=50)]

    @model_validator(mode="after")
    def _unique(self) -> TiersSpec:
        ids = [lv.id for lv in self.levels]
        if len(set(ids)) != len(ids):
            raise ValueError("tier level ids must be unique")
        thresholds = [lv.threshold for lv in self.levels]
        if len(set(thresholds)) != len(thresholds):
            raise ValueError("tier thresholds must be distinct: two levels with one threshold overlap")
        if thresholds != sorted(thresholds):
            raise ValueError("tier levels must be listed from the lowest threshold to the highest")
        if self.grace_days > 365:
            raise ValueError("grace_days cannot be longer than a qualification period (365 days)")
        return self


class ExpiryRule(Strict):
    policy: Literal["months", "end_of_year", "inactivity", "never"] = Field(
        "months",
        description="months: N months after earning; end_of_year: end of the calendar year `years` "
        "after earning; inactivity: the whole balance N months after the last activity; never.",
    )
    months: Annotated[int, Field(ge=1, le=1200)] | None = None
    years: Annotated[int, Field(ge=0, le=100)] = 0

    @model_validator(mode="after")
    def _needs(self) -> ExpiryRule:
        if self.policy in ("months", "inactivity") and self.months is None:
            raise ValueError(f"expiry policy {self.policy} needs months")
        return self

    def rule(self) -> ExpiryPolicy:
        return ExpiryPolicy(self.policy, self.months or 0, self.years)


class ExpirySpec(ExpiryRule):
    by_tier: dict[str, ExpiryRule] = Field(
        default_factory=dict, description="A different policy for points earned while in these tiers."
    )

    def to_domain(self) -> ExpiryPolicy:
        base = self.rule()
        return ExpiryPolicy(
            base.policy,
            base.months,
            base.years,
            tuple((t, r.rule()) for t, r in sorted(self.by_tier.items())),
        )


class EarningBaseSpec(Strict):
    discounts: bool = Field(False, description="Earn on prices before discounts.")
    tax: bool = Field(False, description="Tax earns.")
    shipping: bool = Field(False, description="Shipping earns.")
    gift_cards: bool = Field(False, description="Gift-card purchases earn.")


class CapsSpec(Strict):
    per_event: Points | None = None
    per_member: Points | None = None
    per_member_period: Literal["day", "month", "year", "lifetime"] = "day"
    mode: Literal["reduce", "reject"] = "reduce"


class FixedDiscount(Strict):
    amount: Money = Field(description="Discount in minor units of the program currency.")


class PercentDiscount(Strict):
    percent: Annotated[int, Field(ge=1, le=100)]
    max_amount: Money | None = Field(None, description="Cap on the discount, minor units.")


class FreeProduct(Strict):
    sku: str | None = None
    category: str | None = None


class NoSettings(Strict):
    pass


class StoreCredit(Strict):
    amount: Money


class EventTicket(Strict):
    event: str | None = Field(None, description="Which event the ticket admits to.")


class TravelAward(Strict):
    route: str | None = None
    cabin: str | None = None


class PartnerPerk(Strict):
    partner: Annotated[str, Field(min_length=1, max_length=200)]
    description: str | None = None


class PhysicalGift(Strict):
    sku: str | None = None
    needs_address: bool = True


#: The registry of reward kinds: each kind and the settings it takes.
REWARD_KINDS: dict[str, type[Strict]] = {
    "fixed_discount": FixedDiscount,
    "percent_discount": PercentDiscount,
    "free_product": FreeProduct,
    "free_shipping": NoSettings,
    "store_credit": StoreCredit,
    "event_ticket": EventTicket,
    "travel_award": TravelAward,
    "partner_perk": PartnerPerk,
    "physical_gift": PhysicalGift,
}


class PointsPaymentSpec(Strict):
    """Pay with points for part of an order: ``points`` points are worth ``per_amount`` minor units."""

    points: Annotated[int, Field(ge=1, le=10**9)] = 100
    per_amount: Annotated[int, Field(ge=1, le=10**9)] = 100
    max_percent: Annotated[int, Field(ge=1, le=100)] = Field(100, description="Cap as a share of the order.")
    min_points: Annotated[int, Field(ge=1, le=10**9)] = 1


class RewardLimit(Strict):
    count: Annotated[int, Field(ge=1, le=10_000)]
    per: Literal["lifetime", "year", "month", "day"] = "lifetime"


class RewardSpec(Strict):
    """A reward of the catalogue. ``type`` picks the kind; ``settings`` are that kind's own."""

    id: Slug
    name: Annotated[str, Field(min_length=1, max_length=200)]
    type: Literal[
        "fixed_discount",
        "percent_discount",
        "free_product",
        "free_shipping",
        "store_credit",
        "event_ticket",
        "travel_award",
        "partner_perk",
        "physical_gift",
    ] = "free_product"
    cost: Annotated[int, Field(ge=1, le=10**9)]
    cost_by_tier: dict[str, Annotated[int, Field(ge=1, le=10**9)]] = Field(
        default_factory=dict, description="A different points cost for members of these tiers."
    )
    tiers: list[str] = Field(default_factory=list, description="Only members of these tiers may redeem.")
    segments: list[Segment] = Field(
        default_factory=list, description="Only members whose latest RFM segment is one of these may redeem."
    )
    valid_from: Instant | None = None
    valid_until: Instant | None = None
    visible_from: Instant | None = None
    visible_until: Instant | None = None
    stock: Annotated[int, Field(ge=0, le=10**9)] | None = Field(None, description="Total available.")
    limit: RewardLimit | None = Field(None, description="At most count redemptions per member per period.")
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _settings(self) -> RewardSpec:
        model = REWARD_KINDS[self.type]
        self.settings = model.model_validate(self.settings).model_dump(exclude_none=True)
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self

    def to_domain(self) -> RewardRule:
        return RewardRule(
            id=self.id,
            name=self.name,
            kind=RewardKind(self.type),
            cost=self.cost,
            cost_by_tier=tuple(sorted(self.cost_by_tier.items())),
            tiers=tuple(self.tiers),
            segments=tuple(self.segments),
            valid_from=self.valid_from,
            valid_until=self.valid_until,
            visible_from=self.visible_from,
            visible_until=self.visible_until,
            stock=self.stock,
            limit_per_member=self.limit.count if self.limit else None,
            limit_period=self.limit.per if self.limit else "lifetime",
            settings=tuple(sorted(self.settings.items())),
        )


class MilestoneSpec(Strict):
    """A lifetime achievement that grants ``points`` once."""

    id: Slug
    name: Annotated[str, Field(min_length=1, max_length=200)]
    type: Literal["purchase_count", "lifetime_spend", "anniversary"]
    threshold: Annotated[int, Field(ge=1, le=10**15)] | None = Field(
        None, description="Purchases (purchase_count) or minor units of spend (lifetime_spend)."
    )
    years: Annotated[int, Field(ge=1, le=100)] | None = Field(None, description="For anniversary.")
    points: Points = 0
    ask: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]] = Field(
        default_factory=list, description="Details to ask the member for, e.g. tshirt_size."
    )

    @model_validator(mode="after")
    def _needs(self) -> MilestoneSpec:
        if self.type == "anniversary" and self.years is None:
            raise ValueError("an anniversary milestone needs years")
        if self.type != "anniversary" and self.threshold is None:
            raise ValueError(f"a {self.type} milestone needs a threshold")
        return self

    def to_domain(self) -> Milestone:
        return Milestone(
            self.id, self.name, self.type, self.threshold or 0, self.years or 0, self.points, tuple(self.ask)
        )


class ReferralSpec(Strict):
    """Double-sided referral rewards, credited on the referee's first qualifying purchase."""

    referrer_points: Points = 0
    referee_points: Points = 0
    min_spend: Money = Field(0, description="The first purchase must be at least this (minor units).")
    max_per_week: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        10, description="More completed referrals than this in 7 days go to review; null: no limit."
    )
    max_days_to_first_purchase: Annotated[int, Field(ge=0, le=3650)] | None = Field(
        None, description="A referee enrolled longer than this before the first purchase goes to review."
    )

    class Milestone(Strict):
        """A bonus for the referrer when their completed referrals reach ``count``."""

        count: Annotated[int, Field(ge=1, le=100_000)]
        points: Points

    milestones: Annotated[list[Milestone], Field(max_length=100)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_milestones(self) -> ReferralSpec:
        counts = [m.count for m in self.milestones]
        if len(counts) != len(set(counts)):
            raise ValueError("referral milestones must have distinct counts")
        return self


class ProgramSpec(Strict):
    """A loyalty program. Only ``name`` and ``currency`` are required."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")]
    timezone: str = Field("UTC", description="IANA timezone for periods, days and hours.")
    points_name: str = "points"
    earning_rules: Annotated[list[RuleSpec], Field(max_length=500)] = Field(default_factory=list)
    tiers: TiersSpec | None = None
    expiry: ExpirySpec | None = None
    pending_days: Annotated[int, Field(ge=0, le=365)] = 0
    return_policy: Literal["debt", "write_off"] = Field(
        "debt",
        description="When a refund takes back more than the member has: record the shortfall "
        "as debt repaid from later earnings, or write it off to program adjustments.",
    )
    earning_base: EarningBaseSpec = Field(default_factory=EarningBaseSpec)
    caps: CapsSpec = Field(default_factory=CapsSpec)
    rewards: Annotated[list[RewardSpec], Field(max_length=1000)] = Field(default_factory=list)
    reservation_ttl_minutes: Annotated[int, Field(ge=1, le=60 * 24 * 90)] = Field(
        1440, description="How long a reserved reward holds its points before they go back."
    )
    referrals: ReferralSpec | None = None
    households: HouseholdSpec | None = Field(
        None, description="Family pooling; absent: households are not offered."
    )
    milestones: Annotated[list[MilestoneSpec], Field(max_length=200)] = Field(default_factory=list)
    points_payment: PointsPaymentSpec | None = Field(None, description="Let members pay with points.")
    notifications: NotificationsSpec = Field(
        default_factory=NotificationsSpec, description="Member emails: which go, when, and their templates."
    )
    membership_plans: Annotated[list[MembershipPlanSpec], Field(max_length=50)] = Field(
        default_factory=list, description="Paid membership plans (fees in money, never points)."
    )
    dividends: DividendSpec | None = Field(None, description="The yearly co-op dividend, as store credit.")
    surveys: SurveySettings = Field(
        default_factory=SurveySettings, description="Survey follow-up cases and points for answering."
    )
    at_risk: AtRiskSettings = Field(
        default_factory=AtRiskSettings, description="Who the `at-risk` job flags; whether it opens cases."
    )

    @model_validator(mode="after")
    def _membership_plans(self) -> ProgramSpec:
        tiers = {lv.id for lv in self.tiers.levels} if self.tiers else None
        check_plans(self.membership_plans, self.dividends, tiers)
        return self

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r}")
        return v

    @model_validator(mode="after")
    def _rule_references(self) -> ProgramSpec:
        rewards = {r.id for r in self.rewards}
        levels = {lv.id for lv in self.tiers.levels} if self.tiers else set()
        for rule in self.earning_rules:
            if isinstance(rule, PunchCardRule) and rule.reward_id not in rewards:
                raise ValueError(f"punch card {rule.id!r}: the program has no reward {rule.reward_id!r}")
            if isinstance(rule, RevenueRule):
                unknown = sorted(set(rule.miles_by_tier) - levels - {"default"})
                if unknown:
                    raise ValueError(f"revenue rule {rule.id!r}: unknown tier(s) {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _expiry_tiers(self) -> ProgramSpec:
        if self.expiry and self.expiry.by_tier:
            known = {lv.id for lv in self.tiers.levels} if self.tiers else set()
            unknown = sorted(set(self.expiry.by_tier) - known)
            if unknown:
                raise ValueError(f"expiry.by_tier names unknown tier(s): {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> ProgramSpec:
        for label, ids in (
            ("earning rule", [r.id for r in self.earning_rules]),
            ("reward", [r.id for r in self.rewards]),
            ("milestone", [m.id for m in self.milestones]),
        ):
            dup = {i for i in ids if ids.count(i) > 1}
            if dup:
                raise ValueError(f"duplicate {label} id(s): {', '.join(sorted(dup))}")
        return self

    def to_domain(self) -> d.Program:
        tiers = None
        if self.tiers:
            tiers = d.Tiers(
                metric=self.tiers.metric,
                period=self.tiers.period,
                downgrade=self.tiers.downgrade,
                levels=tuple(
                    d.TierLevel(
                        lv.id,
                        lv.name,
                        lv.threshold,
                        Fraction(lv.multiplier),
                        lv.permanent,
                        lv.invite_only,
                        tuple(lv.perks),
                        lv.discount_percent,
                    )
                    for lv in self.tiers.levels
                ),
                grace_days=self.tiers.grace_days,
            )
        caps = self.caps
        return d.Program(
            name=self.name,
            currency=self.currency,
            timezone=self.timezone,
            rules=tuple(r.to_domain() for r in self.earning_rules),
            tiers=tiers,
            expiry=self.expiry.to_domain() if self.expiry else None,
            pending_days=self.pending_days,
            return_policy=self.return_policy,
            earning_base=d.EarningBase(**self.earning_base.model_dump()),
            caps=d.Caps(
                per_event=caps.per_event,
                per_member=caps.per_member,
                per_member_period=d.Period(caps.per_member_period),
                mode=d.CapMode(caps.mode),
            ),
            rewards=tuple(r.to_domain() for r in self.rewards),
            reservation_ttl_minutes=self.reservation_ttl_minutes,
            milestones=tuple(m.to_domain() for m in self.milestones),
            referrer_points=self.referrals.referrer_points if self.referrals else 0,
            referee_points=self.referrals.referee_points if self.referrals else 0,
            referral_min_spend=self.referrals.min_spend if self.referrals else 0,
            referral_max_per_week=self.referrals.max_per_week if self.referrals else 10,
            referral_max_days_to_first_purchase=(
                self.referrals.max_days_to_first_purchase if self.referrals else None
            ),
            referral_milestones=(
                tuple((m.count, m.points) for m in self.referrals.milestones) if self.referrals else ()
            ),
            points_payment=PointsPayment(**self.points_payment.model_dump()) if self.points_payment else None,
        )


def program_json_schema() -> dict[str, Any]:
    return ProgramSpec.model_json_schema(by_alias=True)
