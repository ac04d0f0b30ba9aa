"""Helpers shared by the reliability suite: a shop in one call, the books proven at the end of every
test (``services.ledger.verify`` for the merchant, then ``patron verify`` over the whole database)
and ``patron`` subprocesses with the test database (a real server among them)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine
from typer.testing import CliRunner

from patron.cli.main import app as cli
from patron.services import ledger, members, merchants, programs
from patron.services.members import MemberCreate
from tests.conftest import bean_rewards

PATRON = str(Path(sys.executable).parent / "patron")


@dataclass
class Shop:
    merchant_id: str
    key: str
    program_id: str
    member_ids: list[str]


def make_shop(engine: Engine, *, members_count: int = 1, name: str = "Reliable Co", **program: Any) -> Shop:
    """A merchant, a Bean Rewards program (changed by ``program``) and ``members_count`` members."""
    with engine.begin() as conn:
        merchant, key = merchants.create_merchant(conn, name=name)
        m = merchant["id"]
        prog = programs.create_program(conn, merchant_id=m, body=bean_rewards(**program))["id"]
        ids = [
            members.enrol(
                conn,
                merchant_id=m,
                data=MemberCreate(program_id=prog, email=f"m{n}@example.com", external_id=f"c{n}"),
            )["id"]
            for n in range(members_count)
        ]
    return Shop(m, key, prog, ids)


@contextmanager
def patron_serve(db_url: str, log: Path, *args: str) -> Iterator[str]:
    """A real ``patron serve`` (with ``args``) on a free port, its whole output in ``log``: its
    base URL once it answers ``/readyz``; stopped (SIGTERM, then SIGKILL) on the way out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PATRON, "serve", "--port", str(port), *args],
            env=cli_env(db_url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def cli_env(db_url: str) -> dict[str, str]:
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "COLUMNS": "200"}
    env.pop("PATRON_MERCHANT", None)
    return env


def assert_books_balance(engine: Engine, db_url: str, merchant_id: str | None = None) -> None:
    """Every journal sums to zero and every cached balance equals its postings: first for the
    merchant through the service, then ``patron verify`` over the whole database."""
    with engine.begin() as conn:
        assert ledger.verify(conn, merchant_id=merchant_id) == []
    result = CliRunner().invoke(cli, ["verify"], env={"PATRON_DATABASE_URL": db_url, "PATRON_MERCHANT": None})
    assert result.exit_code == 0, result.output
