"""The merchant's console users (owners and managers): who a follow-up case can be assigned to."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from patron.services.users import CONSOLE_ROLES
from patron.storage import staff as repo


def console_users(conn: Connection, *, merchant_id: str) -> list[dict[str, Any]]:
    """``[{"id", "email", "role"}]`` of the merchant's owners and managers, by email."""
    return repo.users_of_merchant(conn, merchant_id, sorted(CONSOLE_ROLES))
