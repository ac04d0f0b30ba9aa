"""The ``patron`` command as a merchant uses it: real processes on a real database file."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import bean_rewards

PATRON = str(Path(sys.executable).parent / "patron")


def run(db: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATRON_DATABASE_URL": f"sqlite:///{db}", "COLUMNS": "200"}
    env.pop("PATRON_MERCHANT", None)
    proc = subprocess.run([PATRON, *args], capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


@pytest.fixture
def shop(tmp_path: Path) -> dict[str, Any]:
    db = tmp_path / "patron.db"
    created = json.loads(run(db, "merchants", "create", "Corner Café", "--json").stdout)
    program_file = tmp_path / "program.json"
    program_file.write_text(json.dumps(bean_rewards()))
    program = json.loads(run(db, "programs", "create", str(program_file), "--json").stdout)
    return {"db": db, "tmp": tmp_path, "program": program["id"], **created}


def test_merchants_create_prints_one_json_line(tmp_path: Path) -> None:
    out = run(tmp_path / "p.db", "merchants", "create", "Bean Co", "--json").stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert set(data) == {"merchant_id", "api_key"} and data["api_key"].startswith("ptr_")


def test_a_day_at_the_till_from_the_cli(shop: dict[str, Any]) -> None:
    db, tmp = shop["db"], shop["tmp"]
    member = json.loads(
        run(
            db, "members", "create", "--program", shop["program"], "--email", "ann@example.com", "--json"
        ).stdout
    )
    event = {
        "id": "order-1",
        "type": "purchase",
        "member_id": member["id"],
        "occurred_at": "2026-03-01T10:00:00Z",
        "items": [{"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 450}],
    }
    (tmp / "event.json").write_text(json.dumps(event))
    assert "+18 points" in run(db, "events", "send", str(tmp / "event.json")).stdout
    assert "already recorded" in run(db, "events", "send", str(tmp / "event.json")).stdout
    shown = json.loads(run(db, "members", "show", member["id"], "--json").stdout)
    assert shown["points"]["available"] == 18
    found = run(db, "members", "find", "--email", "ANN@example.com").stdout
    assert member["id"] in found and "available 18" in found
    ledger = run(db, "members", "ledger", member["id"]).stdout
    assert "order-1" in ledger and "+18" in ledger
    explained = run(db, "events", "explain", "order-1").stdout
    assert "coffee-2x" in explained and "base" in explained
    assert run(db, "verify").returncode == 0


def test_errors_are_a_message_and_a_non_zero_exit(shop: dict[str, Any]) -> None:
    db, tmp = shop["db"], shop["tmp"]
    (tmp / "bad.json").write_text(json.dumps({"name": "No currency"}))
    proc = run(db, "programs", "create", str(tmp / "bad.json"), check=False)
    assert proc.returncode == 1 and "currency" in proc.stderr
    proc = run(db, "programs", "create", str(tmp / "missing.json"), check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = run(db, "members", "show", "mem_nope", check=False)
    assert proc.returncode == 1 and "not found" in proc.stderr
    proc = run(db, "members", "create", "--program", shop["program"], "--email", "nope", check=False)
    assert proc.returncode == 1 and "email" in proc.stderr
    made = json.loads(run(db, "members", "create", "--program", shop["program"], "--json").stdout)
    for points in ("99999999999999999999", "9223372036854775807"):
        proc = run(db, "members", "adjust", made["id"], points, "--reason", "typo", check=False)
        assert proc.returncode == 1 and "at most 1,000,000,000" in proc.stderr, proc.stderr
    for at in ("0001-01-01T00:00:00+05:00", "9999-12-31"):  # no UTC for one, no room after the other
        proc = run(db, "members", "show", made["id"], "--as-of", at, check=False)
        assert proc.returncode == 1 and "out of range" in proc.stderr, proc.stderr


def test_verify_fails_loudly_when_a_balance_disagrees_with_its_postings(shop: dict[str, Any]) -> None:
    db = shop["db"]
    member = json.loads(
        run(
            db, "members", "create", "--program", shop["program"], "--email", "v@example.com", "--json"
        ).stdout
    )
    run(db, "members", "adjust", member["id"], "40", "--reason", "welcome gift")
    assert run(db, "verify").returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE member_balances SET available = available + 1")
    proc = run(db, "verify", check=False)
    assert proc.returncode == 1
    assert member["id"] in proc.stderr and "available cached 41 != postings 40" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_over_http(shop: dict[str, Any]) -> None:
    port = _free_port()
    env = {**os.environ, "PATRON_DATABASE_URL": f"sqlite:///{shop['db']}"}
    proc = subprocess.Popen(
        [PATRON, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {shop['api_key']}"}
        programs = httpx.get(base + "/v1/programs", headers=auth).json()["data"]
        assert [p["id"] for p in programs] == [shop["program"]]
        assert httpx.get(base + "/readyz").json() == {"status": "ok"}
        spec = httpx.get(base + "/openapi.json").json()
        assert spec["openapi"].startswith("3.1") and "/v1/events" in spec["paths"]
        assert "swagger" in httpx.get(base + "/docs").text.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_worker_runs_every_job_once_a_round(shop: dict[str, Any]) -> None:
    from patron.services.jobs import JOBS

    first = run(shop["db"], "worker", "--once")
    for name in JOBS:
        assert f" {name}: " in first.stdout, (name, first.stdout, first.stderr)
    assert "Traceback" not in first.stdout + first.stderr
