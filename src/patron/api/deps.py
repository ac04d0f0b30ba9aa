"""Per-request plumbing: the API key, one transaction per request, Idempotency-Key replay.

Every route runs its work through :meth:`Call.run`: authenticate and check the scope, then the
service call, all in one transaction that commits only if everything succeeded. A unique-key race
(two requests creating the same thing at once) rolls back and runs again, so the loser sees the
winner's row and answers as a replay or a 409, never a 500.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from patron.domain.errors import Conflict, IdempotencyConflict, InvalidInput, Unauthorized
from patron.services.clock import utcnow
from patron.services.merchants import Principal, authorize
from patron.storage import idempotency

Work = Callable[[Connection, Principal], Any]


class Call:
    def __init__(self, request: Request, authorization: str | None, idempotency_key: str | None) -> None:
        self.request = request
        self.engine: Engine = request.app.state.engine
        self.authorization = authorization
        self.idempotency_key = idempotency_key

    def bearer_key(self) -> str:
        """The API key the request sends (401 without one)."""
        scheme, _, key = (self.authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("send the API key as 'Authorization: Bearer <key>'")
        return key.strip()

    def _principal(self, conn: Connection, scope: str | tuple[str, ...]) -> Principal:
        return authorize(conn, key=self.bearer_key(), scope=scope)

    def run(
        self,
        work: Work,
        *,
        scope: str | tuple[str, ...],
        status: int = 200,
        body: Any = None,
        secret: str | None = None,
    ) -> JSONResponse:
        """Run ``work`` in one transaction. ``work`` returns a payload or ``(payload, status)``.
        ``secret``: a field of the payload shown once and never stored (an Idempotency-Key's
        replay answers with it ``null``)."""
        key = self.idempotency_key if self.request.method == "POST" else None
        if key is not None and not 1 <= len(key) <= 255:
            raise InvalidInput("Idempotency-Key must be 1-255 characters", field="Idempotency-Key")
        for attempt in range(4):
            try:
                with self.engine.begin() as conn:
                    principal = self._principal(conn, scope)
                    if key:
                        replay = self._replay(conn, principal, key, body)
                        if replay is not None:
                            return replay
                    out = work(conn, principal)
                    payload, code = out if isinstance(out, tuple) else (out, status)
                    payload, content = _render(payload)
                    if key:
                        idempotency.put(
                            conn,
                            merchant_id=principal.merchant_id,
                            key=key,
                            method=self.request.method,
                            path=self.request.url.path,
                            body_hash=_hash(body),
                            status_code=code,
                            response={**payload, secret: None} if secret else payload,
                            created_at=utcnow(),
                        )
                    return _Rendered(content, status_code=code)
            except IntegrityError:
                if attempt == 3:
                    raise Conflict("a concurrent request changed the same data; retry")
            except DBAPIError as exc:  # serialization failure / deadlock on PostgreSQL
                if getattr(exc.orig, "sqlstate", None) not in ("40001", "40P01") or attempt == 3:
                    raise
        raise Conflict("a concurrent request changed the same data; retry")

    def _replay(self, conn: Connection, principal: Principal, key: str, body: Any) -> JSONResponse | None:
        row = idempotency.get(conn, principal.merchant_id, key)
        if row is None:
            return None
        if row["body_hash"] != _hash(body) or row["path"] != self.request.url.path:
            raise IdempotencyConflict("this Idempotency-Key was used with a different request")
        return JSONResponse(
            row["response"], status_code=row["status_code"], headers={"Idempotent-Replayed": "true"}
        )


class _Rendered(JSONResponse):
    """A JSON response whose body was already rendered (by :func:`_render`)."""

    def render(self, content: Any) -> bytes:
        assert isinstance(content, bytes)
        return content


def rendered(payload: Any, status_code: int) -> JSONResponse:
    """``payload`` as the JSON response :meth:`Call.run` makes of it."""
    return _Rendered(_render(payload)[1], status_code=status_code)


def _render(payload: Any) -> tuple[Any, bytes]:
    """The payload as JSON (what ``jsonable_encoder`` then ``JSONResponse`` would make) and its
    bytes. Services mostly return plain JSON already: it is dumped as it is, and only a payload
    holding something else (times, decimals, models...) goes through the slower encoder."""
    try:
        return payload, _dump(payload)
    except (TypeError, ValueError):
        payload = jsonable_encoder(payload)
        return payload, _dump(payload)


def _dump(payload: Any) -> bytes:
    return json.dumps(
        payload, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


def _hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(jsonable_encoder(body), sort_keys=True).encode()).hexdigest()


async def get_call(  # async: nothing here blocks, so FastAPI need not hand it to a thread
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Call:
    return Call(request, authorization, idempotency_key)


CallDep = Annotated[Call, Depends(get_call)]
