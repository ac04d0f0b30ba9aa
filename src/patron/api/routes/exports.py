"""CSV downloads of a program's members, ledger and events (admin scope).

The API key and the program are checked in the request's transaction (:meth:`Call.run`); the
rows are then streamed from a connection of their own with a server-side cursor, so a download
of any size takes constant memory and has no row cap. The rows are those committed when the
download's query starts.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from patron.api.deps import CallDep
from patron.services import exports
from patron.services.instant import Instant

router = APIRouter(tags=["exports"])


def _download(
    call: CallDep,
    kind: exports.Kind,
    program_id: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    def work(conn, p):  # type: ignore[no-untyped-def]
        export = exports.Export(kind, p.merchant_id, program_id, since, until)
        exports.check(conn, export)  # unknown program: 404 before any byte is sent
        return {"merchant_id": p.merchant_id}

    checked = call.run(work, scope="admin")
    merchant_id = json.loads(bytes(checked.body))["merchant_id"]
    export = exports.Export(kind, merchant_id, program_id, since, until)
    return StreamingResponse(
        exports.stream(call.engine, export),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{program_id}-{kind}.csv"'},
    )


_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "The CSV file, with a header row."}
}


@router.get("/programs/{program_id}/exports/members.csv", response_class=StreamingResponse, responses=_CSV)
def export_members(program_id: str, call: CallDep) -> StreamingResponse:
    """The program's members with their points: id, external_id, email, phone, name,
    card_number, status, enrolled_at, available, pending, reserved, debt, lifetime_earned,
    expired, redeemed. Streamed, no row cap."""
    return _download(call, "members", program_id)


@router.get("/programs/{program_id}/exports/ledger.csv", response_class=StreamingResponse, responses=_CSV)
def export_ledger(
    program_id: str, call: CallDep, since: Instant | None = None, until: Instant | None = None
) -> StreamingResponse:
    """Postings to member accounts, `since <= occurred_at < until`, by occurred_at: id,
    occurred_at, member_id, external_id, kind, reason, account, points (debt positive), event_id,
    lot_id, program_version. Per member and account, points sum to the balance. Streamed, no row
    cap."""
    return _download(call, "ledger", program_id, since, until)


@router.get("/programs/{program_id}/exports/events.csv", response_class=StreamingResponse, responses=_CSV)
def export_events(
    program_id: str, call: CallDep, since: Instant | None = None, until: Instant | None = None
) -> StreamingResponse:
    """The program's events, `since <= occurred_at < until`, by occurred_at: id, type, member_id,
    occurred_at, received_at, points, location_id, refers_to (the event a refund or cancel
    reverses). Streamed, no row cap."""
    return _download(call, "events", program_id, since, until)
