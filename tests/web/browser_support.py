"""What the browser tests share: Patron's web app served by uvicorn in a subprocess on a free
port, and Debian's Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def web_server(url: str, *, drop_env: tuple[str, ...] = ()) -> Iterator[str]:
    """Serve the database at ``url`` until the block ends; yields the base URL. Environment
    variables starting with one of ``drop_env`` are not passed on."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PATRON_DATABASE_URL": url, "PATRON_PUBLIC_URL": base}
    for name in list(env):
        if drop_env and name.startswith(drop_env):
            del env[name]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "patron.web.app:create_web_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"the server did not start: {err[-2000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield b
        finally:
            b.close()
