"""Segments members can be targeted by: each member's RFM segment over the last 12 months
(``analytics/segments.py``: champions, loyal, promising, need_attention, at_risk, hibernating,
lost), recomputed by the ``segments`` job and kept one row per member. Earning rules and rewards
with ``segments`` apply to members whose latest segment is one of them; a member with no
purchase in the window is in no segment."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from patron.services.clock import utcnow
from patron.storage import jobs as jobs_repo
from patron.storage import segments as repo

WINDOW = timedelta(days=365)


def segment_of(conn: Connection, *, merchant_id: str, member_id: str) -> str | None:
    return repo.segment_of(conn, merchant_id, member_id)


def assess(
    conn: Connection, *, merchant_id: str, program_id: str, as_of: datetime
) -> tuple[dict[str, int], int]:
    """Recompute the program's segments as of ``as_of``: members per segment, and how many
    members' segments changed."""
    from patron.services.insights import member_segments
    from patron.services.programs import program_at

    program, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=as_of)
    from zoneinfo import ZoneInfo

    last = as_of.astimezone(ZoneInfo(program.timezone)).date()
    found = member_segments(
        conn, merchant_id=merchant_id, program_id=program_id, first=last - WINDOW, last=last
    )
    now = utcnow()
    rows = [
        {
            "merchant_id": merchant_id,
            "member_id": member_id,
            "program_id": program_id,
            "segment": segment,
            "as_of": as_of,
            "computed_at": now,
        }
        for member_id, segment in sorted(found.items())
    ]
    changed = repo.replace_program(conn, merchant_id=merchant_id, program_id=program_id, rows=rows)
    counts: dict[str, int] = {}
    for segment in found.values():
        counts[segment] = counts.get(segment, 0) + 1
    return counts, changed


def run_segments(
    engine: Engine,
    *,
    as_of: datetime,
    merchant_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int, int]:
    """The job: (programs, members whose segment changed, members in a segment). A second run
    for the same ``as_of`` changes nothing."""
    with engine.begin() as conn:
        targets = jobs_repo.all_programs(conn, merchant_id)
    placed = changed = 0
    for m, program_id in targets:
        with engine.begin() as conn:
            counts, moved = assess(conn, merchant_id=m, program_id=program_id, as_of=as_of)
        placed += sum(counts.values())
        changed += moved
        if progress:
            progress(1)
    return len(targets), changed, placed
