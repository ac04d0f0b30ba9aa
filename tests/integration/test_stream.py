"""Events from a NATS JetStream stream: each applied once, bad ones dead-lettered with a reason.

Runs against the NATS server at ``PATRON_TEST_NATS_URL`` (default nats://127.0.0.1:4222, with
JetStream), on SQLite and PostgreSQL. Every test has its own stream and subjects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import nats
import nats.js.errors
import pytest
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, StorageType
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from patron.services import events, ledger, members, merchants, programs
from patron.services import stream as stream_service
from patron.services.members import MemberCreate
from patron.services.stream import (
    Disposition,
    Stats,
    StreamConsumer,
    StreamSettings,
    apply_message,
    default_dead_letter,
    subject_matches,
)
from patron.storage.db import make_engine, migrate
from tests.conftest import bean_rewards, purchase

NATS_URL = os.environ.get("PATRON_TEST_NATS_URL", "nats://127.0.0.1:4222")
MUG = {"id": "l1", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 1000}  # 10 points


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def nats_url() -> str:
    if not _reachable(NATS_URL):
        pytest.skip(f"no NATS server at {NATS_URL} (set PATRON_TEST_NATS_URL to one with JetStream)")
    return NATS_URL


@pytest.fixture
def settings(nats_url: str) -> Iterator[StreamSettings]:
    """A stream, subject and dead-letter subject of this test's own; deleted afterwards."""
    tag = uuid.uuid4().hex[:12]
    s = StreamSettings(
        url=nats_url, stream=f"PTEST_{tag}", subject=f"ptest.{tag}.events.>", durable="patron", poll=0.2
    )
    yield s

    async def delete() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for name in (s.stream, s.dead_letter_stream):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
        await nc.close()

    asyncio.run(delete())


@dataclass
class Shop:
    merchant_id: str
    ann: str
    bob: str


@pytest.fixture
def shop(engine: Engine) -> Shop:
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Stream Co")
        program = programs.create_program(conn, merchant_id=merchant["id"], body=bean_rewards())
        ids = [
            members.enrol(
                conn,
                merchant_id=merchant["id"],
                data=MemberCreate(program_id=program["id"], email=f"{name}@example.com"),
            )["id"]
            for name in ("ann", "bob")
        ]
    return Shop(merchant["id"], *ids)


# helpers


def buy(member_id: str, event_id: str, minute: int) -> dict[str, Any]:
    """A mug bought (10 points), ``minute`` minutes into the day: the ledger lists by time."""
    return purchase(member_id, event_id, [MUG], occurred_at=f"2026-03-01T10:{minute:02d}:00Z")


def message(body: Any, *, msg_id: bool = True) -> tuple[bytes, dict[str, str] | None]:
    """An event as a producer publishes it: JSON, with the event id as ``Nats-Msg-Id``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Nats-Msg-Id": body["id"]} if msg_id and isinstance(body, dict) else None
    return data, headers


def publish(settings: StreamSettings, messages: list[tuple[bytes, dict[str, str] | None]]) -> list[bool]:
    """Publish in order (creating the stream as a producer would); whether each was a duplicate."""

    async def go() -> list[bool]:
        nc = await nats.connect(settings.url)
        js = nc.jetstream()
        try:
            await js.stream_info(settings.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=settings.stream, subjects=[settings.subject], duplicate_window=120)
        subject = settings.subject.replace(">", "till-1")
        acks = [await js.publish(subject, data, headers=headers) for data, headers in messages]
        await nc.close()
        return [bool(ack.duplicate) for ack in acks]

    return asyncio.run(go())


def consume(
    engine: Engine, merchant_id: str, settings: StreamSettings, cls: type[StreamConsumer] = StreamConsumer
) -> Stats:
    """Run a consumer until the stream is drained."""
    consumer = cls(engine, merchant_id=merchant_id, settings=settings)
    return asyncio.run(consumer.run(idle_timeout=0.1))


def dead_letters(settings: StreamSettings) -> list[tuple[dict[str, str], bytes]]:
    async def go() -> list[tuple[dict[str, str], bytes]]:
        nc = await nats.connect(settings.url)
        js = nc.jetstream()
        try:
            state = (await js.stream_info(settings.dead_letter_stream)).state
            msgs = [
                await js.get_msg(settings.dead_letter_stream, seq) for seq in range(1, state.last_seq + 1)
            ]
        finally:
            await nc.close()
        return [(dict(m.headers or {}), m.data or b"") for m in msgs]

    return asyncio.run(go())


def available(engine: Engine, shop: Shop, member_id: str) -> int:
    with engine.begin() as conn:
        return ledger.balances(conn, merchant_id=shop.merchant_id, member_id=member_id, as_of=None).available


def ledger_events(engine: Engine, shop: Shop, member_id: str) -> list[str]:
    """The event ids on the member's ledger, one per posting, oldest first."""
    with engine.begin() as conn:
        page = ledger.ledger_page(conn, merchant_id=shop.merchant_id, member_id=member_id, limit=500)
    return [row["event_id"] for row in reversed(page["data"])]


