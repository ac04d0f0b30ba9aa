"""Usage metering over several periods in one pass: earning events and redeemed rewards per
location and period (the periods' bounds are instants, e.g. local month starts, so the same
``CASE`` works on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, select
from sqlalchemy.sql.elements import ColumnElement

from patron.storage.tables import events, redemptions


def _bucket(column: Any, bounds: Sequence[datetime]) -> ColumnElement[Any]:
    """The index ``i`` of the period ``[bounds[i], bounds[i + 1])`` holding ``column``."""
    return case(*[(column < end, i) for i, end in enumerate(bounds[1:])], else_=len(bounds) - 1)


def usage_by_period(
    conn: Connection, *, merchant_id: str, program_id: str, bounds: Sequence[datetime]
) -> list[dict[str, Any]]:
    """``[{"period", "location_id", "earns", "redemptions"}]`` for the periods between
    consecutive ``bounds`` (as ``analytics.usage`` counts them for one period)."""
    first, last = bounds[0], bounds[-1]
    e_bucket = _bucket(events.c.occurred_at, bounds).label("period")
    earns = (
        select(e_bucket, events.c.location_id, func.count().label("n"))
        .where(
            events.c.merchant_id == merchant_id,
            events.c.program_id == program_id,
            events.c.refers_to.is_(None),
            events.c.points > 0,
            events.c.occurred_at >= first,
            events.c.occurred_at < last,
        )
        .group_by(e_bucket, events.c.location_id)
    )
    r_bucket = _bucket(redemptions.c.settled_at, bounds).label("period")
    redeemed = (
        select(r_bucket, redemptions.c.location_id, func.count().label("n"))
        .where(
            redemptions.c.merchant_id == merchant_id,
            redemptions.c.program_id == program_id,
            redemptions.c.status == "redeemed",
            redemptions.c.settled_at >= first,
            redemptions.c.settled_at < last,
        )
        .group_by(r_bucket, redemptions.c.location_id)
    )
    out: dict[tuple[int, str | None], dict[str, Any]] = {}

    def row(period: int, location: str | None) -> dict[str, Any]:
        key = (int(period), location)
        return out.setdefault(key, {"period": key[0], "location_id": location, "earns": 0, "redemptions": 0})

    for period, location, n in conn.execute(earns):
        row(period, location)["earns"] = int(n)
    for period, location, n in conn.execute(redeemed):
        row(period, location)["redemptions"] = int(n)
    return sorted(out.values(), key=lambda r: (r["period"], r["location_id"] is None, r["location_id"] or ""))
