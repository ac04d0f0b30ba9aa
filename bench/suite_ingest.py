"""ingest: purchase events of three lines through Patron's batch path, against the minimal
ledger rows (one event row, two postings per event) written the fastest plain way the database
offers: COPY on PostgreSQL, executemany in one transaction on SQLite.

Patron's batch path is ``services.ingest.record_purchases`` (set-based, one transaction per
batch of ``services.imports.BATCH``, the CSV importer's batch) when the tree has it. Without it,
the CSV importer's loop (``services.imports._run``): one transaction per batch, each event in its
own savepoint, applied by ``record_event``. The CSV format has one line per row, so the 3-line
purchases are fed to the batch path directly; ``import`` in ``suite_extra.py`` measures the CSV
file path.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import psycopg
from earn import PROGRAM  # bench/earn.py
from harness import ITEMS, POINTS, TMP, alternate, libpq, log, purchase
from sqlalchemy import Engine

from patron.services import imports, members, merchants, programs
from patron.services.events import record_event
from patron.services.members import MemberCreate
from patron.storage.db import make_engine, migrate

AT = datetime(2026, 3, 1, 10, tzinfo=UTC)
TWIN_DDL = [
    "CREATE TABLE IF NOT EXISTS {p}events (id VARCHAR(40) PRIMARY KEY, member_id VARCHAR(40) NOT NULL,"
    " occurred_at TIMESTAMP NOT NULL, amount BIGINT NOT NULL, points BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {p}postings (id VARCHAR(44) PRIMARY KEY, event_id VARCHAR(40) NOT NULL,"
    " member_id VARCHAR(40) NOT NULL, account VARCHAR(30) NOT NULL, amount BIGINT NOT NULL)",
]
AMOUNT = sum(int(i["quantity"]) * int(i["unit_price"]) for i in ITEMS)


def seed(engine: Engine, count: int) -> tuple[str, list[str]]:
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Bench ingest")
        m = merchant["id"]
        program = programs.create_program(conn, merchant_id=m, body=PROGRAM)["id"]
        ids = [
            members.enrol(conn, merchant_id=m, data=MemberCreate(program_id=program, external_id=f"i{i}"))[
                "id"
            ]
            for i in range(count)
        ]
    return m, ids


def batch_path() -> str:
    """``services.ingest.record_purchases`` (set-based) when this tree has it, else the importer's
    per-event loop."""
    try:
        from patron.services.ingest import record_purchases  # noqa: F401
    except ImportError:
        return f"services.imports._run (CSV import loop), batches of {imports.BATCH}, savepoint per event"
    return f"services.ingest.record_purchases, batches of {imports.BATCH}, one transaction each"


def patron_batch(engine: Engine, merchant_id: str, ids: list[str], tag: str, n: int) -> int:
    try:
        from patron.services.ingest import record_purchases
    except ImportError:
        return _patron_loop(engine, merchant_id, ids, tag, n)
    for at in range(0, n, imports.BATCH):
        bodies = [purchase(f"{tag}-{i}", ids[i % len(ids)]) for i in range(at, min(n, at + imports.BATCH))]
        with engine.begin() as conn:
            outcomes = record_purchases(conn, merchant_id=merchant_id, bodies=bodies)
        bad = [o.error for o in outcomes if o.error is not None or not o.created]
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(bodies)} not created: {bad[:3]}")
    return n


def _patron_loop(engine: Engine, merchant_id: str, ids: list[str], tag: str, n: int) -> int:
    def apply(conn: Any, row: dict[str, str]) -> bool:
        i = int(row["n"])
        return record_event(conn, merchant_id=merchant_id, body=purchase(f"{tag}-{i}", ids[i % len(ids)]))[1]

    def rejected(r: imports.Rejected) -> None:
        raise RuntimeError(f"rejected: {r.reason}")

    summary = imports._run(engine, ({"n": str(i)} for i in range(n)), apply, rejected, None, imports.BATCH)
    assert summary.imported == n, summary
    return n


def twin_rows(ids: list[str], tag: str, n: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    events, postings = [], []
    for i in range(n):
        e, member = f"{tag}-{i}", ids[i % len(ids)]
        events.append((e, member, AT, AMOUNT, POINTS))
        postings.append((e + "a", e, member, "available", POINTS))
        postings.append((e + "b", e, member, "program:issued", -POINTS))
    return events, postings


def twin_postgres(url: str, ids: list[str], tag: str, n: int) -> None:
    with psycopg.connect(libpq(url)) as conn, conn.cursor() as cur:
        events, postings = twin_rows(ids, tag, n)
        with cur.copy("COPY bench_twin.events (id, member_id, occurred_at, amount, points) FROM STDIN") as cp:
            for row in events:
                cp.write_row(row)
        with cur.copy("COPY bench_twin.postings (id, event_id, member_id, account, amount) FROM STDIN") as cp:
            for row in postings:
                cp.write_row(row)
    # leaving the block commits


def twin_sqlite(path: str, ids: list[str], tag: str, n: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # what Patron's engine sets on SQLite
        events, postings = twin_rows(ids, tag, n)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO twin_events VALUES (?, ?, ?, ?, ?)", events)
        conn.executemany("INSERT INTO twin_postings VALUES (?, ?, ?, ?, ?)", postings)
        conn.execute("COMMIT")
    finally:
        conn.close()


def run(backend: str, url: str | None, *, events: int, rounds: int) -> dict[str, Any]:
    import time

    if backend == "sqlite":
        path = str(TMP / "ingest.db")
        url = f"sqlite:///{path}"
        with sqlite3.connect(path) as conn:
            for ddl in TWIN_DDL:
                conn.execute(ddl.format(p="twin_"))
    else:
        assert url is not None
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS bench_twin CASCADE")
            conn.execute("CREATE SCHEMA bench_twin")
            for ddl in TWIN_DDL:
                conn.execute(ddl.format(p="bench_twin."))
    engine = make_engine(url)
    migrate(engine)
    merchant_id, ids = seed(engine, 200)
    patron_batch(engine, merchant_id, ids, "warm", 50)  # caches, parsed program

    def patron(r: int) -> float:
        t0 = time.perf_counter()
        patron_batch(engine, merchant_id, ids, f"p{r}", events)
        return events / (time.perf_counter() - t0)

    def twin(r: int) -> float:
        t0 = time.perf_counter()
        if backend == "sqlite":
            twin_sqlite(path, ids, f"t{r}", events)
        else:
            assert url is not None
            twin_postgres(url, ids, f"t{r}", events)
        return events / (time.perf_counter() - t0)

    log(f"ingest/{backend}: {events} purchase events of 3 lines per round, {rounds} rounds")
    result = alternate(f"ingest/{backend}", rounds, patron, twin, "events/s")
    engine.dispose()
    return {
        **result,
        "events_per_round": events,
        "patron_path": batch_path(),
        "twin": "COPY in one transaction" if backend == "postgres" else "executemany in one transaction",
        "target": ">= 0.25",
    }