def books_balance(engine: Engine, shop: Shop) -> None:
    with engine.begin() as conn:
        assert ledger.verify(conn, merchant_id=shop.merchant_id) == []


# the pure part: one message in, one outcome out


def test_apply_message_says_what_became_of_each_message(engine: Engine, shop: Shop) -> None:
    def apply(data: bytes, headers: dict[str, str] | None = None) -> stream_service.Outcome:
        return apply_message(engine, merchant_id=shop.merchant_id, data=data, headers=headers)

    body = purchase(shop.ann, f"pure-{uuid.uuid4().hex[:6]}", [MUG])
    data = json.dumps(body).encode()
    first = apply(data, {"Nats-Msg-Id": body["id"]})
    assert (first.disposition, first.event_id, first.points) == (Disposition.APPLIED, body["id"], 10)
    assert apply(data).disposition is Disposition.REPLAYED
    assert available(engine, shop, shop.ann) == 10

    changed = apply(json.dumps({**body, "items": [{**MUG, "quantity": 2}]}).encode())
    assert (changed.disposition, changed.reason) == (Disposition.DEAD, "idempotency-conflict")
    assert [apply(b"{oops").reason, apply(b"\xff\xfe").reason, apply(b'"x"').reason] == [
        "malformed-json",
        "malformed-json",
        "not-an-object",
    ]
    other = purchase(shop.ann, "other-id", [MUG])
    assert apply(json.dumps(other).encode(), {"Nats-Msg-Id": "not-other-id"}).reason == "msg-id-mismatch"
    ghost = apply(json.dumps(purchase("mem_nobody", "ghost", [MUG])).encode())
    assert (ghost.reason, ghost.detail) == ("not-found", "member mem_nobody not found")
    invalid = apply(json.dumps({**purchase(shop.ann, "no-price", [MUG]), "items": [{"id": "l1"}]}).encode())
    assert invalid.reason == "invalid-input" and "unit_price" in (invalid.detail or "")
    assert available(engine, shop, shop.ann) == 10  # nothing bad wrote anything


def test_a_database_that_cannot_be_reached_is_a_retry_not_a_dead_letter(tmp_path: Path) -> None:
    broken = make_engine(f"sqlite:///{tmp_path / 'missing' / 'patron.db'}")
    data = json.dumps(purchase("mem_1", "e-1", [MUG])).encode()
    outcome = apply_message(broken, merchant_id="mer_1", data=data)
    assert outcome.disposition is Disposition.RETRY
    assert (outcome.reason, outcome.event_id) == ("database-error", "e-1")


def test_dead_letters_go_to_a_subject_the_consumer_does_not_read() -> None:
    assert default_dead_letter("patron.events.>") == "patron.dlq.events"
    assert default_dead_letter("shop.*.events") == "dlq.shop"
    assert default_dead_letter("orders.>") == "dlq.orders"
    assert subject_matches("patron.events.>", "patron.events.dead")
    assert not subject_matches("patron.events.>", "patron.dlq.events")
    overlapping = StreamSettings(subject="patron.events.>", dead_letter="patron.events.dead")
    with pytest.raises(stream_service.StreamError, match="choose another"):
        StreamConsumer(make_engine("sqlite://"), merchant_id="mer_1", settings=overlapping)


