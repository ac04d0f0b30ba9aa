"""Program simulation: replay a period's events through a program in memory.

Pure: the caller loads the period's events (in the order they occurred), what each member had
before the period (qualification rows, tier assignments, prior action awards and earnings for
frequency limits and caps), and passes a function that says which program governs each event.
Nothing is written anywhere.

What is replayed (the same domain functions as the ledger: ``earning.earn``, ``returns``,
``tiers.evaluate``): earning events (purchases, visits, flights, custom actions) with the tier
the member held when the event occurred under the simulated history, action frequency limits and
per-member caps; refunds and cancels, which take back what the simulated purchase earned
(a purchase from before the period keeps what the ledger recorded for it). What is not replayed:
milestones, referral bonuses, punch-card rewards, manual adjustments, redemptions and expiry:
they are the same under any earning rules, or depend on choices members would make differently.

Invariant: replaying the live program versions over a period gives, event by event, the points
the ledger recorded for it (tested in ``tests/integration/test_simulation.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from patron.domain import earning
from patron.domain import returns as ret
from patron.domain import tiers as tier_rules
from patron.domain.errors import RefundExceedsPurchase
from patron.domain.expiry import add_months
from patron.domain.program import Period, Program, RuleType

METRICS = ("qualifying_spend", "status_points", "visits")


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One event of the period. ``event`` is set for earning events; ``refers_to`` (the event
    id of the original) with ``refund_lines`` or ``refund_amount`` (or neither: a cancel) for
    reversals. ``version`` is the program version the ledger applied."""

    id: str
    member_id: str
    type: str
    occurred_at: datetime
    version: int
    event: earning.Event | None = None
    refers_to: str | None = None
    refund_lines: tuple[tuple[str, int], ...] = ()
    refund_amount: int | None = None


@dataclass(frozen=True, slots=True)
class Original:
    """A purchase (or other event) from before the period that a reversal in it refers to."""

    type: str
    occurred_at: datetime
    lines: tuple[ret.LineState, ...]
    reversed_before: tuple[ret.LineState, ...] = ()  # reversals recorded before the period
    status_miles: int = 0  # a flight's status miles, taken back with its last point


@dataclass(frozen=True, slots=True)
class QualValues:
    """One qualification row: what an event counts towards each tier metric."""

    period_at: datetime
    recorded_at: datetime
    spend: int
    status_points: int
    visits: int
    status_miles: int = 0
    segments: int = 0

    def value(self, metric: str) -> int:
        return {
            "qualifying_spend": self.spend,
            "status_points": self.status_points,
            "visits": self.visits,
            "status_miles": self.status_miles,
            "segments": self.segments,
        }[metric]


@dataclass(slots=True)
class MemberHistory:
    """What a member brings into the period."""

    enrolled_at: datetime
    rows: list[QualValues] = field(default_factory=list)
    assignments: Sequence[tier_rules.Assignment] = ()
    # (rule id, when, location) of awards with points, for action limits and once-a-day visits
    awards: list[tuple[str, datetime, str | None]] = field(default_factory=list)
    earned: list[tuple[datetime, int]] = field(default_factory=list)  # (when, points) of earns


@dataclass(frozen=True, slots=True)
class MemberOutcome:
    issued: int
    reversed: int
    tier: str | None

    @property
    def net(self) -> int:
        return self.issued - self.reversed


@dataclass(frozen=True, slots=True)
class Outcome:
    members: dict[str, MemberOutcome]
    events: dict[str, int]  # event id -> points (negative for reversals)
    qualifying_spend: int

    @property
    def issued(self) -> int:
        return sum(m.issued for m in self.members.values())

    @property
    def reversed(self) -> int:
        return sum(m.reversed for m in self.members.values())

    def tier_population(self) -> dict[str | None, int]:
        out: dict[str | None, int] = {}
        for m in self.members.values():
            out[m.tier] = out.get(m.tier, 0) + 1
        return out


