"""What the portal's extra pages read about a member: tickets, the wallet card, the data export.

Each function checks that the member belongs to the merchant first, so another merchant's ids
are :class:`NotFound` like unknown ones.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from patron.services import members
from patron.services.clock import utcnow
from patron.services.wallet import Card
from patron.storage import member_tickets as repo


def member_tickets(conn: Connection, *, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    """The member's tickets, newest event first; ``upcoming`` when the event is still to come
    and the ticket can be shown at the door."""
    members.get_member(conn, merchant_id=merchant_id, member_id=member_id)
    now = utcnow()
    out = []
    for row in repo.tickets_of_member(conn, merchant_id, member_id):
        usable = row["status"] == "issued" and row["event_status"] == "scheduled"
        out.append({**row, "upcoming": usable and row["starts_at"] >= now, "usable": usable})
    return out


def wallet_card(conn: Connection, *, merchant_id: str, member_id: str, program: dict[str, Any]) -> Card:
    """The facts a wallet pass shows, from the member as the API sees them."""
    row = members.get_member(conn, merchant_id=merchant_id, member_id=member_id)
    view = members.member_view(conn, merchant_id=merchant_id, member=row)
    tier = view.get("tier") or {}
    return Card(
        member_id=member_id,
        card_number=str(row["card_number"]),
        name=row.get("name"),
        program_name=str(program["name"]),
        points_name=str(program["points_name"]),
        points=int(view["points"]["available"]),
        tier=tier.get("name") if isinstance(tier, dict) else None,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def export_json(conn: Connection, *, merchant_id: str, member_id: str) -> bytes:
    """Everything :func:`members.export` returns, as an indented UTF-8 JSON document."""
    data = members.export(conn, merchant_id=merchant_id, member_id=member_id)
    return json.dumps(data, default=_plain, indent=2, ensure_ascii=False).encode()
