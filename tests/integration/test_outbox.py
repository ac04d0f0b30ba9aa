"""The transactional outbox and the outbound webhook dispatcher, against a real HTTP server on
loopback: events exist only if their transaction committed; deliveries are signed per Standard
Webhooks (checked here with an independent HMAC); failures are retried on a fixed backoff
schedule driven by ``now``; 410 and a day of failures disable an endpoint; a member's events are
never delivered out of order, even by two dispatchers at once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from patron.services import outbox, webhooks_out
from patron.services.merchants import create_merchant
from patron.storage.outbox import outbound_attempts, outbox_events

# --- a webhook receiver -------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """An HTTP server that records every POST and answers from a per-path script of
    ``(status, seconds to wait)``, then 200."""

    port: int = 0
    prefix: str = field(default_factory=lambda: secrets.token_hex(4))  # a port may be reused later
    received: list[Received] = field(default_factory=list)
    script: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    always: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{self.prefix}/{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == f"/{self.prefix}/{path}"]

    def answer(self, path: str) -> tuple[int, float]:
        with self.lock:
            path = path.removeprefix(f"/{self.prefix}")
            queue = self.script.get(path)
            if queue:
                return queue.pop(0)
            return self.always.get(path, 200), 0.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            status, wait = rec.answer(self.path)
            if wait:
                time.sleep(wait)
            with rec.lock:
                rec.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
            answer = json.dumps({"got": True, "status": status}).encode()
            self.send_response(status)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


def verify(secret: str, r: Received) -> bool:
    """Standard Webhooks, written out: HMAC-SHA256 over ``id.timestamp.body`` with the base64
    key after ``whsec_``; the header holds space-separated ``v1,<base64>`` signatures."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{r.headers['webhook-id']}.{r.headers['webhook-timestamp']}.".encode() + r.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(sig, f"v1,{expected}") for sig in r.headers["webhook-signature"].split(" ")
    )


# --- helpers ------------------------------------------------------------------------------------

T0 = datetime.now(UTC).replace(microsecond=0)  # replays are queued at the real now


@pytest.fixture
def merchant(engine: Engine) -> str:
    with engine.begin() as conn:
        m, _ = create_merchant(conn, name="Outbox Merchant")
    return str(m["id"])


def endpoint(engine: Engine, merchant: str, url: str, types: list[str] | None = None) -> dict[str, Any]:
    with engine.begin() as conn:
        return webhooks_out.create_endpoint(conn, merchant_id=merchant, url=url, event_types=types)


def emit(
    engine: Engine, merchant: str, member: str | None, type: str = outbox.POINTS_EARNED, **data: Any
) -> str:
    with engine.begin() as conn:
        return outbox.emit(
            conn,
            merchant_id=merchant,
            type=type,
            member_id=member,
            occurred_at=T0,
            data=data or {"points": 1},
        )


def log(engine: Engine, merchant: str, endpoint_id: str) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        return list(
            webhooks_out.deliveries(conn, merchant_id=merchant, endpoint_id=endpoint_id, limit=200)["data"]
        )


def state(engine: Engine, merchant: str, endpoint_id: str) -> dict[str, Any]:
    with engine.begin() as conn:
        return webhooks_out.get_endpoint(conn, merchant_id=merchant, endpoint_id=endpoint_id)


def ids(received: list[Received]) -> list[str]:
    return [r.headers["webhook-id"] for r in received]


# --- the outbox ---------------------------------------------------------------------------------


def test_an_event_exists_only_if_its_transaction_commits(engine: Engine, merchant: str) -> None:
    def failing_change() -> None:
        with engine.begin() as conn:
            outbox.emit(
                conn,
                merchant_id=merchant,
                type=outbox.MEMBER_ENROLLED,
                member_id="mem_x",
                occurred_at=T0,
                data={},
            )
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    kept = emit(engine, merchant, "mem_x", outbox.MEMBER_ENROLLED)
    with engine.connect() as conn:
        rows = conn.execute(select(outbox_events).where(outbox_events.c.merchant_id == merchant)).all()
    assert [(r.id, r.seq) for r in rows] == [(kept, 1)]


