"""Tiers: which level a member holds, derived from their qualifying history.

Rules (the public contract)
---------------------------
* Reaching a level's threshold within a period upgrades at once. Within a period the level only
  goes up: a return that takes the value back below a threshold does not demote mid-period.
* A level reached in a period is held to the end of the next period.
* At each period's end the member is placed by the period just ended: kept where its value met
  their level, otherwise moved by the ``downgrade`` policy: ``one_level`` drops one level (never
  below what the ended period's value reaches), ``recompute`` goes to the level that value
  reaches, ``none`` keeps the level. Permanent levels are never lost.

The metric is counted from *qualification rows*: ``(period_at, recorded_at, value)``; a refund
row carries the ``period_at`` of the purchase it refunds, so that it reduces that period's
value, and its own ``recorded_at``. Nothing here reads the spendable balance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from patron.domain.expiry import add_months
from patron.domain.program import TierLevel, Tiers


@dataclass(frozen=True, slots=True)
class QualRow:
    period_at: datetime
    recorded_at: datetime
    value: int
    source: str | None = None  # the event that counted


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The fold's state at the start of a period, every period before it folded and placed: a
    member's tier resumes from here with the rows of this period onwards, whatever their past.

    It holds while the earlier periods' rows stay as they were: none of them recorded after
    ``seen_upto`` (a late refund or a back-dated purchase of an old period) and the evaluation at
    or after ``seen_upto`` (see :func:`resumable`)."""

    period_start: datetime
    earned_id: str | None  # the level earned by the metric, held by the period rules
    level_id: str | None  # the level shown (earned, or an assignment's floor)
    since: datetime
    reason: str
    seen_upto: datetime  # the last time an earlier period's row was recorded, or its decision


def resumable(checkpoint: Checkpoint, rows: Sequence[QualRow], as_of: datetime) -> bool:
    """Whether folding ``rows`` from ``checkpoint`` gives the state a fold from enrolment gives:
    ``rows`` hold every row of the checkpoint's period onwards and every earlier row recorded
    after ``seen_upto`` (any such row means the earlier periods changed)."""
    return as_of >= checkpoint.seen_upto and all(r.period_at >= checkpoint.period_start for r in rows)


@dataclass(frozen=True, slots=True)
class TierState:
    level: TierLevel | None
    since: datetime
    reason: str
    value: int
    period_start: datetime
    period_end: datetime


def _local_midnight(d: datetime, tz: ZoneInfo) -> datetime:
    local = d.astimezone(tz)
    return datetime.combine(local.date(), time(0), tzinfo=tz)


def period_bounds(
    tiers: Tiers, at: datetime, *, tz: ZoneInfo, enrolled_at: datetime
) -> tuple[datetime, datetime]:
    """The qualification period containing ``at``, as aware datetimes (start inclusive)."""
    if tiers.period == "rolling_12_months":
        return add_months(at, -12), at
    if tiers.period == "anniversary":
        anchor = _local_midnight(enrolled_at, tz)
        local = at.astimezone(tz)
        years = local.year - anchor.year
        start = add_months(anchor, 12 * years)
        if start > local:
            start = add_months(anchor, 12 * (years - 1))
        return start, add_months(start, 12)
    local = at.astimezone(tz)
    start = datetime(local.year, 1, 1, tzinfo=tz)
    return start, datetime(local.year + 1, 1, 1, tzinfo=tz)


def periods_between(
    tiers: Tiers, first: datetime, last: datetime, *, tz: ZoneInfo, enrolled_at: datetime
) -> list[tuple[datetime, datetime]]:
    """Consecutive periods from the one containing ``first`` to the one containing ``last``."""
    out = [period_bounds(tiers, first, tz=tz, enrolled_at=enrolled_at)]
    while out[-1][1] <= last:
        out.append(period_bounds(tiers, out[-1][1], tz=tz, enrolled_at=enrolled_at))
    return out


def base_level(tiers: Tiers) -> TierLevel | None:
    return min(tiers.levels, key=lambda lv: lv.threshold) if tiers.levels else None


def requalify(tiers: Tiers, held: TierLevel | None, value: int) -> TierLevel | None:
    """Placement at a period's end, by the value of the period just ended."""
    met = tiers.reached(value)
    if held is None or held.permanent or tiers.rank(met.id if met else None) >= tiers.rank(held.id):
        return held
    if tiers.downgrade == "none":
        return held
    if tiers.downgrade == "recompute":
        return met
    ordered = sorted(tiers.levels, key=lambda lv: lv.threshold)
    one_down = ordered[max(tiers.rank(held.id) - 1, 0)]
    return one_down if tiers.rank(one_down.id) > tiers.rank(met.id if met else None) else met


