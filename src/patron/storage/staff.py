"""Read-only queries over a merchant's console users (for choosing whom to assign work to)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select

from patron.storage.web import users


def users_of_merchant(conn: Connection, merchant_id: str, roles: Iterable[str]) -> list[dict[str, Any]]:
    """The merchant's users with one of ``roles``, by email."""
    stmt = (
        select(users.c.id, users.c.email, users.c.role)
        .where(users.c.merchant_id == merchant_id, users.c.role.in_(list(roles)))
        .order_by(users.c.email)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]
