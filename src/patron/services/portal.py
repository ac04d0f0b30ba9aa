"""The member portal: one-time sign-in links, and what a member sees of their membership.

A login link is a random token in a URL, valid for ``LINK_TTL`` and usable once; only its SHA-256
is stored. Consuming it opens a member session (see ``services/users.py``). Marking it used is a
conditional update, so two clicks racing on the same link open one session, not two.

:func:`member_history` explains the ledger journal by journal in terms a member understands: what
happened (a purchase at a location, a check-in, a refund, a reward, an expiry, a correction), the
rules that earned the points, and how the member's points changed (available and pending,
less any debt). The words themselves are chosen by the page; here are the facts.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from patron.domain.errors import MemberInactive, NotFound, PatronError
from patron.domain.ledger import Account, spending_order
from patron.services import ledger, redemptions, tiers
from patron.services.clock import utcnow
from patron.services.members import get_member
from patron.services.programs import get_program, program_at
from patron.services.users import Session, start_session, token_hash
from patron.storage import ledger as ledger_repo
from patron.storage import merchants as merchants_repo
from patron.storage import web as repo
from patron.storage.ids import new_id

LINK_TTL = timedelta(hours=24)


class LinkInvalid(PatronError):
    """The login link is unknown, already used or expired (``reason`` says which)."""

    code = "login-link-invalid"
    title = "This sign-in link cannot be used"


def find_member_merchant(conn: Connection, *, member_id: str) -> str:
    """The merchant of a member id, for operators' tools that are given only the id."""
    merchant_id = repo.merchant_of_member(conn, member_id)
    if merchant_id is None:
        raise NotFound(f"member {member_id} not found")
    return merchant_id


def create_login_link(conn: Connection, *, merchant_id: str, member_id: str, base_url: str) -> dict[str, Any]:
    """A one-time URL ``<base_url>/portal/login/<token>`` that signs the member in, valid 24 hours."""
    member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    if member["status"] == "closed":
        raise MemberInactive("the member is closed and cannot sign in")
    now = utcnow()
    token = secrets.token_urlsafe(32)
    expires_at = now + LINK_TTL
    repo.insert_login_link(
        conn,
        {
            "merchant_id": merchant_id,
            "id": new_id("lnk"),
            "token_hash": token_hash(token),
            "member_id": member_id,
            "created_at": now,
            "expires_at": expires_at,
            "used_at": None,
        },
    )
    return {"url": f"{base_url.rstrip('/')}/portal/login/{token}", "expires_at": expires_at}


def consume_login_link(conn: Connection, *, token: str) -> tuple[str, Session]:
    """Use the link once: a member session (cookie token, session), or :class:`LinkInvalid`."""
    row = repo.login_link_by_hash(conn, token_hash(token)) if 0 < len(token) <= 200 else None
    now = utcnow()
    if row is None:
        raise LinkInvalid("this sign-in link is not valid", reason="unknown")
    if row["used_at"] is not None:
        raise LinkInvalid("this sign-in link was already used", reason="used")
    if row["expires_at"] <= now:
        raise LinkInvalid("this sign-in link has expired", reason="expired")
    member = get_member(conn, merchant_id=row["merchant_id"], member_id=row["member_id"])
    if member["status"] == "closed":
        raise LinkInvalid("this membership is closed", reason="closed")
    if not repo.use_login_link(conn, row["merchant_id"], row["id"], now):
        raise LinkInvalid("this sign-in link was already used", reason="used")
    return start_session(conn, merchant_id=row["merchant_id"], kind="member", subject_id=row["member_id"])


def program_facts(conn: Connection, *, merchant_id: str, program_id: str) -> dict[str, Any]:
    """What pages need of a program: its name, currency, timezone, points name, rule and reward
    names, and referral settings."""
    body = get_program(conn, merchant_id=merchant_id, program_id=program_id)
    return {
        "id": program_id,
        "name": body["name"],
        "currency": body["currency"],
        "timezone": body.get("timezone") or "UTC",
        "points_name": body.get("points_name") or "points",
        "rule_names": {
            **{
                f"tier:{lv['id']}": f"{lv['name']} tier bonus"
                for lv in (body.get("tiers") or {}).get("levels", [])
            },
            **{r["id"]: r.get("name") or r["id"] for r in body.get("earning_rules") or []},
        },
        "reward_names": {r["id"]: r.get("name") or r["id"] for r in body.get("rewards") or []},
        "referrals": body.get("referrals"),
    }