def test_each_members_events_are_numbered_in_order(engine: Engine, merchant: str) -> None:
    a = [emit(engine, merchant, "mem_a", n=i) for i in range(3)]
    b = emit(engine, merchant, "mem_b")
    a.append(emit(engine, merchant, "mem_a", n=3))
    with engine.begin() as conn:
        page = outbox.list_events(conn, merchant_id=merchant, member_id="mem_a")
    assert [e["id"] for e in page["data"]] == a[::-1]  # newest first
    assert [e["sequence"] for e in page["data"]] == [4, 3, 2, 1]
    with engine.begin() as conn:
        assert outbox.list_events(conn, merchant_id=merchant, member_id="mem_b")["data"][0]["id"] == b


def test_concurrent_emits_for_one_member_are_numbered_in_commit_order(engine: Engine, merchant: str) -> None:
    """The second transaction waits for the first (on its unique key on PostgreSQL, at BEGIN
    IMMEDIATE on SQLite) and then takes the next number, without failing its caller."""
    first_emitted = threading.Event()

    def second() -> str:
        first_emitted.wait(5)
        with engine.begin() as conn:
            return outbox.emit(
                conn,
                merchant_id=merchant,
                type=outbox.POINTS_EARNED,
                member_id="mem_r",
                occurred_at=T0,
                data={},
            )

    with ThreadPoolExecutor(max_workers=1) as pool:
        with engine.begin() as conn:
            first = outbox.emit(
                conn,
                merchant_id=merchant,
                type=outbox.POINTS_EARNED,
                member_id="mem_r",
                occurred_at=T0,
                data={},
            )
            later = pool.submit(second)
            first_emitted.set()
            time.sleep(0.3)  # the second is now waiting for this transaction
            assert not later.done()
        second_id = later.result(timeout=10)
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox_events.c.id, outbox_events.c.seq).where(
                outbox_events.c.merchant_id == merchant, outbox_events.c.member_id == "mem_r"
            )
        ).all()
    assert sorted((seq, i) for i, seq in rows) == [(1, first), (2, second_id)]


def test_event_data_may_hold_times_dates_and_decimals(engine: Engine, merchant: str) -> None:
    paris = timezone(timedelta(hours=2))
    data = {
        "reached_at": datetime(2026, 5, 1, 14, 0, tzinfo=paris),
        "on": date(2026, 5, 1),
        "rate": Decimal("1.5"),
    }
    with engine.begin() as conn:
        outbox.emit(
            conn,
            merchant_id=merchant,
            type=outbox.MILESTONE_REACHED,
            member_id="mem_d",
            occurred_at=T0,
            data=data,
        )
        [event] = outbox.list_events(conn, merchant_id=merchant, member_id="mem_d")["data"]
    assert event["data"] == {"reached_at": "2026-05-01T12:00:00Z", "on": "2026-05-01", "rate": "1.5"}


def test_emit_refuses_unknown_types_and_naive_times(engine: Engine, merchant: str) -> None:
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="unknown business event type"):
            outbox.emit(
                conn, merchant_id=merchant, type="points.stolen", member_id=None, occurred_at=T0, data={}
            )
        with pytest.raises(ValueError, match="timezone"):
            outbox.emit(
                conn,
                merchant_id=merchant,
                type=outbox.POINTS_EARNED,
                member_id=None,
                occurred_at=datetime(2026, 1, 1),
                data={},
            )


# --- delivery -----------------------------------------------------------------------------------


