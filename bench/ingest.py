"""Ingestion throughput: events applied per second, directly and through a NATS JetStream stream,
against the database's own ceiling measured in the same run.

On PostgreSQL when PATRON_BENCH_POSTGRES_URL or PATRON_TEST_POSTGRES_URL is set, otherwise on SQLite
in a temporary file, with the NATS server at PATRON_NATS_URL (default nats://127.0.0.1:4222, with
JetStream). It measures:

* ceiling: one transaction per event that inserts a single row (as bench/earn.py does);
* direct: purchase events through ``services.events.record_event``, one transaction each (what
  ``POST /v1/events`` and ``patron consume`` both do for each event);
* stream: the same number of purchase events, each with its event id as ``Nats-Msg-Id``, published
  to a fresh stream (the publish rate is printed too), then applied by ``StreamConsumer``, the code
  behind ``patron consume``: durable pull consumer, explicit ack after each commit. The rate is
  from the consumer's start (connect, bind) to its last ack, so a backlog is drained at this rate.

It prints events per second and the ratios, checks that every event was applied once and that the
books balance, and deletes the stream (and its dead-letter stream) it created.

    python bench/ingest.py [--events 2000] [--members 200] [--batch 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
from earn import PROGRAM, ceiling, report, timed  # bench/earn.py, beside this script
from sqlalchemy import Engine

from patron.services import events, ledger, members, merchants, programs
from patron.services.members import MemberCreate
from patron.services.stream import MSG_ID, StreamConsumer, StreamSettings
from patron.storage.db import make_engine, migrate

ITEMS = [
    {"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 450},
    {"id": "l2", "sku": "CROISSANT", "category": "pastry", "quantity": 1, "unit_price": 350},
]


def seed(engine: Engine, member_count: int) -> tuple[str, list[str]]:
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Bench ingest")
        m = merchant["id"]
        program = programs.create_program(conn, merchant_id=m, body=PROGRAM)["id"]
        ids = [
            members.enrol(conn, merchant_id=m, data=MemberCreate(program_id=program, external_id=f"i{i}"))[
                "id"
            ]
            for i in range(member_count)
        ]
    return m, ids


def purchase(event_id: str, member_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "purchase",
        "member_id": member_id,
        "occurred_at": "2026-03-01T10:00:00Z",
        "items": ITEMS,
    }


def direct(engine: Engine, merchant_id: str, ids: list[str], n: int) -> tuple[float, list[float]]:
    def step(i: int) -> None:
        with engine.begin() as conn:
            events.record_event(
                conn, merchant_id=merchant_id, body=purchase(f"direct-{i}", ids[i % len(ids)])
            )

    return timed(n, step)


async def publish(settings: StreamSettings, bodies: list[dict[str, Any]]) -> tuple[float, int]:
    """Create the stream as ``patron consume`` would and publish every event; (seconds, dropped)."""
    nc = await nats.connect(settings.url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            name=settings.stream, subjects=[settings.subject], duplicate_window=settings.duplicate_window
        )
        subject = settings.subject.replace(">", "till-1")
        start = time.perf_counter()
        # publish in windows of acknowledged messages: a producer that waits for every ack in turn
        # would measure the round trip, not the stream
        dropped = 0
        for at in range(0, len(bodies), 500):
            acks = await asyncio.gather(
                *(
                    js.publish(subject, json.dumps(b).encode(), headers={MSG_ID: b["id"]})
                    for b in bodies[at : at + 500]
                )
            )
            dropped += sum(1 for a in acks if a.duplicate)
        return time.perf_counter() - start, dropped
    finally:
        await nc.close()


async def delete_streams(settings: StreamSettings) -> None:
    nc = await nats.connect(settings.url)
    try:
        js = nc.jetstream()
        for name in (settings.stream, settings.dead_letter_stream):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


def stream(
    engine: Engine, merchant_id: str, ids: list[str], n: int, settings: StreamSettings
) -> tuple[float, float, Any]:
    bodies = [purchase(f"stream-{i}", ids[i % len(ids)]) for i in range(n)]
    published, dropped = asyncio.run(publish(settings, bodies))
    if dropped:
        raise SystemExit(f"the stream dropped {dropped} of {n} distinct events as duplicates")
    consumer = StreamConsumer(engine, merchant_id=merchant_id, settings=settings)
    start = time.perf_counter()
    # max_messages ends the run at the last ack; idle_timeout only guards against a lost message
    stats = asyncio.run(consumer.run(idle_timeout=10.0, max_messages=n))
    return published, time.perf_counter() - start, stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50, help="messages the consumer fetches at a time")
    args = parser.parse_args()
    url = os.environ.get("PATRON_BENCH_POSTGRES_URL") or os.environ.get("PATRON_TEST_POSTGRES_URL")
    if url:
        name = "postgresql"
    else:
        name, url = "sqlite", f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
        print("(set PATRON_BENCH_POSTGRES_URL to measure PostgreSQL; this run is SQLite in a temp file)")
    nats_url = os.environ.get("PATRON_NATS_URL", "nats://127.0.0.1:4222")
    tag = uuid.uuid4().hex[:10]
    settings = StreamSettings(
        url=nats_url,
        stream=f"PBENCH_{tag}",
        subject=f"pbench.{tag}.events.>",
        durable="bench",
        batch=args.batch,
        poll=0.2,
    )
    engine = make_engine(url)
    migrate(engine)
    n = args.events
    print(f"{name}: {n} purchase events over {args.members} members, one transaction each; NATS {nats_url}")
    try:
        merchant_id, ids = seed(engine, args.members)
        top = report("ceiling", *ceiling(engine, n))
        got = report("direct", *direct(engine, merchant_id, ids, n))
        published, took, stats = stream(engine, merchant_id, ids, n, settings)
        rate = stats.handled / took
        print(f"  {'publish':<9} {n / published:9.0f} /s   (to JetStream, file storage, acked)")
        print(f"  {'stream':<9} {rate:9.0f} /s   ({stats.summary()}; batches of {args.batch})")
        print(f"  direct / ceiling = {got / top:.2f}")
        print(f"  stream / ceiling = {rate / top:.2f}")
        print(f"  stream / direct  = {rate / got:.2f}")
        with engine.begin() as conn:
            problems = ledger.verify(conn, merchant_id=merchant_id)
        if stats.applied != n or problems:
            raise SystemExit(f"wrong: {stats.summary()} of {n}; {len(problems)} ledger problem(s)")
        print(f"  checked: {n} + {n} events applied once each, the books balance")
    finally:
        asyncio.run(delete_streams(settings))
        engine.dispose()


if __name__ == "__main__":
    main()
