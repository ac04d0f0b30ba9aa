"""What the admin console and the POS screen read: the dashboard's figures, member search, a
member's 360-degree view, and a reward redeemed at the till in one step.

Dashboard figures (all for one merchant):

* members by status, and *active* members: active status with an event in the last
  ``ACTIVE_DAYS`` days;
* points issued (``lifetime_earned``: credited by earning and adjustments, net of reversals),
  redeemed and expired, summed from the cached balances that ``patron verify`` proves;
* liability: points members still hold (available + pending + reserved);
* tier population per program, each member placed by the same fold as ``GET .../tier``;
* per month for the last 12 months (in the first program's timezone): points issued, redeemed
  and expired, from the program-side postings.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from patron.domain.errors import InvalidInput
from patron.domain.ledger import Account
from patron.services import redemptions, tiers
from patron.services.clock import utcnow
from patron.services.members import get_member, member_view, normalise_phone
from patron.services.portal import history_page, lots, program_facts, tier_progress
from patron.services.programs import list_programs, program_at
from patron.storage import members as members_repo
from patron.storage import web as repo

ACTIVE_DAYS = 90
MONTHS = 12


def month_starts(now: datetime, tz: ZoneInfo, months: int = MONTHS) -> list[datetime]:
    """``months + 1`` local month starts: the first of the month ``months - 1`` ago, ..., next month."""
    local = now.astimezone(tz)
    year, month = local.year, local.month - (months - 1)
    while month < 1:
        year, month = year - 1, month + 12
    out = []
    for _ in range(months + 1):
        out.append(datetime(year, month, 1, tzinfo=tz))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def dashboard(conn: Connection, *, merchant_id: str) -> dict[str, Any]:
    now = utcnow()
    programs = list_programs(conn, merchant_id=merchant_id)
    tz = ZoneInfo(programs[0].get("timezone") or "UTC") if programs else ZoneInfo("UTC")
    totals = repo.balance_totals(conn, merchant_id)
    starts = month_starts(now, tz)
    accounts = [str(a) for a in (Account.ISSUED, Account.ADJUSTMENTS, Account.REDEEMED, Account.EXPIRED)]
    flows = repo.program_flows(conn, merchant_id, starts, accounts)
    months = [
        {
            "start": start,
            # program-side postings are the negation of what members received
            "issued": -(f[str(Account.ISSUED)] + f[str(Account.ADJUSTMENTS)]),
            "redeemed": f[str(Account.REDEEMED)],
            "expired": f[str(Account.EXPIRED)],
        }
        for start, f in zip(starts, flows, strict=False)
    ]
    return {
        "as_of": now,
        "timezone": str(tz),
        "members": repo.member_counts(conn, merchant_id, active_since=now - timedelta(days=ACTIVE_DAYS)),
        "active_days": ACTIVE_DAYS,
        "points": {
            "issued": totals["lifetime_earned"],
            "redeemed": totals["redeemed"],
            "expired": totals["expired"],
            "liability": totals["available"] + totals["pending"] + totals["reserved"],
            "available": totals["available"],
            "pending": totals["pending"],
            "reserved": totals["reserved"],
            "debt": totals["debt"],
        },
        "tiers": [tier_population(conn, merchant_id=merchant_id, program=p, at=now) for p in programs],
        "months": months,
        "programs": len(programs),
    }


def tier_population(
    conn: Connection, *, merchant_id: str, program: dict[str, Any], at: datetime
) -> dict[str, Any]:
    """How many members of the program hold each level now (closed members excluded)."""
    domain, _ = program_at(conn, merchant_id=merchant_id, program_id=program["id"], at=at)
    levels = list(domain.tiers.levels) if domain.tiers else []
    people = [
        m
        for m in members_repo.find_members(conn, merchant_id, program_id=program["id"], limit=10_000_000)
        if m["status"] != "closed"
    ]
    counts: Counter[str | None] = Counter()
    if levels and people:
        assert domain.tiers is not None
        rows, given = tiers.program_inputs(
            conn,
            merchant_id=merchant_id,
            program_id=program["id"],
            member_ids=[m["id"] for m in people],
            metrics={domain.tiers.metric},
        )
        for m in people:
            mine = rows[domain.tiers.metric].get(m["id"], [])
            found = given.get(m["id"], [])
            state = tiers.evaluate(domain, m, mine, at, found)
            counts[state.level.id if state and state.level else None] += 1
    return {
        "program_id": program["id"],
        "program": program["name"],
        "members": len(people),
        "levels": [{"id": lv.id, "name": lv.name, "members": counts.get(lv.id, 0)} for lv in levels],
        "none": counts.get(None, 0) if levels else len(people),
    }


def search(conn: Connection, *, merchant_id: str, query: str, limit: int = 50) -> list[dict[str, Any]]:
    """Members by part of a name or email, or by a whole phone number, card number or external id."""
    text = query.strip()
    if not text:
        return []
    if len(text) > 200:
        raise InvalidInput("the search is too long", field="q")
    compact = text.replace(" ", "").replace("-", "")
    phone = None
    if any(ch.isdigit() for ch in compact):
        try:
            phone = normalise_phone(compact if compact.startswith("+") else "+" + compact)
        except ValueError:
            phone = None
    card = compact if compact.isdigit() else None
    return repo.search_members(conn, merchant_id, text=text, phone=phone, digits=card, limit=limit)


def till_lookup(conn: Connection, *, merchant_id: str, query: str) -> list[dict[str, Any]]:
    """Members at the till by card number or phone (E.164, or digits with the country code)."""
    text = query.strip()
    if not text:
        return []
    compact = text.replace(" ", "").replace("-", "")
    found = (
        members_repo.find_members(conn, merchant_id, card_number=compact, limit=5)
        if compact.isdigit()
        else []
    )
    if not found:
        try:
            phone = normalise_phone(compact if compact.startswith("+") else "+" + compact)
        except ValueError:
            phone = None
        if phone:
            found = members_repo.find_members(conn, merchant_id, phone=phone, limit=5)
    return found


def member_360(
    conn: Connection, *, merchant_id: str, member_id: str, cursor: str | None = None, limit: int = 40
) -> dict[str, Any]:
    """Profile, balances, tier and why, lots by expiry month, one page of history (journal by
    journal, with the ledger reason and the event) and the redemptions."""
    member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    now = utcnow()
    program = program_facts(conn, merchant_id=merchant_id, program_id=member["program_id"])
    view = member_view(conn, merchant_id=merchant_id, member=member)
    held = redemptions.of_member(conn, merchant_id=merchant_id, member_id=member_id)
    for r in held:
        r["reward_name"] = program["reward_names"].get(r["reward_id"], r["reward_id"])
    lot_rows = lots(conn, merchant_id=merchant_id, member_id=member_id)
    return {
        "member": view,
        "program": program,
        "tier": tier_progress(conn, merchant_id=merchant_id, member=member, at=now),
        "lots": lot_rows,
        "lots_by_month": lots_by_month(lot_rows, ZoneInfo(program["timezone"])),
        "history": history_page(
            conn, merchant_id=merchant_id, member_id=member_id, program=program, limit=limit, cursor=cursor
        ),
        "redemptions": held,
    }


def lots_by_month(lot_rows: list[dict[str, Any]], tz: ZoneInfo) -> list[dict[str, Any]]:
    """Points left per account and local month of expiry (``None``: never), soonest first."""
    groups: dict[tuple[str, datetime | None], dict[str, Any]] = {}
    for lot in lot_rows:
        month = None
        if lot["expires_at"] is not None:
            local = lot["expires_at"].astimezone(tz)
            month = datetime(local.year, local.month, 1, tzinfo=tz)
        group = groups.setdefault(
            (lot["account"], month),
            {"account": lot["account"], "month": month, "points": 0, "lots": 0, "first": lot["expires_at"]},
        )
        group["points"] += lot["points"]
        group["lots"] += 1
    return sorted(groups.values(), key=lambda g: (g["account"], g["month"] is None, g["month"] or 0))


def redeem_at_till(conn: Connection, *, merchant_id: str, member_id: str, reward_id: str) -> dict[str, Any]:
    """Reserve and redeem a reward in one step, for a member standing at the till."""
    held = redemptions.reserve(conn, merchant_id=merchant_id, member_id=member_id, reward_id=reward_id)
    return redemptions.redeem(conn, merchant_id=merchant_id, redemption_id=held["id"])
