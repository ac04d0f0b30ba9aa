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
   events, event lines, event rules, qualifications, journals, lots, postings, and the cached
   balances with one executemany ``UPDATE``.

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
  concurrent writer recorded one of the ids first).

A purchase's flat awards, multipliers by product, tier and promotion, per-event caps, the earning
base, targeting, expiry (by tier too), tier upgrades within the batch and debt repayment are all
on the fast path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from patron.domain import earning
from patron.domain import tiers as tier_rules
from patron.domain.errors import IdempotencyConflict, PatronError
from patron.domain.expiry import lot_times
from patron.domain.ledger import Account, Balances, Posting, credit
from patron.domain.program import Program, RuleType
from patron.domain.tiers import Assignment, QualRow, TierState
from patron.services.clock import utcnow
from patron.services.event_schema import EventIn
from patron.services.events import (
    FUTURE_SLACK,
    body_hash,
    domain_event,
    parse_event,
    record_event,
)
from patron.services.members import PUBLIC_FIELDS
from patron.services.merchants import ensure_location
from patron.services.programs import program_at
from patron.services.tiers import METRIC_COLUMN, program_inputs, tier_summary
from patron.storage import ingest as repo
from patron.storage.integrations import savepoint
from patron.storage.tables import event_lines, event_rules, events, journals, lots, postings, qualifications


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


@dataclass(slots=True)
class _Writes:
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    quals: list[dict[str, Any]] = field(default_factory=list)
    journals: list[dict[str, Any]] = field(default_factory=list)
    lots: list[dict[str, Any]] = field(default_factory=list)
    postings: list[dict[str, Any]] = field(default_factory=list)
    deltas: dict[str, Balances] = field(default_factory=dict)
    earned: dict[Any, earning.EarnResult] = field(default_factory=dict)  # earn() is pure: memo
    ids: repo.Ids = field(default_factory=repo.Ids)
    timeless: dict[int, bool] = field(default_factory=dict)


