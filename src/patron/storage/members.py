"""Members: profile rows. Balances live in ``storage/ledger.py``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Text, and_, bindparam, cast, insert, select, update

from patron.storage.db import insert_many
from patron.storage.outbox import outbox_events
from patron.storage.tables import events, idempotency_keys, members

LOOKUPS = ("email_key", "phone", "card_number", "external_id", "referral_code")


def insert_member(conn: Connection, **values: Any) -> None:
    conn.execute(insert(members), values)


def insert_members(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Many members at once (one COPY on PostgreSQL); a unique key taken raises ``IntegrityError``."""
    insert_many(conn, members, rows)


def taken(conn: Connection, merchant_id: str, column: str, values: list[str]) -> set[str]:
    """Those of ``values`` the merchant's members already have in ``column`` (card numbers,
    referral codes: unique per merchant)."""
    found: set[str] = set()
    for i in range(0, len(values), 1000):
        found.update(
            str(v)
            for v in conn.execute(
                select(members.c[column]).where(
                    members.c.merchant_id == merchant_id, members.c[column].in_(values[i : i + 1000])
                )
            ).scalars()
        )
    return found


def get_member(conn: Connection, merchant_id: str, member_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(select(members).where(members.c.merchant_id == merchant_id, members.c.id == member_id))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def find_members(
    conn: Connection, merchant_id: str, *, limit: int = 100, **where: Any
) -> list[dict[str, Any]]:
    """Members matching every given identifier (``email_key``, ``phone``, ...) or ``program_id``."""
    stmt = select(members).where(members.c.merchant_id == merchant_id)
    for column, value in where.items():
        if value is not None:
            stmt = stmt.where(members.c[column] == value)
    stmt = stmt.order_by(members.c.created_at, members.c.id).limit(limit)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def get_many(conn: Connection, merchant_id: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The merchant's members among ``ids``, by id, in one query."""
    if not ids:
        return {}
    stmt = select(members).where(members.c.merchant_id == merchant_id, members.c.id.in_(ids))
    return {str(r["id"]): dict(r) for r in conn.execute(stmt).mappings()}


def clash(
    conn: Connection,
    merchant_id: str,
    program_id: str,
    column: str,
    value: Any,
    exclude: str | None,
) -> bool:
    stmt = select(members.c.id).where(members.c.merchant_id == merchant_id, members.c[column] == value)
    if column not in ("card_number", "referral_code"):
        stmt = stmt.where(members.c.program_id == program_id)
    if exclude:
        stmt = stmt.where(members.c.id != exclude)
    return conn.execute(stmt.limit(1)).first() is not None


def update_member(conn: Connection, merchant_id: str, member_id: str, **values: Any) -> None:
    conn.execute(
        update(members)
        .where(members.c.merchant_id == merchant_id, members.c.id == member_id)
        .values(**values)
    )


def stored_answers_of(conn: Connection, merchant_id: str, member_id: str) -> dict[str, list[tuple[Any, Any]]]:
    """Every stored JSON that may hold the member's personal data, by table, as ``(key, json)``:
    their events' results, their business events' data, and the stored answers of
    Idempotency-Keys that mention them (erasure scrubs them all)."""
    found: dict[str, list[tuple[Any, Any]]] = {}
    found["events"] = [
        (r[0], r[1])
        for r in conn.execute(
            select(events.c.id, events.c.result).where(
                events.c.merchant_id == merchant_id, events.c.member_id == member_id
            )
        )
    ]
    found["outbox_events"] = [
        (r[0], r[1])
        for r in conn.execute(
            select(outbox_events.c.id, outbox_events.c.data).where(
                outbox_events.c.merchant_id == merchant_id, outbox_events.c.member_id == member_id
            )
        )
    ]
    found["idempotency_keys"] = [
        (r[0], r[1])
        for r in conn.execute(
            select(idempotency_keys.c.key, idempotency_keys.c.response).where(
                and_(
                    idempotency_keys.c.merchant_id == merchant_id,
                    cast(idempotency_keys.c.response, Text).contains(member_id),
                )
            )
        )
    ]
    return found


def replace_stored_answers(
    conn: Connection, merchant_id: str, table: str, rows: list[tuple[Any, Any]]
) -> None:
    """Write back the scrubbed JSON of :func:`stored_answers_of` (``rows``: ``(key, json)``)."""
    target, key, column = {
        "events": (events, events.c.id, "result"),
        "outbox_events": (outbox_events, outbox_events.c.id, "data"),
        "idempotency_keys": (idempotency_keys, idempotency_keys.c.key, "response"),
    }[table]
    if rows:
        conn.execute(
            update(target)
            .where(target.c.merchant_id == merchant_id, key == bindparam("k"))
            .values({column: bindparam("v")}),
            [{"k": k, "v": v} for k, v in rows],
        )
