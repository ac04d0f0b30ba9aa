"""Batch ingestion: many purchase events applied at once, with the ledger one at a time gives.

``record_purchases`` takes a batch of event bodies (as ``POST /v1/events`` takes them) and
applies them inside the caller's transaction. It is set-based where the result is provably the
same as :func:`patron.services.events.record_event` applied to each body in turn:

1. parse every body; look the batch's members up in one query and lock their balance rows in
   member-id order (``SELECT ... ORDER BY member_id FOR UPDATE`` on PostgreSQL; SQLite has one
   writer), then drop, in one query, the event ids already recorded (a replay, or a conflict when
   the body differs) and repeats of an id inside the batch;
2. load what the rules need for those members in a few queries: qualification rows and tier
   assignments (``services.tiers.program_inputs``) and the cached balances (debt included);
3. compute each event with the pure domain functions, in the batch's order per member, carrying
   each member's state from one event to the next in memory: the tier as it evolves with the
   qualification rows (folded once per member and batch, then moved on row by row where that
   provably equals a full fold: :class:`_Tiers`), and the balances (a debt is repaid from the
   next earnings first); ``earning.earn`` is pure, so equal inputs in a batch are computed once;
4. write every row with one bulk statement per table (COPY on PostgreSQL, executemany on SQLite):
   events, event lines, event rules, qualifications, journals, lots, postings, the business
   events ``record_event`` announces in the outbox (``points.earned``, ``tier.changed``; each
   member's stream numbered on from its last ``seq``, under the member's lock), and the cached
   balances in one ``UPDATE`` (``UPDATE ... FROM unnest(...)`` on PostgreSQL). Rows are built
   as tuples with their values as the driver takes them, and the stored JSON (a result, a body,
   an outbox event's data) is the text ``json.dumps`` gives, assembled from pieces serialised
   once per batch or per member where they repeat (tests compare it with ``json.dumps``).

Everything else goes through ``record_event``, one event at a time in its own savepoint, so the
result is always right (the *slow path*):

* per body: not a purchase; a body that does not parse (the error is reported at once); an
  unknown member; a member who is not active; a currency other than the program's; an
  ``occurred_at`` in the future; and every other event of a member who has any of these in the
  batch (so that one member's events keep their order);
* per program version: a pending period (``pending_days``), a per-member cap, punch cards,
  rules that target segments, or count/spend milestones;
* the whole batch: when any of its members was referred and has no referral yet (a first purchase
  credits another member, the referrer), or when the bulk write meets a unique-key conflict (a
  concurrent writer recorded one of the ids first, or took an outbox number of one of the
  members' streams).

On PostgreSQL the first batches of a fresh database also give the planner statistics for the
tables the foreign-key checks of the bulk write look up (``storage.ingest.plan_statistics``):
without them a connection may plan those checks as scans of the merchant's whole table, and the
load becomes quadratic.

A purchase's flat awards, multipliers by product, tier and promotion, per-event caps, the earning
base, targeting, expiry (by tier too), tier upgrades within the batch and debt repayment are all
on the fast path.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _string
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from patron.domain import earning
from patron.domain import tiers as tier_rules
from patron.domain.errors import IdempotencyConflict, PatronError
from patron.domain.expiry import lot_times
from patron.domain.ledger import Account, Balances, credit
from patron.domain.program import Program, RuleType
from patron.domain.tiers import Assignment, Checkpoint, QualRow, TierState
from patron.services import outbox
from patron.services.clock import utcnow
from patron.services.event_schema import EventIn
from patron.services.events import (
    body_hash,
    domain_event,
    json_default,
    parse_event,
    record_event,
)
from patron.services.instant import FUTURE_SLACK
from patron.services.members import PUBLIC_FIELDS
from patron.services.merchants import ensure_location
from patron.services.programs import program_at
from patron.services.tiers import (
    METRIC_COLUMN,
    assignment_of,
    checkpoint_key,
    checkpoint_rows,
    resume_point,
    tier_summary,
)
from patron.storage import ingest as repo
from patron.storage import programs as programs_repo
from patron.storage import tiers as tier_repo
from patron.storage.db import execute_driver, is_postgres, pipelined
from patron.storage.ids import Ids
from patron.storage.integrations import savepoint


@dataclass(slots=True)
class Outcome:
    """What became of one body: recorded (``created``), a replay (``created`` False, the first
    result), or ``error`` (a :class:`PatronError`, or an ``IntegrityError`` from a concurrent
    writer), exactly as ``record_event`` would have raised it."""

    created: bool = False
    result: dict[str, Any] | None = None
    error: Exception | None = None


@dataclass(slots=True)
class _Item:
    index: int
    body: Any
    ev: EventIn
    digest: str
    occurred_at: datetime


@dataclass(slots=True)
class _Member:
    row: dict[str, Any]
    balances: Balances
    rows: dict[str, list[QualRow]]  # by metric: the qualification rows recorded so far
    given: list[Assignment]
    items: list[_Item] = field(default_factory=list)
    newest: datetime | None = None  # the latest recorded_at among rows
    earning: _Tiers | None = None  # the tier when each event occurred
    shown: _Tiers | None = None  # the tier after each event, as the result shows it
    view: dict[str, Any] | None = None  # the member's fields in every result, as JSON
    view_text: str = ""  # ``json.dumps(view)`` without its closing brace
    resume: Checkpoint | None = None  # where their tier folds start (None: enrolment)
    tiers_of: Program | None = None  # the program whose tier rules ``resume`` was taken under
    starts: list[datetime] = field(default_factory=list)  # their tier checkpoints' period starts
    tier_text: tuple[dict[str, Any] | None, str] | None = None  # the last tier shown, and as JSON


@dataclass(slots=True)
class _Writes:
    """The batch's rows, as tuples in ``storage.ingest``'s column order, values ready for the
    driver (``values``)."""

    values: repo.Values
    events: list[tuple[Any, ...]] = field(default_factory=list)
    lines: list[tuple[Any, ...]] = field(default_factory=list)
    rules: list[tuple[Any, ...]] = field(default_factory=list)
    quals: list[tuple[Any, ...]] = field(default_factory=list)
    journals: list[tuple[Any, ...]] = field(default_factory=list)
    lots: list[tuple[Any, ...]] = field(default_factory=list)
    postings: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[tuple[str, str, datetime, str]] = field(default_factory=list)  # type, member, at, data
    deltas: dict[str, Balances] = field(default_factory=dict)
    #: of each member with a row older than one of their checkpoints' periods, the oldest such row
    voids: dict[str, datetime] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # tier checkpoints to store
    #: the members whose checkpoints of periods after the time (all, for None) become theirs above
    replaced: dict[str, datetime | None] = field(default_factory=dict)
    earned: dict[Any, earning.EarnResult] = field(default_factory=dict)  # earn() is pure: memo
    texts: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)  # earn results' JSON
    ids: Ids = field(default_factory=Ids)
    timeless: dict[int, bool] = field(default_factory=dict)


class _Tiers:
    """A member's tier as ``evaluate`` gives it at one instant, advanced in O(1) per purchase.

    ``domain.tiers.history`` folds every qualification row from enrolment, so calling it for
    each event of a batch costs O(rows) per event. This keeps the last full result and moves it
    on only where the fold provably gives the same answer: a calendar-year or anniversary period
    without grace days, a member with no tier assignments, a row of a non-negative value whose
    time is the newest in the period being folded and inside it. Anything else asks ``evaluate``
    again."""

    def __init__(
        self, program: Program, member: dict[str, Any], given: list[Assignment], resume: Checkpoint | None
    ) -> None:
        tiers = program.tiers
        self.program, self.member, self.given, self.resume = program, member, given, resume
        self.placed = False  # whether a fold placed a period after ``resume``
        self.tiers = tiers
        self.tz = ZoneInfo(program.timezone)
        self.simple = (
            tiers is not None
            and tiers.period in ("calendar_year", "anniversary")
            and tiers.grace_days == 0
            and not given
        )
        self.state: TierState | None = None
        self.as_of: datetime | None = None

    def at(self, rows: list[QualRow], as_of: datetime, newest: datetime | None) -> TierState | None:
        """The state as of ``as_of``; ``newest`` is the latest ``recorded_at`` among ``rows``."""
        s = self.state
        if (
            self.simple
            and s is not None
            and self.as_of is not None
            and self.as_of <= as_of < s.period_end
            and (newest is None or newest <= self.as_of)
        ):
            self.as_of = as_of  # no row becomes visible and no period ends between the two
            return s
        self.state = self.evaluate(rows, as_of)
        self.as_of = as_of
        return self.state

    def evaluate(self, rows: list[QualRow], as_of: datetime) -> TierState | None:
        """``services.tiers.evaluate`` (the time zone parsed once)."""
        if self.tiers is None or not self.tiers.levels:
            return None
        state, _, checkpoints = self.fold(rows, as_of)
        self.placed = self.placed or bool(checkpoints)
        return state

    def fold(self, rows: list[QualRow], as_of: datetime) -> tuple[TierState, Any, list[Checkpoint]]:
        assert self.tiers is not None
        return tier_rules.fold(
            self.tiers,
            rows,
            as_of=as_of,
            tz=self.tz,
            enrolled_at=self.member["enrolled_at"],
            assignments=self.given or (),
            resume=self.resume,
        )

    def add(self, value: int, at: datetime, newest: datetime | None) -> None:
        """Fold one more row ``(at, at, value)`` into the state held (``at`` no later than its
        instant, and no earlier than ``newest``, the latest row already folded: the fold sorts
        rows by time, so the new one comes last)."""
        s = self.state
        tiers = self.tiers
        if not self.simple or s is None or tiers is None or self.as_of is None:
            self.state = None
            return
        if (
            value < 0
            or not (s.period_start <= at < s.period_end)
            or at > self.as_of
            or (newest is not None and at < newest)
        ):
            self.state = None
            return
        if not value:
            return
        running = s.value + value
        reached = tiers.reached(running)
        level, since, reason = s.level, s.since, s.reason
        if tiers.rank(reached.id if reached else None) > tiers.rank(level.id if level else None):
            assert reached is not None
            level, since = reached, max(at, s.period_start)
            reason = f"reached {tiers.metric} {running} (threshold {reached.threshold})"
        self.state = TierState(level, since, reason, running, s.period_start, s.period_end)


_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _timeless(program: Program) -> bool:
    """Whether no rule of ``program`` looks at the time of day, the weekday or a date window."""
    return not any(
        r.target.valid_from
        or r.target.valid_until
        or r.target.weekdays
        or r.target.hours_from
        or r.target.hours_to
        for r in program.rules
    )


def refresh_statistics(engine: Engine) -> None:
    """``ANALYZE`` the tables a bulk load fills (PostgreSQL; SQLite plans without statistics)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        conn.execute(
            text(
                "ANALYZE members, member_balances, events, event_lines, event_rules, journals, "
                "postings, lots, qualifications"
            )
        )
        conn.commit()


