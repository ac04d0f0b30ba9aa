"""Shared CLI plumbing: the database, the merchant, errors and output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from sqlalchemy import Connection, Engine

from patron.config import get_settings
from patron.domain.errors import PatronError
from patron.services.instant import RANGE, in_range
from patron.storage import merchants as merchants_repo
from patron.storage.db import make_engine, migrate

console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

_engines: dict[str, Engine] = {}


def engine() -> Engine:
    """The engine for ``PATRON_DATABASE_URL``, with the schema created or migrated."""
    url = os.environ.get("PATRON_DATABASE_URL") or get_settings().database_url
    if url not in _engines:
        eng = make_engine(url)
        migrate(eng)
        _engines[url] = eng
    return _engines[url]


@contextmanager
def unit() -> Iterator[Connection]:
    with engine().begin() as conn:
        yield conn


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def handles_errors(fn: F) -> F:
    """Turn engine errors into a message on stderr and exit status 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PatronError as exc:
            details = exc.extra.get("errors")
            fail(exc.detail + ("".join(f"\n  {e['loc']}: {e['msg']}" for e in details) if details else ""))
        return None

    return wrapper  # type: ignore[return-value]


def resolve_merchant(conn: Connection, merchant: str | None) -> str:
    """The given merchant id, or the only merchant when there is exactly one."""
    if merchant:
        if merchants_repo.get_merchant(conn, merchant) is None:
            fail(f"merchant {merchant} not found")
        return merchant
    rows = merchants_repo.list_merchants(conn)
    if len(rows) == 1:
        return str(rows[0]["id"])
    fail(
        "give --merchant ID (or set PATRON_MERCHANT): "
        + ("no merchants yet" if not rows else f"{len(rows)} merchants exist")
    )
    return ""


MerchantOpt = typer.Option(
    None, "--merchant", "-m", envvar="PATRON_MERCHANT", help="Merchant id (default: the only one)."
)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=_plain) + "\n")


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time or a date (midnight UTC); naive times are refused."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"not an RFC 3339 time: {value!r}")
        raise
    if len(value) == 10:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed.tzinfo is None:
        fail(f"time {value!r} needs an offset, e.g. {value}Z")
    if not in_range(parsed):
        fail(f"time {value!r} is out of range: {RANGE}")
    return parsed.astimezone(UTC)


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") if path != "-" else sys.stdin as f:
            return json.load(f)
    except FileNotFoundError:
        fail(f"no such file: {path}")
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON: {exc}")
