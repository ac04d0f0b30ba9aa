"""Crashes: a process killed with SIGKILL in the middle of its work, then run again, and the
database stopped with an immediate shutdown under load (through the services, and over HTTP
against a real server): every acknowledged event is there exactly once, nothing is applied
twice, the books balance, and a request the database could not complete is answered 503.

To stop at a known point, the killed processes run the real ``patron`` CLI through a small
harness that makes every commit slow (and jobs work in batches of 2), so that the kill lands
between committed batches; the second run is the plain ``patron`` command.

The PostgreSQL shutdown test stops and restarts the server, so it runs only when
``PATRON_TEST_PG_CRASH=1`` (and PATRON_TEST_POSTGRES_URL names a server this machine controls;
``.ci/run`` sets it), in the run of tests that have the database to themselves;
``PATRON_TEST_PG_CTL`` is the command before ``stop``/``start`` (default
``pg_ctlcluster --skip-systemctl-redirect <the version in /etc/postgresql> main``).
"""

from __future__ import annotations

import csv
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from patron.services import events, ledger, members, redemptions
from patron.services.jobs import run_job
from patron.services.members import MemberCreate
from patron.storage import tables
from patron.storage.db import make_engine
from tests.conftest import purchase
from tests.reliability.conftest import PATRON, assert_books_balance, cli_env, make_shop, patron_serve

# The real CLI, with every commit slowed down and jobs in batches of 2.
HARNESS = """
import sys, time
from sqlalchemy import event
from sqlalchemy.engine import Engine
import patron.services.jobs as jobs
jobs.BATCH = 2
import patron.services.requalify as requalify
requalify.BATCH = 2
event.listen(Engine, "commit", lambda conn: time.sleep(0.05))
from patron.cli.main import app
sys.argv[0] = "patron"
app()
"""


_readers: dict[str, Engine] = {}


def _reader(engine: Engine) -> Engine:
    """A plain engine on the same database: on SQLite its reads do not queue for the write lock
    (Patron's engines begin every transaction with BEGIN IMMEDIATE), so polling never waits for
    the process it watches."""
    url = engine.url.render_as_string(hide_password=False)
    if url not in _readers:
        _readers[url] = create_engine(url, poolclass=NullPool)
    return _readers[url]


def _count(engine: Engine, table: Any, merchant_id: str, *where: Any) -> int:
    with _reader(engine).connect() as conn:
        stmt = select(func.count()).select_from(table).where(table.c.merchant_id == merchant_id, *where)
        return int(conn.execute(stmt).scalar_one())


def kill_when(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path, *, timeout: float = 90
) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ended on its own first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before the kill:\n{log.read_text()}")
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"nothing was committed within {timeout}s:\n{log.read_text()}")


def start_slow(db_url: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", HARNESS, *args], env=cli_env(db_url), stdout=out, stderr=subprocess.STDOUT
        )


def patron(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [PATRON, *args], env=cli_env(db_url), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


# ---------------------------------------------------------------- patron import


def test_kill_9_in_the_middle_of_an_import_then_again_imports_every_row_once(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    shop = make_shop(engine, members_count=0, name="Killed Import")
    m = shop.merchant_id
    rows, expected = 200, {}
    file = tmp_path / "orders.csv"
    with file.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["external_id", "occurred_at", "amount", "currency", "event_id"])
        for n in range(rows):
            customer, dollars = f"k{n % 30}", 1 + n % 50
            out.writerow([customer, f"2026-03-{1 + n % 28:02d}", f"{dollars}.00", "USD", f"row-{n}"])
            expected[customer] = expected.get(customer, 0) + dollars

    log = tmp_path / "import.log"
    proc = start_slow(
        db_url,
        [
            "import",
            "transactions",
            str(file),
            "--program",
            shop.program_id,
            "--merchant",
            m,
            "--batch-size",
            "10",
        ],
        log,
    )
    kill_when(proc, lambda: _count(engine, tables.events, m) >= 40, log)
    with _reader(engine).connect() as conn:
        acknowledged = set(
            conn.execute(
                select(tables.events.c.external_id).where(tables.events.c.merchant_id == m)
            ).scalars()
        )
    assert 40 <= len(acknowledged) < rows
    assert_books_balance(engine, db_url, m)  # a kill never leaves half a batch behind

    again = patron(db_url, "import", "transactions", str(file), "--program", shop.program_id, "--merchant", m)
    assert f"{rows - len(acknowledged)} imported, {len(acknowledged)} skipped as already imported" in (
        again.stdout
    ), again.stdout
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                select(tables.events.c.external_id).where(tables.events.c.merchant_id == m)
            ).scalars()
        )
        assert sorted(ids) == sorted(f"row-{n}" for n in range(rows))  # every row, once
        for customer, points in expected.items():
            [member] = members.find(conn, merchant_id=m, external_id=customer)
            b = ledger.balances(conn, merchant_id=m, member_id=member["id"], as_of=None)
            assert b.available == b.lifetime_earned == points, customer
    assert not (tmp_path / "orders.errors.csv").exists()
    patron(db_url, "verify")
    assert_books_balance(engine, db_url, m)