class _Tiers:
    """A member's tier as ``evaluate`` gives it at one instant, advanced in O(1) per purchase.

    ``domain.tiers.history`` folds every qualification row from enrolment, so calling it for
    each event of a batch costs O(rows) per event. This keeps the last full result and moves it
    on only where the fold provably gives the same answer: a calendar-year or anniversary period
    without grace days, a member with no tier assignments, a row of a non-negative value whose
    time is the newest in the period being folded and inside it. Anything else asks ``evaluate``
    again."""

    def __init__(self, program: Program, member: dict[str, Any], given: list[Assignment]) -> None:
        tiers = program.tiers
        self.program, self.member, self.given = program, member, given
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
        return tier_rules.evaluate(
            self.tiers,
            rows,
            as_of=as_of,
            tz=self.tz,
            enrolled_at=self.member["enrolled_at"],
            assignments=self.given or (),
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


def record_purchases(conn: Connection, *, merchant_id: str, bodies: Sequence[Any]) -> list[Outcome]:
    """Apply ``bodies`` in order inside the caller's transaction, as ``record_event`` would one by
    one; one :class:`Outcome` per body, in the same order."""
    now = utcnow()
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

    found = repo.members_by_id(conn, merchant_id, {it.ev.member_id for it in items})
    balances = repo.lock_balances(conn, merchant_id, found)
    recorded = repo.recorded_events(conn, merchant_id, {it.ev.id for it in items})
    fast: dict[str, _Member] = {}
    member_of: dict[int, str] = {}
    programs: dict[tuple[str, datetime], tuple[Program, int]] = {}
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
            program, _ = _program_at(conn, programs, merchant_id, member["program_id"], it.occurred_at)
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
            entry = fast[member["id"]] = _Member(member, balances[member["id"]], {}, [])
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
        _load_tier_inputs(conn, merchant_id, fast, programs)
        for location in sorted(
            {it.ev.location_id for e in fast.values() for it in e.items if it.ev.location_id}
        ):
            ensure_location(conn, merchant_id=merchant_id, location_id=location)
        writes = _Writes()
        for entry in fast.values():
            before = entry.balances
            for it in entry.items:
                program, version = programs[(entry.row["program_id"], it.occurred_at)]
                result = _earn(writes, merchant_id, entry, program, version, it, now)
                out[it.index].created, out[it.index].result = True, result
            writes.deltas[entry.row["id"]] = _minus(entry.balances, before)
        try:
            with savepoint(conn):
                _write(conn, merchant_id, writes)
        except IntegrityError:  # a concurrent writer recorded one of these ids first
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
    merchant_id: str,
    program_id: str,
    at: datetime,
) -> tuple[Program, int]:
    key = (program_id, at)
    found = cache.get(key)
    if found is None:
        found = cache[key] = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=at)
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
) -> None:
    by_program: dict[str, list[str]] = {}
    for member_id, entry in fast.items():
        by_program.setdefault(entry.row["program_id"], []).append(member_id)
    for program_id, member_ids in by_program.items():
        metrics = {
            p.tiers.metric
            for (pid, _), (p, _) in programs.items()
            if pid == program_id and p.tiers is not None and p.tiers.levels
        }
        if not metrics:
            continue
        rows, given = program_inputs(
            conn, merchant_id=merchant_id, program_id=program_id, member_ids=member_ids, metrics=metrics
        )
        for member_id in member_ids:
            entry = fast[member_id]
            entry.rows = {metric: list(rows[metric].get(member_id, [])) for metric in metrics}
            entry.given = given.get(member_id, [])
            times = [r.recorded_at for kept in entry.rows.values() for r in kept]
            entry.newest = max(times) if times else None


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
    tz = ZoneInfo(program.timezone)
    metric = program.tiers.metric if program.tiers is not None and program.tiers.levels else None
    rows = m.rows.get(metric, []) if metric else []
    if metric and (m.earning is None or m.earning.program is not program):
        m.earning, m.shown = _Tiers(program, member, m.given), _Tiers(program, member, m.given)
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
    event_id = w.ids("evt")
    lot_id = w.ids("lot")
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
        journal_id = w.ids("jrn")
        w.journals.append(
            {
                "merchant_id": merchant_id,
                "id": journal_id,
                "member_id": member_id,
                "program_id": member["program_id"],
                "program_version": version,
                "kind": str(journal.kind),
                "reason": journal.reason,
                "event_id": event_id,
                "occurred_at": at,
                "created_at": now,
            }
        )
        if lot_points:
            available_from, expires_at = lot_times(
                at, pending_days=program.pending_days, policy=program.expiry, tz=tz, tier_id=tier_id
            )
            w.lots.append(
                {
                    "merchant_id": merchant_id,
                    "id": lot_id,
                    "member_id": member_id,
                    "journal_id": journal_id,
                    "points": lot_points,
                    "earned_at": at,
                    "available_from": available_from,
                    "expires_at": expires_at,
                }
            )
        w.postings.extend(
            _posting_row(w, merchant_id, journal_id, member_id, p, at) for p in journal.postings
        )
        m.balances = m.balances.apply(journal.postings)
    values = {
        "spend": res.qualifying_amount,
        "status_points": res.points,
        "visits": 1,
        "status_miles": res.status_miles,
        "segments": 0,
    }
    w.quals.append(
        {
            "merchant_id": merchant_id,
            "event_id": event_id,
            "member_id": member_id,
            "period_at": at,
            "recorded_at": at,
            **values,
        }
    )
    shown = _advance(m, rows, values[METRIC_COLUMN[metric]], at, now) if metric else None
    for name, kept in m.rows.items():  # later events see this one, as they would from the table
        value = values[METRIC_COLUMN[name]]
        if value:
            kept.append(QualRow(at, at, value, event_id))
            m.newest = at if m.newest is None or at > m.newest else m.newest
    if m.view is None:  # what does not change from one event to the next, as JSON once
        m.view = json.loads(json.dumps({k: member[k] for k in PUBLIC_FIELDS}, default=_json_default))
        m.view["referred_by"] = json.loads(json.dumps(member["referred_by"], default=_json_default))
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
    result = {
        "id": ev.id,
        "type": ev.type,
        "occurred_at": at.isoformat(),
        "points": res.points,
        "milestones": [],
        "referral": None,
        "qualifying_amount": res.qualifying_amount,
        "lines": [{"id": ln.line_id, "points": ln.points, "amount": ln.amount} for ln in res.lines],
        "rules": [{"rule_id": r, "points": p} for r, p in res.rules],
        "capped": res.capped,
        "program_version": version,
        "member": view,
    }
    w.events.append(
        {
            "merchant_id": merchant_id,
            "id": event_id,
            "external_id": ev.id,
            "program_id": member["program_id"],
            "program_version": version,
            "member_id": member_id,
            "type": ev.type,
            "occurred_at": at,
            "received_at": now,
            "refers_to": None,
            "location_id": ev.location_id,
            "points": res.points,
            "body_hash": it.digest,
            # what ``json.loads(json.dumps(body, default=str))`` stores, serialised once
            "body": repo.JsonText(json.dumps(it.body, default=str)),
            "result": result,
        }
    )
    w.lines.extend(
        {
            "merchant_id": merchant_id,
            "event_id": event_id,
            "line_id": ln.line_id,
            "quantity": ln.quantity,
            "points": ln.points,
            "amount": ln.amount,
        }
        for ln in res.lines
    )
    w.rules.extend(
        {"merchant_id": merchant_id, "event_id": event_id, "rule_id": r, "points": p} for r, p in res.rules
    )
    return result


def _advance(m: _Member, rows: list[QualRow], value: int, at: datetime, now: datetime) -> TierState | None:
    """Fold this event's qualification row ``(at, at, value)`` into the member's trackers; the
    tier the event's result shows: ``evaluate(rows + [row], max(now, at))`` as ``record_event``
    computes it (``rows``: the member's rows before this event)."""
    assert m.shown is not None and m.earning is not None
    as_of = max(now, at)
    if value:
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


def _posting_row(
    w: _Writes, merchant_id: str, journal_id: str, member_id: str, p: Posting, at: datetime
) -> dict[str, Any]:
    return {
        "merchant_id": merchant_id,
        "id": w.ids("pst"),
        "journal_id": journal_id,
        "member_id": member_id,
        "account": str(p.account),
        "amount": p.amount,
        "lot_id": p.lot_id,
        "occurred_at": at,
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _write(conn: Connection, merchant_id: str, w: _Writes) -> None:
    repo.insert_many(conn, events, w.events)
    repo.insert_many(conn, event_lines, w.lines)
    repo.insert_many(conn, event_rules, w.rules)
    repo.insert_many(conn, qualifications, w.quals)
    repo.insert_many(conn, journals, w.journals)
    repo.insert_many(conn, lots, w.lots)
    repo.insert_many(conn, postings, w.postings)
    repo.add_to_balances(conn, merchant_id, w.deltas)
