"""Events: record what a member did, earn or take back points, and explain every point.

One event is one transaction: the event row, its per-line and per-rule attribution, its
qualification row and its journals are written together or not at all. The event id is the
idempotency key: a replay with the same body returns the first result and writes nothing; the
same id with a different body is a conflict.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import Connection

from patron.domain import earning
from patron.domain import returns as ret
from patron.domain.errors import (
    Conflict,
    IdempotencyConflict,
    InvalidInput,
    MemberInactive,
    NotFound,
)
from patron.domain.expiry import add_months, lot_times
from patron.domain.ledger import (
    Account,
    Balances,
    Journal,
    JournalKind,
    Posting,
    credit,
    spending_order,
    take_back,
)
from patron.domain.program import Period, Program, Rule, RuleType
from patron.domain.tiers import Assignment, Checkpoint, QualRow, TierState, next_level, resumable
from patron.domain.travel import great_circle_miles
from patron.services import milestones, referrals
from patron.services.clock import utcnow
from patron.services.event_schema import EventIn
from patron.services.instant import FUTURE_SLACK
from patron.services.ledger import points_view
from patron.services.members import PUBLIC_FIELDS
from patron.services.merchants import ensure_location
from patron.services.programs import _errors, program_at
from patron.services.tiers import (
    METRIC_COLUMN,
    assignment_of,
    assignments,
    checkpoint_key,
    evaluate,
    fold,
    qualification_rows,
    resume_point,
    save_checkpoints,
    tier_state,
    tier_summary,
    void_checkpoints,
)
from patron.storage import events as repo
from patron.storage import ledger as ledger_repo
from patron.storage import members as members_repo
from patron.storage import punch_cards as punch_repo
from patron.storage.db import pipelined
from patron.storage.ids import new_id

BUILTIN_TYPES = frozenset({"purchase", "refund", "cancel", "visit", "flight"})


def body_hash(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_event(body: Any) -> EventIn:
    try:
        return EventIn.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput("the event is not valid", errors=_errors(exc))


def _replay(existing: dict[str, Any], digest: str) -> tuple[dict[str, Any], bool]:
    if existing["body_hash"] != digest:
        raise IdempotencyConflict(
            f"event {existing['external_id']} was already recorded with a different body"
        )
    return existing["result"], False


def record_event(conn: Connection, *, merchant_id: str, body: Any) -> tuple[dict[str, Any], bool]:
    """Apply one event. Returns ``(result, created)``; ``created`` is False for a replay."""
    ev = parse_event(body)
    digest = body_hash(body)
    found = repo.member_for_event(conn, merchant_id, ev.member_id)  # balances locked from here
    if found is None:
        existing = repo.get_event(conn, merchant_id, ev.id)
        if existing is not None:  # the member was erased or the id reused: still a replay
            return _replay(existing, digest)
        raise NotFound(f"member {ev.member_id} not found")
    member, balances, latest = found
    now = utcnow()
    occurred_at = ev.occurred_at.astimezone(UTC) if ev.occurred_at else now
    if occurred_at > now + FUTURE_SLACK:
        raise InvalidInput("occurred_at is in the future", field="occurred_at")
    program, version = program_at(
        conn, merchant_id=merchant_id, program_id=member["program_id"], at=occurred_at, latest=latest
    )
    tiers = program.tiers
    existing, rows, given, stored = repo.event_inputs(  # read under the member's lock, in one round trip
        conn,
        merchant_id,
        member["id"],
        ev.id,
        column=METRIC_COLUMN[tiers.metric] if tiers is not None and tiers.levels else None,
        assignments=tiers is not None,
        key=checkpoint_key(program, member),
        as_of=occurred_at,
    )
    if existing is not None:
        return _replay(existing, digest)
    if ev.type not in BUILTIN_TYPES and ev.type not in program.actions():
        raise InvalidInput(
            f"unknown event type {ev.type!r}: use purchase, refund, cancel, visit, flight or a "
            f"custom action the program defines ({', '.join(sorted(program.actions())) or 'none'})",
            field="type",
        )
    if ev.currency and ev.currency != program.currency:
        raise InvalidInput(f"currency {ev.currency} does not match the program's {program.currency}")
    if ev.location_id:
        ensure_location(conn, merchant_id=merchant_id, location_id=ev.location_id)
    ctx = _Ctx(conn, merchant_id, member, program, version, occurred_at, now, balances)
    ctx.rows = [QualRow(*r) for r in rows]
    ctx.given = [assignment_of(a) for a in given]
    if stored is not None:  # the rows from the member's checkpoint on: resume there, or read them all
        ctx.resume = resume_point(program, member, ctx.given, stored, ctx.rows, occurred_at)
        if ctx.resume is None:
            ctx.rows = qualification_rows(
                conn, merchant_id=merchant_id, member_id=member["id"], program=program
            )
    if ev.type in ("refund", "cancel"):
        result = _reverse(ctx, ev, digest, body)
    else:
        if member["status"] != "active":
            raise MemberInactive(f"member is {member['status']}: no earning")
        result = _earn(ctx, ev, digest, body)
    return result, True


class _Ctx:
    def __init__(
        self,
        conn: Connection,
        merchant_id: str,
        member: dict[str, Any],
        program: Program,
        version: int,
        occurred_at: datetime,
        now: datetime,
        balances: Balances,
    ) -> None:
        self.conn, self.merchant_id, self.member = conn, merchant_id, member
        self.program, self.version = program, version
        self.occurred_at, self.now, self.balances = occurred_at, now, balances
        self.rows: list[QualRow] = []  # the member's qualification rows of the tier metric
        self.given: list[Assignment] = []  # their tier assignments
        self.resume: Checkpoint | None = None  # where their tier fold starts (None: enrolment)
        self.after = balances  # balances once this event's journals are written
        self.tier_id: str | None = None  # the tier held when the event occurred
        self.folded: tuple[list[QualRow], QualRow] = ([], QualRow(occurred_at, occurred_at, 0))  # rows, own

    def tier_after(self, row: QualRow) -> TierState | None:
        """The member's tier once the event's own ``row`` (written) counts; the checkpoints of the
        periods placed since the one it resumed from are stored (all of them, when it folded
        from enrolment)."""
        as_of = max(self.now, self.occurred_at)
        rows = [*self.rows, row]
        if self.resume is not None and not resumable(self.resume, rows, as_of):
            # a return of a purchase of a period before the checkpoint: that period changed
            rows = qualification_rows(
                self.conn, merchant_id=self.merchant_id, member_id=self.member["id"], program=self.program
            )
            self.resume = None
        self.folded = (rows, row)
        folded = fold(self.program, self.member, rows, as_of, self.given, self.resume)
        if folded is None:
            # no tiers when the event occurred, yet its row counts under the tiers of other times
            # (those in force now, say): the checkpoints placed after it were placed without it
            void_checkpoints(
                self.conn, merchant_id=self.merchant_id, member_id=self.member["id"], after=self.occurred_at
            )
            return None
        state, checkpoints = folded
        if checkpoints:
            save_checkpoints(
                self.conn,
                merchant_id=self.merchant_id,
                program=self.program,
                member=self.member,
                given=self.given,
                resume=self.resume,
                checkpoints=checkpoints,
                now=self.now,
            )
        return state

    def tier_without(self) -> str | None:
        """The tier at the instant :meth:`tier_after` folded to, without the event's own row: what
        the event moved the member from (the tier when it occurred may differ, for a late one)."""
        rows, row = self.folded
        others = [r for r in rows if r is not row and r.source != row.source]
        folded = fold(
            self.program, self.member, others, max(self.now, self.occurred_at), self.given, self.resume
        )
        return folded[0].level.id if folded is not None and folded[0].level else None

    def write(
        self, journal: Journal, *, event_id: str, at: datetime, lot: ledger_repo.NewLot | None = None
    ) -> str:
        self.after = self.after.apply(journal.postings)
        return ledger_repo.write_journal(
            self.conn,
            journal,
            merchant_id=self.merchant_id,
            member_id=self.member["id"],
            program_id=self.member["program_id"],
            program_version=self.version,
            occurred_at=at,
            created_at=self.now,
            event_id=event_id,
            lot=lot,
        )


@cache
def _airports() -> dict[str, Any]:
    import airportsdata

    return dict(airportsdata.load("IATA"))


def _distance(origin: str, destination: str) -> float:
    airports = _airports()
    missing = [code for code in (origin, destination) if code not in airports]
    if missing:
        raise InvalidInput(f"unknown airport code(s): {', '.join(missing)}")
    a, b = airports[origin], airports[destination]
    return great_circle_miles(float(a["lat"]), float(a["lon"]), float(b["lat"]), float(b["lon"]))


def domain_event(ev: EventIn, occurred_at: datetime) -> earning.Event:
    return earning.Event(
        type=ev.type,
        occurred_at=occurred_at,
        lines=tuple(
            earning.Line(
                id=ln.id,
                quantity=ln.quantity,
                unit_price=ln.unit_price,
                sku=ln.sku,
                category=ln.category,
                discount=ln.discount,
                tax=ln.tax,
                gift_card=ln.gift_card,
            )
            for ln in ev.purchase_lines()
        ),
        location_id=ev.location_id,
        channel=ev.channel,
        shipping=ev.shipping,
        amount=ev.amount,
        distance_miles=_distance(ev.origin, ev.destination)
        if ev.type == "flight" and ev.origin and ev.destination
        else None,
        fare_class=ev.fare_class,
        fare=ev.fare,
    )


def period_window(period: Period, at: datetime, tz: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """The calendar day/month/year containing ``at`` in ``tz``; lifetime is unbounded."""
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


def earning_context(
    conn: Connection,
    merchant_id: str,
    member: dict[str, Any] | None,
    program: Program,
    at: datetime,
    rows: list[QualRow] | None = None,
    given: list[Assignment] | None = None,
    location_id: str | None = None,
    resume: Checkpoint | None = None,
) -> earning.Context:
    """What the rules need to know about the member at ``at``: the tier held then (before this
    event), prior awards of rules with frequency limits (for once-a-day visit and punch-card
    rules: that day at ``location_id``), and points earned in the cap period."""
    if member is None:
        return earning.Context()
    tz = ZoneInfo(program.timezone)
    if rows is None:
        rows = qualification_rows(conn, merchant_id=merchant_id, member_id=member["id"], program=program)
    if given is None:
        given = assignments(conn, merchant_id=merchant_id, member_id=member["id"]) if program.tiers else []
    state = evaluate(program, member, rows, at, given, resume)
    counts = {}
    for rule in program.rules:
        if rule.type == RuleType.ACTION and rule.limit_count is not None:
            start, end = period_window(rule.limit_per, at, tz)
            counts[rule.id] = repo.action_count(conn, merchant_id, member["id"], rule.id, start, end)
        elif rule.type in (RuleType.VISIT, RuleType.PUNCH_CARD) and rule.once_per_day:
            start, end = period_window(Period.DAY, at, tz)
            if rule.type == RuleType.VISIT:
                counts[rule.id] = repo.action_count(
                    conn, merchant_id, member["id"], rule.id, start, end, location_id=location_id
                )
            else:
                counts[rule.id] = punch_repo.punched_between(
                    conn, merchant_id, member["id"], rule.id, location_id, start, end
                )
    earned = 0
    if program.caps.per_member is not None:
        start, end = period_window(program.caps.per_member_period, at, tz)
        earned = repo.earned_between(conn, merchant_id, member["id"], start, end)
    segment = None
    if any(rule.target.segments for rule in program.rules):
        from patron.services.segments import segment_of

        segment = segment_of(conn, merchant_id=merchant_id, member_id=member["id"])
    return earning.Context(
        tier=state.level if state else None,
        action_counts=counts,
        earned_in_cap_period=earned,
        segment=segment,
    )


def _earn(ctx: _Ctx, ev: EventIn, digest: str, body: Any) -> dict[str, Any]:
    program = ctx.program
    context = earning_context(
        ctx.conn,
        ctx.merchant_id,
        ctx.member,
        program,
        ctx.occurred_at,
        ctx.rows,
        ctx.given,
        ev.location_id,
        ctx.resume,
    )
    ctx.tier_id = context.tier.id if context.tier else None
    res = earning.earn(program, domain_event(ev, ctx.occurred_at), context)
    event_id = new_id("evt")
    lot_id = new_id("lot")
    pending = program.pending_days > 0
    journal = credit(
        res.points,
        debt=ctx.balances.debt,
        into=Account.PENDING if pending else Account.AVAILABLE,
        lot_id=lot_id,
        counter=Account.ISSUED,
        reason=f"{ev.type} {ev.id}",
    )
    with ExitStack() as writes:
        # the event's writes go in one round trip on PostgreSQL: nothing inside reads before
        # ``writes.close()`` but the outbox's last insert, whose result is read straight from
        # psycopg (its fetch sends everything before it)
        writes.enter_context(pipelined(ctx.conn))
        if journal is not None:
            lot_points = sum(p.amount for p in journal.postings if p.lot_id)
            available_from, expires_at = lot_times(
                ctx.occurred_at,
                pending_days=program.pending_days,
                policy=program.expiry,
                tz=ZoneInfo(program.timezone),
                tier_id=ctx.tier_id,
            )
            lot = (
                ledger_repo.NewLot(lot_id, lot_points, ctx.occurred_at, available_from, expires_at)
                if lot_points
                else None
            )
            ctx.write(journal, event_id=event_id, at=ctx.occurred_at, lot=lot)
            if lot is not None and pending and available_from <= ctx.now:
                release = _release_journal(lot_id, lot_points)
                ctx.write(release, event_id=event_id, at=available_from)
        qual = _qualify(
            ctx,
            event_id,
            period_at=ctx.occurred_at,
            spend=res.qualifying_amount if ev.type == "purchase" else 0,
            status_points=res.points,
            visits=1 if ev.type in ("purchase", "visit") else 0,
            status_miles=res.status_miles,
            segments=1 if ev.type == "flight" else 0,
        )
        if res.punched or program.milestones or ctx.member.get("referred_by"):
            writes.close()  # punch cards, milestones and referrals read what was just written
        cards, reached, referral = _side_effects(ctx, ev, res, event_id)
        member = _member_json(ctx, qual)
        result = {
            "id": ev.id,
            "type": ev.type,
            "occurred_at": ctx.occurred_at.isoformat(),
            "points": res.points,
            "milestones": reached,
            "referral": referral,
            "qualifying_amount": res.qualifying_amount,
            "lines": [{"id": ln.line_id, "points": ln.points, "amount": ln.amount} for ln in res.lines],
            "rules": [{"rule_id": r, "points": p} for r, p in res.rules],
            "capped": res.capped,
            "program_version": ctx.version,
            "member": member,
        }
        if ev.type == "flight":
            result["status_miles"] = res.status_miles
        if cards:
            result["punch_cards"] = cards
        repo.insert_event(
            ctx.conn,
            row=_event_row(ctx, ev, event_id, digest, body, res.points, result, refers_to=None),
            lines=[
                {
                    "line_id": ln.line_id,
                    "quantity": ln.quantity,
                    "points": ln.points,
                    "amount": ln.amount,
                }
                for ln in res.lines
            ],
            rules=[{"rule_id": r, "points": p} for r, p in res.rules],
        )
        before = ctx.tier_id
        if before is not None and (member["tier"] or {}).get("id") != before:
            before = ctx.tier_without()  # a late event: did it move the tier held now?
        _announce(ctx, ev, result, tier_before=before)  # reads its sequence number: the sync
    return result


def _side_effects(
    ctx: _Ctx, ev: EventIn, res: earning.EarnResult, event_id: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
    """Punch cards, milestones and a referral the earning event completes (their journals update
    ``ctx.after``): the cards, the milestones reached and what happened to the referral."""
    program = ctx.program
    cards = [_punch(ctx, program.rule(rule_id), event_id, ev.location_id) for rule_id in res.punched]
    reached = []
    for milestone, at in milestones.due_after_event(
        ctx.conn,
        merchant_id=ctx.merchant_id,
        member=ctx.member,
        program=program,
        at=ctx.occurred_at,
        this_purchase=ev.type == "purchase",
    ):
        journal = milestones.grant(
            ctx.conn,
            merchant_id=ctx.merchant_id,
            member=ctx.member,
            program=program,
            version=ctx.version,
            milestone=milestone,
            at=at,
            debt=ctx.after.debt,
            event_id=event_id,
        )
        if journal is not None:
            ctx.after = ctx.after.apply(journal.postings)
        reached.append({"milestone_id": milestone.id, "name": milestone.name, "points": milestone.points})
    referral = None
    if ev.type == "purchase":
        journal, referral = referrals.on_purchase(
            ctx.conn,
            merchant_id=ctx.merchant_id,
            referee=ctx.member,
            program=program,
            version=ctx.version,
            event_id=event_id,
            at=ctx.occurred_at,
            amount=res.qualifying_amount,
            referee_debt=ctx.after.debt,
            fingerprint=fp if isinstance(fp := ev.attributes.get("payment_fingerprint"), str) else None,
            order=dict(ev.attributes),
        )
        if journal is not None:
            ctx.after = ctx.after.apply(journal.postings)
    return cards, reached, referral


def _announce(ctx: _Ctx, ev: EventIn, result: dict[str, Any], *, tier_before: str | None) -> None:
    """The business events this event caused, in its transaction (the outbox)."""
    from patron.services import outbox

    member = result["member"]

    def emit(kind: str, member_id: str, data: dict[str, Any]) -> None:
        outbox.emit(
            ctx.conn,
            merchant_id=ctx.merchant_id,
            type=kind,
            member_id=member_id,
            occurred_at=ctx.occurred_at,
            data=data,
        )

    about = {"event_id": ev.id, "event_type": ev.type, "balances": member["points"]}
    if result["points"] > 0:
        emit(
            outbox.POINTS_EARNED,
            member["id"],
            {**about, "points": result["points"], "rules": result["rules"]},
        )
    elif result["points"] < 0:
        emit(
            outbox.POINTS_REVERSED,
            member["id"],
            {**about, "points": result["points"], "refers_to": ev.refers_to},
        )
    tier_after = (member.get("tier") or {}).get("id")
    if tier_before is not None and tier_after != tier_before:
        emit(
            outbox.TIER_CHANGED,
            member["id"],
            {**about, "from": tier_before, "to": tier_after, "cause": "event"},
        )
    for reached in result.get("milestones") or []:
        emit(outbox.MILESTONE_REACHED, member["id"], {**about, **reached})
    referral = result.get("referral")
    if referral and referral.get("status") == "completed" and ev.type == "purchase":
        emit(outbox.REFERRAL_COMPLETED, referral["referrer_id"], {"referee_id": member["id"], **referral})


def _release_journal(lot_id: str, points: int) -> Journal:
    return Journal(
        JournalKind.RELEASE,
        (Posting(Account.PENDING, -points, lot_id), Posting(Account.AVAILABLE, points, lot_id)),
        "pending period over",
    )


def _punch(ctx: _Ctx, rule: Rule | None, event_id: str, location_id: str | None) -> dict[str, Any]:
    """Punch the member's card of ``rule``; every ``punches``-th punch issues its reward, free."""
    assert rule is not None and rule.reward_id is not None
    total = punch_repo.total(ctx.conn, ctx.merchant_id, ctx.member["id"], rule.id) + 1
    reward = None
    if total % rule.punches == 0:
        from patron.services import redemptions  # it reads this module's period windows

        reward = redemptions.grant(
            ctx.conn,
            merchant_id=ctx.merchant_id,
            member=ctx.member,
            program=ctx.program,
            reward_id=rule.reward_id,
            at=ctx.occurred_at,
            valid_days=rule.valid_days,
        )
    punch_repo.insert_punch(
        ctx.conn,
        {
            "merchant_id": ctx.merchant_id,
            "id": new_id("pch"),
            "member_id": ctx.member["id"],
            "rule_id": rule.id,
            "event_id": event_id,
            "location_id": location_id,
            "delta": 1,
            "total": total,
            "redemption_id": reward["id"] if reward else None,
            "occurred_at": ctx.occurred_at,
            "created_at": ctx.now,
        },
    )
    card = {"rule_id": rule.id, "punches": total % rule.punches, "required": rule.punches}
    if reward is not None:
        card["reward"] = {"redemption_id": reward["id"], "reward_id": rule.reward_id, "code": reward["code"]}
    return card