def test_a_delivery_is_signed_and_carries_the_event(
    engine: Engine, merchant: str, receiver: Receiver
) -> None:
    ep = endpoint(engine, merchant, receiver.url("crm"))
    assert ep["secret"].startswith("whsec_")
    event = emit(engine, merchant, "mem_a", outbox.TIER_CHANGED, to="gold", **{"from": "silver"})
    result = webhooks_out.dispatch(engine, merchant_id=merchant, now=T0)
    assert result.fanned_out >= 1 and result.delivered >= 1
    [got] = receiver.at("crm")
    assert verify(ep["secret"], got)
    assert not verify(webhooks_out.new_secret(), got)  # the check can fail
    assert got.headers["webhook-id"] == event
    # signed when sent: the pass's time plus how long it has run (here well under a minute)
    assert 0 <= int(got.headers["webhook-timestamp"]) - int(T0.timestamp()) < 60
    assert got.headers["content-type"] == "application/json"
    assert got.json == {
        "id": event,
        "type": "tier.changed",
        "timestamp": T0.isoformat().replace("+00:00", "Z"),
        "member_id": "mem_a",
        "sequence": 1,
        "data": {"from": "silver", "to": "gold"},
    }
    [delivery] = log(engine, merchant, ep["id"])
    assert delivery["status"] == "delivered" and delivery["attempts"] == 1
    assert delivery["log"][0]["status_code"] == 200 and '"got": true' in delivery["log"][0]["response"]
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0 + timedelta(days=1))
    assert len(receiver.at("crm")) == 1  # delivered once


def test_a_failure_is_retried_after_the_backoff(engine: Engine, merchant: str, receiver: Receiver) -> None:
    ep = endpoint(engine, merchant, receiver.url("flaky"))
    receiver.script["/flaky"] = [(500, 0.0)]
    event = emit(engine, merchant, "mem_a")
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0)
    [delivery] = log(engine, merchant, ep["id"])
    assert delivery["status"] == "pending" and delivery["next_attempt_at"] == T0 + timedelta(seconds=30)
    assert delivery["log"][0]["status_code"] == 500 and delivery["log"][0]["error"] == "HTTP 500"

    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0 + timedelta(seconds=29))
    assert len(receiver.at("flaky")) == 1  # not due yet
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0 + timedelta(seconds=30))
    assert ids(receiver.at("flaky")) == [event, event]  # the same webhook-id on the retry
    [delivery] = log(engine, merchant, ep["id"])
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["log"]] == [500, 200]
    assert state(engine, merchant, ep["id"])["consecutive_failures"] == 0


def test_the_backoff_schedule() -> None:
    assert [webhooks_out.retry_delay(n).total_seconds() for n in range(1, 9)] == [
        30,
        120,
        480,
        1920,
        7680,
        30720,
        86400,
        86400,
    ]


def test_a_slow_endpoint_times_out_and_is_logged(engine: Engine, merchant: str, receiver: Receiver) -> None:
    ep = endpoint(engine, merchant, receiver.url("slow"))
    receiver.script["/slow"] = [(200, 1.5)]
    emit(engine, merchant, "mem_a")
    started = time.monotonic()
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0, timeout=0.3)
    assert time.monotonic() - started < 1.4
    [delivery] = log(engine, merchant, ep["id"])
    attempt = delivery["log"][0]
    assert delivery["status"] == "pending"
    assert attempt["status_code"] is None and attempt["error"] == "no answer within 0.3 s"
    assert attempt["duration_ms"] >= 250


def test_gone_disables_the_endpoint_until_enabled_again(
    engine: Engine, merchant: str, receiver: Receiver
) -> None:
    ep = endpoint(engine, merchant, receiver.url("gone"))
    receiver.script["/gone"] = [(410, 0.0)]
    first = emit(engine, merchant, "mem_a", n=1)
    result = webhooks_out.dispatch(engine, merchant_id=merchant, now=T0)
    assert ep["id"] in result.disabled
    seen = state(engine, merchant, ep["id"])
    assert seen["enabled"] is False and "410" in seen["disabled_reason"]
    second = emit(engine, merchant, "mem_a", n=2)  # emitted while disabled: queued, not sent
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0 + timedelta(days=3))
    assert ids(receiver.at("gone")) == [first]
    with engine.begin() as conn:
        webhooks_out.update_endpoint(
            conn, merchant_id=merchant, endpoint_id=ep["id"], changes={"enabled": True}
        )
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0 + timedelta(days=3))
    # enabled again, it gets what it missed, in the member's order: nothing to replay by hand
    assert ids(receiver.at("gone")) == [first, first, second]
    assert [r.json["sequence"] for r in receiver.at("gone")] == [1, 1, 2]
    # turned off by the merchant, it is sent nothing meanwhile, nor afterwards
    with engine.begin() as conn:
        webhooks_out.update_endpoint(
            conn, merchant_id=merchant, endpoint_id=ep["id"], changes={"enabled": False}
        )
    emit(engine, merchant, "mem_a", n=3)
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0 + timedelta(days=4))
    with engine.begin() as conn:
        webhooks_out.update_endpoint(
            conn, merchant_id=merchant, endpoint_id=ep["id"], changes={"enabled": True}
        )
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0 + timedelta(days=4))
    assert ids(receiver.at("gone")) == [first, first, second]


