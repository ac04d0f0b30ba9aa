"""Earning: what an event is worth, line by line and rule by rule.

Arithmetic (the public contract)
--------------------------------
For each eligible purchase line, ``amount = quantity * unit_price - discount`` (the earning base
decides whether discounts, tax, shipping and gift cards count). A ``spend`` rule gives
``amount / per_amount * points`` exactly (a :class:`~fractions.Fraction`). Three kinds of
multiplier then apply to those spend points: product (item or category), tier (the tier held
when the event occurred) and promotion. Kinds multiply; within one kind the highest wins.
Fixed awards (``item_points``, ``order``, ``visit``, ``bonus``, ``action``) are not multiplied;
event-level fixed awards are spread over the lines in proportion to their amounts so that a
returned line takes back its share.

The event earns ``floor`` of the exact sum over its lines. Each line gets the floor of its own
exact points and the points left over go one each to the lines with the largest fractional parts
(ties: earlier line first), so lines add up to the event. Rule attribution uses the same
apportionment; a multiplier is attributed the points it *added*.

Invariants: points are never negative, and never decrease when a line's amount grows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

from patron.domain.program import CapMode, Program, Rule, RuleType, Targeting, TierLevel
from patron.domain.travel import flight_miles

EVENT_LINE = "event"


@dataclass(frozen=True, slots=True)
class Line:
    id: str
    quantity: int
    unit_price: int
    sku: str | None = None
    category: str | None = None
    discount: int = 0
    tax: int = 0
    gift_card: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    occurred_at: datetime
    lines: tuple[Line, ...] = ()
    location_id: str | None = None
    channel: str | None = None
    shipping: int = 0
    amount: int | None = None  # a visit's spend, for visit rules with a minimum
    distance_miles: float | None = None  # a flight's great-circle distance
    fare_class: str | None = None
    fare: int | None = None  # a flight's fare in minor units, for revenue-based miles


@dataclass(frozen=True, slots=True)
class Context:
    """What the earning rules need to know about the member, gathered by the caller."""

    tier: TierLevel | None = None
    # rule id -> prior awards in the rule's window: an action's limit period; for visit and
    # punch-card rules with once_per_day, that day at that location
    action_counts: Mapping[str, int] = field(default_factory=dict)
    earned_in_cap_period: int = 0
    segment: str | None = None  # the member's latest segment, for rules that target segments


@dataclass(frozen=True, slots=True)
class LineAward:
    line_id: str
    points: int
    amount: int  # the eligible amount: the line's qualifying spend
    quantity: int


@dataclass(frozen=True, slots=True)
class EarnResult:
    points: int
    lines: tuple[LineAward, ...]
    rules: tuple[tuple[str, int], ...]
    qualifying_amount: int
    capped: str | None = None  # "reduced" or "rejected" when a cap applied
    status_miles: int = 0  # a flight's miles before any status bonus: the status currency
    punched: tuple[str, ...] = ()  # punch-card rules this event punches


def line_amount(line: Line, program: Program) -> int:
    """The part of a line that earns, in minor units, never below zero."""
    base = program.earning_base
    if line.gift_card and not base.gift_cards:
        return 0
    amount = line.quantity * line.unit_price
    if not base.discounts:
        amount -= line.discount
    if base.tax:
        amount += line.tax
    return max(amount, 0)


def targeted(
    target: Targeting, event: Event, tier: TierLevel | None, tz: ZoneInfo, segment: str | None = None
) -> bool:
    """Whether a rule's targeting admits this event (times in the program's timezone)."""
    if target.segments and segment not in target.segments:
        return False
    if target.locations and event.location_id not in target.locations:
        return False
    if target.channels and event.channel not in target.channels:
        return False
    if target.tiers and (tier is None or tier.id not in target.tiers):
        return False
    if target.valid_from and event.occurred_at < target.valid_from:
        return False
    if target.valid_until and event.occurred_at >= target.valid_until:
        return False
    local = event.occurred_at.astimezone(tz)
    if target.weekdays and local.weekday() not in target.weekdays:
        return False
    t = local.time().replace(tzinfo=None)
    start, end = target.hours_from, target.hours_to
    if start is not None and end is not None and start > end:  # a window across midnight
        return t >= start or t < end
    if start is not None and t < start:
        return False
    return not (end is not None and t >= end)


def apportion(total: int, parts: Sequence[tuple[str, Fraction]]) -> dict[str, int]:
    """Largest remainder: floors, then one point each to the largest fractional parts.

    ``total`` must lie between the sum of the floors and that sum plus ``len(parts) - 1``.
    Ties go to the earlier part.
    """
    floors = {key: math.floor(value) for key, value in parts}
    left = total - sum(floors.values())
    order = sorted(range(len(parts)), key=lambda i: (-(parts[i][1] - floors[parts[i][0]]), i))
    for i in order[: max(left, 0)]:
        floors[parts[i][0]] += 1
    return floors


def _best(rules: Sequence[Rule]) -> Rule | None:
    best: Rule | None = None
    for rule in rules:
        if best is None or rule.multiplier > best.multiplier:
            best = rule
    return best


def _free_id(wanted: str, lines: list[Line]) -> str:
    """``wanted``, or ``wanted~1``, ``wanted~2``... when an item of the order already has it."""
    taken = {ln.id for ln in lines}
    found, n = wanted, 0
    while found in taken:
        n += 1
        found = f"{wanted}~{n}"
    return found


def earn(program: Program, event: Event, ctx: Context) -> EarnResult:
    """What ``event`` earns under ``program`` for a member in ``ctx``. Pure; writes nothing."""
    tz = ZoneInfo(program.timezone)
    rules = [r for r in program.rules if targeted(r.target, event, ctx.tier, tz, ctx.segment)]
    lines = list(event.lines) if event.type == "purchase" else []
    if event.type == "purchase" and event.shipping and program.earning_base.shipping:
        lines.append(
            Line(id=_free_id("shipping", lines), quantity=1, unit_price=event.shipping, category="shipping")
        )
    amounts = {ln.id: line_amount(ln, program) for ln in lines}
    total_amount = sum(amounts.values())

    # contributions[line][rule] = exact points; order of rules is kept for ties.
    contrib: dict[str, dict[str, Fraction]] = {ln.id: {} for ln in lines}

    def add(line_id: str, rule_id: str, value: Fraction) -> None:
        if value:
            bucket = contrib.setdefault(line_id, {})
            bucket[rule_id] = bucket.get(rule_id, Fraction(0)) + value

    spend_rules = [r for r in rules if r.type == RuleType.SPEND]
    product_mults = [r for r in rules if r.type == RuleType.MULTIPLIER and r.kind == "product"]
    promo = _best([r for r in rules if r.type == RuleType.MULTIPLIER and r.kind == "promotion"])
    tier = ctx.tier if ctx.tier is not None and ctx.tier.multiplier > 1 else None
    for ln in lines:
        amount = amounts[ln.id]
        spend = Fraction(0)
        for rule in spend_rules:
            if rule.matches_line(ln.sku, ln.category):
                part = Fraction(amount * rule.points, rule.per_amount)
                add(ln.id, rule.id, part)
                spend += part
        if spend:
            product = _best([r for r in product_mults if r.matches_line(ln.sku, ln.category)])
            for rule_id, mult in (
                (product.id if product else None, product.multiplier if product else None),
                (f"tier:{tier.id}" if tier else None, tier.multiplier if tier else None),
                (promo.id if promo else None, promo.multiplier if promo else None),
            ):
                if rule_id is not None and mult is not None and mult > 1:
                    add(ln.id, rule_id, spend * (mult - 1))
                    spend *= mult
        for rule in rules:
            if rule.type == RuleType.ITEM_POINTS and rule.matches_line(ln.sku, ln.category) and amount > 0:
                add(ln.id, rule.id, Fraction(rule.points * ln.quantity))

    event_awards: list[tuple[str, int]] = []
    flight_bonus: list[tuple[str, Fraction]] = []
    punched: list[str] = []
    status_miles = 0
    for rule in rules:
        if rule.type == RuleType.ORDER and event.type == "purchase":
            if total_amount > 0 and total_amount >= rule.min_spend:
                event_awards.append((rule.id, rule.points))
        elif rule.type == RuleType.BONUS and event.type == "purchase":
            if rule.threshold > 0 and total_amount >= rule.threshold:
                event_awards.append((rule.id, rule.points))
        elif rule.type == RuleType.VISIT and event.type == "visit":
            if (event.amount or 0) >= rule.min_spend and not (
                rule.once_per_day and ctx.action_counts.get(rule.id, 0) > 0
            ):
                event_awards.append((rule.id, rule.points))
        elif rule.type == RuleType.ACTION and event.type == rule.action:
            done = ctx.action_counts.get(rule.id, 0)
            if rule.limit_count is None or done < rule.limit_count:
                event_awards.append((rule.id, rule.points))
        elif rule.type == RuleType.DISTANCE and event.type == "flight":
            percent = dict(rule.percent_by_fare_class).get(event.fare_class or "")
            if percent and event.distance_miles:
                miles = flight_miles(event.distance_miles, percent)
                status_miles += miles
                event_awards.append((rule.id, miles))
                if rule.tier_bonus and ctx.tier is not None and ctx.tier.multiplier > 1:
                    flight_bonus.append((f"tier:{ctx.tier.id}", miles * (ctx.tier.multiplier - 1)))
        elif rule.type == RuleType.REVENUE and event.type == "flight" and event.fare:
            rates = dict(rule.miles_by_tier)
            rate = rates.get(ctx.tier.id, rates.get("")) if ctx.tier is not None else rates.get("")
            if rate:
                flight_bonus.append((rule.id, Fraction(event.fare * rate, rule.per_amount)))
        elif rule.type == RuleType.PUNCH_CARD and event.type in ("visit", "purchase"):
            spent = total_amount if event.type == "purchase" else (event.amount or 0)
            if spent >= rule.min_spend and not (rule.once_per_day and ctx.action_counts.get(rule.id, 0) > 0):
                punched.append(rule.id)
    for rule_id, points in event_awards:
        if total_amount > 0:
            for ln in lines:
                add(ln.id, rule_id, Fraction(points * amounts[ln.id], total_amount))
        else:
            add(EVENT_LINE, rule_id, Fraction(points))
    for rule_id, exact in flight_bonus:
        add(EVENT_LINE, rule_id, exact)

    exact_total = sum((v for c in contrib.values() for v in c.values()), Fraction(0))
    capped = None
    limit = _cap_limit(program, ctx)
    if limit is not None and exact_total > limit:
        if program.caps.mode == CapMode.REJECT:
            factor, capped = Fraction(0), "rejected"
        else:
            factor, capped = Fraction(limit) / exact_total, "reduced"
        contrib = {k: {r: v * factor for r, v in c.items()} for k, c in contrib.items()}
        exact_total = exact_total * factor

    total = math.floor(exact_total)
    line_exact = [(k, sum(c.values(), Fraction(0))) for k, c in contrib.items()]
    line_points = apportion(total, line_exact)
    rule_exact: dict[str, Fraction] = {}
    for c in contrib.values():
        for r, v in c.items():
            rule_exact[r] = rule_exact.get(r, Fraction(0)) + v
    rule_points = apportion(total, list(rule_exact.items()))
    quantities = {ln.id: ln.quantity for ln in lines}
    return EarnResult(
        points=total,
        lines=tuple(
            LineAward(k, line_points[k], amounts.get(k, 0), quantities.get(k, 1)) for k, _ in line_exact
        ),
        rules=tuple((r, p) for r, p in rule_points.items() if p),
        qualifying_amount=total_amount,
        capped=capped,
        status_miles=status_miles,
        punched=tuple(punched),
    )


def _cap_limit(program: Program, ctx: Context) -> int | None:
    limits = []
    if program.caps.per_event is not None:
        limits.append(program.caps.per_event)
    if program.caps.per_member is not None:
        limits.append(max(program.caps.per_member - ctx.earned_in_cap_period, 0))
    return min(limits) if limits else None
