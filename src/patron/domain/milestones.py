"""Milestones: lifetime achievements that grant bonus points once.

Kinds: ``purchase_count`` (the Nth purchase), ``lifetime_spend`` (qualifying spend net of
returns reaches a threshold, in minor units), ``anniversary`` (``years`` after enrolment).
A milestone is granted at most once per member and never taken back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from patron.domain.expiry import add_months


@dataclass(frozen=True, slots=True)
class Milestone:
    id: str
    name: str
    kind: str  # purchase_count | lifetime_spend | anniversary
    threshold: int = 0
    years: int = 0
    points: int = 0
    ask: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Progress:
    purchases: int
    lifetime_spend: int
    enrolled_at: datetime


def due(
    milestones: Sequence[Milestone], progress: Progress, *, as_of: datetime, done: Iterable[str]
) -> list[tuple[Milestone, datetime]]:
    """Milestones reached by ``as_of`` and not granted yet, with the time each was reached
    (``as_of`` for counts and spend; the anniversary itself for anniversaries)."""
    granted = set(done)
    out = []
    for m in milestones:
        if m.id in granted:
            continue
        reached = {
            "purchase_count": progress.purchases >= m.threshold,
            "lifetime_spend": progress.lifetime_spend >= m.threshold,
        }
        if reached.get(m.kind):
            out.append((m, as_of))
        elif m.kind == "anniversary":
            at = add_months(progress.enrolled_at, 12 * m.years)
            if at <= as_of:
                out.append((m, at))
    return out