def test_a_day_of_failures_disables_but_a_burst_does_not(
    engine: Engine, merchant: str, receiver: Receiver
) -> None:
    ep = endpoint(engine, merchant, receiver.url("down"))
    receiver.always["/down"] = 503
    for i in range(webhooks_out.FAILURE_LIMIT + 2):  # many members' events fail at once
        emit(engine, merchant, f"mem_{i}")
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0)
    seen = state(engine, merchant, ep["id"])
    assert seen["consecutive_failures"] == webhooks_out.FAILURE_LIMIT + 2
    assert seen["enabled"] is True  # a burst is not a day

    now, attempts = T0, 1
    while state(engine, merchant, ep["id"])["enabled"]:
        now += webhooks_out.retry_delay(attempts)
        webhooks_out.dispatch(engine, merchant_id=merchant, now=now)
        attempts += 1
        assert attempts < 20
    seen = state(engine, merchant, ep["id"])
    assert now - T0 >= webhooks_out.FAILING_FOR
    assert "failed attempts in a row" in seen["disabled_reason"]
    calls = len(receiver.at("down"))
    webhooks_out.dispatch(engine, merchant_id=merchant, now=now + timedelta(days=5))
    assert len(receiver.at("down")) == calls  # nothing is sent to a disabled endpoint


def test_endpoints_get_only_the_event_types_they_listed(
    engine: Engine, merchant: str, receiver: Receiver
) -> None:
    endpoint(engine, merchant, receiver.url("all"))
    endpoint(engine, merchant, receiver.url("tiers"), [outbox.TIER_CHANGED, outbox.MEMBER_ENROLLED])
    enrolled = emit(engine, merchant, "mem_a", outbox.MEMBER_ENROLLED)
    earned = emit(engine, merchant, "mem_a", outbox.POINTS_EARNED)
    tier = emit(engine, merchant, "mem_a", outbox.TIER_CHANGED)
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0)
    assert ids(receiver.at("all")) == [enrolled, earned, tier]
    assert ids(receiver.at("tiers")) == [enrolled, tier]


def test_a_members_later_event_waits_for_the_earlier_one(
    engine: Engine, merchant: str, receiver: Receiver
) -> None:
    endpoint(engine, merchant, receiver.url("crm"))
    other = endpoint(engine, merchant, receiver.url("other"))
    receiver.script["/crm"] = [(500, 0.0)]
    a1 = emit(engine, merchant, "mem_a", n=1)
    a2 = emit(engine, merchant, "mem_a", n=2)
    a3 = emit(engine, merchant, "mem_a", n=3)
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0)
    # a1 failed at crm: a2 and a3 wait for it there; the other endpoint is not held up
    assert ids(receiver.at("crm")) == [a1]
    assert ids(receiver.at("other")) == [a1, a2, a3]
    assert [d["status"] for d in log(engine, merchant, other["id"])] == ["delivered"] * 3
    b1 = emit(engine, merchant, "mem_b", n=1)
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0 + timedelta(seconds=1))
    assert ids(receiver.at("crm")) == [a1, b1]  # nor is another member
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0 + timedelta(seconds=30))
    assert ids(receiver.at("crm")) == [a1, b1, a1, a2, a3]