def period_window(period: Period, at: datetime, tz: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """The calendar day/month/year containing ``at`` in ``tz``; lifetime is unbounded (as for
    action limits and caps when events are recorded)."""
    local = at.astimezone(tz)
    if period == Period.DAY:
        start = datetime(local.year, local.month, local.day, tzinfo=tz)
        return start, start + timedelta(days=1)
    if period == Period.MONTH:
        start = datetime(local.year, local.month, 1, tzinfo=tz)
        return start, add_months(start, 1)
    if period == Period.YEAR:
        start = datetime(local.year, 1, 1, tzinfo=tz)
        return start, datetime(local.year + 1, 1, 1, tzinfo=tz)
    return None, None


def _within(at: datetime, window: tuple[datetime | None, datetime | None]) -> bool:
    start, end = window
    return (start is None or at >= start) and (end is None or at < end)


def _tier_state(program: Program, history: MemberHistory, at: datetime) -> tier_rules.TierState | None:
    tiers = program.tiers
    if tiers is None or not tiers.levels:
        return None
    rows = [
        tier_rules.QualRow(r.period_at, r.recorded_at, r.value(tiers.metric))
        for r in history.rows
        if r.value(tiers.metric)
    ]
    return tier_rules.evaluate(
        tiers,
        rows,
        as_of=at,
        tz=ZoneInfo(program.timezone),
        enrolled_at=history.enrolled_at,
        assignments=history.assignments,
    )


def _context(
    program: Program, history: MemberHistory, at: datetime, location_id: str | None
) -> earning.Context:
    tz = ZoneInfo(program.timezone)
    state = _tier_state(program, history, at)
    counts = {}
    for rule in program.rules:
        if rule.type == RuleType.ACTION and rule.limit_count is not None:
            window = period_window(rule.limit_per, at, tz)
            counts[rule.id] = sum(
                1 for r, when, _ in history.awards if r == rule.id and _within(when, window)
            )
        elif rule.type == RuleType.VISIT and rule.once_per_day:
            window = period_window(Period.DAY, at, tz)
            counts[rule.id] = sum(
                1
                for r, when, where in history.awards
                if r == rule.id and where == location_id and _within(when, window)
            )
    earned = 0
    if program.caps.per_member is not None:
        window = period_window(program.caps.per_member_period, at, tz)
        earned = sum(p for when, p in history.earned if _within(when, window))
    return earning.Context(
        tier=state.level if state else None, action_counts=counts, earned_in_cap_period=earned
    )


def replay(
    events: Sequence[SimEvent],
    *,
    program_for: Callable[[SimEvent], Program],
    histories: Mapping[str, MemberHistory],
    originals: Mapping[str, Original],
    end: datetime,
    end_program: Program,
) -> Outcome:
    """Replay ``events`` (in order) for the members of ``histories``; tiers are placed at ``end``
    under ``end_program``'s tier rules. Members of ``histories`` without events in the period are
    still placed (their tier may move with the period's end)."""
    state = {
        m: MemberHistory(h.enrolled_at, list(h.rows), h.assignments, list(h.awards), list(h.earned))
        for m, h in histories.items()
    }
    issued = dict.fromkeys(histories, 0)
    taken = dict.fromkeys(histories, 0)
    points: dict[str, int] = {}
    earned_lines: dict[str, tuple[ret.LineState, ...]] = {}
    kinds: dict[str, tuple[str, datetime, int]] = {}  # event id -> (type, when, status miles)
    reversals: dict[str, dict[str, ret.LineState]] = {}
    spend = 0
    for ev in events:
        history = state.get(ev.member_id)
        if history is None:  # not one of the members asked about
            continue
        program = program_for(ev)
        if ev.refers_to is None:
            assert ev.event is not None
            context = _context(program, history, ev.occurred_at, ev.event.location_id)
            res = earning.earn(program, ev.event, context)
            points[ev.id] = res.points
            issued[ev.member_id] += res.points
            earned_lines[ev.id] = tuple(
                ret.LineState(ln.line_id, ln.quantity, ln.points, ln.amount) for ln in res.lines
            )
            kinds[ev.id] = (ev.type, ev.occurred_at, res.status_miles)
            history.awards.extend(
                (rule_id, ev.occurred_at, ev.event.location_id) for rule_id, p in res.rules if p > 0
            )
            history.earned.append((ev.occurred_at, res.points))
            amount = res.qualifying_amount if ev.type == "purchase" else 0
            spend += amount
            history.rows.append(
                QualValues(
                    ev.occurred_at,
                    ev.occurred_at,
                    amount,
                    res.points,
                    1 if ev.type in ("purchase", "visit") else 0,
                    res.status_miles,
                    1 if ev.type == "flight" else 0,
                )
            )
            continue
        if ev.refers_to in earned_lines:
            lines = earned_lines[ev.refers_to]
            kind, original_at, miles = kinds[ev.refers_to]
            prior = reversals.setdefault(ev.refers_to, {})
        elif ev.refers_to in originals:
            original = originals[ev.refers_to]
            lines, kind, original_at = original.lines, original.type, original.occurred_at
            miles = original.status_miles
            prior = reversals.setdefault(ev.refers_to, {ln.line_id: ln for ln in original.reversed_before})
        else:
            points[ev.id] = 0
            continue
        try:
            if ev.type == "cancel":
                deltas = ret.reverse_all(lines, prior)
            elif ev.refund_amount is not None:
                deltas = ret.reverse_amount(lines, prior, ev.refund_amount)
            else:
                request: dict[str, int] = {}
                for line_id, q in ev.refund_lines:
                    request[line_id] = request.get(line_id, 0) + q
                deltas = ret.reverse_lines(lines, prior, request)
        except RefundExceedsPurchase:
            deltas = []
        back = sum(d.points for d in deltas)
        for d in deltas:
            done = prior.get(d.line_id, ret.LineState(d.line_id, 0, 0, 0))
            prior[d.line_id] = ret.LineState(
                d.line_id, done.quantity + d.quantity, done.points + d.points, done.amount + d.amount
            )
        all_back = sum(p.quantity for p in prior.values()) >= sum(ln.quantity for ln in lines) and sum(
            p.points for p in prior.values()
        ) >= sum(ln.points for ln in lines)
        points[ev.id] = -back
        taken[ev.member_id] += back
        amount = sum(d.amount for d in deltas) if kind == "purchase" else 0
        spend -= amount
        history.rows.append(
            QualValues(
                original_at,
                ev.occurred_at,
                -amount,
                -back,
                -1 if all_back and kind in ("purchase", "visit") else 0,
                -miles if all_back else 0,
                -1 if all_back and kind == "flight" else 0,
            )
        )
    members = {}
    for member_id, history in state.items():
        tier = _tier_state(end_program, history, end)
        members[member_id] = MemberOutcome(
            issued[member_id],
            taken[member_id],
            tier.level.id if tier is not None and tier.level is not None else None,
        )
    return Outcome(members, points, spend)


def most_affected(live: Outcome, draft: Outcome, limit: int) -> list[tuple[str, int, int]]:
    """``(member_id, live net, draft net)`` of the members whose net points differ most (by
    absolute difference, then member id), at most ``limit`` of them, differences of 0 left out."""
    rows = [
        (m, live.members[m].net, draft.members[m].net)
        for m in live.members
        if m in draft.members and live.members[m].net != draft.members[m].net
    ]
    rows.sort(key=lambda r: (-abs(r[2] - r[1]), r[0]))
    return rows[:limit]