# the consumer against a real NATS server


def test_every_good_event_applies_once_and_bad_ones_are_dead_lettered(
    engine: Engine, shop: Shop, settings: StreamSettings
) -> None:
    buys = [buy(shop.ann if n % 2 == 0 else shop.bob, f"order-{n}", n) for n in range(6)]
    refund = {
        "id": "refund-0",
        "type": "refund",
        "member_id": shop.ann,
        "refers_to": "order-0",
        "occurred_at": "2026-03-02T10:00:00Z",
        "items": [{"id": "l1", "quantity": 1}],
    }
    conflict = purchase(shop.bob, "order-1", [{**MUG, "quantity": 5}])  # same id, other body
    ghost = purchase("mem_nobody", "order-ghost", [MUG])
    invalid = {**purchase(shop.ann, "order-bad", [MUG]), "items": []}
    mismatched = message(purchase(shop.bob, "order-99", [MUG]), msg_id=False)[0], {"Nats-Msg-Id": "order-98"}
    sent = [
        *[message(b) for b in buys],
        message(buys[0]),  # the same Nats-Msg-Id again: the stream drops it
        message(buys[2], msg_id=False),  # a duplicate the stream cannot spot: a replay
        message(refund),  # after its purchase, in the same batch: order is kept
        message(b"{not json"),
        message(b"[1, 2, 3]"),
        message(invalid),
        message(ghost),
        message(conflict, msg_id=False),  # with its id the stream would drop it as a duplicate
        mismatched,
    ]
    duplicates = publish(settings, sent)
    assert duplicates == [False] * 6 + [True] + [False] * 8

    stats = consume(engine, shop.merchant_id, settings)

    assert (stats.applied, stats.replayed, stats.dead_lettered, stats.retried) == (7, 1, 6, 0)
    assert available(engine, shop, shop.ann) == 30 - 10  # three mugs, one returned
    assert available(engine, shop, shop.bob) == 30
    assert ledger_events(engine, shop, shop.ann) == ["order-0", "order-2", "order-4", "refund-0"]
    assert ledger_events(engine, shop, shop.bob) == ["order-1", "order-3", "order-5"]
    with engine.begin() as conn:
        first = events.get_event(conn, merchant_id=shop.merchant_id, event_id="order-1")
        assert first["points"] == 10  # the conflicting body changed nothing
    books_balance(engine, shop)

    letters = dead_letters(settings)
    reasons = [h["Patron-Reason"] for h, _ in letters]
    assert reasons == [
        "malformed-json",
        "not-an-object",
        "invalid-input",
        "not-found",
        "idempotency-conflict",
        "msg-id-mismatch",
    ]
    assert [data for _, data in letters] == [data for data, _ in sent[-6:]]  # bodies kept as sent
    details = {h["Patron-Reason"]: h["Patron-Detail"] for h, _ in letters}
    assert details["not-found"] == "member mem_nobody not found"
    assert "a purchase needs at least one item" in details["invalid-input"]
    assert "order-1" in details["idempotency-conflict"]
    ghost_headers = letters[3][0]
    assert ghost_headers["Patron-Event-Id"] == "order-ghost"
    assert ghost_headers["Patron-Stream"] == settings.stream
    assert ghost_headers["Patron-Subject"].startswith(settings.subject[:-1])

    again = consume(engine, shop.merchant_id, settings)  # a restart finds nothing left to do
    assert again.handled == 0
    assert available(engine, shop, shop.bob) == 30


class CrashAfterCommit(Exception):
    pass


class CrashingConsumer(StreamConsumer):
    """Commits the first few events and dies before acknowledging any of them."""

    crash_after = 3

    async def _ack(self, msg: Msg) -> None:
        self.crash_after -= 1
        if self.crash_after == 0:
            raise CrashAfterCommit


