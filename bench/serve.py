"""HTTP throughput of the real server with 1, 2 and 4 worker processes, against the database's own
ceiling measured in the same run.

On PostgreSQL (PATRON_BENCH_POSTGRES_URL or PATRON_TEST_POSTGRES_URL; SQLite in a temporary file
otherwise, where one writer at a time is the ceiling whatever the number of workers), it creates a
merchant, a program and members through the services, then for each N in --workers:

* starts ``patron serve --workers N`` on a free port with PATRON_DATABASE_URL set to the database,
  and waits until every worker has started;
* warms it up (a few events, not counted), then drives ``POST /v1/events`` with --concurrency
  clients at once (asyncio, one HTTP/1.1 keep-alive connection each), --events purchase events
  spread over the members;
* stops the server (SIGTERM, then waits).

The ceilings are one transaction per event that inserts a single row: from one connection (as
bench/earn.py measures it) and from --concurrency connections at once (what the database can commit
when as many clients write at the same time). It prints events per second, p50 and p95 latency, the
ratio to N=1 and to both ceilings, and checks that every event was answered 201 and that the books
balance. The clients run on the same machine as the servers and the database, so they take CPU
from them: on a small machine the figures are a floor, not what the server can do on its own.

    python bench/serve.py [--events 3000] [--members 500] [--workers 1,2,4] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from earn import PROGRAM, ceiling  # bench/earn.py, beside this script
from sqlalchemy import Engine, text

from patron.services import ledger, members, merchants, programs
from patron.services.members import MemberCreate
from patron.storage.db import make_engine, migrate

PATRON = str(Path(sys.executable).parent / "patron")
ITEMS = [
    {"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 450},
    {"id": "l2", "sku": "CROISSANT", "category": "pastry", "quantity": 1, "unit_price": 350},
]


def seed(engine: Engine, member_count: int) -> tuple[str, str, list[str]]:
    with engine.begin() as conn:
        merchant, key = merchants.create_merchant(conn, name="Bench HTTP")
        m = merchant["id"]
        program = programs.create_program(conn, merchant_id=m, body=PROGRAM)["id"]
        ids = [
            members.enrol(conn, merchant_id=m, data=MemberCreate(program_id=program, external_id=f"h{i}"))[
                "id"
            ]
            for i in range(member_count)
        ]
    return m, key, ids


def concurrent_ceiling(engine: Engine, n: int, clients: int) -> float:
    """Rows per second when ``clients`` connections each commit one single-row insert at a time."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_ceiling_many"))
        conn.execute(
            text("CREATE TABLE bench_ceiling_many (id VARCHAR(40) PRIMARY KEY, points BIGINT NOT NULL)")
        )

    def one(i: int) -> None:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO bench_ceiling_many (id, points) VALUES (:id, :p)"), {"id": f"c{i}", "p": i}
            )

    try:
        with ThreadPoolExecutor(clients) as pool:
            start = time.perf_counter()
            list(pool.map(one, range(n)))
            return n / (time.perf_counter() - start)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE bench_ceiling_many"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``patron serve --workers N`` in a process group of its own, its output in a log file."""

    def __init__(self, url: str, workers: int, log: Path) -> None:
        self.workers, self.log, self.port = workers, log, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PATRON_DATABASE_URL": url}
        env.pop("PATRON_MERCHANT", None)
        args = [PATRON, "serve", "--port", str(self.port), "--workers", str(workers)]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"patron serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            started = self.log.read_text(errors="replace").count("Application startup complete")
            if started >= self.workers:
                try:
                    if httpx.get(self.base + "/readyz", timeout=5).status_code == 200:
                        return
                except httpx.HTTPError:  # not listening yet
                    pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"patron serve --workers {self.workers} did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # uvicorn stops its workers and exits
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def body(event_id: str, member_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "purchase",
        "member_id": member_id,
        "occurred_at": "2026-03-01T10:00:00Z",
        "items": ITEMS,
    }


async def drive(
    base: str, key: str, bodies: list[dict[str, Any]], clients: int
) -> tuple[float, list[float], Counter[int]]:
    """POST every body with ``clients`` requests in flight; (seconds, latencies, statuses)."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:

        async def client_loop() -> None:
            while not queue.empty():
                b = queue.get_nowait()
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/events", json=b)
                    statuses[r.status_code] += 1
                except httpx.HTTPError:
                    statuses[0] += 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(clients)))
        return time.perf_counter() - start, latencies, statuses


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3000, help="timed events per server")
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--warmup", type=int, default=100, help="untimed events per server first")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    url = os.environ.get("PATRON_BENCH_POSTGRES_URL") or os.environ.get("PATRON_TEST_POSTGRES_URL")
    tmp = Path(tempfile.mkdtemp())
    if url:
        name = "postgresql"
    else:
        name, url = "sqlite", f"sqlite:///{tmp / 'bench.db'}"
        print("(set PATRON_BENCH_POSTGRES_URL to measure PostgreSQL; this run is SQLite in a temp file)")
    engine = make_engine(url, pool_size=args.concurrency, max_overflow=0)
    migrate(engine)
    n, c = args.events, args.concurrency
    print(
        f"{name}: {n} purchase events per server over {args.members} members, {c} requests in flight, "
        f"{os.cpu_count()} CPUs shared by clients, servers and database"
    )
    merchant_id, key, ids = seed(engine, args.members)
    one_total, _ = ceiling(engine, n)
    one = n / one_total
    many = concurrent_ceiling(engine, n, c)
    print(f"  ceiling, 1 connection      {one:8.0f} /s")
    print(f"  ceiling, {c:>2} connections    {many:8.0f} /s")
    heads = ("workers", "events/s", "p50 ms", "p95 ms", "vs N=1", "/ceil 1", f"/ceil {c}")
    print("  " + " ".join(h.rjust(w) for h, w in zip(heads, (7, 9, 8, 8, 7, 8, 8), strict=True)))
    first: float | None = None
    answered: Counter[int] = Counter()
    for workers in counts:
        server = Server(url, workers, tmp / f"serve-{workers}.log")
        try:
            server.wait_ready()
            warm = [body(f"warm-{workers}-{i}", ids[i % len(ids)]) for i in range(args.warmup)]
            asyncio.run(drive(server.base, key, warm, c))
            timed = [body(f"http-{workers}-{i}", ids[(i * 7) % len(ids)]) for i in range(n)]
            took, latencies, statuses = asyncio.run(drive(server.base, key, timed, c))
        finally:
            server.stop()
        answered.update(statuses)
        rate = n / took
        first = first or rate
        q = statistics.quantiles(latencies, n=100)
        print(
            f"  {workers:>7} {rate:9.0f} {q[49] * 1000:8.1f} {q[94] * 1000:8.1f} {rate / first:7.2f} "
            f"{rate / one:8.2f} {rate / many:8.2f}"
            + ("" if set(statuses) == {201} else f"   statuses {dict(statuses)}")
        )
    with engine.begin() as conn:
        problems = ledger.verify(conn, merchant_id=merchant_id)
    expected = len(counts) * n
    if answered[201] != expected or problems:
        raise SystemExit(f"wrong: {dict(answered)} for {expected} events; {len(problems)} ledger problem(s)")
    print(f"  checked: all {expected} timed events answered 201, the books balance")
    engine.dispose()


if __name__ == "__main__":
    main()
