"""Earning throughput against the database's own ceiling, measured in the same run.

For each backend (SQLite in a temporary file; PostgreSQL when PATRON_BENCH_POSTGRES_URL or
PATRON_TEST_POSTGRES_URL is set) it measures:

* ceiling: one transaction per event that inserts a single row, through the same driver and
  connection settings: the most a database can commit per second one event at a time;
* patron: purchase events through the real service (validation, idempotency check, member lock,
  earning rules, journal + postings + lot + attribution rows, cached balances), one transaction
  per event;

and prints events per second, latency percentiles and patron / ceiling.

    python bench/earn.py [--events 2000] [--members 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, text

from patron.services import events, members, merchants, programs
from patron.services.members import MemberCreate
from patron.storage.db import make_engine, migrate

PROGRAM = {
    "name": "Bench",
    "currency": "USD",
    "earning_rules": [
        {"id": "base", "type": "spend", "points": 1, "per_amount": 100},
        {"id": "coffee-2x", "type": "multiplier", "categories": ["coffee"], "multiplier": "2"},
        {"id": "big", "type": "bonus", "threshold": 2000, "points": 25},
    ],
    "tiers": {
        "levels": [
            {"id": "member", "name": "Member", "threshold": 0},
            {"id": "gold", "name": "Gold", "threshold": 50000, "multiplier": "1.5"},
        ]
    },
    "expiry": {"months": 12},
}


def timed(n: int, step: Callable[[int], None]) -> tuple[float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        step(i)
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - start, latencies


def ceiling(engine: Engine, n: int) -> tuple[float, list[float]]:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_ceiling"))
        conn.execute(text("CREATE TABLE bench_ceiling (id VARCHAR(40) PRIMARY KEY, points BIGINT NOT NULL)"))

    def step(i: int) -> None:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO bench_ceiling (id, points) VALUES (:id, :p)"), {"id": f"c{i}", "p": i}
            )

    try:
        return timed(n, step)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE bench_ceiling"))


def patron(engine: Engine, n: int, member_count: int) -> tuple[float, list[float]]:
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Bench Co")
        m = merchant["id"]
        program = programs.create_program(conn, merchant_id=m, body=PROGRAM)["id"]
        ids = [
            members.enrol(conn, merchant_id=m, data=MemberCreate(program_id=program, external_id=f"b{i}"))[
                "id"
            ]
            for i in range(member_count)
        ]

    def step(i: int) -> None:
        body = {
            "id": f"bench-{m}-{i}",
            "type": "purchase",
            "member_id": ids[i % len(ids)],
            "occurred_at": "2026-03-01T10:00:00Z",
            "items": [
                {"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 450},
                {"id": "l2", "sku": "CROISSANT", "category": "pastry", "quantity": 1, "unit_price": 350},
            ],
        }
        with engine.begin() as conn:
            events.record_event(conn, merchant_id=m, body=body)

    return timed(n, step)


def report(name: str, total: float, latencies: list[float]) -> float:
    rate = len(latencies) / total
    q = statistics.quantiles(latencies, n=100)
    print(f"  {name:<9} {rate:9.0f} /s   p50 {q[49] * 1000:6.2f} ms   p95 {q[94] * 1000:6.2f} ms")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--members", type=int, default=200)
    args = parser.parse_args()
    backends = [("sqlite", f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}")]
    pg = os.environ.get("PATRON_BENCH_POSTGRES_URL") or os.environ.get("PATRON_TEST_POSTGRES_URL")
    if pg:
        backends.append(("postgresql", pg))
    else:
        print("(set PATRON_BENCH_POSTGRES_URL to measure PostgreSQL too)")
    for name, url in backends:
        engine = make_engine(url)
        migrate(engine)
        print(f"{name}: {args.events} purchase events over {args.members} members, one transaction each")
        top = report("ceiling", *ceiling(engine, args.events))
        got = report("patron", *patron(engine, args.events, args.members))
        print(f"  patron / ceiling = {got / top:.2f}")
        engine.dispose()


if __name__ == "__main__":
    main()
