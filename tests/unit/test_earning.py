"""Earning: the contract's arithmetic, worked by hand, and its invariants under random programs."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, time
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from patron.domain.earning import EVENT_LINE, Context, EarnResult, Event, Line, apportion, earn
from patron.domain.program import (
    CapMode,
    Caps,
    EarningBase,
    Period,
    Program,
    Rule,
    RuleType,
    Targeting,
    TierLevel,
)

AT = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
BASE = Rule("base", RuleType.SPEND, points=1, per_amount=100)
COFFEE_2X = Rule("coffee-2x", RuleType.MULTIPLIER, multiplier=Fraction(2), categories=("coffee",))
GOLD = TierLevel("gold", "Gold", 50000, multiplier=Fraction(3, 2))
SILVER = TierLevel("silver", "Silver", 20000)
NO_CTX = Context()


def program(*rules: Rule, **kw: Any) -> Program:
    return Program(name="Bean Rewards", currency="USD", rules=rules, **kw)


def purchase(*lines: Line, at: datetime = AT, **kw: Any) -> Event:
    return Event(type="purchase", occurred_at=at, lines=lines, **kw)


LATTES = Line("l1", quantity=2, unit_price=450, sku="LATTE", category="coffee")
MUG = Line("l2", quantity=1, unit_price=1500, sku="MUG", category="merch")


def lines_of(result: EarnResult) -> dict[str, int]:
    return {la.line_id: la.points for la in result.lines}


# --------------------------------------------------------------------------------------------------
# The contract's example
# --------------------------------------------------------------------------------------------------


def test_contract_example_two_lattes_and_a_mug() -> None:
    result = earn(program(BASE, COFFEE_2X), purchase(LATTES, MUG), NO_CTX)
    # lattes: 900 / 100 * 1 = 9, doubled = 18; mug: 1500 / 100 = 15
    assert result.points == 33
    assert lines_of(result) == {"l1": 18, "l2": 15}
    # base earned 9 + 15; the coffee multiplier *added* 9
    assert dict(result.rules) == {"base": 24, "coffee-2x": 9}
    assert result.qualifying_amount == 2400
    assert result.capped is None


def test_contract_example_for_a_gold_member() -> None:
    result = earn(program(BASE, COFFEE_2X), purchase(LATTES, MUG), Context(tier=GOLD))
    # exact: lattes 18 * 1.5 = 27, mug 15 * 1.5 = 22.5 -> event floor(49.5) = 49
    assert result.points == 49
    # floors 27 + 22 already make 49: no point is left over for the mug's .5
    assert lines_of(result) == {"l1": 27, "l2": 22}
    # tier:gold added 9 on the lattes and 7.5 on the mug = 16.5; floors 24 + 9 + 16 = 49
    assert dict(result.rules) == {"base": 24, "coffee-2x": 9, "tier:gold": 16}


def test_leftover_points_go_to_the_largest_fractional_parts() -> None:
    lines = (
        Line("a", 1, 150, category="merch"),  # 1.5
        Line("b", 1, 150, category="merch"),  # 1.5
        Line("c", 1, 170, category="merch"),  # 1.7
    )
    result = earn(program(BASE), purchase(*lines), NO_CTX)
    # floor(4.7) = 4; floors 1+1+1 = 3; the one left over goes to c (.7)
    assert result.points == 4
    assert lines_of(result) == {"a": 1, "b": 1, "c": 2}

    gold = earn(program(BASE), purchase(*lines), Context(tier=GOLD))
    # 2.25 + 2.25 + 2.55 = 7.05 -> 7; floors 2+2+2 = 6; c has the largest fraction (.55)
    assert gold.points == 7
    assert lines_of(gold) == {"a": 2, "b": 2, "c": 3}


def test_ties_for_a_leftover_point_go_to_the_earlier_line() -> None:
    lines = (Line("a", 1, 150), Line("b", 1, 150), Line("c", 1, 100))
    result = earn(program(BASE), purchase(*lines), NO_CTX)
    # 1.5 + 1.5 + 1 = 4; floors 3; a and b tie at .5: a (earlier) takes it
    assert lines_of(result) == {"a": 2, "b": 1, "c": 1}
    swapped = earn(program(BASE), purchase(lines[1], lines[0], lines[2]), NO_CTX)
    assert lines_of(swapped) == {"b": 2, "a": 1, "c": 1}


# --------------------------------------------------------------------------------------------------
# Earning base
# --------------------------------------------------------------------------------------------------


def test_discounts_are_excluded_by_default_and_included_on_request() -> None:
    line = Line("l1", 2, 500, discount=200)
    assert earn(program(BASE), purchase(line), NO_CTX).points == 8  # 1000 - 200
    gross = program(BASE, earning_base=EarningBase(discounts=True))
    assert earn(gross, purchase(line), NO_CTX).points == 10
    assert earn(program(BASE), purchase(line), NO_CTX).qualifying_amount == 800


def test_a_discount_larger_than_the_line_earns_nothing_never_negative() -> None:
    result = earn(program(BASE), purchase(Line("l1", 1, 300, discount=900), MUG), NO_CTX)
    assert lines_of(result) == {"l1": 0, "l2": 15}
    assert result.points == 15
    assert result.qualifying_amount == 1500


def test_tax_is_excluded_by_default() -> None:
    line = Line("l1", 1, 1000, tax=250)
    assert earn(program(BASE), purchase(line), NO_CTX).points == 10
    with_tax = program(BASE, earning_base=EarningBase(tax=True))
    assert earn(with_tax, purchase(line), NO_CTX).points == 12


def test_gift_card_lines_earn_nothing_and_do_not_qualify() -> None:
    card = Line("gc", 1, 5000, sku="GIFT", gift_card=True)
    result = earn(program(BASE), purchase(card, MUG), NO_CTX)
    assert result.points == 15
    assert lines_of(result) == {"gc": 0, "l2": 15}
    assert result.qualifying_amount == 1500
    # an order bonus is not spread onto the gift card either
    order = Rule("order", RuleType.ORDER, points=10)
    with_order = earn(program(BASE, order), purchase(card, MUG), NO_CTX)
    assert lines_of(with_order) == {"gc": 0, "l2": 25}


def test_shipping_earns_only_when_enabled() -> None:
    off = earn(program(BASE), purchase(MUG, shipping=500), NO_CTX)
    assert off.points == 15
    assert off.qualifying_amount == 1500
    on = earn(program(BASE, earning_base=EarningBase(shipping=True)), purchase(MUG, shipping=500), NO_CTX)
    assert on.points == 20
    assert on.qualifying_amount == 2000
    assert sum(la.points for la in on.lines) == 20


# --------------------------------------------------------------------------------------------------
# Multipliers
# --------------------------------------------------------------------------------------------------


def test_within_a_kind_the_highest_multiplier_wins_and_kinds_multiply() -> None:
    triple = Rule("coffee-3x", RuleType.MULTIPLIER, multiplier=Fraction(3), categories=("coffee",))
    promo = Rule("double-day", RuleType.MULTIPLIER, multiplier=Fraction(2), kind="promotion")
    latte = Line("l1", 1, 1000, category="coffee")
    # product: max(2, 3) = 3, not 6
    assert earn(program(BASE, COFFEE_2X, triple), purchase(latte), NO_CTX).points == 30
    # product 3 * tier 1.5 * promotion 2 = 9x
    result = earn(program(BASE, COFFEE_2X, triple, promo), purchase(latte), Context(tier=GOLD))
    assert result.points == 90
    rules = dict(result.rules)
    assert "coffee-2x" not in rules
    assert rules == {"base": 10, "coffee-3x": 20, "tier:gold": 15, "double-day": 45}


def test_product_multiplier_only_touches_matching_lines() -> None:
    result = earn(program(BASE, COFFEE_2X), purchase(MUG), NO_CTX)
    assert result.points == 15
    assert dict(result.rules) == {"base": 15}


def test_tier_without_multiplier_changes_nothing() -> None:
    assert earn(program(BASE), purchase(MUG), Context(tier=SILVER)).points == 15


def test_fixed_awards_are_not_multiplied_and_are_spread_by_amount() -> None:
    bonus = Rule("big-basket", RuleType.BONUS, points=100, threshold=2000)
    order = Rule("order", RuleType.ORDER, points=5, min_spend=1000)
    cup = Rule("cup", RuleType.ITEM_POINTS, points=7, skus=("LATTE",))
    result = earn(program(BASE, bonus, order, cup), purchase(LATTES, MUG), Context(tier=GOLD))
    # spend: (9 + 15) * 1.5 = 36; item points 2 * 7 = 14; bonus 100; order 5
    assert result.points == 36 + 14 + 100 + 5
    assert dict(result.rules)["big-basket"] == 100
    assert dict(result.rules)["cup"] == 14
    # lattes: 13.5 spend + 14 item points + 105 * 900 / 2400 = 39.375 of the spread bonus and order
    lattes_exact = Fraction(27, 2) + 14 + Fraction(105 * 900, 2400)
    assert lines_of(result)["l1"] in (math.floor(lattes_exact), math.floor(lattes_exact) + 1)


def test_bonus_and_order_rules_need_their_thresholds() -> None:
    bonus = Rule("big-basket", RuleType.BONUS, points=100, threshold=2401)
    order = Rule("order", RuleType.ORDER, points=5, min_spend=2401)
    assert earn(program(BASE, bonus, order), purchase(LATTES, MUG), NO_CTX).points == 24
    at_threshold = earn(program(BASE, replace(bonus, threshold=2400)), purchase(LATTES, MUG), NO_CTX)
    assert at_threshold.points == 124


def test_visit_rule_needs_its_minimum_spend() -> None:
    visit = Rule("visit", RuleType.VISIT, points=10, min_spend=500)
    prog = program(BASE, visit)
    assert earn(prog, Event("visit", AT, amount=499), NO_CTX).points == 0
    result = earn(prog, Event("visit", AT, amount=500), NO_CTX)
    assert result.points == 10
    assert lines_of(result) == {EVENT_LINE: 10}
    # a visit is not a purchase: spend rules do not apply to it
    assert earn(prog, Event("visit", AT, lines=(MUG,), amount=1500), NO_CTX).points == 10


def test_distance_rule_earns_percent_of_miles_by_fare_class() -> None:
    miles = Rule("miles", RuleType.DISTANCE, percent_by_fare_class=(("Y", 100), ("J", 150)))
    prog = program(BASE, miles)
    flight = Event("flight", AT, distance_miles=3450.6, fare_class="J")
    assert earn(prog, flight, NO_CTX).points == 5175  # floor(3450.6 * 1.5) = floor(5175.9)
    assert earn(prog, replace(flight, fare_class="Y"), NO_CTX).points == 3450
    assert earn(prog, replace(flight, fare_class="F"), NO_CTX).points == 0


# --------------------------------------------------------------------------------------------------
# Action limits and caps
# --------------------------------------------------------------------------------------------------


def test_action_rule_awards_until_its_limit_count() -> None:
    review = Rule("review", RuleType.ACTION, points=50, action="review", limit_count=2, limit_per=Period.YEAR)
    prog = program(BASE, review)
    event = Event("review", AT)
    assert earn(prog, event, Context(action_counts={"review": 0})).points == 50
    assert earn(prog, event, Context(action_counts={"review": 1})).points == 50
    assert earn(prog, event, Context(action_counts={"review": 2})).points == 0
    assert earn(prog, Event("share", AT), NO_CTX).points == 0
    unlimited = program(replace(review, limit_count=None))
    assert earn(unlimited, event, Context(action_counts={"review": 1000})).points == 50
    assert prog.actions() == frozenset({"review"})


def test_per_event_cap_reduces_to_the_cap() -> None:
    capped = program(BASE, COFFEE_2X, caps=Caps(per_event=20, mode=CapMode.REDUCE))
    result = earn(capped, purchase(LATTES, MUG), NO_CTX)
    assert result.points == 20
    assert result.capped == "reduced"
    assert sum(lines_of(result).values()) == 20
    assert sum(p for _, p in result.rules) == 20
    # under the cap nothing changes
    roomy = program(BASE, COFFEE_2X, caps=Caps(per_event=33))
    assert earn(roomy, purchase(LATTES, MUG), NO_CTX).points == 33
    assert earn(roomy, purchase(LATTES, MUG), NO_CTX).capped is None


def test_per_event_cap_in_reject_mode_earns_nothing() -> None:
    capped = program(BASE, COFFEE_2X, caps=Caps(per_event=20, mode=CapMode.REJECT))
    result = earn(capped, purchase(LATTES, MUG), NO_CTX)
    assert result.points == 0
    assert result.capped == "rejected"
    assert set(lines_of(result).values()) == {0}
    # a rejected event still counts its spend for tiers
    assert result.qualifying_amount == 2400


def test_per_member_cap_counts_what_was_already_earned_in_the_period() -> None:
    prog = program(BASE, COFFEE_2X, caps=Caps(per_member=100))
    assert earn(prog, purchase(LATTES, MUG), Context(earned_in_cap_period=90)).points == 10
    assert earn(prog, purchase(LATTES, MUG), Context(earned_in_cap_period=150)).points == 0
    assert earn(prog, purchase(LATTES, MUG), Context(earned_in_cap_period=0)).points == 33


# --------------------------------------------------------------------------------------------------
# Targeting
# --------------------------------------------------------------------------------------------------

NY = "America/New_York"


def _double(**target: Any) -> Rule:
    """A promotion doubling the whole event, restricted by ``target``."""
    return Rule(
        "promo", RuleType.MULTIPLIER, multiplier=Fraction(2), kind="promotion", target=Targeting(**target)
    )


def test_weekday_is_read_in_the_program_timezone() -> None:
    monday_only = program(BASE, _double(weekdays=(0,)), timezone=NY)
    # 2026-03-03 02:30 UTC is a Tuesday in UTC but Monday 21:30 in New York (EST, UTC-5)
    late_monday = purchase(MUG, at=datetime(2026, 3, 3, 2, 30, tzinfo=UTC))
    assert earn(monday_only, late_monday, NO_CTX).points == 30
    # 2026-03-03 05:30 UTC is Tuesday 00:30 in New York
    tuesday = purchase(MUG, at=datetime(2026, 3, 3, 5, 30, tzinfo=UTC))
    assert earn(monday_only, tuesday, NO_CTX).points == 15
    # the same instant, for a UTC program, is a Tuesday
    assert earn(program(BASE, _double(weekdays=(0,))), late_monday, NO_CTX).points == 15


def test_hours_are_local_and_follow_daylight_saving() -> None:
    breakfast = program(BASE, _double(hours_from=time(7, 0), hours_to=time(10, 0)), timezone=NY)

    def points(at: datetime) -> int:
        return earn(breakfast, purchase(MUG, at=at), NO_CTX).points

    # 11:30 UTC is 06:30 EST in January but 07:30 EDT in July
    assert points(datetime(2026, 1, 15, 11, 30, tzinfo=UTC)) == 15
    assert points(datetime(2026, 7, 15, 11, 30, tzinfo=UTC)) == 30
    # from is inclusive, to exclusive (local)
    assert points(datetime(2026, 1, 15, 12, 0, tzinfo=UTC)) == 30  # 07:00 EST
    assert points(datetime(2026, 1, 15, 14, 59, tzinfo=UTC)) == 30  # 09:59 EST
    assert points(datetime(2026, 1, 15, 15, 0, tzinfo=UTC)) == 15  # 10:00 EST


def test_an_hours_window_across_midnight_matches_late_evening_and_early_morning() -> None:
    late = program(BASE, _double(hours_from=time(22, 0), hours_to=time(2, 0)))
    assert earn(late, purchase(MUG, at=datetime(2026, 1, 15, 23, 0, tzinfo=UTC)), NO_CTX).points == 30
    assert earn(late, purchase(MUG, at=datetime(2026, 1, 16, 1, 0, tzinfo=UTC)), NO_CTX).points == 30
    assert earn(late, purchase(MUG, at=datetime(2026, 1, 16, 12, 0, tzinfo=UTC)), NO_CTX).points == 15


def test_valid_from_is_inclusive_and_valid_until_exclusive() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    end = datetime(2026, 3, 8, tzinfo=UTC)
    week = program(BASE, _double(valid_from=start, valid_until=end))

    def points(at: datetime) -> int:
        return earn(week, purchase(MUG, at=at), NO_CTX).points

    assert points(datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC)) == 15
    assert points(start) == 30
    assert points(datetime(2026, 3, 7, 23, 59, 59, tzinfo=UTC)) == 30
    assert points(end) == 15


def test_location_channel_and_tier_targeting() -> None:
    store = program(BASE, _double(locations=("store-1",), channels=("pos",), tiers=("gold",)))
    event = purchase(MUG, location_id="store-1", channel="pos")
    assert earn(store, event, Context(tier=GOLD)).points == 45  # 15 * 2 * 1.5
    assert earn(store, event, Context(tier=SILVER)).points == 15
    assert earn(store, replace(event, location_id="store-2"), Context(tier=GOLD)).points == 22
    assert earn(store, replace(event, channel="web"), Context(tier=GOLD)).points == 22


# --------------------------------------------------------------------------------------------------
# apportion
# --------------------------------------------------------------------------------------------------

fractions = st.fractions(min_value=0, max_value=500, max_denominator=60)


@settings(max_examples=150)
@given(values=st.lists(fractions, min_size=1, max_size=10), data=st.data())
def test_apportion_sums_to_total_and_stays_within_one(values: list[Fraction], data: st.DataObject) -> None:
    parts = [(f"p{i}", v) for i, v in enumerate(values)]
    floors = sum(math.floor(v) for v in values)
    total = data.draw(st.integers(floors, floors + len(values) - 1), label="total")
    out = apportion(total, parts)
    assert list(out) == [k for k, _ in parts]
    assert all(isinstance(x, int) for x in out.values())
    assert sum(out.values()) == total
    for key, value in parts:
        assert abs(out[key] - value) <= 1
        assert out[key] in (math.floor(value), math.floor(value) + 1)


@settings(max_examples=150)
@given(values=st.lists(fractions, min_size=1, max_size=10))
def test_apportion_of_the_floor_of_the_sum_favours_largest_remainders(values: list[Fraction]) -> None:
    parts = [(f"p{i}", v) for i, v in enumerate(values)]
    total = math.floor(sum(values))
    out = apportion(total, parts)
    assert sum(out.values()) == total
    assert all(abs(out[k] - v) < 1 for k, v in parts)
    bumped = [i for i, (k, v) in enumerate(parts) if out[k] == math.floor(v) + 1]
    kept = [i for i, (k, v) in enumerate(parts) if out[k] == math.floor(v)]
    frac = [v - math.floor(v) for v in values]
    # nobody left at the floor has a larger remainder (or an equal one and an earlier place)
    for b in bumped:
        for k in kept:
            assert frac[b] > frac[k] or (frac[b] == frac[k] and b < k)


# --------------------------------------------------------------------------------------------------
# Invariants over random programs of spend rules and multipliers
# --------------------------------------------------------------------------------------------------

CATEGORIES = ["coffee", "merch", "food", None]
MULTIPLIERS = [Fraction(1), Fraction(5, 4), Fraction(3, 2), Fraction(2), Fraction(3), Fraction(7, 3)]


@st.composite
def spend_programs(draw: st.DrawFn) -> tuple[Program, Context]:
    rules: list[Rule] = []
    for i in range(draw(st.integers(1, 3))):
        cats = draw(st.sampled_from([(), ("coffee",), ("merch", "food")]))
        rules.append(
            Rule(
                f"spend{i}",
                RuleType.SPEND,
                points=draw(st.integers(1, 5)),
                per_amount=draw(st.sampled_from([1, 3, 7, 100, 250, 1000])),
                categories=cats,
            )
        )
    for i in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["product", "promotion"]))
        cats = draw(st.sampled_from([(), ("coffee",), ("food",)])) if kind == "product" else ()
        rules.append(
            Rule(
                f"mult{i}",
                RuleType.MULTIPLIER,
                multiplier=draw(st.sampled_from(MULTIPLIERS)),
                kind=kind,
                categories=cats,
            )
        )
    tier = draw(st.sampled_from([None, SILVER, GOLD, TierLevel("plat", "Platinum", 90000, Fraction(2))]))
    return program(*rules), Context(tier=tier)


lines_strategy = st.lists(
    st.builds(
        Line,
        id=st.just(""),
        quantity=st.integers(1, 6),
        unit_price=st.integers(0, 20_000),
        category=st.sampled_from(CATEGORIES),
        discount=st.integers(0, 3_000),
        tax=st.integers(0, 2_000),
        gift_card=st.booleans(),
    ),
    min_size=1,
    max_size=6,
).map(lambda ls: tuple(replace(ln, id=f"l{i}") for i, ln in enumerate(ls)))


def reference_line_points(prog: Program, ctx: Context, line: Line) -> Fraction:
    """The contract's arithmetic written out independently: spend * product * tier * promotion."""
    if line.gift_card:
        return Fraction(0)
    amount = max(line.quantity * line.unit_price - line.discount, 0)

    def matches(rule: Rule) -> bool:
        return not rule.categories or line.category in rule.categories

    spend = sum(
        (Fraction(amount * r.points, r.per_amount) for r in prog.rules if r.type == "spend" and matches(r)),
        Fraction(0),
    )
    product = max(
        [r.multiplier for r in prog.rules if r.type == "multiplier" and r.kind == "product" and matches(r)],
        default=Fraction(1),
    )
    promo = max(
        [r.multiplier for r in prog.rules if r.type == "multiplier" and r.kind == "promotion"],
        default=Fraction(1),
    )
    tier = ctx.tier.multiplier if ctx.tier else Fraction(1)
    one = Fraction(1)
    return spend * max(product, one) * max(tier, one) * max(promo, one)


