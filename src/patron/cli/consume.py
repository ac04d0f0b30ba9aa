"""``patron consume``: apply events from a NATS JetStream stream until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from typing import Annotated

import typer

from patron.cli.common import MerchantOpt, console, engine, err, handles_errors, resolve_merchant, unit
from patron.services.stream import Stats, StreamConsumer, StreamSettings

SIGNALS = (signal.SIGINT, signal.SIGTERM)
say = functools.partial(console.print, soft_wrap=True, highlight=False)
warn = functools.partial(err.print, soft_wrap=True, highlight=False)


@handles_errors
def consume(
    merchant: str | None = MerchantOpt,
    nats_url: Annotated[
        str, typer.Option("--nats", envvar="PATRON_NATS_URL", help="NATS server URL.")
    ] = "nats://127.0.0.1:4222",
    stream: Annotated[
        str, typer.Option(help="JetStream stream; created with file storage if it does not exist.")
    ] = "PATRON_EVENTS",
    subject: Annotated[str, typer.Option(help="Subject to read; the stream's subject when created.")] = (
        "patron.events.>"
    ),
    durable: Annotated[
        str, typer.Option(help="Durable consumer name; consumers with the same name share the work.")
    ] = "patron",
    dead_letter: Annotated[
        str | None,
        typer.Option(
            "--dead-letter",
            help="Subject for events that can never apply, with the reason in the Patron-Reason and "
            "Patron-Detail headers (default: the subject's prefix with 'dlq', e.g. patron.dlq.events).",
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=1000, help="Messages fetched at a time.")] = 50,
    ack_wait: Annotated[
        float, typer.Option(min=1, help="Seconds before an unacknowledged message is redelivered.")
    ] = 30.0,
    max_deliver: Annotated[
        int, typer.Option(min=1, help="Deliveries before a message that keeps failing is dead-lettered.")
    ] = 50,
    progress_every: Annotated[
        int, typer.Option("--progress-every", min=1, help="Print the totals every N events.")
    ] = 100,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            "--idle-timeout",
            min=0,
            help="Exit once the stream is drained and nothing has arrived for this many seconds "
            "(for batch runs; default: run until stopped).",
        ),
    ] = None,
    max_messages: Annotated[
        int | None, typer.Option("--max-messages", min=1, help="Exit after this many events.")
    ] = None,
) -> None:
    """Apply events from a NATS JetStream stream, each exactly once, until stopped.

    Each message is one event as POST /v1/events takes it (a Nats-Msg-Id header, when present,
    equals the event id). Creates the stream and a durable pull consumer when they do not exist.
    Events that can never apply go to the dead-letter subject with the reason; database errors
    are retried. Ctrl-C or SIGTERM finishes the event in hand, prints a summary and exits 0.
    """
    with unit() as conn:
        merchant_id = resolve_merchant(conn, merchant)
    settings = StreamSettings(
        url=nats_url,
        stream=stream,
        subject=subject,
        durable=durable,
        dead_letter=dead_letter,
        batch=batch,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
    )
    consumer = StreamConsumer(
        engine(),
        merchant_id=merchant_id,
        settings=settings,
        progress_every=progress_every,
        on_progress=lambda stats: say(f"{stats.handled} events: {stats.summary()}"),
        on_notice=warn,
    )
    say(
        f"Consuming {subject} from stream {stream} at {nats_url} for merchant {merchant_id} "
        f"(durable consumer {durable}; dead letters to {settings.dead_letter_subject}). Ctrl-C stops."
    )
    stats = asyncio.run(_run(consumer, idle_timeout=idle_timeout, max_messages=max_messages))
    say(f"Stopped after {stats.handled} events: {stats.summary()}")


async def _run(consumer: StreamConsumer, *, idle_timeout: float | None, max_messages: int | None) -> Stats:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        warn(f"{sig.name}: finishing the event in hand, then stopping (again to abort)")
        consumer.stop()
        for s in SIGNALS:  # a second signal gets the default behaviour: stop at once
            loop.remove_signal_handler(s)

    for sig in SIGNALS:
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
            loop.add_signal_handler(sig, on_signal, sig)
    return await consumer.run(idle_timeout=idle_timeout, max_messages=max_messages)