def _unpunch(ctx: _Ctx, orig_event_id: str, event_id: str) -> None:
    """A fully reversed visit or purchase takes its punches back (a reward it filled stays)."""
    for p in punch_repo.of_event(ctx.conn, ctx.merchant_id, orig_event_id):
        if p["delta"] != 1:
            continue
        total = punch_repo.total(ctx.conn, ctx.merchant_id, p["member_id"], p["rule_id"]) - 1
        punch_repo.insert_punch(
            ctx.conn,
            {
                **p,
                "id": new_id("pch"),
                "event_id": event_id,
                "delta": -1,
                "total": total,
                "redemption_id": None,
                # on the day it undoes: a punch cancelled a day later must not count against
                # that later day's once-a-day punch (created_at says when it was taken back)
                "occurred_at": p["occurred_at"],
                "created_at": ctx.now,
            },
        )


def _qualify(
    ctx: _Ctx,
    event_id: str,
    *,
    period_at: datetime,
    spend: int,
    status_points: int,
    visits: int,
    status_miles: int = 0,
    segments: int = 0,
) -> QualRow:
    """Record what the event counts towards tiers; the row of the program's own metric back."""
    values = {
        "spend": spend,
        "status_points": status_points,
        "visits": visits,
        "status_miles": status_miles,
        "segments": segments,
    }
    repo.insert_qualification(
        ctx.conn,
        merchant_id=ctx.merchant_id,
        event_id=event_id,
        member_id=ctx.member["id"],
        period_at=period_at,
        recorded_at=ctx.occurred_at,
        **values,
    )
    metric = ctx.program.tiers.metric if ctx.program.tiers else "qualifying_spend"
    return QualRow(period_at, ctx.occurred_at, values[METRIC_COLUMN[metric]], event_id)