def test_a_crash_between_commit_and_ack_loses_nothing_and_applies_nothing_twice(
    engine: Engine, shop: Shop, settings: StreamSettings
) -> None:
    settings = replace(settings, ack_wait=1.0)  # unacked messages come back after a second
    buys = [buy(shop.ann, f"crash-{n}", n) for n in range(8)]
    publish(settings, [message(b) for b in buys])

    with pytest.raises(CrashAfterCommit):
        consume(engine, shop.merchant_id, settings, CrashingConsumer)
    assert ledger_events(engine, shop, shop.ann) == ["crash-0", "crash-1", "crash-2"]  # committed

    stats = consume(engine, shop.merchant_id, settings)

    assert (stats.replayed, stats.applied) == (3, 5)  # the three redelivered are replays
    assert ledger_events(engine, shop, shop.ann) == [b["id"] for b in buys]
    assert available(engine, shop, shop.ann) == 80
    books_balance(engine, shop)


def test_two_consumers_sharing_the_durable_consumer_apply_each_event_once(
    engine: Engine, shop: Shop, settings: StreamSettings
) -> None:
    settings = replace(settings, batch=2)
    buys = [buy(shop.ann if n % 2 else shop.bob, f"both-{n}", n) for n in range(30)]
    publish(settings, [message(b) for b in buys] + [message(b, msg_id=False) for b in buys[:6]])

    async def both() -> list[Stats]:
        pair = [StreamConsumer(engine, merchant_id=shop.merchant_id, settings=settings) for _ in range(2)]
        return list(await asyncio.gather(*(c.run(idle_timeout=0.1) for c in pair)))

    first, second = asyncio.run(both())

    assert first.handled > 0 and second.handled > 0  # they did share the work
    assert first.applied + second.applied == 30
    assert first.replayed + second.replayed == 6
    assert sorted(ledger_events(engine, shop, shop.ann)) == sorted(b["id"] for b in buys[1::2])
    assert sorted(ledger_events(engine, shop, shop.bob)) == sorted(b["id"] for b in buys[0::2])
    assert available(engine, shop, shop.ann) == available(engine, shop, shop.bob) == 150
    books_balance(engine, shop)


