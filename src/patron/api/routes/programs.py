"""Programs: the declarative JSON that defines earning, tiers, rewards and expiry."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse

from patron.api.deps import CallDep
from patron.services import programs
from patron.services.instant import Instant
from patron.services.program_schema import program_json_schema

router = APIRouter(tags=["programs"])

EXAMPLE = {
    "name": "Bean Rewards",
    "currency": "USD",
    "timezone": "UTC",
    "earning_rules": [
        {"id": "base", "type": "spend", "points": 1, "per_amount": 100},
        {"id": "coffee-2x", "type": "multiplier", "categories": ["coffee"], "multiplier": "2"},
    ],
    "expiry": {"months": 12},
}
ProgramBody = Body(..., openapi_examples={"coffee": {"summary": "A coffee shop", "value": EXAMPLE}})


@router.post("/programs", status_code=201)
def create_program(call: CallDep, body: dict[str, Any] = ProgramBody) -> JSONResponse:
    """Create a program. The body follows the program JSON Schema (`GET /v1/programs/schema`)."""
    return call.run(
        lambda conn, p: programs.create_program(conn, merchant_id=p.merchant_id, body=body),
        scope="admin",
        status=201,
        body=body,
    )


@router.get("/programs")
def list_programs(call: CallDep) -> JSONResponse:
    """All the merchant's programs, each in its current version."""
    return call.run(
        lambda conn, p: {"data": programs.list_programs(conn, merchant_id=p.merchant_id)},
        scope="read",
    )


@router.get("/programs/schema")
def program_schema(call: CallDep) -> JSONResponse:
    """The JSON Schema of a program body."""
    return call.run(lambda conn, p: program_json_schema(), scope="read")


@router.get("/programs/{program_id}")
def get_program(program_id: str, call: CallDep, as_of: Instant | None = None) -> JSONResponse:
    """A program as in effect now (or at `as_of`), with its version number."""
    return call.run(
        lambda conn, p: programs.get_program(
            conn, merchant_id=p.merchant_id, program_id=program_id, at=as_of
        ),
        scope="read",
    )


@router.put("/programs/{program_id}")
def update_program(
    program_id: str,
    call: CallDep,
    body: dict[str, Any] = ProgramBody,
    effective_from: Instant | None = None,
) -> JSONResponse:
    """Publish a new version of the program, in effect from `effective_from` (default now).

    Events are earned under the version in effect when they occurred; postings record it.
    """
    return call.run(
        lambda conn, p: programs.update_program(
            conn,
            merchant_id=p.merchant_id,
            program_id=program_id,
            body=body,
            effective_from=effective_from,
        ),
        scope="admin",
    )


@router.get("/programs/{program_id}/versions")
def list_versions(program_id: str, call: CallDep) -> JSONResponse:
    """Every version of the program with its effective time."""
    return call.run(
        lambda conn, p: {
            "data": programs.list_versions(conn, merchant_id=p.merchant_id, program_id=program_id)
        },
        scope="read",
    )