def test_two_dispatchers_deliver_each_event_once_in_member_order(
    engine: Engine, merchant: str, receiver: Receiver
) -> None:
    endpoint(engine, merchant, receiver.url("busy"))
    receiver.script["/busy"] = [(200, 0.02)] * 40
    emitted: dict[str, list[str]] = {m: [] for m in ("mem_a", "mem_b", "mem_c")}
    for i in range(12):
        for m in emitted:
            emitted[m].append(emit(engine, merchant, m, n=i))
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(8):
            list(
                pool.map(
                    lambda _: webhooks_out.dispatch(engine, merchant_id=merchant, now=T0, limit=10), range(2)
                )
            )
    got = receiver.at("busy")
    assert sorted(ids(got)) == sorted(i for seq in emitted.values() for i in seq)  # each once
    for m, expected in emitted.items():
        assert [r.headers["webhook-id"] for r in got if r.json["member_id"] == m] == expected


def test_replay_sends_a_delivered_event_again(engine: Engine, merchant: str, receiver: Receiver) -> None:
    ep = endpoint(engine, merchant, receiver.url("crm"), [outbox.POINTS_EARNED])
    skipped = emit(engine, merchant, "mem_a", outbox.MEMBER_UPDATED)  # not in the filter
    sent = emit(engine, merchant, "mem_a", outbox.POINTS_EARNED)
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0)
    with engine.begin() as conn:
        webhooks_out.replay(conn, merchant_id=merchant, endpoint_id=ep["id"], event_id=sent)
        webhooks_out.replay(conn, merchant_id=merchant, endpoint_id=ep["id"], event_id=skipped)
    # replays are queued at the real now: send them a minute after it
    webhooks_out.dispatch(engine, merchant_id=merchant, now=datetime.now(UTC) + timedelta(minutes=1))
    assert ids(receiver.at("crm")) == [sent, skipped, sent]  # a replay keeps the member's order
    assert all(verify(ep["secret"], r) for r in receiver.at("crm"))
    deliveries = log(engine, merchant, ep["id"])
    assert sorted((d["event_id"], d["replay"]) for d in deliveries) == sorted(
        [(sent, False), (sent, True), (skipped, True)]
    )
    with engine.connect() as conn:
        count = conn.execute(
            select(outbound_attempts).where(outbound_attempts.c.merchant_id == merchant)
        ).all()
    assert len(count) == 3


# --- retention ----------------------------------------------------------------------------------


def _left(engine: Engine, merchant: str) -> tuple[list[tuple[str, int]], int, int]:
    from patron.storage.outbox import outbound_deliveries

    with engine.connect() as conn:
        events = conn.execute(
            select(outbox_events.c.stream, outbox_events.c.seq)
            .where(outbox_events.c.merchant_id == merchant)
            .order_by(outbox_events.c.stream, outbox_events.c.seq)
        ).all()
        deliveries = conn.execute(
            select(outbound_deliveries.c.id).where(outbound_deliveries.c.merchant_id == merchant)
        ).all()
        attempts = conn.execute(
            select(outbound_attempts.c.id).where(outbound_attempts.c.merchant_id == merchant)
        ).all()
    return [(str(s), int(q)) for s, q in events], len(deliveries), len(attempts)


