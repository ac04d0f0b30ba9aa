"""``patron merchants`` and ``patron keys``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from patron.cli.common import (
    MerchantOpt,
    console,
    handles_errors,
    print_json,
    resolve_merchant,
    unit,
)
from patron.services import merchants as service
from patron.storage import merchants as repo

app = typer.Typer(help="Merchants (tenants).", no_args_is_help=True)
keys = typer.Typer(help="API keys.", no_args_is_help=True)


@app.command("create")
@handles_errors
def create(
    name: str,
    json_out: Annotated[bool, typer.Option("--json", help="Print one line of JSON.")] = False,
) -> None:
    """Create a merchant and its first API key (admin scope). The key is shown only once."""
    with unit() as conn:
        merchant, key = service.create_merchant(conn, name=name)
    if json_out:
        print_json({"merchant_id": merchant["id"], "api_key": key})
        return
    console.print(f"Merchant [bold]{merchant['name']}[/bold] created: {merchant['id']}")
    console.print(f"API key (shown once, keep it safe): [bold]{key}[/bold]")


@app.command("list")
@handles_errors
def list_() -> None:
    """List merchants."""
    with unit() as conn:
        rows = repo.list_merchants(conn)
    table = Table("id", "name", "created")
    for r in rows:
        table.add_row(r["id"], r["name"], r["created_at"].isoformat(timespec="seconds"))
    console.print(table)


@keys.command("create")
@handles_errors
def create_key(
    name: str,
    scopes: Annotated[
        list[str], typer.Option("--scope", "-s", help="read, write, admin or pos; repeat for more.")
    ],
    merchant: str | None = MerchantOpt,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create an API key with the given scopes."""
    with unit() as conn:
        view, key = service.create_api_key(
            conn, merchant_id=resolve_merchant(conn, merchant), name=name, scopes=scopes
        )
    if json_out:
        print_json({**view, "api_key": key})
    else:
        console.print(f"API key {view['id']} ({' '.join(view['scopes'])}): [bold]{key}[/bold] (shown once)")


@keys.command("list")
@handles_errors
def list_keys(merchant: str | None = MerchantOpt) -> None:
    """List API keys (prefix only)."""
    with unit() as conn:
        rows = service.list_api_keys(conn, merchant_id=resolve_merchant(conn, merchant))
    table = Table("id", "name", "prefix", "scopes", "revoked")
    for r in rows:
        table.add_row(r["id"], r["name"], r["prefix"], " ".join(r["scopes"]), str(r["revoked_at"] or ""))
    console.print(table)


@keys.command("revoke")
@handles_errors
def revoke(key_id: str, merchant: str | None = MerchantOpt) -> None:
    """Revoke an API key."""
    with unit() as conn:
        service.revoke_api_key(conn, merchant_id=resolve_merchant(conn, merchant), key_id=key_id)
    console.print(f"revoked {key_id}")
