"""CSV and Parquet export of a program's members, ledger and events: streamed, in constant memory.

Rows are read with a server-side cursor (``stream_results``, ``yield_per``) in batches of
:data:`BATCH` and written with the :mod:`csv` module: UTF-8, a header row, RFC 3339 times with
their offset (UTC). The same functions serve ``patron export`` and the API's downloads. Parquet
files (``write_parquet``) hold the same columns typed: integers for points and balances, UTC
timestamps for times, strings otherwise, one row group per batch.

* members: the program's members with their cached balances (tier is left out: it is derived
  and costly to compute per member; see ``GET /v1/members/{id}``).
* ledger: postings to member accounts (available, pending, reserved, debt) by occurred_at then
  id; ``points`` is shown as the API shows it (debt positive), so per member and account the
  points sum to that balance.
* events: the program's events; a refund or cancel names in ``refers_to`` the external id of
  the event it reverses.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Literal

from sqlalchemy import Connection, Engine, Select

from patron.domain.errors import InvalidInput
from patron.domain.ledger import display_points
from patron.services.programs import get_program
from patron.storage import exports as queries

Kind = Literal["members", "ledger", "events"]
KINDS: tuple[Kind, ...] = ("members", "ledger", "events")
BATCH = 2000

COLUMNS: dict[str, tuple[str, ...]] = {
    "members": (
        "id",
        "external_id",
        "email",
        "phone",
        "name",
        "card_number",
        "status",
        "enrolled_at",
        *queries.BALANCES,
    ),
    "ledger": (
        "id",
        "occurred_at",
        "member_id",
        "external_id",
        "kind",
        "reason",
        "account",
        "points",
        "event_id",
        "lot_id",
        "program_version",
    ),
    "events": (
        "id",
        "type",
        "member_id",
        "occurred_at",
        "received_at",
        "points",
        "location_id",
        "refers_to",
    ),
}


@dataclass(frozen=True, slots=True)
class Export:
    """What to export: a kind of rows of one merchant's program, optionally in a time window."""

    kind: Kind
    merchant_id: str
    program_id: str
    since: datetime | None = None
    until: datetime | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS[self.kind]

    def query(self) -> Select[Any]:
        if self.kind == "members":
            return queries.members_query(self.merchant_id, self.program_id)
        if self.kind == "ledger":
            return queries.ledger_query(self.merchant_id, self.program_id, self.since, self.until)
        return queries.events_query(self.merchant_id, self.program_id, self.since, self.until)


def check(conn: Connection, export: Export) -> None:
    """Raise ``NotFound`` for a program the merchant does not have, ``InvalidInput`` for a bad
    window or kind."""
    if export.kind not in KINDS:
        raise InvalidInput(f"unknown export {export.kind!r}; one of {', '.join(KINDS)}")
    if export.kind == "members" and (export.since or export.until):
        raise InvalidInput("members are exported whole: since and until apply to ledger and events")
    if export.since and export.until and export.since >= export.until:
        raise InvalidInput("since must be before until")
    get_program(conn, merchant_id=export.merchant_id, program_id=export.program_id)


def count(conn: Connection, export: Export) -> int:
    """How many rows the export has (for a progress bar; rows added meanwhile may make it more)."""
    return int(conn.execute(queries.count_query(export.query())).scalar_one())


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return safe_cell(value)


#: what a spreadsheet reads as the start of a formula in a cell
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def safe_cell(value: Any) -> Any:
    """``value`` for a CSV cell a spreadsheet opens: text that would start a formula
    (``=HYPERLINK(...)`` as a member's name) gets a leading ``'``, so that it shows as text and
    runs nothing. Plain numbers (``-50``, a phone ``+14155550123``) stay as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def records(conn: Connection, export: Export) -> Iterator[list[Any]]:
    """The export's rows as Python values, read in batches through a server-side cursor."""
    streaming = conn.execution_options(stream_results=True, yield_per=BATCH)
    result = streaming.execute(export.query())
    try:
        for row in result.mappings():
            values = dict(row)
            if export.kind == "ledger":
                values["points"] = display_points(values["account"], int(values.pop("amount")))
            yield [values[column] for column in export.columns]
    finally:
        result.close()


def rows(conn: Connection, export: Export) -> Iterator[list[Any]]:
    """The export's rows as CSV cells."""
    for values in records(conn, export):
        yield [_cell(v) for v in values]


_INTEGER_COLUMNS = {"points", "program_version", *queries.BALANCES}
_TIME_COLUMNS = {"occurred_at", "received_at", "enrolled_at"}


def write_parquet(
    path: str, export: Export, source: Iterable[Sequence[Any]], progress: Callable[[int], None] | None
) -> int:
    """Write the rows of ``source`` (from :func:`records`) to a Parquet file at ``path``, a row
    group per :data:`BATCH` rows; the number of rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def kind(column: str) -> Any:
        if column in _INTEGER_COLUMNS:
            return pa.int64()
        if column in _TIME_COLUMNS:
            return pa.timestamp("us", tz="UTC")
        return pa.string()

    schema = pa.schema([(c, kind(c)) for c in export.columns])
    written = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        batch: list[Sequence[Any]] = []

        def flush() -> None:
            columns: list[Sequence[Any]] = (
                list(zip(*batch, strict=True)) if batch else [[] for _ in export.columns]
            )
            writer.write_table(
                pa.Table.from_arrays(
                    [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema
                )
            )
            if progress is not None:
                progress(len(batch))

        for row in source:
            batch.append(row)
            if len(batch) == BATCH:
                flush()
                written += len(batch)
                batch = []
        if batch or not written:
            flush()
            written += len(batch)
    return written


def write(
    handle: IO[str], export: Export, source: Iterable[Sequence[Any]], progress: Callable[[int], None] | None
) -> int:
    """Write the header and the rows of ``source`` to ``handle``; the number of rows written."""
    writer = csv.writer(handle)
    writer.writerow(export.columns)
    written = 0
    for row in source:
        writer.writerow(row)
        written += 1
        if progress is not None and written % BATCH == 0:
            progress(BATCH)
    if progress is not None and written % BATCH:
        progress(written % BATCH)
    return written


def stream(engine: Engine, export: Export) -> Iterator[str]:
    """The CSV text in chunks of :data:`BATCH` rows, from a connection of its own (for an HTTP
    response that outlives the request's transaction). The program is checked first."""
    with engine.connect() as conn:
        check(conn, export)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(export.columns)
        pending = 0
        for row in rows(conn, export):
            writer.writerow(row)
            pending += 1
            if pending == BATCH:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
                pending = 0
        yield buffer.getvalue()
