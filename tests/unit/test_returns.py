"""Returns: a refund never takes back more than was earned, and the last one takes back the rest."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patron.domain.earning import Context, Event, Line, earn
from patron.domain.errors import RefundExceedsPurchase
from patron.domain.program import Program, Rule, RuleType
from patron.domain.returns import LineState, reverse_all, reverse_amount, reverse_lines


def accumulate(prior: dict[str, LineState], reversal: Iterable[LineState]) -> dict[str, LineState]:
    out = dict(prior)
    for r in reversal:
        done = out.get(r.line_id, LineState(r.line_id, 0, 0, 0))
        out[r.line_id] = LineState(
            r.line_id, done.quantity + r.quantity, done.points + r.points, done.amount + r.amount
        )
    return out


def total_points(states: Iterable[LineState]) -> int:
    return sum(s.points for s in states)


# --------------------------------------------------------------------------------------------------
# Concrete examples
# --------------------------------------------------------------------------------------------------


def test_refunding_one_of_three_units_floors_and_the_last_unit_takes_the_rest() -> None:
    earned = [LineState("l1", 3, 10, 1000)]
    prior: dict[str, LineState] = {}
    first = reverse_lines(earned, prior, {"l1": 1})
    assert first == [LineState("l1", 1, 3, 333)]  # floor(10/3), floor(1000/3)
    prior = accumulate(prior, first)
    second = reverse_lines(earned, prior, {"l1": 1})
    assert second == [LineState("l1", 1, 3, 333)]
    prior = accumulate(prior, second)
    last = reverse_lines(earned, prior, {"l1": 1})
    assert last == [LineState("l1", 1, 4, 334)]  # what is left of the line
    prior = accumulate(prior, last)
    assert prior["l1"] == earned[0]
    with pytest.raises(RefundExceedsPurchase):
        reverse_lines(earned, prior, {"l1": 1})


def test_refund_of_the_contract_purchase_line_by_line() -> None:
    program = Program(
        name="Bean Rewards",
        currency="USD",
        rules=(
            Rule("base", RuleType.SPEND, points=1, per_amount=100),
            Rule("coffee-2x", RuleType.MULTIPLIER, multiplier=Fraction(2), categories=("coffee",)),
        ),
    )
    event = Event(
        "purchase",
        datetime(2026, 3, 1, 10, tzinfo=UTC),
        lines=(
            Line("l1", 2, 450, sku="LATTE", category="coffee"),
            Line("l2", 1, 1500, sku="MUG", category="merch"),
        ),
    )
    result = earn(program, event, Context())
    earned = [LineState(la.line_id, la.quantity, la.points, la.amount) for la in result.lines]
    # returning the mug reverses exactly the 15 points it earned and its 1500 of spend
    assert reverse_lines(earned, {}, {"l2": 1}) == [LineState("l2", 1, 15, 1500)]
    # one latte of two: half of 18
    assert reverse_lines(earned, {}, {"l1": 1}) == [LineState("l1", 1, 9, 450)]
    # a cancellation takes back everything
    assert total_points(reverse_all(earned, {})) == 33


def test_refund_by_amount_is_proportional_and_the_last_takes_the_rest() -> None:
    earned = [LineState("l1", 2, 18, 900), LineState("l2", 1, 15, 1500)]
    first = reverse_amount(earned, {}, 1000)
    # 33 * 1000 / 2400 = 13.75 -> 13, spread over the lines by their points
    assert total_points(first) == 13
    assert sum(s.amount for s in first) == 1000
    prior = accumulate({}, first)
    rest = reverse_amount(earned, prior, 1400)
    assert total_points(rest) == 20
    prior = accumulate(prior, rest)
    assert {k: (v.points, v.amount) for k, v in prior.items()} == {"l1": (18, 900), "l2": (15, 1500)}


def test_over_refunds_are_refused() -> None:
    earned = [LineState("l1", 2, 18, 900), LineState("l2", 1, 15, 1500)]
    with pytest.raises(RefundExceedsPurchase):
        reverse_lines(earned, {}, {"l1": 3})
    with pytest.raises(RefundExceedsPurchase):
        reverse_lines(earned, {}, {"nope": 1})
    with pytest.raises(RefundExceedsPurchase):
        reverse_lines(earned, {}, {"l1": 0})
    with pytest.raises(RefundExceedsPurchase):
        reverse_lines(earned, {}, {"l1": -1})
    with pytest.raises(RefundExceedsPurchase):
        reverse_amount(earned, {}, 2401)
    with pytest.raises(RefundExceedsPurchase):
        reverse_amount(earned, {}, 0)
    prior = accumulate({}, reverse_lines(earned, {}, {"l1": 1}))
    with pytest.raises(RefundExceedsPurchase):
        reverse_lines(earned, prior, {"l1": 2})
    with pytest.raises(RefundExceedsPurchase):
        reverse_amount(earned, prior, 2400 - 450 + 1)
    everything = accumulate({}, reverse_all(earned, {}))
    assert reverse_all(earned, everything) == []
    with pytest.raises(RefundExceedsPurchase):
        reverse_amount(earned, everything, 1)


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

line_states = st.lists(
    st.tuples(st.integers(1, 12), st.integers(0, 2_000), st.integers(0, 50_000)), min_size=1, max_size=5
).map(lambda xs: [LineState(f"l{i}", q, p, a) for i, (q, p, a) in enumerate(xs)])


def assert_within(earned: list[LineState], prior: dict[str, LineState]) -> None:
    for line in earned:
        done = prior.get(line.line_id, LineState(line.line_id, 0, 0, 0))
        assert 0 <= done.quantity <= line.quantity
        assert 0 <= done.points <= line.points
        assert 0 <= done.amount <= line.amount


@settings(max_examples=150)
@given(earned=line_states, data=st.data())
def test_partial_line_refunds_never_exceed_and_returning_every_unit_reverses_everything(
    earned: list[LineState], data: st.DataObject
) -> None:
    prior: dict[str, LineState] = {}
    by_id = {ln.line_id: ln for ln in earned}
    for step in range(8):
        open_lines = [
            ln for ln in earned if prior.get(ln.line_id, LineState("", 0, 0, 0)).quantity < ln.quantity
        ]
        if not open_lines:
            break
        left = {
            ln.line_id: ln.quantity - prior.get(ln.line_id, LineState("", 0, 0, 0)).quantity
            for ln in open_lines
        }
        if step == 7:  # the final refund returns whatever units are left, all lines at once
            request = left
        else:
            chosen = data.draw(st.lists(st.sampled_from(open_lines), min_size=1, unique=True), label="lines")
            request = {
                ln.line_id: data.draw(st.integers(1, left[ln.line_id]), label=f"q {ln.line_id}")
                for ln in chosen
            }
        reversal = reverse_lines(earned, prior, request)
        assert {r.line_id: r.quantity for r in reversal} == request
        for r in reversal:
            line = by_id[r.line_id]
            done = prior.get(r.line_id, LineState("", 0, 0, 0))
            assert r.points >= 0
            assert r.amount >= 0
            if done.quantity + r.quantity < line.quantity:
                # the contract: floor(line_points * q / Q)
                assert r.points == line.points * r.quantity // line.quantity
                assert r.amount == line.amount * r.quantity // line.quantity
        prior = accumulate(prior, reversal)
        assert_within(earned, prior)
    assert prior == {ln.line_id: ln for ln in earned}
    assert reverse_all(earned, prior) == []


@settings(max_examples=200)
@given(earned=line_states, data=st.data())
def test_amount_refunds_summing_to_the_whole_reverse_exactly_the_event(
    earned: list[LineState], data: st.DataObject
) -> None:
    whole = sum(ln.amount for ln in earned)
    event_points = total_points(earned)
    if whole == 0:
        with pytest.raises(RefundExceedsPurchase):
            reverse_amount(earned, {}, 1)
        return
    cuts = data.draw(st.lists(st.integers(1, max(whole - 1, 1)), max_size=6, unique=True), label="cuts")
    bounds = [0, *sorted(c for c in cuts if c < whole), whole]
    prior: dict[str, LineState] = {}
    refunded = 0
    reversed_points = 0
    for lo, hi in pairwise(bounds):
        amount = hi - lo
        reversal = reverse_amount(earned, prior, amount)
        assert sum(r.amount for r in reversal) == amount
        refunded += amount
        if refunded < whole:
            assert total_points(reversal) == math.floor(Fraction(event_points * amount, whole))
        assert all(r.points >= 0 and r.amount >= 0 for r in reversal)
        reversed_points += total_points(reversal)
        prior = accumulate(prior, reversal)
        assert_within(earned, prior)
        assert reversed_points <= event_points
    assert reversed_points == event_points
    assert {k: (v.points, v.amount) for k, v in prior.items() if v.points or v.amount} == {
        ln.line_id: (ln.points, ln.amount) for ln in earned if ln.points or ln.amount
    }
    with pytest.raises(RefundExceedsPurchase):
        reverse_amount(earned, prior, 1)


@settings(max_examples=200)
@given(earned=line_states, data=st.data())
def test_mixed_refunds_then_a_cancel_never_exceed_and_end_exact(
    earned: list[LineState], data: st.DataObject
) -> None:
    prior: dict[str, LineState] = {}
    whole = sum(ln.amount for ln in earned)
    for _ in range(data.draw(st.integers(0, 6), label="steps")):
        open_lines = [
            ln for ln in earned if prior.get(ln.line_id, LineState("", 0, 0, 0)).quantity < ln.quantity
        ]
        left_amount = whole - sum(v.amount for v in prior.values())
        by_amount = data.draw(st.booleans(), label="by amount")
        if by_amount and left_amount > 0:
            reversal = reverse_amount(earned, prior, data.draw(st.integers(1, left_amount), label="amount"))
        elif open_lines:
            ln = data.draw(st.sampled_from(open_lines), label="line")
            left = ln.quantity - prior.get(ln.line_id, LineState("", 0, 0, 0)).quantity
            reversal = reverse_lines(earned, prior, {ln.line_id: data.draw(st.integers(1, left), label="q")})
        else:
            break
        assert all(r.points >= 0 and r.amount >= 0 for r in reversal)
        prior = accumulate(prior, reversal)
        assert_within(earned, prior)
    prior = accumulate(prior, reverse_all(earned, prior))
    for line in earned:
        done = prior.get(line.line_id, LineState(line.line_id, 0, 0, 0))
        assert (done.points, done.amount) == (line.points, line.amount)


@given(earned=line_states, data=st.data())
def test_over_refund_by_quantity_is_refused(earned: list[LineState], data: st.DataObject) -> None:
    line = data.draw(st.sampled_from(earned))
    too_many = data.draw(st.integers(line.quantity + 1, line.quantity + 10))
    with pytest.raises(RefundExceedsPurchase):
        reverse_lines(earned, {}, {line.line_id: too_many})