@settings(max_examples=150)
@given(pc=spend_programs(), lines=lines_strategy)
def test_earning_follows_the_contract_arithmetic(
    pc: tuple[Program, Context], lines: tuple[Line, ...]
) -> None:
    prog, ctx = pc
    result = earn(prog, purchase(*lines), ctx)
    exact = {ln.id: reference_line_points(prog, ctx, ln) for ln in lines}
    assert result.points >= 0
    assert result.points == math.floor(sum(exact.values()))
    got = lines_of(result)
    assert sum(got.values()) == result.points
    assert sum(p for _, p in result.rules) == result.points
    assert all(p > 0 for _, p in result.rules)
    for ln in lines:
        assert got[ln.id] in (math.floor(exact[ln.id]), math.floor(exact[ln.id]) + 1)
    # leftover points go to the largest fractional parts, earlier line first on ties
    ids = [ln.id for ln in lines]
    leftover = result.points - sum(math.floor(v) for v in exact.values())
    order = sorted(range(len(ids)), key=lambda i: (-(exact[ids[i]] - math.floor(exact[ids[i]])), i))
    bumped = {ids[i] for i in order[:leftover]}
    assert got == {k: math.floor(exact[k]) + (k in bumped) for k in ids}
    assert result.qualifying_amount == sum(
        0 if ln.gift_card else max(ln.quantity * ln.unit_price - ln.discount, 0) for ln in lines
    )


@settings(max_examples=150)
@given(
    pc=spend_programs(),
    lines=lines_strategy,
    which=st.integers(0, 5),
    more_price=st.integers(0, 5_000),
    more_quantity=st.integers(0, 4),
)
def test_earning_never_decreases_when_a_line_grows(
    pc: tuple[Program, Context], lines: tuple[Line, ...], which: int, more_price: int, more_quantity: int
) -> None:
    prog, ctx = pc
    i = which % len(lines)
    grown_line = replace(lines[i], unit_price=lines[i].unit_price + more_price)
    grown_line = replace(grown_line, quantity=grown_line.quantity + more_quantity)
    grown = (*lines[:i], grown_line, *lines[i + 1 :])
    before = earn(prog, purchase(*lines), ctx)
    after = earn(prog, purchase(*grown), ctx)
    assert after.points >= before.points
    assert lines_of(after)[grown_line.id] >= lines_of(before)[grown_line.id]
    assert after.qualifying_amount >= before.qualifying_amount