# ---------------------------------------------------------------- jobs

MEMBERS = 12


def _job_world(engine: Engine) -> tuple[str, list[str], datetime]:
    """Members with points pending, lots to expire, a reservation to lapse and a Silver year to
    lose, all due by the returned time (see ``test_races``)."""
    shop = make_shop(
        engine,
        members_count=0,
        name="Killed Jobs",
        pending_days=10,
        expiry={"months": 1},
        rewards=[{"id": "coffee", "name": "Coffee", "cost": 5}],
    )
    m = shop.merchant_id
    now = datetime.now(UTC).replace(microsecond=0)

    def line(dollars: int) -> list[dict[str, Any]]:
        return [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 100 * dollars}]

    ids = []
    with engine.begin() as conn:
        for n in range(MEMBERS):
            member = members.enrol(
                conn, merchant_id=m, data=MemberCreate(program_id=shop.program_id, external_id=f"j{n}")
            )["id"]
            ids.append(member)
            events.record_event(
                conn,
                merchant_id=m,
                body=purchase(member, f"old-{n}", line(250), occurred_at="2025-03-01T10:00:00Z"),
            )
            events.record_event(
                conn, merchant_id=m, body=purchase(member, f"new-{n}", line(20), occurred_at=now.isoformat())
            )
            ledger.adjust(conn, merchant_id=m, member_id=member, points=20, reason="float")
            redemptions.reserve(conn, merchant_id=m, member_id=member, reward_id="coffee")
    return m, ids, now + timedelta(days=3650)


def _journals(kind: str) -> Callable[[Engine, str], int]:
    return lambda engine, m: _count(engine, tables.journals, m, tables.journals.c.kind == kind)


EFFECTS: dict[str, tuple[Callable[[Engine, str], int], int]] = {
    # job -> (how many of its effects are committed, how many there must be in the end)
    "release-pending": (_journals("release"), MEMBERS),
    "expire-points": (_journals("expiry"), 3 * MEMBERS),
    "lapse-reservations": (_journals("lapse"), MEMBERS),
    "requalify-tiers": (lambda engine, m: _count(engine, tables.tier_changes, m), MEMBERS),
}


@pytest.mark.slow
@pytest.mark.parametrize("job", sorted(EFFECTS))
def test_kill_9_in_the_middle_of_a_job_then_again_does_everything_once(
    engine: Engine, db_url: str, tmp_path: Path, job: str
) -> None:
    m, member_ids, as_of = _job_world(engine)
    if job == "expire-points":  # pending points must be released before they can expire
        run_job(engine, "release-pending", as_of=as_of, merchant_id=m)
    effects, count = EFFECTS[job]
    base = effects(engine, m)  # the old purchases' own releases happened when they were recorded
    total = base + count
    args = ["jobs", "run", job, "--as-of", as_of.isoformat(), "--merchant", m]
    log = tmp_path / "job.log"
    kill_when(start_slow(db_url, args, log), lambda: effects(engine, m) >= base + 2, log)
    done = effects(engine, m)
    assert base + 2 <= done < total, (done, total)
    assert_books_balance(engine, db_url, m)

    patron(db_url, *args)  # not refused: the killed run holds no lock
    assert effects(engine, m) == total
    assert run_job(engine, job, as_of=as_of, merchant_id=m).lots == 0  # and once more changes nothing
    with engine.begin() as conn:
        for member in member_ids:
            b = ledger.balances(conn, merchant_id=m, member_id=member, as_of=None)
            if job == "release-pending":
                assert (b.pending, b.available, b.reserved) == (0, 250 + 20 + 15, 5), b
            elif job == "expire-points":
                assert (b.pending, b.available, b.expired) == (0, 0, 250 + 20 + 15), b
            elif job == "lapse-reservations":
                assert (b.pending, b.available, b.reserved) == (20, 250 + 20, 0), b
            else:
                assert (b.pending, b.available, b.reserved) == (20, 250 + 15, 5), b
    assert_books_balance(engine, db_url, m)


# ---------------------------------------------------------------- PostgreSQL stopped under load


def _pg_ctl() -> list[str]:
    given = os.environ.get("PATRON_TEST_PG_CTL")
    if given:
        return shlex.split(given)
    versions = (
        sorted(p.name for p in Path("/etc/postgresql").iterdir()) if Path("/etc/postgresql").is_dir() else []
    )
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1] if versions else "15", "main"]


