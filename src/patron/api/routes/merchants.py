"""The merchant's own account: API keys and locations; and the books' verification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from patron.api.deps import CallDep
from patron.services import ledger, merchants

router = APIRouter(tags=["merchant"])


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    scopes: Annotated[list[str], Field(min_length=1)]


class LocationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=100)]
    name: Annotated[str, Field(min_length=1, max_length=200)]


@router.get("/merchant")
def get_merchant(call: CallDep) -> JSONResponse:
    """The merchant this API key belongs to."""
    return call.run(lambda conn, p: merchants.get_merchant(conn, merchant_id=p.merchant_id), scope="read")


@router.get("/api-keys")
def list_keys(call: CallDep) -> JSONResponse:
    """API keys (never the secret, only its prefix)."""
    return call.run(
        lambda conn, p: {"data": merchants.list_api_keys(conn, merchant_id=p.merchant_id)},
        scope="admin",
    )


@router.post("/api-keys", status_code=201)
def create_key(body: ApiKeyCreate, call: CallDep) -> JSONResponse:
    """A new API key with scopes among `read`, `write`, `admin`, `pos`. The `api_key` is shown
    only in this response; it is stored hashed (a replay of an Idempotency-Key answers the same
    key with `api_key` null)."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        view, key = merchants.create_api_key(
            conn, merchant_id=p.merchant_id, name=body.name, scopes=body.scopes
        )
        return {**view, "api_key": key}

    return call.run(work, scope="admin", status=201, body=body.model_dump(), secret="api_key")


@router.delete("/api-keys/{key_id}", status_code=204)
def revoke_key(key_id: str, call: CallDep) -> JSONResponse:
    """Revoke an API key at once."""
    call.run(
        lambda conn, p: merchants.revoke_api_key(conn, merchant_id=p.merchant_id, key_id=key_id),
        scope="admin",
    )
    return JSONResponse(None, status_code=204)


@router.get("/locations")
def list_locations(call: CallDep) -> JSONResponse:
    return call.run(
        lambda conn, p: {"data": merchants.list_locations(conn, merchant_id=p.merchant_id)},
        scope="read",
    )


@router.post("/locations", status_code=201)
def create_location(body: LocationCreate, call: CallDep) -> JSONResponse:
    """Create or rename a location (events create unknown locations on first use)."""
    return call.run(
        lambda conn, p: merchants.put_location(
            conn, merchant_id=p.merchant_id, location_id=body.id, name=body.name
        ),
        scope="admin",
        status=201,
        body=body.model_dump(),
    )


@router.get("/verify")
def verify(call: CallDep) -> JSONResponse:
    """Prove the books: every journal sums to zero and every cached balance equals its postings."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        problems = ledger.verify(conn, merchant_id=p.merchant_id)
        return {"ok": not problems, "problems": problems}

    return call.run(work, scope="admin")
