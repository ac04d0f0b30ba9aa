"""Segments and cohorts: RFM scores and named segments, cohort retention, tier thresholds.

Pure functions over plain data; the queries that feed them are in ``storage/insights.py``.

RFM (definitions)
-----------------
Each purchasing member has a *recency* (days from their last purchase to the end of the window),
a *frequency* (purchases in the window) and a *monetary* value (eligible spend in the window, net
of refunds, minor units). Each is scored 1 to 5 by quintile among the members scored:
``score = 1 + 5 * below // n`` where ``below`` counts the members with a strictly worse value
(a longer recency, a lower frequency, a lower monetary value). Equal values get equal scores, so
five members with five different values score 1, 2, 3, 4 and 5. ``fm`` is the mean of the F and M
scores rounded half up. Segments, checked in this order:

=================  ==================
segment            rule
=================  ==================
champions          R >= 4 and FM >= 4
loyal              R >= 3 and FM >= 3
promising          R >= 4 (and FM <= 2: new or light, but recent)
need_attention     R == 3 (and FM <= 2)
at_risk            R <= 2 and FM >= 3 (were good, have not been back)
hibernating        R == 2 (and FM <= 2)
lost               R == 1 (and FM <= 2)
=================  ==================

Cohort retention: a cohort is the members enrolled in one calendar month; the retention of month
offset ``k`` is the share of the cohort with a purchase in the ``k``-th month after the enrolment
month (``k = 0`` is the enrolment month itself).

Tier thresholds: given the distribution of a metric (one value per member) and the share of
members wanted in each tier above the base, the threshold of a tier is the smallest value such
that at most the wanted share (cumulative from the top) of members is at or above it.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SEGMENTS = ("champions", "loyal", "promising", "need_attention", "at_risk", "hibernating", "lost")


@dataclass(frozen=True, slots=True)
class RFMInput:
    member_id: str
    recency_days: int
    frequency: int
    monetary: int


@dataclass(frozen=True, slots=True)
class RFMScore:
    member_id: str
    recency_days: int
    frequency: int
    monetary: int
    r: int
    f: int
    m: int
    segment: str


def quintile_scores(values: Sequence[int], *, higher_is_better: bool = True) -> list[int]:
    """Scores 1..5 by quintile: ``1 + 5 * worse // n``, ``worse`` = values strictly worse."""
    n = len(values)
    ordered = sorted(values)
    out = []
    for v in values:
        worse = _count_below(ordered, v) if higher_is_better else n - _count_at_or_below(ordered, v)
        out.append(1 + 5 * worse // n)
    return out


def _count_below(ordered: Sequence[int], v: int) -> int:
    return bisect_left(ordered, v)


def _count_at_or_below(ordered: Sequence[int], v: int) -> int:
    return bisect_right(ordered, v)


def segment_of(r: int, f: int, m: int) -> str:
    """The named segment of an R, F, M score triple (see the table in the module docstring)."""
    fm = (f + m + 1) // 2
    if r >= 4 and fm >= 4:
        return "champions"
    if r >= 3 and fm >= 3:
        return "loyal"
    if r >= 4:
        return "promising"
    if r == 3:
        return "need_attention"
    if fm >= 3:
        return "at_risk"
    if r == 2:
        return "hibernating"
    return "lost"


def rfm(members: Sequence[RFMInput]) -> list[RFMScore]:
    """Score every member and name their segment; the order of ``members`` is kept."""
    if not members:
        return []
    rs = quintile_scores([m.recency_days for m in members], higher_is_better=False)
    fs = quintile_scores([m.frequency for m in members])
    ms = quintile_scores([m.monetary for m in members])
    return [
        RFMScore(x.member_id, x.recency_days, x.frequency, x.monetary, r, f, m, segment_of(r, f, m))
        for x, r, f, m in zip(members, rs, fs, ms, strict=True)
    ]


def segment_counts(scores: Sequence[RFMScore]) -> dict[str, int]:
    counts = dict.fromkeys(SEGMENTS, 0)
    for s in scores:
        counts[s.segment] += 1
    return counts


@dataclass(frozen=True, slots=True)
class Cohort:
    month: str  # YYYY-MM of enrolment
    size: int
    active: tuple[int, ...]  # members with a purchase in month offset 0, 1, ...
    retention: tuple[float, ...]  # active / size, rounded to 4 places


def month_index(month: str) -> int:
    """``YYYY-MM`` as a count of months, so that offsets are differences."""
    return int(month[:4]) * 12 + int(month[5:7]) - 1


def cohort_matrix(
    sizes: Mapping[str, int], activity: Mapping[tuple[str, str], int], *, last_month: str
) -> list[Cohort]:
    """Retention by enrolment month. ``sizes[cohort]`` is the cohort's member count and
    ``activity[(cohort, month)]`` how many of them purchased in ``month``; offsets run from the
    enrolment month to ``last_month``. Cohorts of size zero are left out (no division by zero)."""
    end = month_index(last_month)
    out = []
    for cohort in sorted(sizes):
        size = sizes[cohort]
        if size <= 0:
            continue
        start = month_index(cohort)
        active = []
        for k in range(max(end - start + 1, 0)):
            idx = start + k
            label = f"{idx // 12:04d}-{idx % 12 + 1:02d}"
            active.append(activity.get((cohort, label), 0))
        out.append(Cohort(cohort, size, tuple(active), tuple(round(a / size, 4) for a in active)))
    return out


def suggest_thresholds(values: Sequence[int], shares: Sequence[float]) -> list[int]:
    """Thresholds for the tiers above the base, lowest first, so that about ``shares[i]`` of the
    members reach tier ``i`` or higher. ``shares`` decrease, each in (0, 1). The threshold for a
    share ``s`` of ``n`` members is the value of the member ranked ``ceil(s * n)`` from the top:
    exactly that many reach it when values are distinct (ties at the threshold reach it too).
    Thresholds are at least 1 and made strictly increasing."""
    if not values:
        return []
    ordered = sorted(values, reverse=True)
    n = len(ordered)
    out: list[int] = []
    for s in shares:
        k = min(max(math.ceil(round(s * n, 9)), 1), n)
        threshold = max(ordered[k - 1], 1)
        if out and threshold <= out[-1]:
            threshold = out[-1] + 1
        out.append(threshold)
    return out
