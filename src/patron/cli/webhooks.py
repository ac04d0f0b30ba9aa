"""``patron webhooks``: run the outbound webhook dispatcher; replay an event."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from patron.cli.common import MerchantOpt, console, engine, err, fail, handles_errors, resolve_merchant, unit
from patron.services import webhooks_out
from patron.services.clock import utcnow

app = typer.Typer(help="Outbound webhooks: deliver the outbox, replay events.", no_args_is_help=True)


@app.command("deliver")
@handles_errors
def deliver(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds to wait when there was nothing to do.")
    ] = 1.0,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="Attempts per pass at most.")
    ] = 500,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, max=120, help="Seconds an endpoint has to answer.")
    ] = webhooks_out.TIMEOUT,
    merchant: Annotated[
        str | None, typer.Option("--merchant", "-m", help="Only this merchant's events (default: all).")
    ] = None,
) -> None:
    """Fan out new business events to the matching endpoints and send what is due, in passes,
    until stopped (Ctrl-C) or after one pass with --once. Several can run at once."""
    eng = engine()
    try:
        while True:
            r = webhooks_out.dispatch(eng, now=utcnow(), limit=limit, timeout=timeout, merchant_id=merchant)
            if r.attempted or r.fanned_out or once:
                console.print(
                    f"{r.fanned_out} events fanned out to {r.queued} deliveries; "
                    f"{r.attempted} attempts: {r.delivered} delivered, {r.failed} failed"
                    + (f"; disabled {', '.join(r.disabled)}" if r.disabled else ""),
                    highlight=False,
                )
            if once:
                return
            if r.attempted < limit:
                time.sleep(interval)
    except KeyboardInterrupt:
        err.print("stopped")


@app.command("replay")
@handles_errors
def replay(
    event_id: Annotated[str, typer.Argument(help="The business event id (evt_...).")],
    endpoint: Annotated[
        str, typer.Option("--endpoint", "-e", help="The webhook endpoint id (whe_...).")
    ] = "",
    merchant: str | None = MerchantOpt,
) -> None:
    """Queue the event to be sent to the endpoint again; `deliver` sends it."""
    if not endpoint:
        fail("give --endpoint ID")
    with unit() as conn:
        d = webhooks_out.replay(
            conn, merchant_id=resolve_merchant(conn, merchant), endpoint_id=endpoint, event_id=event_id
        )
    console.print(f"queued {d['event_type']} {event_id} for {endpoint} (delivery {d['id']})", highlight=False)