def lots(conn: Connection, *, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    """Lots with points left (available or pending), in the order they will be spent."""
    out = []
    for account in (Account.AVAILABLE, Account.PENDING):
        for lot in spending_order(ledger_repo.lot_balances(conn, merchant_id, member_id, account)):
            out.append(
                {
                    "id": lot.id,
                    "account": str(account),
                    "points": lot.remaining,
                    "earned_at": lot.earned_at,
                    "available_from": lot.available_from,
                    "expires_at": lot.expires_at,
                }
            )
    return out


def soonest_expiry(lot_rows: list[dict[str, Any]], tz: ZoneInfo) -> dict[str, Any] | None:
    """The available points that expire first: how many, and on which local day."""
    dated = [lot for lot in lot_rows if lot["account"] == "available" and lot["expires_at"] is not None]
    if not dated:
        return None
    first = min(lot["expires_at"] for lot in dated)
    day = first.astimezone(tz).date()
    points = sum(lot["points"] for lot in dated if lot["expires_at"].astimezone(tz).date() == day)
    return {"points": points, "at": first}


def member_history(
    conn: Connection, *, merchant_id: str, member_id: str, program: dict[str, Any], limit: int = 30
) -> list[dict[str, Any]]:
    """The member's last ``limit`` ledger journals, newest first, each with what caused it."""
    page = history_page(conn, merchant_id=merchant_id, member_id=member_id, program=program, limit=limit)
    entries: list[dict[str, Any]] = page["entries"]
    return entries


def history_page(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    program: dict[str, Any],
    limit: int = 30,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Up to ``limit`` journals, newest first, and the cursor of the next page (or ``None``)."""
    page = ledger.ledger_page(
        conn, merchant_id=merchant_id, member_id=member_id, limit=min(limit * 6, 500), cursor=cursor
    )
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    order: list[str] = []
    for row in page["data"]:
        if row["journal_id"] not in groups:
            order.append(row["journal_id"])
        groups[row["journal_id"]].append(row)
    more = page["has_more"]
    if more and len(order) > 1:
        order.pop()  # its other postings may be on the next page
    if len(order) > limit:
        order, more = order[:limit], True
    next_cursor = None
    if more and order:
        last = groups[order[-1]][-1]
        next_cursor = ledger.encode_cursor(last["occurred_at"], last["id"])
    return {
        "entries": _explained(conn, merchant_id, member_id, program, order, groups),
        "next_cursor": next_cursor,
    }


def _explained(
    conn: Connection,
    merchant_id: str,
    member_id: str,
    program: dict[str, Any],
    order: list[str],
    groups: dict[str, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    event_of = repo.journal_events(conn, merchant_id, set(order))
    found = repo.events_by_ids(conn, merchant_id, set(event_of.values()))
    rewards_of = repo.redemption_journals(conn, merchant_id, member_id)
    places = {loc["id"]: loc["name"] for loc in merchants_repo.list_locations(conn, merchant_id)}
    out = []
    for journal_id in order:
        rows = groups[journal_id]
        first = rows[0]
        delta = dict.fromkeys(("available", "pending", "reserved", "debt"), 0)
        for r in rows:
            delta[r["account"]] += r["points"]
        entry: dict[str, Any] = {
            "journal_id": journal_id,
            "kind": first["type"],
            "at": first["occurred_at"],
            "reason": first["reason"],
            "points": delta["available"] + delta["pending"] - delta["debt"],
            "delta": delta,
            "event_id": first["event_id"],
            "event_type": None,
            "amount": None,
            "location": None,
            "rules": [],
            "reward": None,
        }
        event = found.get(event_of.get(journal_id, ""))
        if event is not None:
            entry["event_type"] = event["type"]
            entry["location"] = places.get(event["location_id"], event["location_id"])
            entry["amount"] = purchase_amount(event["body"])
            result = event["result"] or {}
            entry["rules"] = [
                program["rule_names"].get(r["rule_id"], r["rule_id"])
                for r in result.get("rules") or []
                if r.get("points")
            ]
        reward_id = rewards_of.get(journal_id)
        if reward_id is not None:
            entry["reward"] = program["reward_names"].get(reward_id, reward_id)
        out.append(entry)
    return out


def purchase_amount(body: dict[str, Any]) -> int | None:
    """The amount of a purchase's lines in minor units (quantity x unit price, less discounts)."""
    items = body.get("items") if isinstance(body, dict) else None
    if not items:
        return None
    total = 0
    for item in items:
        try:
            total += int(item.get("quantity", 1)) * int(item.get("unit_price", 0)) - int(
                item.get("discount", 0)
            )
        except (TypeError, ValueError):
            return None
    return total


def tier_progress(
    conn: Connection, *, merchant_id: str, member: dict[str, Any], at: datetime
) -> dict[str, Any]:
    """The tier detail (see ``services/tiers.tier_detail``) plus the metric and period kind."""
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=member["program_id"], at=at)
    state = tiers.tier_state(conn, merchant_id=merchant_id, member=member, program=program, as_of=at)
    detail = tiers.tier_detail(state, program)
    detail["period"] = program.tiers.period if program.tiers else None
    detail["levels"] = (
        [{"id": lv.id, "name": lv.name, "threshold": lv.threshold} for lv in program.tiers.levels]
        if program.tiers
        else []
    )
    return detail


def member_home(conn: Connection, *, merchant_id: str, member_id: str) -> dict[str, Any]:
    """Everything the portal's home page shows, in one read."""
    member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    now = utcnow()
    program = program_facts(conn, merchant_id=merchant_id, program_id=member["program_id"])
    balances = ledger.points_view(
        ledger.balances(conn, merchant_id=merchant_id, member_id=member_id, as_of=None)
    )
    lot_rows = lots(conn, merchant_id=merchant_id, member_id=member_id)
    held = [
        r
        for r in redemptions.of_member(conn, merchant_id=merchant_id, member_id=member_id)
        if r["status"] == "reserved" and r["expires_at"] > now
    ]
    for r in held:
        r["reward_name"] = program["reward_names"].get(r["reward_id"], r["reward_id"])
    return {
        "member": member,
        "program": program,
        "points": balances,
        "expiring": soonest_expiry(lot_rows, ZoneInfo(program["timezone"])),
        "tier": tier_progress(conn, merchant_id=merchant_id, member=member, at=now),
        "history": member_history(conn, merchant_id=merchant_id, member_id=member_id, program=program),
        "rewards": redemptions.catalogue(conn, merchant_id=merchant_id, member_id=member_id),
        "held": held,
    }
