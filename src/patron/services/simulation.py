"""Program simulation (SPEC 15.1): replay a period of real history through a draft program and
compare it, side by side, with the live program. Reads only; never writes.

The period's events (purchases, refunds, cancels, visits, flights, actions) are loaded in the
order they occurred and replayed twice in memory (``analytics/simulation.py``): through the live
program versions (each event under the version the ledger applied) and through the draft. Both
start from the same history before the period. Figures for each side:

* ``points_issued``: points earned by the period's earning events; ``points_reversed``: taken
  back by its refunds and cancels; ``net_points`` = issued - reversed.
* ``cost`` = net_points x ``cost_per_point`` (minor units, rounded).
* ``liability_points``: what members held at the period's end: for the live side, the ledger's
  balance then; for the draft, that plus the difference in net points (redemptions and expiry
  as they happened). ``liability`` = liability_points x ``cost_per_point``.
* ``tier_population``: members per tier at the period's end, under each side's tier rules.

``most_affected`` lists the members whose net points differ most. ``ledger`` gives what the
ledger recorded for the period's events: the live replay equals it (milestones and referral
bonuses, which the replay leaves out, are not part of it either).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection

from patron.analytics import simulation as sim
from patron.domain import returns as ret
from patron.domain.errors import InvalidInput, NotFound
from patron.domain.program import Program
from patron.domain.tiers import Assignment
from patron.services.clock import utcnow
from patron.services.events import domain_event, parse_event
from patron.services.insights import NoData, bounds
from patron.services.program_schema import ProgramSpec
from patron.services.programs import program_at, validate_spec
from patron.storage import insights as repo
from patron.storage import programs as programs_repo

MAX_TOP = 1000


def _version(conn: Connection, merchant_id: str, program_id: str, version: int) -> Program:
    body = programs_repo.version_body(conn, merchant_id, program_id, version)
    if body is None:
        raise NotFound(f"program {program_id} version {version} not found")
    return ProgramSpec.model_validate(body).to_domain()


def _sim_event(row: dict[str, Any]) -> sim.SimEvent:
    ev = parse_event(row["body"])
    at: datetime = row["occurred_at"]
    if row["refers_to"] is None:
        return sim.SimEvent(
            id=str(row["id"]),
            member_id=str(row["member_id"]),
            type=str(row["type"]),
            occurred_at=at,
            version=int(row["program_version"]),
            event=domain_event(ev, at),
        )
    return sim.SimEvent(
        id=str(row["id"]),
        member_id=str(row["member_id"]),
        type=str(row["type"]),
        occurred_at=at,
        version=int(row["program_version"]),
        refers_to=str(row["refers_to"]),
        refund_lines=tuple((ln.id, ln.quantity) for ln in ev.refund_lines()),
        refund_amount=ev.amount if ev.type == "refund" else None,
    )


def _histories(
    conn: Connection, merchant_id: str, program_id: str, start: datetime, end: datetime, needs_prior: bool
) -> tuple[dict[str, sim.MemberHistory], dict[str, str | None]]:
    people = repo.program_members(conn, merchant_id=merchant_id, program_id=program_id, before=end)
    out = {str(m["id"]): sim.MemberHistory(enrolled_at=m["enrolled_at"]) for m in people}
    external = {str(m["id"]): m["external_id"] for m in people}
    for r in repo.prior_rows(conn, merchant_id=merchant_id, program_id=program_id, before=start):
        h = out.get(str(r["member_id"]))
        if h is not None:
            h.rows.append(
                sim.QualValues(
                    r["period_at"],
                    r["recorded_at"],
                    int(r["spend"]),
                    int(r["status_points"]),
                    int(r["visits"]),
                    int(r["status_miles"] or 0),
                    int(r["segments"] or 0),
                )
            )
    given: dict[str, list[Assignment]] = {}
    for a in repo.prior_assignments(conn, merchant_id=merchant_id, program_id=program_id):
        given.setdefault(str(a["member_id"]), []).append(
            Assignment(a["tier_id"], a["starts_at"], a["ends_at"], a["reason"])
        )
    for member_id, found in given.items():
        if member_id in out:
            out[member_id].assignments = tuple(found)
    if needs_prior:
        earned, awards = repo.prior_earnings(
            conn, merchant_id=merchant_id, program_id=program_id, before=start
        )
        for e in earned:
            if (h := out.get(str(e["member_id"]))) is not None:
                h.earned.append((e["occurred_at"], int(e["points"])))
        for a in awards:
            if (h := out.get(str(a["member_id"]))) is not None:
                h.awards.append((str(a["rule_id"]), a["occurred_at"], a["location_id"]))
    return out, external


def _needs_prior(programs: list[Program]) -> bool:
    return any(
        p.caps.per_member is not None or any(r.limit_count is not None or r.once_per_day for r in p.rules)
        for p in programs
    )


def simulate(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    draft: Any,
    first: date,
    last: date,
    cost_per_point: float,
    top: int = 20,
) -> dict[str, Any]:
    """Replay the local days ``first`` to ``last`` under the live program and under ``draft`` (a
    full program body, validated as for ``POST /v1/programs``); see the module docstring."""
    if not 0 < cost_per_point <= 1_000_000:
        raise InvalidInput(
            "cost_per_point must be above 0 and at most 1000000 minor units", field="cost_per_point"
        )
    if not 0 <= top <= MAX_TOP:
        raise InvalidInput(f"top must be between 0 and {MAX_TOP}", field="top")
    now = utcnow()
    current, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=now)
    proposed = validate_spec(draft).to_domain()
    if proposed.currency != current.currency:
        raise InvalidInput(
            f"the draft's currency {proposed.currency} differs from the program's {current.currency}",
            field="program.currency",
        )
    start, end = bounds(current, first, last)
    if start >= now:
        raise InvalidInput(f"the period from {first} has not started yet", field="from")
    rows = repo.period_events(conn, merchant_id=merchant_id, program_id=program_id, start=start, end=end)
    if not rows:
        raise NoData(f"no events between {first} and {last}: nothing to simulate")
    events = [_sim_event(r) for r in rows]
    versions = {e.version for e in events}
    live_programs = {v: _version(conn, merchant_id, program_id, v) for v in versions}
    end_program, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=min(end, now))
    histories, external = _histories(
        conn, merchant_id, program_id, start, end, _needs_prior([*live_programs.values(), proposed])
    )
    wanted = sorted({e.refers_to for e in events if e.refers_to is not None} - {e.id for e in events})
    found, lines, back = repo.originals(conn, merchant_id=merchant_id, ids=wanted, before=start)
    originals = {
        i: sim.Original(
            type=str(o["type"]),
            occurred_at=o["occurred_at"],
            lines=tuple(
                ret.LineState(ln["line_id"], int(ln["quantity"]), int(ln["points"]), int(ln["amount"]))
                for ln in lines.get(i, [])
            ),
            reversed_before=tuple(
                ret.LineState(ln["line_id"], int(ln["quantity"]), int(ln["points"]), int(ln["amount"]))
                for ln in back.get(i, [])
            ),
            status_miles=int((o["result"] or {}).get("status_miles", 0) or 0),
        )
        for i, o in found.items()
    }
    at = min(end, now)
    live = sim.replay(
        events,
        program_for=lambda e: live_programs[e.version],
        histories=histories,
        originals=originals,
        end=at,
        end_program=end_program,
    )
    drafted = sim.replay(
        events,
        program_for=lambda e: proposed,
        histories=histories,
        originals=originals,
        end=at,
        end_program=proposed,
    )
    recorded_issued = sum(int(r["points"]) for r in rows if r["refers_to"] is None)
    recorded_reversed = -sum(int(r["points"]) for r in rows if r["refers_to"] is not None)
    held = repo.outstanding_at(conn, merchant_id=merchant_id, program_id=program_id, at=end)

    def side(outcome: sim.Outcome, liability_points: int) -> dict[str, Any]:
        net = outcome.issued - outcome.reversed
        population = outcome.tier_population()
        return {
            "points_issued": outcome.issued,
            "points_reversed": outcome.reversed,
            "net_points": net,
            "qualifying_spend": outcome.qualifying_spend,
            "cost": round(net * cost_per_point),
            "liability_points": liability_points,
            "liability": round(liability_points * cost_per_point),
            "tier_population": {
                k or "none": v for k, v in sorted(population.items(), key=lambda kv: kv[0] or "")
            },
        }

    live_net = live.issued - live.reversed
    draft_net = drafted.issued - drafted.reversed
    live_side = side(live, held)
    draft_side = side(drafted, max(held + draft_net - live_net, 0))
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "timezone": current.timezone,
        "currency": current.currency,
        "cost_per_point": cost_per_point,
        "events": len(events),
        "members": len(histories),
        "ledger": {"points_issued": recorded_issued, "points_reversed": recorded_reversed},
        "live": live_side,
        "draft": draft_side,
        "difference": {
            k: draft_side[k] - live_side[k]
            for k in (
                "points_issued",
                "points_reversed",
                "net_points",
                "cost",
                "liability_points",
                "liability",
            )
        },
        "most_affected": [
            {
                "member_id": m,
                "external_id": external.get(m),
                "live_points": a,
                "draft_points": b,
                "difference": b - a,
                "live_tier": live.members[m].tier,
                "draft_tier": drafted.members[m].tier,
            }
            for m, a, b in sim.most_affected(live, drafted, top)
        ],
        "per_member_live": {m: o.net for m, o in live.members.items()},
        "per_member_draft": {m: o.net for m, o in drafted.members.items()},
    }
