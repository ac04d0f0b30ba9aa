"""``patron events``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from patron.cli.common import (
    MerchantOpt,
    console,
    handles_errors,
    print_json,
    read_json,
    resolve_merchant,
    unit,
)
from patron.services import events as service

app = typer.Typer(help="Send events and explain what they earned.", no_args_is_help=True)


@app.command("send")
@handles_errors
def send(
    file: Annotated[str, typer.Argument(help="JSON file with one event or a list ('-' for stdin).")],
    merchant: str | None = MerchantOpt,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Record events, each in its own transaction (a replay is a no-op)."""
    body = read_json(file)
    items: list[Any] = body if isinstance(body, list) else [body]
    for item in items:
        with unit() as conn:
            result, created = service.record_event(
                conn, merchant_id=resolve_merchant(conn, merchant), body=item
            )
        if json_out:
            print_json(result)
        else:
            state = "recorded" if created else "already recorded"
            console.print(f"{result['id']} ({result['type']}) {state}: {result['points']:+d} points")


@app.command("explain")
@handles_errors
def explain(event_id: str, merchant: str | None = MerchantOpt) -> None:
    """What an event earned, per line and per rule."""
    with unit() as conn:
        result = service.get_event(conn, merchant_id=resolve_merchant(conn, merchant), event_id=event_id)
    console.print(f"{result['id']} ({result['type']}): {result['points']:+d} points")
    lines = Table("line", "amount", "points")
    for ln in result["lines"]:
        lines.add_row(ln["id"], str(ln.get("amount", "")), f"{ln['points']:+d}")
    console.print(lines)
    if result["rules"]:
        rules = Table("rule", "points")
        for r in result["rules"]:
            rules.add_row(r["rule_id"], f"{r['points']:+d}")
        console.print(rules)


@app.command("calculate")
@handles_errors
def calculate(file: str, merchant: str | None = MerchantOpt) -> None:
    """Dry run: what an event would earn, and what the member is near to."""
    body = read_json(file)
    with unit() as conn:
        print_json(service.calculate(conn, merchant_id=resolve_merchant(conn, merchant), body=body))
