"""What every benchmark in ``bench/run.py`` shares: alternating rounds against a ceiling twin,
the ``patron serve`` subprocess, an HTTP load driver, child processes with their peak memory.

A round runs Patron and its twin (the same data and concurrency, plain SQL, no engine) one after
the other, swapping which goes first each round so that a drift in the machine's load falls on
both. The figure that matters is the ratio ``patron rate / twin rate`` of each round; its median,
min and max over the rounds are reported. Absolute rates vary between runs; the ratio does not.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
PATRON = str(Path(sys.executable).parent / "patron")
TMP = Path(tempfile.mkdtemp(prefix="patron-bench-"))
ITEMS = [
    {"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 450},
    {"id": "l2", "sku": "CROISSANT", "category": "pastry", "quantity": 1, "unit_price": 350},
    {"id": "l3", "sku": "BEANS", "category": "grocery", "quantity": 1, "unit_price": 1299},
]
#: the purchase's points under bench/earn.py's PROGRAM, for the twins' postings
POINTS = 9 * 2 + 3 + 12


def log(message: str) -> None:
    print(message, flush=True)


def postgres_url() -> str:
    url = os.environ.get("PATRON_BENCH_POSTGRES_URL", "")
    if not url.startswith("postgresql"):
        sys.exit("set PATRON_BENCH_POSTGRES_URL to a PostgreSQL database (e.g. postgresql+psycopg://...)")
    return url


def libpq(url: str) -> str:
    """The SQLAlchemy URL as psycopg takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def reset_postgres(url: str) -> None:
    """An empty ``public`` schema (and no twin schema) in the bench database, migrated afresh."""
    import psycopg

    from patron.storage.db import make_engine, migrate

    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench_twin CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()


def fresh_statistics(url: str) -> bool:
    """What autovacuum does for a growing database, where it is off: ``ANALYZE`` (untimed, between
    rounds). Without fresh statistics the plans PostgreSQL made while the tables were nearly
    empty stay cached, the foreign-key checks' among them, and every posting then scans the
    whole ``journals`` table: a server that ran at 406 requests/s ran at 232 seven rounds later.
    True when it ran."""
    import psycopg

    with psycopg.connect(libpq(url), autocommit=True) as conn:
        row = conn.execute("SHOW autovacuum").fetchone()
        if row is not None and row[0] == "on":
            return False
        conn.execute("ANALYZE")
    return True


def purchase(event_id: str, member_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "purchase",
        "member_id": member_id,
        "occurred_at": "2026-03-01T10:00:00Z",
        "items": ITEMS,
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "ratio": round(statistics.median(values), 4),
        "ratio_min": round(min(values), 4),
        "ratio_max": round(max(values), 4),
    }


def alternate(
    name: str,
    rounds: int,
    patron: Callable[[int], float],
    twin: Callable[[int], float],
    unit: str,
) -> dict[str, Any]:
    """Run ``rounds`` rounds of both (each returns units per second for round ``r``); the ratios."""
    ratios, ours, theirs = [], [], []
    for r in range(rounds):
        order = [("patron", patron), ("twin", twin)]
        if r % 2:
            order.reverse()
        got: dict[str, float] = {}
        for who, fn in order:
            got[who] = fn(r)
        ratios.append(got["patron"] / got["twin"])
        ours.append(got["patron"])
        theirs.append(got["twin"])
        log(
            f"  {name} round {r + 1}/{rounds}: patron {got['patron']:10,.0f} {unit}  "
            f"twin {got['twin']:10,.0f} {unit}  ratio {ratios[-1]:.4f}"
        )
    return {
        **spread(ratios),
        "rounds": rounds,
        "ratios": [round(x, 4) for x in ratios],
        f"patron_{unit.replace('/', '_per_')}": round(statistics.median(ours), 1),
        f"twin_{unit.replace('/', '_per_')}": round(statistics.median(theirs), 1),
    }


def quantile_ms(latencies: list[float], q: int) -> float:
    if len(latencies) < 2:
        return round(latencies[0] * 1000, 2) if latencies else 0.0
    return round(statistics.quantiles(latencies, n=100, method="inclusive")[q - 1] * 1000, 2)


def child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``args`` to completion: (seconds, its own peak RSS in MiB, output). Raises on failure."""
    out = TMP / f"child-{time.monotonic_ns()}.log"
    start = time.perf_counter()
    with out.open("wb") as handle:
        proc = subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    took = time.perf_counter() - start
    text = out.read_text(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args[:4])} exited {proc.returncode}:\n{text[-3000:]}")
    return took, usage.ru_maxrss // 1024, text


async def _drive(
    base: str, key: str, calls: list[tuple[str, str, Any]], clients: int
) -> tuple[float, list[float], Counter[int]]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    pending = iter(calls)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:

        async def loop() -> None:
            for method, path, body in pending:
                t0 = time.perf_counter()
                try:
                    r = await client.request(method, path, json=body)
                    statuses[r.status_code] += 1
                except httpx.HTTPError:
                    statuses[0] += 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        return time.perf_counter() - start, latencies, statuses


def drive(
    base: str, key: str, calls: list[tuple[str, str, Any]], clients: int
) -> tuple[float, list[float], Counter[int]]:
    """Send every (method, path, json) with ``clients`` requests in flight: (s, latencies, statuses)."""
    return asyncio.run(_drive(base, key, calls, clients))
