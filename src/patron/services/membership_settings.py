"""Program settings of paid membership and the co-op dividend (``membership_plans``,
``dividends``). ``program_schema.ProgramSpec`` embeds these models; this module imports neither
it nor any service, so that there is no import cycle."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from patron.domain import dividends as dividend_rules
from patron.domain import memberships as rules

Slug = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")]
Money = Annotated[int, Field(ge=0, le=10**15)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MembershipPlanSpec(_Strict):
    """A paid membership plan. While a membership of it is trialing or paid up, the member holds
    `tier` (a floor: they still climb above it by qualifying) and `benefits`."""

    id: Slug
    name: Annotated[str, Field(min_length=1, max_length=200)]
    fee: Money = Field(description="Minor units of `currency`, per period (once for lifetime).")
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")]
    interval: Literal["lifetime", "year", "month"] = Field(
        description="`lifetime`: one fee, never renews; `year`/`month`: renews by calendar "
        "years/months from the first payment."
    )
    trial_days: Annotated[int, Field(ge=0, le=365)] = 0
    grace_days: Annotated[int, Field(ge=0, le=365)] = Field(
        0, description="Days a renewal may stay unpaid (`past_due`) before the membership lapses."
    )
    tier: Slug | None = Field(None, description="A tier id of the program, held while the plan is in force.")
    benefits: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=50)] = (
        Field(default_factory=list)
    )

    def to_domain(self) -> rules.Plan:
        return rules.Plan(
            id=self.id,
            name=self.name,
            fee=self.fee,
            currency=self.currency,
            interval=rules.Interval(self.interval),
            trial_days=self.trial_days,
            grace_days=self.grace_days,
            tier=self.tier,
            benefits=tuple(self.benefits),
        )


class DividendSpec(_Strict):
    """The co-op dividend: once a year, `percent` of each eligible member's eligible spend of the
    previous calendar year (program timezone) is credited as store credit in the program currency."""

    percent: Annotated[Decimal, Field(gt=0, le=100, max_digits=9, decimal_places=4)] = Field(
        description='A decimal string, e.g. "2.5" for 2.5%.'
    )
    min_spend: Money = Field(0, description="Eligible spend (minor units) a member needs in the year.")
    full_price_only: bool = Field(True, description="Count only lines bought without a discount.")
    plans: Annotated[list[Slug], Field(max_length=50)] = Field(
        default_factory=list,
        description="Membership plans whose paying members are eligible; empty: every member.",
    )

    def to_domain(self) -> dividend_rules.Rule:
        return dividend_rules.Rule(
            percent=self.percent,
            min_spend=self.min_spend,
            full_price_only=self.full_price_only,
            plans=tuple(self.plans),
        )


def check_plans(
    plans: list[MembershipPlanSpec], dividends: DividendSpec | None, tiers: set[str] | None
) -> None:
    """Cross-field checks of a program: plan ids unique, each plan's tier one of the program's
    tiers, the dividend's plans among the program's plans. Raises ``ValueError``."""
    ids = [p.id for p in plans]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"duplicate membership plan id(s): {', '.join(dup)}")
    for plan in plans:
        if plan.tier is not None and plan.tier not in (tiers or set()):
            raise ValueError(
                f"membership plan {plan.id!r} grants tier {plan.tier!r}, which the program lacks"
            )
    if dividends is not None:
        unknown = sorted(set(dividends.plans) - set(ids))
        if unknown:
            raise ValueError(f"dividends.plans names unknown membership plan(s): {', '.join(unknown)}")


def plans_of(body: dict[str, Any]) -> dict[str, rules.Plan]:
    """The plans of a stored program body, by id."""
    return {
        p.id: p.to_domain()
        for p in (MembershipPlanSpec.model_validate(x) for x in body.get("membership_plans") or [])
    }


def dividend_of(body: dict[str, Any]) -> DividendSpec | None:
    raw = body.get("dividends")
    return None if raw is None else DividendSpec.model_validate(raw)
