"""Returns: how much of an earn a refund or a cancellation takes back.

Rule (the public contract): a refund of ``q`` of a line's ``Q`` units reverses
``floor(line_points * q / Q)``, and the refund that returns the line's last unit reverses what is
left of the line. Qualifying spend is reversed the same way. A refund by amount reverses the
event's points in proportion to the amount, and the refund that returns the whole amount reverses
what is left. Invariant: the sum of everything reversed never exceeds what was earned, per line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from patron.domain.earning import apportion
from patron.domain.errors import RefundExceedsPurchase


@dataclass(frozen=True, slots=True)
class LineState:
    """A line's figures: what it earned, or (for reversals) what was already taken back."""

    line_id: str
    quantity: int
    points: int
    amount: int


def _returned(prior: Mapping[str, LineState], line_id: str) -> LineState:
    return prior.get(line_id, LineState(line_id, 0, 0, 0))


def reverse_lines(
    earned: Sequence[LineState], prior: Mapping[str, LineState], request: Mapping[str, int]
) -> list[LineState]:
    """The reversal for returning ``request[line_id]`` units of each line."""
    by_id = {ln.line_id: ln for ln in earned}
    out = []
    for line_id, q in request.items():
        line = by_id.get(line_id)
        if line is None:
            raise RefundExceedsPurchase(f"line {line_id!r} is not in the purchase")
        if q <= 0:
            raise RefundExceedsPurchase(f"line {line_id!r}: quantity must be positive")
        done = _returned(prior, line_id)
        if done.quantity + q > line.quantity:
            raise RefundExceedsPurchase(
                f"line {line_id!r}: returning {q} but only {line.quantity - done.quantity} "
                f"of {line.quantity} units are left to return"
            )
        if done.quantity + q == line.quantity:
            points, amount = line.points - done.points, line.amount - done.amount
        else:
            points = min(line.points * q // line.quantity, line.points - done.points)
            amount = min(line.amount * q // line.quantity, line.amount - done.amount)
        out.append(LineState(line_id, q, points, amount))
    return out


def reverse_all(earned: Sequence[LineState], prior: Mapping[str, LineState]) -> list[LineState]:
    """A cancellation: everything not yet returned."""
    out = []
    for line in earned:
        done = _returned(prior, line.line_id)
        left = LineState(
            line.line_id,
            line.quantity - done.quantity,
            line.points - done.points,
            line.amount - done.amount,
        )
        if left.quantity or left.points or left.amount:
            out.append(left)
    return out


def reverse_amount(
    earned: Sequence[LineState], prior: Mapping[str, LineState], amount: int
) -> list[LineState]:
    """A refund of ``amount`` minor units without line detail, proportional to the amounts."""
    if amount <= 0:
        raise RefundExceedsPurchase("refund amount must be positive")
    total_amount = sum(ln.amount for ln in earned)
    total_points = sum(ln.points for ln in earned)
    left_amount = total_amount - sum(_returned(prior, ln.line_id).amount for ln in earned)
    if amount > left_amount:
        raise RefundExceedsPurchase(
            f"refund of {amount} exceeds the {left_amount} left to refund on this purchase"
        )
    if amount == left_amount:
        return reverse_all(earned, prior)
    left_points = {ln.line_id: ln.points - _returned(prior, ln.line_id).points for ln in earned}
    points = min(math.floor(Fraction(total_points * amount, total_amount)), sum(left_points.values()))
    left_amounts = {ln.line_id: ln.amount - _returned(prior, ln.line_id).amount for ln in earned}
    point_share = _share(points, left_points)
    amount_share = _share(amount, left_amounts)
    return [
        LineState(ln.line_id, 0, point_share[ln.line_id], amount_share[ln.line_id])
        for ln in earned
        if point_share[ln.line_id] or amount_share[ln.line_id]
    ]


def _share(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``total`` over keys in proportion to ``weights`` (largest remainder)."""
    whole = sum(weights.values())
    if whole <= 0:
        return dict.fromkeys(weights, 0)
    return apportion(total, [(k, Fraction(total * w, whole)) for k, w in weights.items()])