@pytest.mark.slow
@pytest.mark.exclusive  # the server stops: nothing else may be using it
@pytest.mark.skipif(os.environ.get("PATRON_TEST_PG_CRASH") != "1", reason="set PATRON_TEST_PG_CRASH=1")
def test_postgresql_immediate_shutdown_under_load_loses_no_acknowledged_event(
    engine: Engine, db_url: str
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("stops the PostgreSQL server")
    ctl = _pg_ctl()
    shop = make_shop(engine, members_count=8, name="Power Cut")
    m = shop.merchant_id
    load = make_engine(db_url, pool_size=10, max_overflow=0)
    line = [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 300}]
    per_member, acknowledged, lock = 40, set[str](), threading.Lock()
    failures: list[str] = []

    def writer(i: int) -> None:
        member = shop.member_ids[i]
        for n in range(per_member):
            body = purchase(member, f"pc-{i}-{n}", line)
            deadline = time.monotonic() + 180
            while True:  # a client retries what was not acknowledged, with the same id
                try:
                    with load.begin() as conn:
                        events.record_event(conn, merchant_id=m, body=body)
                    break
                except DBAPIError as exc:
                    if time.monotonic() > deadline:
                        failures.append(f"{body['id']}: {exc}")
                        return
                    time.sleep(0.2)
            with lock:
                acknowledged.add(body["id"])

    with ThreadPoolExecutor(max_workers=len(shop.member_ids)) as pool:
        running = [pool.submit(writer, i) for i in range(len(shop.member_ids))]
        while len(acknowledged) < 60:
            time.sleep(0.01)
        subprocess.run([*ctl, "stop", "-m", "immediate"], check=True, timeout=60)
        seen_at_crash = set(acknowledged)
        time.sleep(1)
        subprocess.run([*ctl, "start"], check=True, timeout=120)
        for future in running:
            future.result(timeout=300)
    load.dispose()
    assert failures == []
    expected = {f"pc-{i}-{n}" for i in range(len(shop.member_ids)) for n in range(per_member)}
    assert seen_at_crash <= acknowledged == expected
    with make_engine(db_url).begin() as conn:
        ids = list(
            conn.execute(
                select(tables.events.c.external_id).where(tables.events.c.merchant_id == m)
            ).scalars()
        )
        assert sorted(ids) == sorted(expected)  # acknowledged before the crash survived; none twice
        for member in shop.member_ids:
            b = ledger.balances(conn, merchant_id=m, member_id=member, as_of=None)
            assert b.available == 3 * per_member
    assert_books_balance(make_engine(db_url), db_url, m)


@pytest.mark.slow
@pytest.mark.exclusive  # the server stops: nothing else may be using it
@pytest.mark.skipif(os.environ.get("PATRON_TEST_PG_CRASH") != "1", reason="set PATRON_TEST_PG_CRASH=1")
def test_postgresql_immediate_shutdown_under_http_load_answers_503_and_loses_nothing(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """The same over HTTP, against a real ``patron serve --workers 2`` whose processes apply
    concurrent purchases together: while the database is down a purchase is answered 503 (never
    500, never a success that did not commit), and a till that sends it again until it gets
    201 or 200 finds each purchase recorded once."""
    if engine.dialect.name != "postgresql":
        pytest.skip("stops the PostgreSQL server")
    import httpx

    shop = make_shop(engine, members_count=8, name="Power Cut HTTP")
    log = tmp_path / "serve.log"
    line = [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 300}]
    per_member, answered, lock = 30, dict[str, int](), threading.Lock()
    seen: list[int] = []
    with patron_serve(db_url, log, "--workers", "2") as base:

        def till(i: int) -> None:
            member = shop.member_ids[i]
            headers = {"Authorization": f"Bearer {shop.key}"}
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                for n in range(per_member):
                    body = purchase(member, f"hc-{i}-{n}", line)
                    give_up = time.monotonic() + 180
                    while True:  # the same purchase again until it is acknowledged
                        try:
                            status = client.post("/v1/events", json=body).status_code
                        except httpx.HTTPError:
                            status = 0
                        with lock:
                            seen.append(status)
                        if status in (200, 201):
                            with lock:
                                answered[body["id"]] = status
                            break
                        assert time.monotonic() < give_up, f"{body['id']} not acknowledged"
                        time.sleep(0.2)

        with ThreadPoolExecutor(max_workers=len(shop.member_ids)) as pool:
            running = [pool.submit(till, i) for i in range(len(shop.member_ids))]
            while len(answered) < 40:
                time.sleep(0.01)
            subprocess.run([*_pg_ctl(), "stop", "-m", "immediate"], check=True, timeout=60)
            time.sleep(1)
            subprocess.run([*_pg_ctl(), "start"], check=True, timeout=120)
            for future in running:
                future.result(timeout=300)
    assert 500 not in seen, log.read_text()[-3000:]
    assert set(seen) - {0, 200, 201, 503} == set()  # down: 503 (or no connection), never a 500
    assert 503 in seen or 0 in seen  # the outage was seen
    expected = {f"hc-{i}-{n}" for i in range(len(shop.member_ids)) for n in range(per_member)}
    assert set(answered) == expected
    with make_engine(db_url).begin() as conn:
        ids = list(
            conn.execute(
                select(tables.events.c.external_id).where(tables.events.c.merchant_id == shop.merchant_id)
            ).scalars()
        )
        assert sorted(ids) == sorted(expected)  # each acknowledged purchase once
        for member in shop.member_ids:
            b = ledger.balances(conn, merchant_id=shop.merchant_id, member_id=member, as_of=None)
            assert b.available == 3 * per_member
    assert_books_balance(make_engine(db_url), db_url, shop.merchant_id)
