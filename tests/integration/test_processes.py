"""Two API processes on one database: every event is applied exactly once, whichever process takes it.

Two real ``patron serve`` processes (each with its own engine, connection pool and memory) share the
session's database: a temporary SQLite file, and PostgreSQL when PATRON_TEST_POSTGRES_URL is set.
Concurrent purchases for one member go to both, some with the same event id sent to both at the
same instant, half of those with the same ``Idempotency-Key`` as well. What one process knows, the
other must learn from the database, or the member is credited twice.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from patron.services import members, merchants, programs
from patron.services.members import MemberCreate
from tests.conftest import bean_rewards, purchase

PATRON = str(Path(sys.executable).parent / "patron")
SOLO, PAIRS = 40, 20  # events sent once; events sent to both processes at the same instant


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def servers(db_url: str, engine: Engine, tmp_path: Path) -> Iterator[list[str]]:
    """Two ``patron serve`` processes on the test database (already migrated by ``engine``)."""
    env = {**os.environ, "PATRON_DATABASE_URL": db_url}
    env.pop("PATRON_MERCHANT", None)
    procs, bases, logs = [], [], []
    try:
        for i in range(2):
            port = _free_port()
            log = tmp_path / f"serve-{i}.log"
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [PATRON, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
            bases.append(f"http://127.0.0.1:{port}")
            logs.append(log)
        for proc, base, log in zip(procs, bases, logs, strict=True):
            _wait_ready(proc, base, log)
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"patron serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"patron serve did not answer at {base}:\n{log.read_text()}")


def _shop(engine: Engine) -> tuple[str, str]:
    with engine.begin() as conn:
        merchant, key = merchants.create_merchant(conn, name="Two Tills Co")
        program = programs.create_program(conn, merchant_id=merchant["id"], body=bean_rewards(tiers=None))
        member = members.enrol(
            conn,
            merchant_id=merchant["id"],
            data=MemberCreate(program_id=program["id"], email="both@example.com"),
        )
    return key, member["id"]


def _points(n: int) -> int:
    """The points event ``n`` earns: k dollars of merchandise at 1 point per dollar."""
    return 1 + n % 9


def test_two_processes_apply_every_event_exactly_once(
    servers: list[str], engine: Engine, db_url: str
) -> None:
    key, member_id = _shop(engine)
    auth = {"Authorization": f"Bearer {key}"}

    def body(event_id: str, n: int) -> dict[str, Any]:
        item = {
            "id": "l1",
            "sku": f"SKU{n}",
            "category": "merch",
            "quantity": 1,
            "unit_price": 100 * _points(n),
        }
        return purchase(member_id, event_id, [item])

    # (event id, body, server, extra headers, barrier shared with its twin or None)
    sends: list[tuple[str, dict[str, Any], str, dict[str, str], threading.Barrier | None]] = []
    expected: dict[str, int] = {}
    keyed: set[str] = set()
    for n in range(SOLO):
        event_id = f"solo-{n}"
        expected[event_id] = _points(n)
        sends.append((event_id, body(event_id, n), servers[n % 2], {}, None))
    for n in range(SOLO, SOLO + PAIRS):
        event_id = f"twin-{n}"
        expected[event_id] = _points(n)
        extra = {"Idempotency-Key": f"key-{event_id}"} if n % 2 else {}
        if extra:
            keyed.add(event_id)
        barrier = threading.Barrier(2, timeout=20)
        for server in servers:  # adjacent, so that the pool always starts both twins
            sends.append((event_id, body(event_id, n), server, extra, barrier))

    answers: dict[str, list[httpx.Response]] = defaultdict(list)
    lock = threading.Lock()

    with httpx.Client(headers=auth, timeout=60) as client:

        def send(item: tuple[str, dict[str, Any], str, dict[str, str], threading.Barrier | None]) -> None:
            event_id, data, server, extra, barrier = item
            if barrier is not None:
                barrier.wait()  # both processes get the twin at the same instant
            r = client.post(server + "/v1/events", json=data, headers=extra)
            with lock:
                answers[event_id].append(r)

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(send, sends))

        # later deliveries of a few, each to the process that did not take it first
        for n in range(0, SOLO, 8):
            event_id = f"solo-{n}"
            answers[event_id].append(client.post(servers[(n + 1) % 2] + "/v1/events", json=body(event_id, n)))

        refused = {
            event_id: [(r.status_code, r.text[:200]) for r in rs]
            for event_id, rs in answers.items()
            if any(r.status_code not in (200, 201) for r in rs)
        }
        assert refused == {}  # no 5xx, no 409 from a race: a twin is answered as a replay
        for event_id, rs in answers.items():
            first = [r for r in rs if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
            assert len(first) == 1, (event_id, [(r.status_code, dict(r.headers)) for r in rs])
            assert first[0].json()["points"] == expected[event_id]
            for r in rs:
                # a replay is the first answer again: by event id 200, by Idempotency-Key 201 replayed
                assert r.json() == first[0].json(), event_id
                if r is not first[0]:
                    assert r.status_code == (201 if event_id in keyed else 200), event_id

        for i, event_id in enumerate(expected):
            r = client.get(f"{servers[i % 2]}/v1/events/{event_id}")
            assert r.status_code == 200, r.text
            assert r.json()["points"] == expected[event_id]

        member = client.get(f"{servers[0]}/v1/members/{member_id}")
        assert member.status_code == 200, member.text
        assert member.json()["points"]["available"] == sum(expected.values())
        assert member.json()["points"]["lifetime_earned"] == sum(expected.values())
        ledger = client.get(f"{servers[1]}/v1/members/{member_id}/ledger", params={"limit": 500})
        assert ledger.status_code == 200, ledger.text
        assert sorted(p["event_id"] for p in ledger.json()["data"]) == sorted(expected)

    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "COLUMNS": "200"}
    env.pop("PATRON_MERCHANT", None)
    verify = subprocess.run([PATRON, "verify"], capture_output=True, text=True, env=env, timeout=120)
    assert verify.returncode == 0, verify.stderr + verify.stdout
