"""http_earn and balance_read: ``patron serve`` on PostgreSQL against plain SQL from as many
processes as the HTTP benchmark has requests in flight.

* http_earn: single purchase events (three lines) by ``POST /v1/events`` at concurrency 16,
  against 16 processes each committing one plain transaction per event that writes the minimal
  ledger rows (one event row, two postings). The requests are sent by :func:`drive_lean` (plain
  asyncio streams, HTTP/1.1 keep-alive) rather than httpx, whose own CPU (about 2 ms a request)
  came out of the two cores the server and PostgreSQL share.
* balance_read: ``GET /v1/members/{id}/balance`` (the member's cached balances) at concurrency 16 against
  16 processes reading the balance row by primary key; first with a small ledger, then after
  postings are added set-based (``INSERT ... SELECT generate_series``) up to the large size. The
  balances are materialised, so the large ledger's p99 should stay within 1.2x of the small one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import psycopg
from earn import PROGRAM  # bench/earn.py
from harness import POINTS, TMP, alternate, drive, fresh_statistics, libpq, log, purchase, quantile_ms
from serve import Server  # bench/serve.py
from sqlalchemy import Engine, text

from patron.services import ledger, members, merchants, programs
from patron.services.members import MemberCreate
from patron.storage.db import make_engine, migrate


def seed(engine: Engine, count: int, name: str) -> tuple[str, str, str, list[str]]:
    with engine.begin() as conn:
        merchant, key = merchants.create_merchant(conn, name=name)
        m = merchant["id"]
        program = programs.create_program(conn, merchant_id=m, body=PROGRAM)["id"]
        ids = [
            members.enrol(conn, merchant_id=m, data=MemberCreate(program_id=program, external_id=f"h{i}"))[
                "id"
            ]
            for i in range(count)
        ]
    return m, key, program, ids


# --- plain SQL from N processes --------------------------------------------------------------


def _worker(
    url: str, job: str, share: list[Any], merchant_id: str, start: Any, out: Any
) -> None:  # pragma: no cover - runs in a child
    latencies: list[float] = []
    try:
        conn = _connect(url)
    except psycopg.OperationalError as exc:  # the barrier would wait for us for ever
        start.abort()
        out.put(f"cannot connect: {exc}")
        return
    with conn:
        try:
            start.wait()
        except threading.BrokenBarrierError:
            out.put("another process could not connect")
            return
        for item in share:
            t0 = time.perf_counter()
            if job == "earn":
                e, member = item
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO bench_twin.events (id, member_id, occurred_at, amount, points)"
                        " VALUES (%s, %s, now(), 2549, %s)",
                        (e, member, POINTS),
                    )
                    conn.execute(
                        "INSERT INTO bench_twin.postings (id, event_id, member_id, account, amount)"
                        " VALUES (%s, %s, %s, 'available', %s), (%s, %s, %s, 'program:issued', %s)",
                        (e + "a", e, member, POINTS, e + "b", e, member, -POINTS),
                    )
            elif job == "read":
                with conn.transaction():
                    conn.execute(
                        "SELECT available, pending, reserved, debt, lifetime_earned, expired, redeemed"
                        " FROM member_balances WHERE merchant_id = %s AND member_id = %s",
                        (merchant_id, item),
                    ).fetchone()
            else:  # pgledger peer: the transfer function, one transaction per event
                src, dst = item
                with conn.transaction():
                    conn.execute(
                        "SELECT bench_pgledger.pgl_create_transfer(%s, %s, %s)", (src, dst, POINTS)
                    ).fetchone()
            latencies.append(time.perf_counter() - t0)
    out.put(latencies)


def _connect(url: str) -> psycopg.Connection[Any]:
    """A connection, retried for a while: the database is shared, and other work may hold most
    of ``max_connections`` for a moment."""
    for attempt in range(20):
        try:
            return psycopg.connect(libpq(url))
        except psycopg.OperationalError:
            if attempt == 19:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def processes(
    url: str, job: str, items: list[Any], clients: int, merchant_id: str = ""
) -> tuple[float, list[float]]:
    """Run ``items`` over ``clients`` processes (each with its own connection, all started before
    the clock): (seconds from the common start to the last one done, latencies)."""
    ctx = mp.get_context("fork")
    start = ctx.Barrier(clients + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, job, items[c::clients], merchant_id, start, out))
        for c in range(clients)
    ]
    for p in procs:
        p.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a worker could not connect
        start.wait()
    t0 = time.perf_counter()
    latencies: list[float] = []
    errors = []
    for _ in procs:
        got = out.get(timeout=600)
        if isinstance(got, str):
            errors.append(got)
        else:
            latencies.extend(got)
    took = time.perf_counter() - t0
    for p in procs:
        p.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {clients} processes failed: {errors[0]}")
    return took, latencies


def twin_schema(url: str) -> None:
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench_twin")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_twin.events (id VARCHAR(40) PRIMARY KEY, member_id VARCHAR(40)"
            " NOT NULL, occurred_at TIMESTAMPTZ NOT NULL, amount BIGINT NOT NULL, points BIGINT NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_twin.postings (id VARCHAR(44) PRIMARY KEY, event_id VARCHAR(40)"
            " NOT NULL, member_id VARCHAR(40) NOT NULL, account VARCHAR(30) NOT NULL, amount BIGINT NOT NULL)"
        )


# --- a lean HTTP/1.1 load generator ------------------------------------------------------------


async def _drive_lean(
    base: str, key: str, calls: list[tuple[str, str, Any]], clients: int
) -> tuple[float, list[float], Counter[int]]:
    """``harness.drive`` without httpx: ``clients`` keep-alive connections (asyncio streams),
    each sending its next request once the last answer has been read in full. The requests are
    the same bytes a client library sends; what is left out is the library's own CPU (about 2 ms
    a request with httpx, taken from the two cores the server and PostgreSQL share)."""
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    pending = iter(calls)

    def request(method: str, path: str, body: Any) -> bytes:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Accept: */*\r\nContent-Length: {len(payload)}\r\n"
        )
        if body is not None:
            head += "Content-Type: application/json\r\n"
        return (head + "\r\n").encode() + payload

    async def loop() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for method, path, body in pending:
                t0 = time.perf_counter()
                try:
                    writer.write(request(method, path, body))
                    status_line = await reader.readuntil(b"\r\n")
                    length = 0
                    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    await reader.readexactly(length)
                    statuses[int(status_line.split()[1])] += 1
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    statuses[0] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    return time.perf_counter() - start, latencies, statuses


def drive_lean(
    base: str, key: str, calls: list[tuple[str, str, Any]], clients: int
) -> tuple[float, list[float], Counter[int]]:
    return asyncio.run(_drive_lean(base, key, calls, clients))


# --- http_earn -------------------------------------------------------------------------------


def http_earn(
    url: str, *, events: int, rounds: int, clients: int, workers: int, peer: Callable[[int], float] | None
) -> dict[str, Any]:
    engine = make_engine(url)
    migrate(engine)
    twin_schema(url)
    merchant_id, key, _, ids = seed(engine, 500, "Bench HTTP")
    server = Server(url, workers, TMP / "serve-earn.log")
    lat_all: list[float] = []
    twin_lat: list[float] = []
    rates: list[float] = []
    bad: dict[int, int] = {}
    peers: list[float] = []
    try:
        server.wait_ready()
        warm = [("POST", "/v1/events", purchase(f"warm-{i}", ids[i % len(ids)])) for i in range(100)]
        drive_lean(server.base, key, warm, clients)

        def patron(r: int) -> float:
            fresh_statistics(url)  # untimed: autovacuum's part, where it is off
            calls = [
                ("POST", "/v1/events", purchase(f"h{r}-{i}", ids[(i * 7) % len(ids)])) for i in range(events)
            ]
            took, latencies, statuses = drive_lean(server.base, key, calls, clients)
            for s, c in statuses.items():
                if s != 201:
                    bad[s] = bad.get(s, 0) + c
            lat_all.extend(latencies)
            rates.append(events / took)
            return events / took

        def twin(r: int) -> float:
            items = [(f"t{r}-{i}-{time.time_ns()}", ids[(i * 7) % len(ids)]) for i in range(events)]
            took, latencies = processes(url, "earn", items, clients)
            twin_lat.extend(latencies)
            if peer is not None:  # the peer runs right after the twin, each round
                peers.append(peer(r) / (events / took))
            return events / took

        log(
            f"http_earn/postgres: {events} events per round, {clients} in flight, "
            f"patron serve --workers {workers}"
        )
        result = alternate("http_earn", rounds, patron, twin, "events/s")
    finally:
        server.stop()
    with engine.begin() as conn:
        problems = ledger.verify(conn, merchant_id=merchant_id)
    engine.dispose()
    p99 = quantile_ms(lat_all, 99)
    result.update(
        p50_ms=quantile_ms(lat_all, 50),
        p95_ms=quantile_ms(lat_all, 95),
        p99_ms=p99,
        requests_per_s=round(statistics.median(rates), 1),
        twin_p50_ms=quantile_ms(twin_lat, 50),
        twin_p99_ms=quantile_ms(twin_lat, 99),
        events_per_round=events,
        concurrency=clients,
        server_workers=workers,
        non_201=bad,
        books_balance=not problems,
        load_generator="suite_http.drive_lean: asyncio streams, HTTP/1.1 keep-alive",
        target=">= 0.25 and p99 < 50 ms",
    )
    if peers:
        result["peer_pgledger_ratio_to_twin"] = round(statistics.median(peers), 4)
    return result


# --- balance_read ----------------------------------------------------------------------------


def grow_ledger(engine: Engine, merchant_id: str, program_id: str, ids: list[str], postings: int) -> int:
    """Add journals and postings (two per journal) set-based, spread over the members; the total."""
    with engine.begin() as conn:
        have = int(conn.execute(text("SELECT count(*) FROM postings")).scalar() or 0)
        journals = max(0, (postings - have) // 2)
        if journals:
            conn.execute(text("CREATE TEMP TABLE bench_members (n INT PRIMARY KEY, id TEXT) ON COMMIT DROP"))
            conn.execute(
                text("INSERT INTO bench_members VALUES (:n, :id)"),
                [{"n": n, "id": i} for n, i in enumerate(ids)],
            )
            params = {"m": merchant_id, "p": program_id, "k": len(ids), "j": journals, "o": have}
            conn.execute(
                text(
                    """INSERT INTO journals (merchant_id, id, member_id, program_id, program_version, kind,
                           reason, occurred_at, created_at)
                       SELECT :m, 'jrn_bench_' || (:o + i), b.id, :p, 1, 'adjustment', 'bench',
                              timestamptz '2025-01-01' + (i % 400) * interval '1 day', now()
                       FROM generate_series(1, :j) AS i JOIN bench_members b ON b.n = i % :k"""
                ),
                params,
            )
            conn.execute(
                text(
                    """INSERT INTO postings (merchant_id, id, journal_id, member_id, account, amount,
                           occurred_at)
                       SELECT :m, 'pst_bench_' || (:o + i) || s.side, 'jrn_bench_' || (:o + i), b.id,
                              s.account, s.amount, timestamptz '2025-01-01' + (i % 400) * interval '1 day'
                       FROM generate_series(1, :j) AS i JOIN bench_members b ON b.n = i % :k,
                            (VALUES ('a', 'program:adjustments', 5), ('b', 'program:issued', -5))
                            AS s(side, account, amount)"""
                ),
                params,
            )
        total = int(conn.execute(text("SELECT count(*) FROM postings"), {}).scalar() or 0)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE journals, postings"))
    return total


def _read_phase(
    url: str,
    label: str,
    key: str,
    merchant_id: str,
    ids: list[str],
    reads: int,
    rounds: int,
    clients: int,
    workers: int,
) -> dict[str, Any]:
    server = Server(url, workers, TMP / f"serve-read-{label}.log")
    lat: list[float] = []
    twin_lat: list[float] = []
    try:
        server.wait_ready()
        drive(server.base, key, [("GET", f"/v1/members/{i}/balance", None) for i in ids[:100]], clients)

        def patron(r: int) -> float:
            calls = [
                ("GET", f"/v1/members/{ids[(i * 13 + r) % len(ids)]}/balance", None) for i in range(reads)
            ]
            took, latencies, statuses = drive(server.base, key, calls, clients)
            if set(statuses) != {200}:
                raise RuntimeError(f"balance reads answered {dict(statuses)}")
            lat.extend(latencies)
            return reads / took

        def twin(r: int) -> float:
            items = [ids[(i * 13 + r) % len(ids)] for i in range(reads)]
            took, latencies = processes(url, "read", items, clients, merchant_id)
            twin_lat.extend(latencies)
            return reads / took

        res = alternate(f"balance_read/{label}", rounds, patron, twin, "reads/s")
    finally:
        server.stop()
    res.update(
        p50_ms=quantile_ms(lat, 50), p99_ms=quantile_ms(lat, 99), twin_p99_ms=quantile_ms(twin_lat, 99)
    )
    return res


def balance_read(
    url: str, *, reads: int, rounds: int, clients: int, workers: int, small: int, large: int
) -> dict[str, Any]:
    engine = make_engine(url)
    migrate(engine)
    merchant_id, key, program_id, ids = seed(engine, 1000, "Bench balance")
    out: dict[str, Any] = {}
    for label, size in (("small", small), ("large", large)):
        t0 = time.perf_counter()
        total = grow_ledger(engine, merchant_id, program_id, ids, size)
        log(f"balance_read: {total:,} postings in the ledger ({time.perf_counter() - t0:.1f} s to add)")
        out[label] = _read_phase(url, label, key, merchant_id, ids, reads, rounds, clients, workers)
        out[label]["postings"] = total
    engine.dispose()
    growth = out["large"]["p99_ms"] / out["small"]["p99_ms"]
    return {
        "ratio": out["large"]["ratio"],
        "ratio_min": out["large"]["ratio_min"],
        "ratio_max": out["large"]["ratio_max"],
        "p99_ms_small_ledger": out["small"]["p99_ms"],
        "p99_ms_large_ledger": out["large"]["p99_ms"],
        "p99_growth": round(growth, 3),
        "postings_small": out["small"]["postings"],
        "postings_large": out["large"]["postings"],
        "small": out["small"],
        "large": out["large"],
        "reads_per_round": reads,
        "concurrency": clients,
        "target": "p99 with the large ledger <= 1.2x p99 with the small one",
        "note": "" if large >= 10_000_000 else f"quick size: the large ledger is {large:,} postings, not 10M",
    }