def test_a_database_error_is_retried_and_the_event_still_applies_once(
    engine: Engine, shop: Shop, settings: StreamSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = replace(settings, retry_delay=0.1)
    real = events.record_event
    failures = iter([True, False, True])  # the 1st and 3rd attempts lose the connection

    def flaky(conn: Any, **kw: Any) -> Any:
        if next(failures, False):
            raise OperationalError("INSERT ...", {}, Exception("server closed the connection"))
        return real(conn, **kw)

    monkeypatch.setattr(stream_service, "record_event", flaky)
    buys = [buy(shop.ann, f"blip-{n}", n) for n in range(3)]
    publish(settings, [message(b) for b in buys])

    stats = consume(engine, shop.merchant_id, settings)

    assert (stats.applied, stats.replayed, stats.dead_lettered, stats.retried) == (3, 0, 0, 2)
    assert ledger_events(engine, shop, shop.ann) == ["blip-0", "blip-1", "blip-2"]
    books_balance(engine, shop)


def test_an_event_that_keeps_failing_is_dead_lettered_when_its_deliveries_run_out(
    settings: StreamSettings, tmp_path: Path
) -> None:
    settings = replace(settings, retry_delay=0.05, max_deliver=3)
    broken = make_engine(f"sqlite:///{tmp_path / 'missing' / 'patron.db'}")  # a database that is down
    body = purchase("mem_1", "doomed", [MUG])
    publish(settings, [message(body)])

    stats = consume(broken, "mer_1", settings)

    assert (stats.retried, stats.dead_lettered) == (2, 1)
    [(headers, data)] = dead_letters(settings)
    assert headers["Patron-Reason"] == "retries-exhausted"
    assert "gave up after 3 deliveries: database-error" in headers["Patron-Detail"]
    assert json.loads(data) == body


# the command, as an operator runs it


def test_patron_consume_runs_until_interrupted_and_prints_a_summary(
    tmp_path: Path, settings: StreamSettings
) -> None:
    db = f"sqlite:///{tmp_path / 'patron.db'}"
    eng = make_engine(db)
    migrate(eng)
    with eng.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Till Co")
        program = programs.create_program(conn, merchant_id=merchant["id"], body=bean_rewards())
        member = members.enrol(
            conn,
            merchant_id=merchant["id"],
            data=MemberCreate(program_id=program["id"], email="c@example.com"),
        )
    shop = Shop(merchant["id"], member["id"], member["id"])
    code = "import typer; from patron.cli.consume import consume; typer.run(consume)"
    args = ["--merchant", shop.merchant_id, "--nats", settings.url, "--stream", settings.stream]
    args += ["--subject", settings.subject, "--progress-every", "1"]
    env = {**os.environ, "PATRON_DATABASE_URL": db, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stdout or []:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        _wait_for_line(lines, "Consuming", proc)
        _wait_for_stream(settings)  # the command created it
        buys = [buy(shop.ann, f"cli-{n}", n) for n in range(3)]
        publish(settings, [message(b) for b in buys] + [message(buys[0], msg_id=False), message(b"nope")])
        _wait_for_line(lines, "5 events:", proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    stderr = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, stderr
    assert "Stopped after 5 events: 3 applied, 1 replayed, 1 dead-lettered" in "".join(rest), rest
    assert "malformed-json" in stderr and "SIGINT" in stderr
    assert available(eng, shop, shop.ann) == 30

    async def config() -> tuple[Any, Any]:
        nc = await nats.connect(settings.url)
        js = nc.jetstream()
        info = await js.stream_info(settings.stream), await js.consumer_info(settings.stream, "patron")
        await nc.close()
        return info

    stream_info, consumer_info = asyncio.run(config())
    assert stream_info.config.storage == StorageType.FILE and stream_info.config.duplicate_window
    assert stream_info.config.subjects == [settings.subject]
    assert consumer_info.config.ack_policy == AckPolicy.EXPLICIT and consumer_info.config.max_deliver > 1
    eng.dispose()


def _wait_for_line(lines: queue.Queue[str], text: str, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                pytest.fail(f"patron consume exited early: {proc.stderr.read() if proc.stderr else ''}")
            continue
        if text in line:
            return line
    pytest.fail(f"patron consume never printed {text!r}")


def _wait_for_stream(settings: StreamSettings) -> None:
    async def go() -> bool:
        nc = await nats.connect(settings.url)
        try:
            await nc.jetstream().consumer_info(settings.stream, settings.durable)
            return True
        except nats.js.errors.NotFoundError:
            return False
        finally:
            await nc.close()

    deadline = time.monotonic() + 20
    while not asyncio.run(go()):
        assert time.monotonic() < deadline, "patron consume did not create the stream and consumer"
        time.sleep(0.1)


def test_merchants_sharing_a_stream_each_keep_their_dead_letters(engine: Engine, nats_url: str) -> None:
    tag = uuid.uuid4().hex[:12]
    stream = f"PTEST_{tag}"
    shops = []
    for name in ("a", "b"):
        with engine.begin() as conn:
            merchant, _ = merchants.create_merchant(conn, name=f"Shared {name}")
        s = StreamSettings(
            url=nats_url, stream=stream, subject=f"ptest.{tag}.{name}.>", durable=name, poll=0.2
        )
        shops.append((merchant["id"], s))

    async def setup() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"ptest.{tag}.>"], duplicate_window=120)
        for _, s in shops:
            await js.publish(s.subject.replace(">", "till"), b"{broken")
        await nc.close()

    async def teardown() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for name in (stream, f"{stream}_DLQ"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
        await nc.close()

    asyncio.run(setup())
    try:
        for merchant_id, s in shops:
            assert consume(engine, merchant_id, s).dead_lettered == 1
        letters = dead_letters(shops[0][1])
        assert sorted(h["Patron-Reason"] for h, _ in letters) == ["malformed-json", "malformed-json"]
        assert {h["Patron-Subject"] for h, _ in letters} == {s.subject.replace(">", "till") for _, s in shops}
    finally:
        asyncio.run(teardown())
