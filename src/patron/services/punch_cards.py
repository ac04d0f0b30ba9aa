"""Punch cards as a member sees them: punches on the current card, cards filled, rewards."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from patron.domain.program import RuleType
from patron.services.clock import utcnow
from patron.services.members import get_member
from patron.services.programs import program_at
from patron.storage import punch_cards as repo


def cards_of(conn: Connection, *, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    """Each punch card of the member's program, with progress: ``punches`` of ``required`` on
    the current card, ``remaining`` to the next reward, and ``cards_filled`` so far."""
    member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=member["program_id"], at=utcnow())
    done = repo.of_member(conn, merchant_id, member_id)
    out = []
    for rule in program.rules:
        if rule.type != RuleType.PUNCH_CARD:
            continue
        mine = done.get(rule.id, {"punches": 0, "cards": 0})
        current = mine["punches"] % rule.punches
        out.append(
            {
                "rule_id": rule.id,
                "reward_id": rule.reward_id,
                "required": rule.punches,
                "punches": current,
                "remaining": rule.punches - current,
                "cards_filled": mine["cards"],
            }
        )
    return out
