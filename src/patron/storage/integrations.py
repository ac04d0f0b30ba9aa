"""Inbound integrations (Shopify, Square, WooCommerce, Stripe) and their delivery inbox.

``webhook_deliveries`` is the inbox: one row per platform delivery id, written in the same
transaction as the events the delivery caused. A delivery already ``processed`` or ``ignored`` is
acknowledged again without being applied again; a ``failed`` one wrote nothing but its row, so a
redelivery is tried afresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    insert,
    or_,
    select,
    update,
)

from patron.storage.tables import ID, UTCDateTime, metadata

integrations = Table(
    "integrations",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("type", String(20), nullable=False),
    Column("program_id", ID, nullable=False),
    Column("secret", String(500), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    # A webhook names only the integration: like ``api_keys.key_hash``, this lookup comes before
    # the merchant is known, so the id is unique on its own.
    UniqueConstraint("id"),
    # No foreign key to programs: a reference table cannot point into sharded tables (Citus); the
    # service checks the program when the integration is created.
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("integration_id", ID, nullable=False),
    Column("delivery_id", String(200), nullable=False),
    Column("topic", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("error", Text),
    Column("outcome", JSON, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "integration_id", "delivery_id"),
    Index(None, "merchant_id", "integration_id", "received_at"),
)


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """A nested transaction: an exception inside undoes only what was written inside."""
    with conn.begin_nested():
        yield


def insert_integration(conn: Connection, **values: Any) -> None:
    conn.execute(insert(integrations), values)


def get_integration(conn: Connection, merchant_id: str, integration_id: str) -> dict[str, Any] | None:
    stmt = select(integrations).where(
        integrations.c.merchant_id == merchant_id, integrations.c.id == integration_id
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def integration_by_id(conn: Connection, integration_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(integrations).where(integrations.c.id == integration_id)).mappings().first()
    return dict(row) if row else None


def list_integrations(conn: Connection, merchant_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(integrations)
        .where(integrations.c.merchant_id == merchant_id)
        .order_by(integrations.c.created_at, integrations.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def get_delivery(
    conn: Connection, merchant_id: str, integration_id: str, delivery_id: str
) -> dict[str, Any] | None:
    d = webhook_deliveries.c
    stmt = select(webhook_deliveries).where(
        d.merchant_id == merchant_id, d.integration_id == integration_id, d.delivery_id == delivery_id
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def insert_delivery(conn: Connection, **values: Any) -> None:
    conn.execute(insert(webhook_deliveries), values)


def update_delivery(
    conn: Connection, merchant_id: str, integration_id: str, delivery_id: str, **values: Any
) -> None:
    d = webhook_deliveries.c
    conn.execute(
        update(webhook_deliveries)
        .where(d.merchant_id == merchant_id, d.integration_id == integration_id, d.delivery_id == delivery_id)
        .values(**values)
    )


def list_deliveries(
    conn: Connection,
    merchant_id: str,
    integration_id: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; ``limit + 1`` rows so the caller can tell whether there are more."""
    d = webhook_deliveries.c
    stmt = select(webhook_deliveries).where(d.merchant_id == merchant_id, d.integration_id == integration_id)
    if status is not None:
        stmt = stmt.where(d.status == status)
    if after is not None:
        at, delivery_id = after
        stmt = stmt.where(or_(d.received_at < at, and_(d.received_at == at, d.delivery_id < delivery_id)))
    stmt = stmt.order_by(d.received_at.desc(), d.delivery_id.desc()).limit(limit + 1)
    return [dict(r) for r in conn.execute(stmt).mappings()]
