"""The ``patron`` command."""

from __future__ import annotations

import functools
from typing import Annotated

import typer

from patron.cli import events, exports, imports, members, merchants, programs, web_commands, webhooks
from patron.cli.common import console, engine, err, handles_errors, unit
from patron.cli.consume import consume
from patron.cli.reports import app as reports_app

app = typer.Typer(help="Patron: an open-source customer loyalty engine.", no_args_is_help=True)
app.add_typer(merchants.app, name="merchants")
app.add_typer(merchants.keys, name="keys")
app.add_typer(programs.app, name="programs")
app.add_typer(members.app, name="members")
app.add_typer(events.app, name="events")
app.command("consume")(consume)
app.add_typer(imports.app, name="import")
app.add_typer(exports.app, name="export")
app.add_typer(reports_app, name="report")
app.add_typer(web_commands.users_app, name="users")
app.add_typer(webhooks.app, name="webhooks")
members.app.command("login-link")(web_commands.members_login_link)
db = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db, name="db")
jobs = typer.Typer(help="Scheduled jobs (idempotent; run as if at --as-of).", no_args_is_help=True)
app.add_typer(jobs, name="jobs")


@jobs.command("run")
@handles_errors
def run_job(
    name: Annotated[
        str,
        typer.Argument(
            help="release-pending, expire-points, lapse-reservations, requalify-tiers, milestones, "
            "notifications, at-risk, dividends or memberships."
        ),
    ],
    as_of: Annotated[str | None, typer.Option("--as-of", help="RFC 3339 time; default now.")] = None,
    merchant: Annotated[str | None, typer.Option("--merchant", "-m", help="Only this merchant.")] = None,
) -> None:
    """Run one scheduled job as if it were --as-of (all merchants unless --merchant)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from patron.cli.common import parse_time
    from patron.services.clock import utcnow
    from patron.services.jobs import run_job as run

    at = parse_time(as_of) or utcnow()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description} {task.completed} members"), console=err
    ) as bar:
        task = bar.add_task(name, total=None)
        result = run(engine(), name, as_of=at, merchant_id=merchant, progress=lambda n: bar.advance(task, n))
    from patron.services.jobs import summary

    console.print(f"{name} as of {at.isoformat()}: {summary(result)}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Serve the API (and /docs) with uvicorn."""
    import uvicorn

    engine()  # migrate before accepting requests
    console.print(f"Patron at http://{host}:{port}  (API docs at /docs)")
    uvicorn.run(
        "patron.api.app:serve_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )


@app.command()
@handles_errors
def verify() -> None:
    """Prove the books: exit 0 when every journal sums to zero and every balance equals its postings."""
    from patron.services.ledger import verify as check

    with unit() as conn:
        problems = check(conn)
    if problems:
        for p in problems:
            err.print(p, highlight=False)
        err.print(f"[red]{len(problems)} problem(s)[/red]")
        raise typer.Exit(1)
    console.print("ok: every journal balances and every balance equals the sum of its postings")


@app.command()
@handles_errors
def worker(
    interval: Annotated[int, typer.Option(help="Seconds between rounds.")] = 60,
    once: Annotated[bool, typer.Option(help="Run one round and exit.")] = False,
) -> None:
    """Run the scheduled jobs as of now (the daily ones as of midnight UTC), and one pass of the
    outbound webhook dispatcher, every --interval seconds, until stopped. (`patron webhooks
    deliver` delivers webhooks within a second, if you need them sooner.)"""
    import time

    from patron.domain.errors import PatronError
    from patron.services import webhooks_out
    from patron.services.clock import utcnow
    from patron.services.jobs import JOBS, scheduled_time, summary
    from patron.services.jobs import run_job as run

    while True:
        for name in JOBS:
            at = scheduled_time(name, utcnow())
            try:
                result = run(engine(), name, as_of=at)
            except PatronError as exc:  # reported, and the other jobs still run
                err.print(f"{name}: {exc.detail}")
                continue
            except Exception as exc:
                err.print(f"{name} failed: {type(exc).__name__}: {exc}"[:2000])
                continue
            console.print(f"{at.isoformat(timespec='seconds')} {name}: {summary(result)}")
        sent = webhooks_out.dispatch(engine(), now=utcnow())
        if sent.attempted:
            console.print(f"webhooks: {sent.delivered} delivered, {sent.failed} failed", highlight=False)
        if once:
            return
        time.sleep(interval)


@db.command("migrate")
def migrate_() -> None:
    """Create or upgrade the schema."""
    engine()
    console.print("schema is up to date")


@app.command()
@handles_errors
def demo(
    members_count: Annotated[int, typer.Option("--members", help="How many members.")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 7,
) -> None:
    """Create a demo merchant with a coffee-shop program and a year of activity."""
    import secrets

    from patron.config import get_settings
    from patron.services.demo import build_demo
    from patron.services.portal import create_login_link
    from patron.services.users import ensure_user

    with unit() as conn:
        out = build_demo(conn, members=members_count, seed=seed, progress=console)
    owner_password, staff_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    with unit() as conn:  # new passwords each run: they are stored hashed and shown only here
        ensure_user(conn, merchant_id=out["merchant_id"], email="owner@demo.example", password=owner_password)
        ensure_user(
            conn,
            merchant_id=out["merchant_id"],
            email="staff@demo.example",
            password=staff_password,
            role="staff",
        )
        link = create_login_link(
            conn,
            merchant_id=out["merchant_id"],
            member_id=out["sample_member"],
            base_url=get_settings().public_url,
        )
    say = functools.partial(console.print, soft_wrap=True)
    say(f"\nDemo merchant [bold]{out['merchant_id']}[/bold], program {out['program_id']}")
    say(f"API key: [bold]{out['api_key']}[/bold]")
    say(f"{out['members']} members, {out['events']} events. Try:")
    say(
        f"  curl -H 'Authorization: Bearer {out['api_key']}' http://127.0.0.1:8000/v1/members/{out['sample_member']}"
    )
    base = get_settings().public_url
    say(f"\nAdmin console  {base}/admin   owner@demo.example / {owner_password}")
    say(f"Till (POS)     {base}/pos     staff@demo.example / {staff_password}")
    say(f"Member portal  {link['url']}   (one-time sign-in link for the sample member)")
    say(f"API docs       {base}/docs")


if __name__ == "__main__":
    app()