def test_retention_prunes_old_delivered_history_but_keeps_what_is_pending_and_each_streams_last(
    engine: Engine, merchant: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from patron.services.jobs import run_job

    monkeypatch.setattr(outbox, "PRUNE_BATCH", 2)  # many chunks of the walk, each its own transaction
    other = "mer_00" + secrets.token_hex(12)  # another merchant's, before this one in key order
    for _ in range(2):
        emit(engine, other, "mem_z")  # prunable by its age, but another merchant's
    webhooks_out.dispatch(engine, merchant_id=other, now=T0)
    endpoint(engine, merchant, receiver.url("ok"), [outbox.POINTS_EARNED])
    down = endpoint(engine, merchant, receiver.url("down"), [outbox.MEMBER_UPDATED])
    receiver.script["/down"] = [(500, 0.0)] * 5
    for _ in range(3):
        emit(engine, merchant, "mem_a")  # delivered to "ok"
    stuck = emit(engine, merchant, "mem_b", outbox.MEMBER_UPDATED)  # "down" keeps failing: pending
    emit(engine, merchant, "mem_b", outbox.REWARD_ISSUED)  # no endpoint wants it
    emit(engine, merchant, None, outbox.MEMBER_ENROLLED)  # an event of no member
    webhooks_out.dispatch(engine, merchant_id=merchant, now=T0)
    assert _left(engine, merchant) == (
        [("", 1), ("mem_a", 1), ("mem_a", 2), ("mem_a", 3), ("mem_b", 1), ("mem_b", 2)],
        4,
        4,
    )
    soon = datetime.now(UTC) + timedelta(days=30)
    assert run_job(engine, "prune-outbox", as_of=soon, merchant_id=merchant).lots == 0  # within 90 days
    assert len(_left(engine, merchant)[0]) == 6

    later = datetime.now(UTC) + timedelta(days=91)
    done = run_job(engine, "prune-outbox", as_of=later, merchant_id=merchant)
    assert (done.lots, done.points, done.members) == (2, 3, 3)
    # mem_a keeps only its last; mem_b's first is still being delivered; the lone ones are last
    assert _left(engine, merchant) == ([("", 1), ("mem_a", 3), ("mem_b", 1), ("mem_b", 2)], 1, 1)
    with engine.begin() as conn:
        pending = webhooks_out.deliveries(conn, merchant_id=merchant, endpoint_id=down["id"], limit=10)
    assert [(d["event_id"], d["status"]) for d in pending["data"]] == [(stuck, "pending")]
    again = run_job(engine, "prune-outbox", as_of=later, merchant_id=merchant)
    assert (again.lots, again.points) == (0, 0)
    assert _left(engine, other)[0] == [("mem_z", 1), ("mem_z", 2)]  # a run for one merchant is for it only
    # numbering goes on after what was kept
    emit(engine, merchant, "mem_a")
    assert _left(engine, merchant)[0][2] == ("mem_a", 4)

    monkeypatch.setenv("PATRON_OUTBOX_RETENTION_DAYS", "0")  # keep for ever
    from patron.config import get_settings

    get_settings.cache_clear()
    try:
        far = datetime.now(UTC) + timedelta(days=3650)
        webhooks_out.dispatch(engine, merchant_id=merchant, now=far)  # mem_a's 4th delivered
        assert run_job(engine, "prune-outbox", as_of=far, merchant_id=merchant).lots == 0
    finally:
        monkeypatch.delenv("PATRON_OUTBOX_RETENTION_DAYS")
        get_settings.cache_clear()
    assert run_job(engine, "prune-outbox", as_of=far, merchant_id=merchant).lots == 1  # mem_a's 3rd


# --- the command line ---------------------------------------------------------------------------

PATRON = str(Path(sys.executable).parent / "patron")


def patron(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "COLUMNS": "200"}
    return subprocess.run([PATRON, "webhooks", *args], capture_output=True, text=True, env=env, timeout=120)


def wait_for(check: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_the_cli_delivers_and_replays(engine: Engine, db_url: str, merchant: str, receiver: Receiver) -> None:
    ep = endpoint(engine, merchant, receiver.url("cli"))
    event = emit(engine, merchant, "mem_a")
    done = patron(db_url, "deliver", "--once", "--merchant", merchant)
    assert done.returncode == 0, done.stderr
    assert "delivered" in done.stdout and ids(receiver.at("cli")) == [event]

    queued = patron(db_url, "replay", event, "--endpoint", ep["id"], "--merchant", merchant)
    assert queued.returncode == 0, queued.stderr
    assert f"queued points.earned {event}" in queued.stdout
    bad = patron(db_url, "replay", event, "--endpoint", "whe_nope", "--merchant", merchant)
    assert bad.returncode == 1 and "webhook endpoint whe_nope not found" in bad.stderr

    env = {**os.environ, "PATRON_DATABASE_URL": db_url}
    worker = subprocess.Popen(
        [PATRON, "webhooks", "deliver", "--interval", "0.1", "--merchant", merchant],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: len(receiver.at("cli")) == 2)  # the replay
        later = emit(engine, merchant, "mem_a")
        assert wait_for(lambda: len(receiver.at("cli")) == 3)  # runs until stopped
        assert ids(receiver.at("cli")) == [event, event, later]
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=20)
    assert worker.returncode == 0


def test_the_signature_does_not_depend_on_the_offset_of_now() -> None:
    secret = webhooks_out.new_secret()
    paris = T0.astimezone(timezone(timedelta(hours=2)))
    header = webhooks_out.sign(secret, msg_id="evt_1", timestamp=paris, body="{}")
    got = Received(
        "/",
        {"webhook-id": "evt_1", "webhook-timestamp": str(int(T0.timestamp())), "webhook-signature": header},
        b"{}",
    )
    assert verify(secret, got)


def test_a_batch_of_events_numbers_each_stream_on_even_when_its_numbers_were_taken_meanwhile(
    engine: Engine, merchant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's batch takes each stream's next numbers in one read and writes them in one bulk
    insert; when a concurrent writer took one of those numbers in between, the batch is written
    one event at a time instead, every event kept and each stream in order."""
    from patron.storage import outbox as repo

    emit(engine, merchant, "mem_a")  # mem_a's stream is at 1
    stale = repo.last_sequences
    monkeypatch.setattr(repo, "last_sequences", lambda conn, m, streams: {})  # read before that insert
    events = [
        (outbox.TIER_CHANGED, member, T0, {"to": f"t{i}"})
        for i, member in enumerate(["mem_a", "mem_b", "mem_a"])
    ]
    with engine.begin() as conn:
        outbox.emit_many(conn, merchant_id=merchant, events=events)
    monkeypatch.setattr(repo, "last_sequences", stale)
    with engine.begin() as conn:
        rows = conn.execute(
            select(outbox_events.c.stream, outbox_events.c.seq, outbox_events.c.data)
            .where(outbox_events.c.merchant_id == merchant)
            .order_by(outbox_events.c.stream, outbox_events.c.seq)
        ).all()
    assert [(s, q, d.get("to")) for s, q, d in rows] == [
        ("mem_a", 1, None),
        ("mem_a", 2, "t0"),
        ("mem_a", 3, "t2"),
        ("mem_b", 1, "t1"),
    ]
    with engine.begin() as conn:
        more = [
            (outbox.TIER_CHANGED, "mem_b", T0, {"to": "t3"}),
            (outbox.TIER_CHANGED, "mem_c", T0, {"to": "t4"}),
        ]
        outbox.emit_many(conn, merchant_id=merchant, events=more)
        assert repo.last_sequences(conn, merchant, ["mem_a", "mem_b", "mem_c", "mem_d"]) == {
            "mem_a": 3,
            "mem_b": 2,
            "mem_c": 1,
        }


def test_answers_kept_for_idempotency_key_replays_go_with_the_retention(
    engine: Engine, merchant: str
) -> None:
    from patron.services.jobs import run_job
    from patron.storage import idempotency

    def keep(key: str, m: str) -> None:
        with engine.begin() as conn:
            idempotency.put(
                conn,
                merchant_id=m,
                key=key,
                method="POST",
                path="/v1/members",
                body_hash="",
                status_code=201,
                response={"id": key},
                created_at=datetime.now(UTC),
            )

    other = "mer_00" + secrets.token_hex(12)
    for n in range(5):
        keep(f"k{n}", merchant)
    keep("theirs", other)
    run_job(engine, "prune-outbox", as_of=datetime.now(UTC) + timedelta(days=30), merchant_id=merchant)
    with engine.begin() as conn:
        assert idempotency.get(conn, merchant, "k0") is not None  # within 90 days: a retry still replays
    run_job(engine, "prune-outbox", as_of=datetime.now(UTC) + timedelta(days=91), merchant_id=merchant)
    with engine.begin() as conn:
        assert [idempotency.get(conn, merchant, f"k{n}") for n in range(5)] == [None] * 5
        assert idempotency.get(conn, other, "theirs") is not None  # another merchant's run
