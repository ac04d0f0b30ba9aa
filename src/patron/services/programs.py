"""Programs: create, read, and edit by publishing a new version with an effective time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection

from patron.domain.errors import InvalidInput, NotFound
from patron.domain.program import Program
from patron.services.clock import utcnow
from patron.services.program_schema import ProgramSpec
from patron.storage import programs as repo
from patron.storage.ids import new_id


def validate_spec(body: Any) -> ProgramSpec:
    try:
        return ProgramSpec.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput("the program is not valid", errors=_errors(exc))


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def create_program(conn: Connection, *, merchant_id: str, body: Any) -> dict[str, Any]:
    spec = validate_spec(body)
    program_id = new_id("prg")
    now = utcnow()
    repo.insert_program(conn, merchant_id=merchant_id, id=program_id, name=spec.name, created_at=now)
    repo.insert_version(
        conn,
        merchant_id=merchant_id,
        program_id=program_id,
        version=1,
        effective_from=now,
        body=spec.model_dump(mode="json", by_alias=True),
        created_at=now,
    )
    return get_program(conn, merchant_id=merchant_id, program_id=program_id)


def update_program(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    body: Any,
    effective_from: datetime | None,
) -> dict[str, Any]:
    """Publish a new version. Postings keep the version that made them; nothing is rewritten."""
    if repo.get_program(conn, merchant_id, program_id) is None:
        raise NotFound(f"program {program_id} not found")
    spec = validate_spec(body)
    now = utcnow()
    version = repo.latest_version_number(conn, merchant_id, program_id) + 1
    repo.insert_version(
        conn,
        merchant_id=merchant_id,
        program_id=program_id,
        version=version,
        effective_from=effective_from or now,
        body=spec.model_dump(mode="json", by_alias=True),
        created_at=now,
    )
    return get_program(conn, merchant_id=merchant_id, program_id=program_id, at=effective_from or now)


def get_program(
    conn: Connection, *, merchant_id: str, program_id: str, at: datetime | None = None
) -> dict[str, Any]:
    row = repo.get_program(conn, merchant_id, program_id)
    if row is None:
        raise NotFound(f"program {program_id} not found")
    times = repo.version_times(conn, merchant_id, program_id)
    version = pick_version(times, at or utcnow())
    assert version is not None
    body = repo.version_body(conn, merchant_id, program_id, version)
    assert body is not None
    return {
        **body,
        "id": program_id,
        "version": version,
        "effective_from": dict(times)[version],
        "created_at": row["created_at"],
    }


def list_programs(conn: Connection, *, merchant_id: str) -> list[dict[str, Any]]:
    return [
        get_program(conn, merchant_id=merchant_id, program_id=r["id"])
        for r in repo.list_programs(conn, merchant_id)
    ]


def list_versions(conn: Connection, *, merchant_id: str, program_id: str) -> list[dict[str, Any]]:
    if repo.get_program(conn, merchant_id, program_id) is None:
        raise NotFound(f"program {program_id} not found")
    return [
        {
            "version": v["version"],
            "effective_from": v["effective_from"],
            "created_at": v["created_at"],
            "body": v["body"],
        }
        for v in repo.versions(conn, merchant_id, program_id)
    ]


def pick_version(times: list[tuple[int, datetime]], at: datetime) -> int | None:
    """The version in effect at ``at``: the most recently published one whose effective time has
    come (a later publication supersedes earlier ones from its effective time on), else version 1,
    which also governs events from before the program was created."""
    effective = [v for v, e in times if e <= at]
    if effective:
        return max(effective)
    return times[0][0] if times else None


_PARSED: dict[tuple[str, str, int], Program] = {}
_TIMES: dict[tuple[str, str], list[tuple[int, datetime]]] = {}


def program_at(
    conn: Connection, *, merchant_id: str, program_id: str, at: datetime, latest: int | None = None
) -> tuple[Program, int]:
    """The domain program in effect at ``at`` and its version number.

    Versions are immutable once written and numbered 1, 2, 3..., so a parsed version is kept in
    memory by its key, and so is the list of versions' effective times: a caller that has read
    the program's ``latest`` version number (in a query it made anyway) skips reading the list
    again when the one kept ends with that number.
    """
    times = _TIMES.get((merchant_id, program_id)) if latest is not None else None
    if times is None or times[-1][0] != latest:
        times = repo.version_times(conn, merchant_id, program_id)
        if times:
            if len(_TIMES) > 1024:
                _TIMES.clear()
            _TIMES[(merchant_id, program_id)] = times
    version = pick_version(times, at)
    if version is None:
        raise NotFound(f"program {program_id} not found")
    key = (merchant_id, program_id, version)
    program = _PARSED.get(key)
    if program is None:
        body = repo.version_body(conn, merchant_id, program_id, version)
        assert body is not None
        program = ProgramSpec.model_validate(body).to_domain()
        if len(_PARSED) > 1024:
            _PARSED.clear()
        _PARSED[key] = program
    return program, version