def _member_json(ctx: _Ctx, row: QualRow) -> dict[str, Any]:
    """The member after this event, built from what the event already loaded and wrote."""
    state = ctx.tier_after(row)
    view = {k: ctx.member[k] for k in PUBLIC_FIELDS}
    view["referred_by"] = ctx.member["referred_by"]
    view["points"] = points_view(ctx.after)
    view["tier"] = tier_summary(state)
    out: dict[str, Any] = json.loads(json.dumps(view, default=json_default))
    return out


def json_default(value: Any) -> Any:
    """How stored event JSON writes what ``json`` cannot: times in ISO 8601, the rest as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _event_row(
    ctx: _Ctx,
    ev: EventIn,
    event_id: str,
    digest: str,
    body: Any,
    points: int,
    result: dict[str, Any],
    refers_to: str | None,
) -> dict[str, Any]:
    return {
        "merchant_id": ctx.merchant_id,
        "id": event_id,
        "external_id": ev.id,
        "program_id": ctx.member["program_id"],
        "program_version": ctx.version,
        "member_id": ctx.member["id"],
        "type": ev.type,
        "occurred_at": ctx.occurred_at,
        "received_at": ctx.now,
        "refers_to": refers_to,
        "location_id": ev.location_id,
        "points": points,
        "body_hash": digest,
        "body": json.loads(json.dumps(body, default=str)),
        "result": result,
    }


def _reverse(ctx: _Ctx, ev: EventIn, digest: str, body: Any) -> dict[str, Any]:
    assert ev.refers_to is not None
    orig = repo.get_event(ctx.conn, ctx.merchant_id, ev.refers_to)
    if orig is None or orig["member_id"] != ctx.member["id"]:
        raise NotFound(f"refers_to: event {ev.refers_to!r} of this member not found", field="refers_to")
    if orig["refers_to"] is not None:
        raise InvalidInput("a refund or cancel cannot itself be refunded or cancelled", field="refers_to")
    if ev.type == "refund" and orig["type"] != "purchase":
        raise InvalidInput(
            f"only purchases can be refunded; cancel a {orig['type']} instead", field="refers_to"
        )
    if ctx.occurred_at < orig["occurred_at"]:
        # dated before the event it reverses (two systems' clocks, a platform's other timestamp):
        # it takes effect when that event did, so that no balance between the two goes negative
        ctx.occurred_at = orig["occurred_at"]
        ctx.program, ctx.version = program_at(
            ctx.conn, merchant_id=ctx.merchant_id, program_id=ctx.member["program_id"], at=ctx.occurred_at
        )
    earned = [
        ret.LineState(r["line_id"], r["quantity"], r["points"], r["amount"])
        for r in repo.lines_of(ctx.conn, ctx.merchant_id, orig["id"])
    ]
    prior = {
        r["line_id"]: ret.LineState(r["line_id"], int(r["quantity"]), int(r["points"]), int(r["amount"]))
        for r in repo.reversed_lines(ctx.conn, ctx.merchant_id, orig["id"])
    }
    if ev.type == "cancel":
        deltas = ret.reverse_all(earned, prior)
        # an event that earned nothing by its lines (a visit that only punched a card, a flight
        # in a fare class without miles) is still cancelled once: its tier credit and punches
        nothing_to_take = not earned and not repo.reversed_before(ctx.conn, ctx.merchant_id, orig["id"])
        if not deltas and not nothing_to_take:
            raise Conflict(f"event {ev.refers_to} is already fully reversed")
    elif ev.amount is not None:
        deltas = ret.reverse_amount(earned, prior, ev.amount)
    else:
        request: dict[str, int] = {}
        for ln in ev.refund_lines():
            request[ln.id] = request.get(ln.id, 0) + ln.quantity
        deltas = ret.reverse_lines(earned, prior, request)
    points = sum(d.points for d in deltas)
    event_id = new_id("evt")
    if points:
        own = ledger_repo.lots_of_event(ctx.conn, ctx.merchant_id, orig["id"])
        m = ctx.member["id"]
        pend = ledger_repo.lot_balances(ctx.conn, ctx.merchant_id, m, Account.PENDING)
        avail = ledger_repo.lot_balances(ctx.conn, ctx.merchant_id, m, Account.AVAILABLE)
        sources = (
            [(Account.PENDING, lot) for lot in pend if lot.id in own]
            + [(Account.AVAILABLE, lot) for lot in avail if lot.id in own]
            + [(Account.AVAILABLE, lot) for lot in spending_order(avail) if lot.id not in own]
            + [(Account.PENDING, lot) for lot in spending_order(pend) if lot.id not in own]
        )
        journal = take_back(
            points,
            sources=sources,
            counter=Account.ISSUED,
            kind=JournalKind.CANCEL if ev.type == "cancel" else JournalKind.REFUND,
            shortfall_to=Account.DEBT if ctx.program.return_policy == "debt" else Account.WRITTEN_OFF,
            reason=f"{ev.type} of {orig['external_id']}",
        )
        assert journal is not None
        ctx.write(journal, event_id=event_id, at=ctx.occurred_at)
    all_back = sum(p.quantity for p in prior.values()) + sum(d.quantity for d in deltas) >= sum(
        ln.quantity for ln in earned
    ) and sum(p.points for p in prior.values()) + points >= sum(ln.points for ln in earned)
    referral = None
    if all_back and orig["type"] == "purchase":
        journal, referral = referrals.on_full_refund(
            ctx.conn,
            merchant_id=ctx.merchant_id,
            referee=ctx.member,
            program=ctx.program,
            version=ctx.version,
            purchase_event_id=orig["id"],
            event_id=event_id,
            at=ctx.occurred_at,
        )
        if journal is not None:
            ctx.after = ctx.after.apply(journal.postings)
    qual = _qualify(
        ctx,
        event_id,
        period_at=orig["occurred_at"],
        spend=-sum(d.amount for d in deltas) if orig["type"] == "purchase" else 0,
        status_points=-points,
        visits=-1 if all_back and orig["type"] in ("purchase", "visit") else 0,
        status_miles=-int(orig["result"].get("status_miles", 0)) if all_back else 0,
        segments=-1 if all_back and orig["type"] == "flight" else 0,
    )
    if all_back and orig["type"] in ("purchase", "visit"):
        _unpunch(ctx, orig["id"], event_id)
    result = {
        "id": ev.id,
        "type": ev.type,
        "refers_to": ev.refers_to,
        "occurred_at": ctx.occurred_at.isoformat(),
        "points": -points,
        "qualifying_amount": -sum(d.amount for d in deltas),
        "referral": referral,
        "lines": [
            {"id": d.line_id, "points": -d.points, "quantity": d.quantity, "amount": -d.amount}
            for d in deltas
        ],
        "rules": [],
        "program_version": ctx.version,
        "member": _member_json(ctx, qual),
    }
    _announce(ctx, ev, result, tier_before=None)
    repo.insert_event(
        ctx.conn,
        row=_event_row(ctx, ev, event_id, digest, body, -points, result, refers_to=orig["id"]),
        lines=[
            {"line_id": d.line_id, "quantity": d.quantity, "points": d.points, "amount": d.amount}
            for d in deltas
        ],
        rules=[],
    )
    return result


def get_event(conn: Connection, *, merchant_id: str, event_id: str) -> dict[str, Any]:
    row = repo.get_event(conn, merchant_id, event_id)
    if row is None:
        raise NotFound(f"event {event_id} not found")
    result: dict[str, Any] = row["result"]
    return result


def calculate(conn: Connection, *, merchant_id: str, body: Any) -> dict[str, Any]:
    """What an event would earn, and what the member is near to. Writes nothing."""
    if isinstance(body, dict):
        body = {"id": "calculate", **body}
    ev = parse_event(body)
    if ev.type in ("refund", "cancel"):
        raise InvalidInput("calculate takes earning events, not refunds or cancels", field="type")
    member = members_repo.get_member(conn, merchant_id, ev.member_id)
    if member is None:
        raise NotFound(f"member {ev.member_id} not found")
    now = utcnow()
    at = ev.occurred_at.astimezone(UTC) if ev.occurred_at else now
    if at > now + FUTURE_SLACK:  # refused as recording it would be, so a preview promises nothing more
        raise InvalidInput("occurred_at is in the future", field="occurred_at")
    if member["status"] != "active":
        raise MemberInactive(f"member is {member['status']}: no earning")
    program, version = program_at(conn, merchant_id=merchant_id, program_id=member["program_id"], at=at)
    if ev.type not in BUILTIN_TYPES and ev.type not in program.actions():
        raise InvalidInput(f"unknown event type {ev.type!r}", field="type")
    res = earning.earn(
        program,
        domain_event(ev, at),
        earning_context(conn, merchant_id, member, program, at, location_id=ev.location_id),
    )
    balances = ledger_repo.cached_balances(conn, merchant_id, member["id"])
    near: list[dict[str, Any]] = []
    for rule in program.rules:
        if rule.type == RuleType.BONUS and ev.type == "purchase" and res.qualifying_amount < rule.threshold:
            near.append(
                {
                    "kind": "bonus",
                    "rule_id": rule.id,
                    "spend_more": rule.threshold - res.qualifying_amount,
                    "points": rule.points,
                }
            )
    state = tier_state(conn, merchant_id=merchant_id, member=member, program=program, as_of=at)
    if state is not None and program.tiers is not None:
        gain = {  # what recording it would write to its qualification row (``_qualify``)
            "qualifying_spend": res.qualifying_amount if ev.type == "purchase" else 0,
            "status_points": res.points,
            "visits": int(ev.type in ("purchase", "visit")),
            "status_miles": res.status_miles,
            "segments": int(ev.type == "flight"),
        }[program.tiers.metric]
        nxt = next_level(program.tiers, state.level, state.value + gain)
        if nxt is not None:
            near.append(
                {
                    "kind": "tier",
                    "tier_id": nxt[0].id,
                    "metric": program.tiers.metric,
                    "remaining": nxt[1],
                }
            )
    # a debt is repaid first; the rest is spendable at once unless the program holds points pending
    after = balances.available + (max(res.points - balances.debt, 0) if program.pending_days == 0 else 0)
    for reward in sorted(program.rewards, key=lambda r: r.cost):
        if reward.cost > after:
            near.append({"kind": "reward", "reward_id": reward.id, "points_needed": reward.cost - after})
            break
    return {
        "member_id": member["id"],
        "type": ev.type,
        "points": res.points,
        "qualifying_amount": res.qualifying_amount,
        "lines": [{"id": ln.line_id, "points": ln.points, "amount": ln.amount} for ln in res.lines],
        "rules": [{"rule_id": r, "points": p} for r, p in res.rules],
        "capped": res.capped,
        "program_version": version,
        "available_after": after,
        "near": near,
    }
