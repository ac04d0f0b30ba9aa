"""``patron programs``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from patron.cli.common import (
    MerchantOpt,
    console,
    handles_errors,
    parse_time,
    print_json,
    read_json,
    resolve_merchant,
    unit,
)
from patron.services import programs as service
from patron.services.program_schema import program_json_schema

app = typer.Typer(help="Loyalty programs.", no_args_is_help=True)


@app.command("create")
@handles_errors
def create(
    file: Annotated[str, typer.Argument(help="Program JSON file ('-' for stdin).")],
    merchant: str | None = MerchantOpt,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a program from a JSON file."""
    body = read_json(file)
    with unit() as conn:
        program = service.create_program(conn, merchant_id=resolve_merchant(conn, merchant), body=body)
    if json_out:
        print_json(program)
    else:
        console.print(f"Program [bold]{program['name']}[/bold] created: {program['id']}")


@app.command("update")
@handles_errors
def update(
    program_id: str,
    file: str,
    effective_from: Annotated[str | None, typer.Option(help="RFC 3339; default now.")] = None,
    merchant: str | None = MerchantOpt,
) -> None:
    """Publish a new version of a program."""
    body = read_json(file)
    with unit() as conn:
        program = service.update_program(
            conn,
            merchant_id=resolve_merchant(conn, merchant),
            program_id=program_id,
            body=body,
            effective_from=parse_time(effective_from),
        )
    console.print(f"Program {program_id} is now at version {program['version']}")


@app.command("list")
@handles_errors
def list_(merchant: str | None = MerchantOpt) -> None:
    """List programs."""
    with unit() as conn:
        rows = service.list_programs(conn, merchant_id=resolve_merchant(conn, merchant))
    table = Table("id", "name", "currency", "version")
    for r in rows:
        table.add_row(r["id"], r["name"], r["currency"], str(r["version"]))
    console.print(table)


@app.command("show")
@handles_errors
def show(program_id: str, merchant: str | None = MerchantOpt) -> None:
    """Print a program's current version as JSON."""
    with unit() as conn:
        print_json(
            service.get_program(conn, merchant_id=resolve_merchant(conn, merchant), program_id=program_id)
        )


@app.command("schema")
def schema() -> None:
    """Print the program JSON Schema."""
    print_json(program_json_schema())