@dataclass(frozen=True, slots=True)
class Assignment:
    """A tier given by hand (manual or invite-only) or by a paid plan: a floor from ``start``
    until ``end``.

    ``held``: once given, the level is the member's like a level reached, and when the
    assignment ends the period rules place them (a manual tier is never revoked mid-period).
    Not ``held`` (a plan's tier): a floor only while in force; when it ends the member is back
    at the level they earned."""

    tier_id: str
    start: datetime
    end: datetime | None = None
    reason: str = "assigned"
    held: bool = True


@dataclass(frozen=True, slots=True)
class TierChange:
    at: datetime
    from_id: str | None
    to_id: str | None
    reason: str
    cause: str  # "event", "period_end", "assignment"
    source: str | None = None  # the event, for cause "event"


def _above(tiers: Tiers, a: TierLevel | None, b: TierLevel | None) -> bool:
    return tiers.rank(a.id if a else None) > tiers.rank(b.id if b else None)


def _floor(tiers: Tiers, assignments: Sequence[Assignment], at: datetime) -> TierLevel | None:
    best: TierLevel | None = None
    for a in assignments:
        lv = tiers.level(a.tier_id)
        if lv is not None and a.start <= at and (a.end is None or at < a.end) and _above(tiers, lv, best):
            best = lv
    return best


def evaluate(
    tiers: Tiers,
    rows: Sequence[QualRow],
    *,
    as_of: datetime,
    tz: ZoneInfo,
    enrolled_at: datetime,
    assignments: Sequence[Assignment] = (),
) -> TierState:
    """The member's tier as of ``as_of``, folding period by period from enrolment."""
    return history(tiers, rows, as_of=as_of, tz=tz, enrolled_at=enrolled_at, assignments=assignments)[0]


def history(
    tiers: Tiers,
    rows: Sequence[QualRow],
    *,
    as_of: datetime,
    tz: ZoneInfo,
    enrolled_at: datetime,
    assignments: Sequence[Assignment] = (),
) -> tuple[TierState, list[TierChange]]:
    """The tier as of ``as_of`` and every change that led to it, oldest first (see :func:`fold`)."""
    state, changes, _ = fold(
        tiers, rows, as_of=as_of, tz=tz, enrolled_at=enrolled_at, assignments=assignments
    )
    return state, changes


