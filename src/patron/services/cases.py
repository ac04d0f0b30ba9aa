"""Follow-up cases: open, assign, comment, record the contact, resolve, reopen.

The rules of the life cycle are in ``domain/cases.py``; here each action loads the case (locked on
PostgreSQL, so that two staff acting at once are serialised), asks the domain for the next
status, updates the row and appends one event to the timeline, in the caller's transaction.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from patron.domain import cases as rules
from patron.domain.errors import Conflict, InvalidInput, NotFound
from patron.services.clock import utcnow
from patron.services.instant import in_range
from patron.storage import cases as repo
from patron.storage import members as members_repo
from patron.storage import web as users_repo
from patron.storage.ids import new_id

MAX_PAGE = 200


class CaseExists(Conflict):
    code = "case-exists"
    title = "An unresolved case already exists for this member and reference"


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "action": row["action"],
        "actor": row["actor"],
        "text": row["text"],
        "assignee": row["assignee"],
        "channel": row["channel"],
        "at": row["at"],
    }


def case_view(row: dict[str, Any], timeline: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "program_id": row["program_id"],
        "member_id": row["member_id"],
        "source": row["source"],
        "source_ref": row["source_ref"],
        "status": row["status"],
        "assignee": row["assignee"],
        "summary": row["summary"],
        "opened_at": row["opened_at"],
        "contacted_at": row["contacted_at"],
        "contact_channel": row["contact_channel"],
        "resolved_at": row["resolved_at"],
        "resolution": row["resolution"],
        "updated_at": row["updated_at"],
    }
    if timeline is not None:
        out["timeline"] = [event_view(e) for e in timeline]
    return out


def _check_user(conn: Connection, merchant_id: str, user_id: str) -> None:
    """Cases are worked in the console: the assignee is one of the merchant's owners or managers."""
    from patron.services.users import CONSOLE_ROLES

    user = users_repo.get_user(conn, merchant_id, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    if user["role"] not in CONSOLE_ROLES:
        raise InvalidInput(
            f"user {user_id} is {user['role']} (the till only): assign cases to an owner or a manager",
            field="user_id",
        )


def _append(
    conn: Connection,
    *,
    merchant_id: str,
    case_id: str,
    action: rules.Action,
    actor: str,
    at: datetime,
    text: str | None = None,
    assignee: str | None = None,
    channel: str | None = None,
) -> None:
    repo.insert_case_event(
        conn,
        {
            "merchant_id": merchant_id,
            "id": new_id("cev"),
            "case_id": case_id,
            "action": action.value,
            "actor": actor,
            "text": text,
            "assignee": assignee,
            "channel": channel,
            "at": at,
        },
    )


def ensure_case(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    source: rules.Source,
    source_ref: str | None,
    summary: str,
    actor: str,
    assignee: str | None = None,
    at: datetime | None = None,
) -> tuple[dict[str, Any], bool]:
    """Open a case for the member, or return the unresolved one already open for the same
    source and reference. Returns ``(case, created)``."""
    member = members_repo.get_member(conn, merchant_id, member_id)
    if member is None:
        raise NotFound(f"member {member_id} not found")
    if source_ref is not None:
        existing = repo.unresolved_case(conn, merchant_id, member_id, source.value, source_ref)
        if existing is not None:
            return case_view(existing), False
    if assignee is not None:
        _check_user(conn, merchant_id, assignee)
    now = at or utcnow()
    row = {
        "merchant_id": merchant_id,
        "id": new_id("case"),
        "program_id": member["program_id"],
        "member_id": member_id,
        "source": source.value,
        "source_ref": source_ref,
        "open_ref": source_ref,
        "status": rules.initial_status(has_assignee=assignee is not None).value,
        "assignee": assignee,
        "summary": summary,
        "opened_at": now,
        "contacted_at": None,
        "contact_channel": None,
        "resolved_at": None,
        "resolution": None,
        "updated_at": now,
    }
    repo.insert_case(conn, row)
    _append(
        conn,
        merchant_id=merchant_id,
        case_id=row["id"],
        action=rules.Action.OPENED,
        actor=actor,
        at=now,
        text=summary,
    )
    if assignee is not None:
        _append(
            conn,
            merchant_id=merchant_id,
            case_id=row["id"],
            action=rules.Action.ASSIGNED,
            actor=actor,
            at=now,
            assignee=assignee,
        )
    return case_view(row), True


def open_case(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    summary: str,
    actor: str,
    source_ref: str | None = None,
    assignee: str | None = None,
) -> dict[str, Any]:
    """A case opened by staff (``manual``). With a ``source_ref`` (e.g. a complaint number) a
    second unresolved case for the same member and reference is refused (409 ``case-exists``)."""
    case, created = ensure_case(
        conn,
        merchant_id=merchant_id,
        member_id=member_id,
        source=rules.Source.MANUAL,
        source_ref=source_ref,
        summary=summary,
        actor=actor,
        assignee=assignee,
    )
    if not created:
        raise CaseExists(
            f"case {case['id']} for this member and reference {source_ref!r} is still {case['status']}",
            case_id=case["id"],
        )
    return get_case(conn, merchant_id=merchant_id, case_id=case["id"])


def get_case(conn: Connection, *, merchant_id: str, case_id: str) -> dict[str, Any]:
    row = repo.get_case(conn, merchant_id, case_id)
    if row is None:
        raise NotFound(f"case {case_id} not found")
    return case_view(row, repo.timeline(conn, merchant_id, case_id))


def encode_cursor(at: datetime, case_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([at.isoformat(), case_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, case_id = json.loads(raw)
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None or not in_range(parsed) or not isinstance(case_id, str):
            raise ValueError
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput("cursor is not valid; use next_cursor from the previous page", field="cursor")
    return parsed, case_id


def list_cases(
    conn: Connection,
    *,
    merchant_id: str,
    status: rules.Status | None = None,
    assignee: str | None = None,
    member_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Cases newest first, filtered, one page at a time."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1-{MAX_PAGE}", field="limit")
    after = decode_cursor(cursor) if cursor else None
    rows = repo.list_cases(
        conn,
        merchant_id,
        status=status.value if status else None,
        assignee=assignee,
        member_id=member_id,
        after=after,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["opened_at"], rows[-1]["id"]) if more and rows else None
    return {"data": [case_view(r) for r in rows], "next_cursor": next_cursor, "has_more": more}


def _act(
    conn: Connection,
    *,
    merchant_id: str,
    case_id: str,
    action: rules.Action,
    actor: str,
    text: str | None = None,
    assignee: str | None = None,
    channel: str | None = None,
) -> dict[str, Any]:
    row = repo.get_case(conn, merchant_id, case_id, lock=True)
    if row is None:
        raise NotFound(f"case {case_id} not found")
    if action == rules.Action.ASSIGNED:
        assert assignee is not None
        _check_user(conn, merchant_id, assignee)
    keeps = assignee if action == rules.Action.ASSIGNED else row["assignee"]
    status = rules.transition(rules.Status(row["status"]), action, has_assignee=keeps is not None)
    now = utcnow()
    changes: dict[str, Any] = {"status": status.value, "updated_at": now}
    if action == rules.Action.ASSIGNED:
        changes["assignee"] = assignee
    elif action == rules.Action.CONTACTED:
        changes.update(contacted_at=now, contact_channel=channel)
    elif action == rules.Action.RESOLVED:
        changes.update(resolved_at=now, resolution=text, open_ref=None)
    elif action == rules.Action.REOPENED:
        if row["source_ref"] is not None and repo.unresolved_case(
            conn, merchant_id, row["member_id"], row["source"], row["source_ref"]
        ):
            raise CaseExists(
                "another unresolved case for this member and reference exists; work on that one",
                case_id=case_id,
            )
        changes.update(
            resolved_at=None,
            resolution=None,
            contacted_at=None,
            contact_channel=None,
            open_ref=row["source_ref"],
        )
    repo.update_case(conn, merchant_id, case_id, **changes)
    _append(
        conn,
        merchant_id=merchant_id,
        case_id=case_id,
        action=action,
        actor=actor,
        at=now,
        text=text,
        assignee=assignee,
        channel=channel,
    )
    return get_case(conn, merchant_id=merchant_id, case_id=case_id)


def assign(conn: Connection, *, merchant_id: str, case_id: str, user_id: str, actor: str) -> dict[str, Any]:
    """Assign (or reassign) the case to a console user of the merchant."""
    return _act(
        conn,
        merchant_id=merchant_id,
        case_id=case_id,
        action=rules.Action.ASSIGNED,
        actor=actor,
        assignee=user_id,
    )


def comment(conn: Connection, *, merchant_id: str, case_id: str, text: str, actor: str) -> dict[str, Any]:
    return _act(
        conn, merchant_id=merchant_id, case_id=case_id, action=rules.Action.COMMENTED, actor=actor, text=text
    )


def contacted(
    conn: Connection, *, merchant_id: str, case_id: str, channel: str, note: str | None, actor: str
) -> dict[str, Any]:
    """Record that the member was contacted (by ``channel``): this closes the loop."""
    return _act(
        conn,
        merchant_id=merchant_id,
        case_id=case_id,
        action=rules.Action.CONTACTED,
        actor=actor,
        text=note,
        channel=channel,
    )


def resolve(
    conn: Connection, *, merchant_id: str, case_id: str, resolution: str, actor: str
) -> dict[str, Any]:
    return _act(
        conn,
        merchant_id=merchant_id,
        case_id=case_id,
        action=rules.Action.RESOLVED,
        actor=actor,
        text=resolution,
    )


def reopen(
    conn: Connection, *, merchant_id: str, case_id: str, note: str | None, actor: str
) -> dict[str, Any]:
    return _act(
        conn, merchant_id=merchant_id, case_id=case_id, action=rules.Action.REOPENED, actor=actor, text=note
    )


def unresolved_at_risk(
    conn: Connection, *, merchant_id: str, member_ids: list[str]
) -> dict[str, dict[str, str]]:
    """Member id -> the ``id`` and ``status`` of their unresolved at-risk case, if any."""
    return repo.unresolved_of_source(conn, merchant_id, rules.Source.AT_RISK.value, member_ids)