def fast_program(program: Program) -> bool:
    """Whether purchases under ``program`` can take the batch path (see the module docstring)."""
    return not (
        program.pending_days > 0
        or program.caps.per_member is not None
        or any(r.type == RuleType.PUNCH_CARD for r in program.rules)
        or any(r.target.segments for r in program.rules)
        or any(m.kind != "anniversary" for m in program.milestones)
    )


def record_purchases(
    conn: Connection, *, merchant_id: str, bodies: Sequence[Any], pause_gc: bool = True
) -> list[Outcome]:
    """Apply ``bodies`` in order inside the caller's transaction, as ``record_event`` would one by
    one; one :class:`Outcome` per body, in the same order. ``pause_gc``: without the cyclic
    garbage collector meanwhile (an import's large batches; not a server's small ones, which
    follow each other closely enough to keep it off for good)."""
    if not pause_gc:
        return _record_purchases(conn, merchant_id, bodies)
    with _no_cyclic_gc():
        return _record_purchases(conn, merchant_id, bodies)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while a batch is applied: a batch allocates a few
    hundred thousand small objects (parsed bodies, rows, results) that reference counting frees,
    and the collector, triggered by the allocations, would walk the whole heap again and again
    (10-14% of a batch's time, measured). It is resumed afterwards only if it was running."""
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()


def _record_purchases(conn: Connection, merchant_id: str, bodies: Sequence[Any]) -> list[Outcome]:
    now = utcnow()
    if conn.dialect.name == "postgresql":
        repo.plan_statistics(conn)
    out = [Outcome() for _ in bodies]
    items: list[_Item] = []
    slow: set[int] = set()
    first: dict[str, int] = {}  # event id -> index of its first body in the batch
    repeats: dict[int, int] = {}  # index of a repeated id -> index of its first body
    slow_members: set[str] = set()
    for i, body in enumerate(bodies):
        try:
            ev = parse_event(body)
        except PatronError as exc:
            out[i].error = exc
            continue
        if ev.id in first:
            repeats[i] = first[ev.id]
        else:
            first[ev.id] = i
        at = ev.occurred_at.astimezone(UTC) if ev.occurred_at else now
        if ev.type != "purchase" or at > now + FUTURE_SLACK:
            slow.add(i)
            slow_members.add(ev.member_id)  # the member's other events keep their order
            continue
        items.append(_Item(i, body, ev, body_hash(body), at))

    reads = repo.batch_reads(conn, merchant_id, {it.ev.member_id for it in items}, {it.ev.id for it in items})
    found, balances, recorded = reads.members, reads.balances, reads.recorded
    fast: dict[str, _Member] = {}
    member_of: dict[int, str] = {}
    programs: dict[tuple[str, datetime], tuple[Program, int]] = {}
    latest = dict(reads.latest)  # program id -> its latest version number
    fastness: dict[int, bool] = {}
    for it in items:
        if it.ev.id in recorded and it.index not in repeats:
            _replay(out[it.index], it, *recorded[it.ev.id])
            continue
        member = found.get(it.ev.member_id)
        if member is None or member["id"] not in balances:
            slow.add(it.index)
            continue
        member_of[it.index] = member["id"]
        if it.index in repeats:
            continue  # settled below, once it is known how its first body went
        try:
            program, _ = _program_at(
                conn, programs, latest, merchant_id, member["program_id"], it.occurred_at
            )
        except PatronError:
            slow.add(it.index)
            slow_members.add(member["id"])
            continue
        if (
            member["status"] != "active"
            or (it.ev.currency and it.ev.currency != program.currency)
            or not _cached(fastness, program)
        ):
            slow_members.add(member["id"])
        entry = fast.get(member["id"])
        if entry is None:
            starts = [c["period_start"] for c in reads.checkpoints.get(member["id"], ())]
            entry = fast[member["id"]] = _Member(member, balances[member["id"]], {}, [], starts=starts)
        entry.items.append(it)
    for member_id in slow_members & set(fast):
        slow.update(it.index for it in fast.pop(member_id).items)
    if fast and _referral_pending(conn, merchant_id, fast, programs):
        slow.update(it.index for e in fast.values() for it in e.items)
        fast = {}
    # A repeated id whose first body is not on the fast path may itself be recorded (when the
    # first fails), so it goes one at a time, and so do its member's other events, in order.
    changed = True
    while changed:
        changed = False
        for i, f in repeats.items():
            if i in slow or out[i].error is not None or out[i].result is not None:
                continue
            owner = fast.get(member_of.get(f, ""))
            if owner is not None and any(it.index == f for it in owner.items):
                continue
            slow.add(i)
            entry = fast.pop(member_of.get(i, ""), None)
            if entry is not None:
                slow.update(it.index for it in entry.items)
            changed = True

    if fast:
        _load_tier_inputs(conn, merchant_id, fast, programs, reads)
        for location in sorted(
            {it.ev.location_id for e in fast.values() for it in e.items if it.ev.location_id}
        ):
            ensure_location(conn, merchant_id=merchant_id, location_id=location)
        writes = _Writes(repo.Values(conn))
        for entry in fast.values():
            before = entry.balances
            for it in entry.items:
                program, version = programs[(entry.row["program_id"], it.occurred_at)]
                result = _earn(writes, merchant_id, entry, program, version, it, now)
                out[it.index].created, out[it.index].result = True, result
            writes.deltas[entry.row["id"]] = _minus(entry.balances, before)
            _checkpoint(writes, merchant_id, entry, now)
        if not _write_whole(conn, merchant_id, writes, now, reads.sequences):
            # a concurrent writer recorded one of these ids (or numbered a stream) first
            for entry in fast.values():
                for it in entry.items:
                    out[it.index] = Outcome()
                    slow.add(it.index)
            slow.update(i for i in repeats if out[i].error is None and out[i].result is None)
    for i in sorted(slow):
        out[i] = _one(conn, merchant_id, bodies[i])
    by_index = {it.index: it for it in items} if repeats else {}
    for i, f in repeats.items():  # the first body was recorded on the fast path: a replay or a 409
        if i in slow or out[i].error is not None or out[i].result is not None:
            continue
        first_result = out[f].result
        assert first_result is not None
        _replay(out[i], by_index[i], by_index[f].digest, first_result)
    return out


def _cached(fastness: dict[int, bool], program: Program) -> bool:
    found = fastness.get(id(program))
    if found is None:
        found = fastness[id(program)] = fast_program(program)
    return found


def _one(conn: Connection, merchant_id: str, body: Any) -> Outcome:
    try:
        with savepoint(conn):
            result, created = record_event(conn, merchant_id=merchant_id, body=body)
    except (PatronError, IntegrityError) as exc:
        return Outcome(error=exc)
    return Outcome(created, result)


def _replay(outcome: Outcome, it: _Item, digest: str, result: dict[str, Any]) -> None:
    if digest != it.digest:
        outcome.error = IdempotencyConflict(f"event {it.ev.id} was already recorded with a different body")
    else:
        outcome.result = result


def _program_at(
    conn: Connection,
    cache: dict[tuple[str, datetime], tuple[Program, int]],
    latest: dict[str, int],
    merchant_id: str,
    program_id: str,
    at: datetime,
) -> tuple[Program, int]:
    """``program_at``, its versions' times read once a batch (not once an instant)."""
    key = (program_id, at)
    found = cache.get(key)
    if found is None:
        number = latest.get(program_id)
        if number is None:
            number = latest[program_id] = programs_repo.latest_version_number(conn, merchant_id, program_id)
        found = cache[key] = program_at(
            conn, merchant_id=merchant_id, program_id=program_id, at=at, latest=number
        )
    return found


def _referral_pending(
    conn: Connection,
    merchant_id: str,
    fast: dict[str, _Member],
    programs: dict[tuple[str, datetime], tuple[Program, int]],
) -> bool:
    """Whether a first purchase in the batch may complete a referral (credit another member)."""
    paying = {pid for (pid, _), (p, _) in programs.items() if p.referrer_points or p.referee_points}
    referred = [m for m, e in fast.items() if e.row["referred_by"] and e.row["program_id"] in paying]
    if not referred:
        return False
    return bool(set(referred) - repo.referees_with_referral(conn, merchant_id, referred))


def _load_tier_inputs(
    conn: Connection,
    merchant_id: str,
    fast: dict[str, _Member],
    programs: dict[tuple[str, datetime], tuple[Program, int]],
    reads: repo.BatchReads,
) -> None:
    """Each member's qualification rows, assignments (``reads``) and, where the batch's events
    fall under one set of tier rules, their tier checkpoint (``reads``): the rows from it on
    when it holds for their earliest event in the batch, else their whole history."""
    by_program: dict[str, list[str]] = {}
    for member_id, entry in fast.items():
        by_program.setdefault(entry.row["program_id"], []).append(member_id)
    for program_id, member_ids in by_program.items():
        tiered = [
            p
            for (pid, _), (p, _) in programs.items()
            if pid == program_id and p.tiers is not None and p.tiers.levels
        ]
        if not tiered:
            continue
        metrics = {p.tiers.metric for p in tiered if p.tiers is not None}
        single = tiered[0] if all(_same_tiers(p, tiered[0]) for p in tiered) else None
        for at in range(0, len(member_ids), TIER_CHUNK):
            chunk = member_ids[at : at + TIER_CHUNK]
            given = {m: reads.assignments[m] for m in chunk if m in reads.assignments}
            stored = {m: reads.checkpoints[m] for m in chunk if m in reads.checkpoints} if single else {}
            first = {m: min(it.occurred_at for it in fast[m].items) for m in stored}  # their earliest event
            chosen: dict[str, dict[str, Any]] = {}
            for member_id, taken in stored.items():  # the latest under the rules that holds
                assert single is not None
                key = checkpoint_key(single, fast[member_id].row)
                usable = [c for c in taken if c["key"] == key and c["seen_upto"] <= first[member_id]]
                if usable:
                    chosen[member_id] = usable[-1]
            since = {m: (c["period_start"], c["seen_upto"]) for m, c in chosen.items()}
            rows = {
                metric: repo.qualification_rows(conn, merchant_id, chunk, METRIC_COLUMN[metric], since=since)
                for metric in metrics
            }
            whole = []
            for member_id in chunk:
                entry = fast[member_id]
                entry.rows = {metric: rows[metric].get(member_id, []) for metric in metrics}
                entry.given = [assignment_of(a) for a in given.get(member_id, ())]
                picked = chosen.get(member_id)
                if picked is None or single is None or single.tiers is None:
                    continue
                mine = entry.rows[single.tiers.metric]
                entry.resume = resume_point(single, entry.row, entry.given, picked, mine, first[member_id])
                if entry.resume is None:
                    whole.append(member_id)  # it does not hold: the whole history, as without one
                else:
                    entry.tiers_of = single
            if whole:
                full = {
                    metric: repo.qualification_rows(conn, merchant_id, whole, METRIC_COLUMN[metric])
                    for metric in metrics
                }
                for member_id in whole:
                    fast[member_id].rows = {metric: full[metric].get(member_id, []) for metric in metrics}
            for member_id in chunk:
                entry = fast[member_id]
                times = [r.recorded_at for kept in entry.rows.values() for r in kept]
                entry.newest = max(times) if times else None


def _same_tiers(a: Program, b: Program) -> bool:
    """Whether a tier fold under ``a`` is one under ``b`` (the rules and the time zone)."""
    return a is b or (a.tiers == b.tiers and a.timezone == b.timezone)


def _checkpoint(w: _Writes, merchant_id: str, m: _Member, now: datetime) -> None:
    """Keep what the member's checkpoints become with the batch: when a fold placed a period
    after the one it resumed from, one more fold over every row (the batch's included) gives the
    checkpoints, of which those of periods up to the batch's latest event are kept (later ones
    an older history still to come would void)."""
    tracker = m.shown
    if tracker is None or not (tracker.placed or (m.earning is not None and m.earning.placed)):
        return
    assert tracker.tiers is not None
    last = max(it.occurred_at for it in m.items)
    _, _, checkpoints = tracker.fold(m.rows.get(tracker.tiers.metric, []), max(now, last))
    kept = [c for c in checkpoints if c.period_start <= last]
    member_id = m.row["id"]
    w.replaced[member_id] = tracker.resume.period_start if tracker.resume else None
    w.checkpoints += checkpoint_rows(
        merchant_id=merchant_id,
        program=tracker.program,
        member=m.row,
        given=m.given,
        checkpoints=kept,
        now=now,
    )


#: members whose tier inputs are read at once (``storage.tiers`` reads the whole program's
#: assignments for more)
TIER_CHUNK = 1000


def _minus(a: Balances, b: Balances) -> Balances:
    return Balances(
        a.available - b.available,
        a.pending - b.pending,
        a.reserved - b.reserved,
        a.debt - b.debt,
        a.lifetime_earned - b.lifetime_earned,
        a.expired - b.expired,
        a.redeemed - b.redeemed,
    )


def _earn(
    w: _Writes,
    merchant_id: str,
    m: _Member,
    program: Program,
    version: int,
    it: _Item,
    now: datetime,
) -> dict[str, Any]:
    """``services.events._earn`` for one purchase on the fast path, against the member's state
    in memory; appends the rows to write and advances the state."""
    ev, at, member = it.ev, it.occurred_at, m.row
    member_id = member["id"]
    program_id = member["program_id"]
    metric = program.tiers.metric if program.tiers is not None and program.tiers.levels else None
    rows = m.rows.get(metric, []) if metric else []
    if metric and (m.earning is None or m.earning.program is not program):
        resume = m.resume if m.tiers_of is not None and _same_tiers(m.tiers_of, program) else None
        m.earning = _Tiers(program, member, m.given, resume)
        m.shown = _Tiers(program, member, m.given, resume)
    state = m.earning.at(rows, at, m.newest) if metric and m.earning else None
    tier = state.level if state else None
    tier_id = tier.id if tier else None
    event = domain_event(ev, at)
    timeless = w.timeless.get(id(program))
    if timeless is None:
        timeless = w.timeless[id(program)] = _timeless(program)
    key = (id(program), tier, replace(event, occurred_at=_EPOCH) if timeless else event)
    res = w.earned.get(key)
    if res is None:
        res = w.earned[key] = earning.earn(program, event, earning.Context(tier=tier))
    ids, value = w.ids, w.values.instant
    event_id = ids("evt")
    lot_id = ids("lot")
    at_v, now_v = value(at), value(now)
    journal = credit(
        res.points,
        debt=m.balances.debt,
        into=Account.AVAILABLE,
        lot_id=lot_id,
        counter=Account.ISSUED,
        reason=f"{ev.type} {ev.id}",
    )
    if journal is not None:
        lot_points = sum(p.amount for p in journal.postings if p.lot_id)
        journal_id = ids("jrn")
        w.journals.append(
            (
                merchant_id,
                journal_id,
                member_id,
                program_id,
                version,
                str(journal.kind),
                journal.reason,
                event_id,
                at_v,
                now_v,
            )
        )
        if lot_points:
            available_from, expires_at = lot_times(
                at,
                pending_days=program.pending_days,
                policy=program.expiry,
                tz=ZoneInfo(program.timezone),
                tier_id=tier_id,
            )
            w.lots.append(
                (
                    merchant_id,
                    lot_id,
                    member_id,
                    journal_id,
                    lot_points,
                    at_v,
                    value(available_from),
                    w.values.maybe_instant(expires_at),
                )
            )
        w.postings.extend(
            (merchant_id, ids("pst"), journal_id, member_id, str(p.account), p.amount, p.lot_id, at_v)
            for p in journal.postings
        )
        m.balances = m.balances.apply(journal.postings)
    values = {
        "spend": res.qualifying_amount,
        "status_points": res.points,
        "visits": 1,
        "status_miles": res.status_miles,
        "segments": 0,
    }
    if any(at < start for start in m.starts) and (member_id not in w.voids or at < w.voids[member_id]):
        w.voids[member_id] = at
    w.quals.append(
        (
            merchant_id,
            event_id,
            member_id,
            at_v,
            at_v,
            res.qualifying_amount,
            res.points,
            1,
            res.status_miles,
            0,
        )
    )
    shown = _advance(m, rows, values[METRIC_COLUMN[metric]], at, now) if metric else None
    moved_from = tier_id  # what the event moved the tier held at ``max(now, at)`` from
    if tier_id is not None and (shown.level.id if shown and shown.level else None) != tier_id:
        assert m.shown is not None  # a late event: the tier held then, without this row
        without = m.shown.evaluate(rows, max(now, at))
        moved_from = without.level.id if without and without.level else None
    for name, kept in m.rows.items():  # later events see this one, as they would from the table
        amount = values[METRIC_COLUMN[name]]
        if amount:
            kept.append(QualRow(at, at, amount, event_id))
            m.newest = at if m.newest is None or at > m.newest else m.newest
    if m.view is None:  # what does not change from one event to the next, as JSON once
        fields = {k: member[k] for k in PUBLIC_FIELDS}
        fields["referred_by"] = member["referred_by"]
        serialised = json.dumps(fields, default=json_default)
        m.view, m.view_text = json.loads(serialised), serialised[:-1]  # dumps(loads(s)) == s
    view = dict(m.view)
    b = m.balances  # services.ledger.points_view, field by field
    view["points"] = {
        "available": b.available,
        "pending": b.pending,
        "reserved": b.reserved,
        "debt": b.debt,
        "lifetime_earned": b.lifetime_earned,
        "expired": b.expired,
        "redeemed": b.redeemed,
    }
    summary = tier_summary(shown)
    if summary is not None:
        summary = {**summary, "since": summary["since"].isoformat()}
    view["tier"] = summary
    if m.tier_text is None or m.tier_text[0] != summary:
        m.tier_text = (summary, json.dumps(summary))
    rules = [{"rule_id": r, "points": p} for r, p in res.rules]
    iso = at.isoformat()
    result = {
        "id": ev.id,
        "type": ev.type,
        "occurred_at": iso,
        "points": res.points,
        "milestones": [],
        "referral": None,
        "qualifying_amount": res.qualifying_amount,
        "lines": [{"id": ln.line_id, "points": ln.points, "amount": ln.amount} for ln in res.lines],
        "rules": rules,
        "capped": res.capped,
        "program_version": version,
        "member": view,
    }
    # ``json.dumps(result)``, from pieces serialised once per batch (the earning's), per member
    # (its fields, its tier) or per event
    texts = w.texts.get((id(res), version))
    if texts is None:
        texts = w.texts[(id(res), version)] = (
            json.dumps({k: result[k] for k in _MIDDLE} | {"program_version": version})[1:-1],
            json.dumps(rules, sort_keys=True),
        )
    external, kind = _string(ev.id), _string(ev.type)
    stored = (
        f'{{"id": {external}, "type": {kind}, "occurred_at": {_string(iso)}, '
        f'{texts[0]}, "member": {m.view_text}, "points": {_POINTS.format(b)}, '
        f'"tier": {m.tier_text[1]}}}}}'
    )
    w.events.append(
        (
            merchant_id,
            event_id,
            ev.id,
            program_id,
            version,
            member_id,
            ev.type,
            at_v,
            now_v,
            None,
            ev.location_id,
            res.points,
            it.digest,
            # what ``json.loads(json.dumps(body, default=str))`` stores, serialised once
            _BODY.encode(it.body),
            stored,
        )
    )
    w.lines.extend((merchant_id, event_id, ln.line_id, ln.quantity, ln.points, ln.amount) for ln in res.lines)
    w.rules.extend((merchant_id, event_id, r, p) for r, p in res.rules)
    # services.events._announce: what ``outbox.emit`` stores for this event, its data as
    # ``json.dumps(data, sort_keys=True)``
    about = f'{{"balances": {_SORTED_POINTS.format(b)}, "event_id": {external}, "event_type": {kind}, '
    if res.points > 0:
        data = f'{about}"points": {res.points}, "rules": {texts[1]}}}'
        w.outbox.append((outbox.POINTS_EARNED, member_id, at, data))
    elif res.points < 0:
        reversed_ = {"event_id": ev.id, "event_type": ev.type, "balances": view["points"]}
        reversed_ |= {"points": res.points, "refers_to": ev.refers_to}
        w.outbox.append((outbox.POINTS_REVERSED, member_id, at, json.dumps(reversed_, sort_keys=True)))
    shown_id = summary["id"] if summary else None
    if moved_from is not None and shown_id != moved_from:
        changed = {
            "event_id": ev.id,
            "event_type": ev.type,
            "balances": view["points"],
            "from": moved_from,
            "to": shown_id,
            "cause": "event",
        }
        data = json.dumps(changed, sort_keys=True)
        w.outbox.append((outbox.TIER_CHANGED, member_id, at, data))
    return result


_BODY = json.JSONEncoder(default=str)  # json.dumps(body, default=str), the encoder made once
_MIDDLE = ("points", "milestones", "referral", "qualifying_amount", "lines", "rules", "capped")
_SORTED_POINTS = (
    '{{"available": {0.available}, "debt": {0.debt}, "expired": {0.expired}, '
    '"lifetime_earned": {0.lifetime_earned}, "pending": {0.pending}, "redeemed": {0.redeemed}, '
    '"reserved": {0.reserved}}}'
)
_POINTS = (
    '{{"available": {0.available}, "pending": {0.pending}, "reserved": {0.reserved}, '
    '"debt": {0.debt}, "lifetime_earned": {0.lifetime_earned}, "expired": {0.expired}, '
    '"redeemed": {0.redeemed}}}'
)


def _advance(m: _Member, rows: list[QualRow], value: int, at: datetime, now: datetime) -> TierState | None:
    """Fold this event's qualification row ``(at, at, value)`` into the member's trackers; the
    tier the event's result shows: ``evaluate(rows + [row], max(now, at))`` as ``record_event``
    computes it (``rows``: the member's rows before this event)."""
    assert m.shown is not None and m.earning is not None
    as_of = max(now, at)
    if value:
        if m.shown.state is None and m.earning.state is not None:  # ``at`` checks that it holds
            m.shown.state, m.shown.as_of = m.earning.state, m.earning.as_of  # at ``as_of`` too
        m.shown.at(rows, as_of, m.newest)
        m.shown.add(value, at, m.newest)
    else:  # a row of 0 is shown with this event but not stored: the next one starts afresh
        m.shown.state = None
    shown = m.shown.state
    if shown is None:
        shown = m.shown.evaluate([*rows, QualRow(at, at, value)], as_of)
        if value:
            m.shown.state, m.shown.as_of = shown, as_of
    m.earning.add(value, at, m.newest)
    return shown


#: the savepoint a batch's writes go under on PostgreSQL: opened in the same round trip as they
#: are, rolled back to on a clash, never released (the commit does that)
SAVEPOINT = "patron_batch"


def _write_whole(
    conn: Connection, merchant_id: str, w: _Writes, now: datetime, sequences: dict[str, int]
) -> bool:
    """:func:`_write` as a whole or not at all: False (and nothing written) when a unique key
    was taken by a concurrent writer (an event id, or a stream's next number)."""
    if not is_postgres(conn):
        try:
            with savepoint(conn):
                _write(conn, merchant_id, w, now, sequences)
        except IntegrityError:
            return False
        return True
    try:
        _write(conn, merchant_id, w, now, sequences, mark=SAVEPOINT)
    except IntegrityError:
        execute_driver(conn, f"ROLLBACK TO SAVEPOINT {SAVEPOINT}", {})
        return False
    return True


def _write(
    conn: Connection,
    merchant_id: str,
    w: _Writes,
    now: datetime,
    sequences: dict[str, int],
    *,
    mark: str | None = None,
) -> None:
    """Write the batch's rows; ``mark``: open a savepoint of that name first (PostgreSQL)."""
    outbox_rows = []
    if w.outbox:  # each member's stream goes on from its last number (``sequences``), in order
        last = dict(sequences)
        value = w.values.instant
        created = value(now)
        for kind, member_id, at, data in w.outbox:
            seq = last[member_id] = last.get(member_id, 0) + 1
            outbox_rows.append(
                (merchant_id, w.ids("evt"), kind, member_id, member_id, seq, value(at), created, data, None)
            )
    tables = (
        ("events", w.events),
        ("event_lines", w.lines),
        ("event_rules", w.rules),
        ("qualifications", w.quals),
        ("journals", w.journals),
        ("lots", w.lots),
        ("postings", w.postings),
        ("outbox_events", outbox_rows),
    )
    few = all(len(rows) <= repo.FEW_ROWS for _, rows in tables)  # a server's batch: one round trip
    with pipelined(conn) if few else nullcontext():
        if mark is not None:
            execute_driver(conn, f"SAVEPOINT {mark}", {})
        for table, rows in tables:
            repo.insert_rows(conn, table, rows)
        repo.add_to_balances(conn, merchant_id, w.deltas)
    voided: dict[str, datetime | None] = {m: at for m, at in w.voids.items() if m not in w.replaced}
    if voided:  # a row of a period before a member's tier checkpoint voids it
        tier_repo.replace_checkpoints(conn, merchant_id, voided, [])
    if w.replaced:
        tier_repo.replace_checkpoints(conn, merchant_id, w.replaced, w.checkpoints)
