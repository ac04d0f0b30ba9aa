"""``patron export``: a program's members, ledger and events as CSV or Parquet files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from patron.cli.common import (
    MerchantOpt,
    console,
    engine,
    err,
    fail,
    handles_errors,
    parse_time,
    print_json,
    resolve_merchant,
    unit,
)
from patron.services import exports as service

app = typer.Typer(
    help="Export a program's members, ledger and events as CSV files (UTF-8, with a header row), "
    "or as Parquet when FILE ends in .parquet.",
    no_args_is_help=True,
)

FileArg = Annotated[
    Path,
    typer.Argument(
        help="The file to write (replaced if it exists): CSV, or Parquet when it ends in .parquet.",
        dir_okay=False,
    ),
]
ProgramOpt = Annotated[str, typer.Option("--program", "-p", help="Program id.")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="From this RFC 3339 time or date (inclusive).")]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Up to this RFC 3339 time or date (exclusive).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one line of JSON.")]


@app.command("members")
@handles_errors
def members(
    file: FileArg, program: ProgramOpt, merchant: str | None = MerchantOpt, json_out: JsonOpt = False
) -> None:
    """Write the program's members with their points to FILE: id, external_id, email, phone, name,
    card_number, status, enrolled_at, available, pending, reserved, debt, lifetime_earned,
    expired, redeemed."""
    _export("members", file, program, merchant, None, None, json_out)


@app.command("ledger")
@handles_errors
def ledger(
    file: FileArg,
    program: ProgramOpt,
    since: SinceOpt = None,
    until: UntilOpt = None,
    merchant: str | None = MerchantOpt,
    json_out: JsonOpt = False,
) -> None:
    """Write the postings to member accounts (available, pending, reserved, debt) to FILE, by
    occurred_at: id, occurred_at, member_id, external_id, kind, reason, account, points (debt
    shown positive), event_id, lot_id, program_version. Per member and account, points sum to
    the balance."""
    _export("ledger", file, program, merchant, since, until, json_out)


@app.command("events")
@handles_errors
def events(
    file: FileArg,
    program: ProgramOpt,
    since: SinceOpt = None,
    until: UntilOpt = None,
    merchant: str | None = MerchantOpt,
    json_out: JsonOpt = False,
) -> None:
    """Write the program's events to FILE, by occurred_at: id (external), type, member_id,
    occurred_at, received_at, points, location_id, refers_to (the external id a refund or cancel
    reverses)."""
    _export("events", file, program, merchant, since, until, json_out)


def _export(
    kind: service.Kind,
    file: Path,
    program: str,
    merchant: str | None,
    since: str | None,
    until: str | None,
    json_out: bool,
) -> None:
    with unit() as conn:
        merchant_id = resolve_merchant(conn, merchant)
        export = service.Export(kind, merchant_id, program, parse_time(since), parse_time(until))
        service.check(conn, export)  # unknown program: exit 1 before touching the file
        total = service.count(conn, export)
    # Written beside the target and renamed at the end: an interrupted export leaves no half file.
    part = file.with_name(file.name + ".part")
    try:
        handle = open(part, "w", encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as exc:
        fail(f"cannot write {file}: {exc.strerror or exc}")
        return
    try:
        with (
            handle,
            engine().connect() as conn,
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=json_out,
            ) as bar,
        ):
            task = bar.add_task(f"{kind} to {file.name}", total=total or None)
            if file.suffix.lower() == ".parquet":
                written = service.write_parquet(
                    str(part), export, service.records(conn, export), lambda n: bar.advance(task, n)
                )
            else:
                written = service.write(
                    handle, export, service.rows(conn, export), lambda n: bar.advance(task, n)
                )
        os.replace(part, file)
    except OSError as exc:
        part.unlink(missing_ok=True)
        fail(f"cannot write {file}: {exc.strerror or exc}")
        return
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if json_out:
        print_json({"kind": kind, "rows": written, "file": str(file)})
    else:
        console.print(f"wrote {written:,} {kind} rows to {file}", highlight=False, soft_wrap=True)
