"""Merchants, API keys and locations: tenancy."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from patron.domain.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from patron.services.clock import utcnow
from patron.storage import merchants as repo
from patron.storage.ids import new_id

SCOPES = ("read", "write", "admin", "pos")
#: What each scope allows. ``admin`` can do everything; ``pos`` is what a till needs.
GRANTS: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
    "pos": frozenset({"read", "pos"}),
    "admin": frozenset({"read", "write", "pos", "admin"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    merchant_id: str
    key_id: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return any(scope in GRANTS[s] for s in self.scopes if s in GRANTS)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_merchant(conn: Connection, *, name: str) -> tuple[dict[str, Any], str]:
    """A new merchant and its first API key (``admin`` scope). The key is returned only here."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("merchant name must be 1-200 characters")
    merchant_id = new_id("mer")
    repo.insert_merchant(conn, id=merchant_id, name=name, created_at=utcnow())
    _, key = create_api_key(conn, merchant_id=merchant_id, name="default", scopes=["admin"])
    merchant = repo.get_merchant(conn, merchant_id)
    assert merchant is not None
    return merchant, key


def create_api_key(
    conn: Connection, *, merchant_id: str, name: str, scopes: list[str]
) -> tuple[dict[str, Any], str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise InvalidInput(f"scopes must be some of {', '.join(SCOPES)}; got {scopes!r}")
    if repo.get_merchant(conn, merchant_id) is None:
        raise NotFound(f"merchant {merchant_id} not found")
    key = "ptr_" + secrets.token_urlsafe(32)
    row = {
        "merchant_id": merchant_id,
        "id": new_id("key"),
        "name": name[:200],
        "prefix": key[:12],
        "key_hash": _hash(key),
        "scopes": " ".join(sorted(set(scopes))),
        "created_at": utcnow(),
        "revoked_at": None,
    }
    repo.insert_api_key(conn, **row)
    return key_view(row), key


def key_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scopes": row["scopes"].split(),
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
    }


def authenticate(conn: Connection, *, key: str) -> Principal:
    row = repo.api_key_by_hash(conn, _hash(key)) if key else None
    if row is None or row["revoked_at"] is not None:
        raise Unauthorized("the API key is missing, unknown or revoked")
    return Principal(row["merchant_id"], row["id"], frozenset(row["scopes"].split()))


def authorize(conn: Connection, *, key: str, scope: str | tuple[str, ...]) -> Principal:
    """:func:`authenticate`, and the key must allow ``scope`` (one of them, for a tuple: a till's
    ``pos`` or a back office's ``write``); 403 otherwise."""
    principal = authenticate(conn, key=key)
    wanted = (scope,) if isinstance(scope, str) else scope
    if not any(principal.allows(s) for s in wanted):
        asked = " nor ".join(f"'{s}'" for s in wanted)
        allow = "do not allow" if len(wanted) == 1 else "allow neither"
        raise Forbidden(f"this API key's scopes ({', '.join(sorted(principal.scopes))}) {allow} {asked}")
    return principal


def list_api_keys(conn: Connection, *, merchant_id: str) -> list[dict[str, Any]]:
    return [key_view(r) for r in repo.list_api_keys(conn, merchant_id)]


def revoke_api_key(conn: Connection, *, merchant_id: str, key_id: str) -> None:
    if not repo.revoke_api_key(conn, merchant_id, key_id, utcnow()):
        raise NotFound(f"API key {key_id} not found or already revoked")


def ensure_location(conn: Connection, *, merchant_id: str, location_id: str, name: str | None = None) -> None:
    """Create the location on first use."""
    if repo.get_location(conn, merchant_id, location_id) is None:
        repo.insert_location(
            conn, merchant_id=merchant_id, id=location_id, name=name or location_id, created_at=utcnow()
        )


def get_merchant(conn: Connection, *, merchant_id: str) -> dict[str, Any]:
    row = repo.get_merchant(conn, merchant_id)
    if row is None:
        raise NotFound(f"merchant {merchant_id} not found")
    return row


def put_location(conn: Connection, *, merchant_id: str, location_id: str, name: str) -> dict[str, Any]:
    if repo.get_location(conn, merchant_id, location_id) is None:
        repo.insert_location(conn, merchant_id=merchant_id, id=location_id, name=name, created_at=utcnow())
    else:
        repo.rename_location(conn, merchant_id, location_id, name)
    row = repo.get_location(conn, merchant_id, location_id)
    assert row is not None
    return row


def list_locations(conn: Connection, *, merchant_id: str) -> list[dict[str, Any]]:
    return repo.list_locations(conn, merchant_id)
