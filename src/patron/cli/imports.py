"""``patron import``: members and historical transactions from CSV files."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from patron.cli.common import (
    MerchantOpt,
    console,
    engine,
    err,
    fail,
    handles_errors,
    print_json,
    resolve_merchant,
    unit,
)
from patron.services import imports as service
from patron.services.programs import get_program

app = typer.Typer(
    help="Import members and historical transactions from CSV files (UTF-8, with a header row).",
    no_args_is_help=True,
)

FileArg = Annotated[Path, typer.Argument(help="The CSV file.", dir_okay=False)]
ProgramOpt = Annotated[str, typer.Option("--program", "-p", help="Program id.")]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", min=1, max=100_000, help="Rows per database transaction.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one line of JSON.")]


@app.command("members")
@handles_errors
def members(
    file: FileArg,
    program: ProgramOpt,
    merchant: str | None = MerchantOpt,
    batch_size: BatchOpt = service.BATCH,
    json_out: JsonOpt = False,
) -> None:
    """Enrol members from FILE with columns external_id,email,phone,name,birthday.

    Any column may be empty but each row needs external_id, email or phone. A row that matches an
    existing member is skipped, so importing a file twice changes nothing."""
    _import("members", file, program, merchant, batch_size, json_out)


@app.command("transactions")
@handles_errors
def transactions(
    file: FileArg,
    program: ProgramOpt,
    merchant: str | None = MerchantOpt,
    batch_size: BatchOpt = service.BATCH,
    json_out: JsonOpt = False,
) -> None:
    """Record past purchases from FILE with columns external_id,occurred_at,amount,currency and
    optionally event_id,category,sku.

    amount is in currency units (29.33); occurred_at is a date (midnight in the program's
    timezone) or an RFC 3339 time; an unknown external_id enrols a member. Each row's identity is
    its event_id or, without one, its content, so importing a file twice changes nothing."""
    _import("transactions", file, program, merchant, batch_size, json_out)


def errors_path(file: Path) -> Path:
    """Where rejected rows go: ``orders.csv`` -> ``orders.errors.csv``, beside the input."""
    stem = file.stem if file.suffix.lower() == ".csv" else file.name
    return file.with_name(stem + ".errors.csv")


class _Lines:
    """The file's lines, counting the bytes read so far for the progress bar."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle, self.done = handle, 0

    def __iter__(self) -> Iterator[str]:
        for line in self.handle:
            self.done += len(line.encode("utf-8", "surrogatepass"))
            yield line


class _Rejects:
    """Rejected rows, as they were, with ``line`` and ``reason``; the file is made on the first."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.count = path, 0
        self.columns = [c for c in columns if c not in ("line", "reason")] + ["line", "reason"]
        self.handle: IO[str] | None = None
        self.writer: csv.DictWriter[str] | None = None

    def __call__(self, rejected: service.Rejected) -> None:
        if self.writer is None:
            self.handle = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self.writer = csv.DictWriter(self.handle, self.columns, extrasaction="ignore")
            self.writer.writeheader()
        row: dict[str, Any] = {str(k).strip().lower(): v for k, v in rejected.row.items() if k is not None}
        self.writer.writerow({**row, "line": rejected.line, "reason": rejected.reason})
        self.count += 1

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        elif self.path.exists():  # a clean run: the report of an earlier run no longer applies
            self.path.unlink()


def _import(
    kind: str, file: Path, program: str, merchant: str | None, batch_size: int, json_out: bool
) -> None:
    with unit() as conn:
        merchant_id = resolve_merchant(conn, merchant)
        get_program(conn, merchant_id=merchant_id, program_id=program)  # unknown: exit 1 before reading
    try:
        handle = open(file, encoding="utf-8-sig", newline="")  # noqa: SIM115
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
        return
    with handle:
        lines = _Lines(handle)
        reader = csv.DictReader(lines)
        try:
            columns = service.check_header(kind, reader.fieldnames)
        except (UnicodeDecodeError, csv.Error) as exc:
            fail(f"cannot read {file}: {exc}")
            return
        reader.fieldnames = columns
        rejects = _Rejects(errors_path(file), columns)
        run = service.import_members if kind == "members" else service.import_transactions
        done = [0]  # rows in batches recorded so far
        try:
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[rows]:,} rows"),
                TimeRemainingColumn(),
                console=err,
                transient=json_out,
            ) as bar:
                task = bar.add_task(f"{kind} from {file.name}", total=os.path.getsize(file) or None, rows=0)

                def advance(rows: int) -> None:
                    done[0] += rows
                    bar.update(task, completed=lines.done, rows=done[0])

                summary = run(
                    engine(),
                    merchant_id=merchant_id,
                    program_id=program,
                    rows=reader,
                    on_rejected=rejects,
                    progress=advance,
                    batch_size=batch_size,
                    line_of=lambda: reader.line_num,
                )
        except (UnicodeDecodeError, csv.Error) as exc:
            # the batch being read is not recorded, and a decoder reads ahead of the rows: say
            # where the bad line is and how many rows were recorded, not "everything before it"
            where = _undecodable_line(file) if isinstance(exc, UnicodeDecodeError) else reader.line_num
            fail(
                f"cannot read {file} at line {where}: {exc}. The first {done[0]:,} rows were recorded, "
                "none after them; fix the file and import it again (rows already recorded are skipped)."
            )
            return
        finally:
            rejects.close()
    _report(summary, rejects, json_out)


def _undecodable_line(file: Path) -> int:
    """The number of the first line of ``file`` that is not UTF-8 (0 when every line is)."""
    with open(file, "rb") as raw:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _report(summary: service.Summary, rejects: _Rejects, json_out: bool) -> None:
    if json_out:
        print_json({**summary.as_dict(), "errors_file": str(rejects.path) if summary.rejected else None})
        return
    console.print(
        f"read {summary.read:,} rows: {summary.imported:,} imported, "
        f"{summary.skipped:,} skipped as already imported, {summary.rejected:,} rejected",
        highlight=False,
    )
    if summary.rejected:
        console.print(f"rejected rows and their reasons: {rejects.path}", highlight=False, soft_wrap=True)