def fold(
    tiers: Tiers,
    rows: Sequence[QualRow],
    *,
    as_of: datetime,
    tz: ZoneInfo,
    enrolled_at: datetime,
    assignments: Sequence[Assignment] = (),
    resume: Checkpoint | None = None,
) -> tuple[TierState, list[TierChange], list[Checkpoint]]:
    """The tier as of ``as_of``, every change that led to it, oldest first, and the checkpoint
    at the start of each period whose predecessor it placed, oldest first (none for rolling
    windows, which have no periods to place).

    From ``resume`` (which must be :func:`resumable` with these rows) the fold starts at the
    checkpoint's period, and the changes are those after it.

    Within a period the level only rises (an upgrade at once when the running value crosses a
    threshold; a return never demotes mid-period). At a period's end the member is placed by the
    period's value as known then (returns recorded later do not reach back), and a downgrade
    takes effect ``grace_days`` after the end. A manual or invite-only assignment is a floor.
    """
    rows = [r for r in rows if r.recorded_at <= as_of]
    changes: list[TierChange] = []
    level = base_level(tiers)
    since, reason = enrolled_at, "enrolled"
    checkpoints: list[Checkpoint] = []

    def move(to: TierLevel | None, at: datetime, why: str, cause: str, source: str | None = None) -> None:
        nonlocal level, since, reason
        changes.append(TierChange(at, level.id if level else None, to.id if to else None, why, cause, source))
        level, since, reason = to, at, why

    if tiers.period == "rolling_12_months":
        # The value is the last 12 months' at every moment; a level reached is held for 12 months
        # from the last time the window reached it (the rolling form of "held through the next
        # period"), then the member is placed by the window again.
        start, end = add_months(as_of, -12), as_of
        value = sum(r.value for r in rows if start < r.period_at <= end)
        best: TierLevel | None = None
        best_at = enrolled_at
        for moment in sorted({r.recorded_at for r in rows if r.recorded_at > start} | {as_of}):
            window = sum(
                r.value
                for r in rows
                if r.recorded_at <= moment and add_months(moment, -12) < r.period_at <= moment
            )
            reached = tiers.reached(window)
            if _above(tiers, reached, best):
                best, best_at = reached, moment
        if _above(tiers, best, level):
            assert best is not None
            move(best, best_at, f"{tiers.metric} over 12 months reached {best.threshold}", "event")
        floor = _floor(tiers, assignments, as_of)
        if _above(tiers, floor, level):
            move(floor, as_of, "assigned", "assignment")
        return TierState(level, since, reason, value, start, end), changes, checkpoints
    # What the member earned by the metric, held by the period rules; the tier shown is the
    # higher of it and the assignments in force at the moment (a floor, never "earned": when an
    # assignment ends, the member is back at what they earned).
    earned = level
    if resume is not None:
        assert resumable(resume, rows, as_of), "the checkpoint does not hold for these rows"
        first = resume.period_start
        earned, level = tiers.level(resume.earned_id), tiers.level(resume.level_id)
        since, reason, seen = resume.since, resume.reason, resume.seen_upto
    else:
        first = min([enrolled_at, *(r.period_at for r in rows), *(a.start for a in assignments)])
        seen = first
    periods = periods_between(tiers, first, as_of, tz=tz, enrolled_at=enrolled_at)
    grace = timedelta(days=tiers.grace_days)
    value = 0

    def effective(at: datetime) -> TierLevel | None:
        floor = _floor(tiers, assignments, at)
        return floor if _above(tiers, floor, earned) else earned

    # rows by the period they count for: one sort, one walk (periods are consecutive and sorted)
    by_period: list[list[tuple[datetime, int, QualRow]]] = [[] for _ in periods]
    i = 0
    for n, r in sorted(enumerate(rows), key=lambda nr: nr[1].period_at):
        while i < len(periods) and r.period_at >= periods[i][1]:
            i += 1
        if i == len(periods):
            break
        if r.period_at >= periods[i][0]:
            by_period[i].append((r.recorded_at, n, r))  # within a period: by time recorded, then as given

    def gate() -> float:
        """The least running value whose level could be above what this period reached or the
        member earned: below it a row changes neither, so the fold skips the comparisons."""
        low = min(
            tiers.rank(reached_here.id if reached_here else None), tiers.rank(earned.id if earned else None)
        )
        return tiers.above_rank(low)

    for (start, end), found in zip(periods, by_period, strict=True):
        in_period = [r for _, _, r in sorted(found, key=lambda t: (t[0], t[1]))]
        marks: list[tuple[datetime, int, QualRow | Assignment | None]] = [
            (r.recorded_at, 0, r) for r in in_period
        ]
        for a in assignments:
            if start <= a.start < end and a.start <= as_of:
                marks.append((a.start, 1, a))
            if a.end is not None and start <= a.end < end and a.end <= as_of:
                marks.append((a.end, 2, None))
        marks.sort(key=lambda m: (m[0], m[1]))
        running = 0
        reached_here: TierLevel | None = None  # the highest level crossed within this period
        need = gate()
        for at, _, item in marks:
            if isinstance(item, QualRow):
                running += item.value
                if running < need:
                    continue
                reached = tiers.reached(running)
                if _above(tiers, reached, reached_here):
                    reached_here = reached
                if _above(tiers, reached, earned):
                    assert reached is not None
                    earned = reached
                    if _above(tiers, earned, level):
                        why = f"reached {tiers.metric} {running} (threshold {reached.threshold})"
                        move(earned, max(at, start), why, "event", item.source)
                need = gate()
            else:
                if isinstance(item, Assignment) and item.held:
                    given = tiers.level(item.tier_id)
                    if _above(tiers, given, earned):
                        earned = given
                shown = effective(at)
                if shown != level:
                    why = item.reason if isinstance(item, Assignment) else "assignment ended"
                    move(shown, at, why, "assignment")
                need = gate()
        value = running
        decided = end + grace
        if in_period:
            seen = max(seen, in_period[-1].recorded_at)
        if end <= as_of and decided <= as_of:
            known = sum(r.value for r in in_period if r.recorded_at <= decided)
            if reached_here is not None and not _above(tiers, earned, reached_here):
                placed = earned  # reached in this period: held to the end of the next
            else:
                placed = requalify(tiers, earned, known)
            earned = placed
            shown = effective(decided)
            if shown != level:
                move(shown, decided, f"requalified at period end with {tiers.metric} {known}", "period_end")
            checkpoint = Checkpoint(
                end,
                earned.id if earned else None,
                level.id if level else None,
                since,
                reason,
                max(seen, decided),
            )
            checkpoints.append(checkpoint)
    start, end = periods[-1]
    return TierState(level, since, reason, value, start, end), changes, checkpoints


def next_level(tiers: Tiers, current: TierLevel | None, value: int) -> tuple[TierLevel, int] | None:
    """The next level above ``current`` and how much more of the metric it needs."""
    above = sorted(
        (lv for lv in tiers.levels if lv.threshold > (current.threshold if current else -1)),
        key=lambda lv: lv.threshold,
    )
    if not above:
        return None
    return above[0], max(above[0].threshold - value, 0)


def as_utc_period(bounds: tuple[datetime, datetime]) -> tuple[datetime, datetime]:
    return bounds[0].astimezone(UTC), bounds[1].astimezone(UTC)
