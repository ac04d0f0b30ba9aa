"""Stream ingestion: apply events from a NATS JetStream stream, each exactly once.

Each message body is one event exactly as ``POST /v1/events`` takes it; a ``Nats-Msg-Id`` header,
when present, must equal the event id (the stream then drops duplicates published within its
duplicate window). A durable pull consumer with explicit acks hands out messages, and each one is:

* applied by :func:`~patron.services.events.record_event` in its own transaction, committed, and
  only then acked. A crash between the commit and the ack redelivers the message, which
  ``record_event`` recognises by its event id as a replay: it writes nothing the second time.
  Applied exactly once therefore holds however often a message is delivered, the consumer
  restarted, or several consumers share the durable consumer;
* dead-lettered when it can never apply (not JSON, not an object, invalid, unknown member,
  idempotency conflict, any other engine error): the original body is published unchanged to the
  dead-letter subject, with the reason in ``Patron-Reason`` and ``Patron-Detail`` headers, and
  the message is then terminated. Dead letters are stored in a stream of their own (created as
  ``<STREAM>_DLQ`` unless a stream already captures the subject), so they can be inspected and,
  once fixed, published again;
* nak'ed with a growing delay when the database fails (connection lost, lock timeout,
  serialization failure), and dead-lettered as ``retries-exhausted`` on its last allowed delivery
  rather than silently dropped by the server.

Order: one consumer processes the messages of a batch one after another, in stream order, so the
events of one member apply in the order they were published. When a database error makes it
retry, the rest of the batch is nak'ed with the same delay and the consumer pauses, so the
messages come back in order. Consumers sharing one durable consumer split the stream between
them, and across them order is not guaranteed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from patron.domain.errors import PatronError
from patron.services.events import record_event

MSG_ID = "Nats-Msg-Id"
REASON = "Patron-Reason"
DETAIL = "Patron-Detail"
MAX_DETAIL = 1000
MAX_RETRY_DELAY = 60.0


class StreamError(PatronError):
    """NATS is unreachable, JetStream is off, or the stream or consumer cannot be set up."""

    code = "stream-unavailable"
    title = "Stream unavailable"


class Disposition(StrEnum):
    APPLIED = "applied"  # recorded now; ack
    REPLAYED = "replayed"  # recorded before (a redelivery or a duplicate); ack
    DEAD = "dead"  # can never apply; dead-letter, then terminate
    RETRY = "retry"  # the database failed; nak with a delay


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message. ``reason`` is a short code (the engine error's ``code``,
    e.g. ``not-found`` or ``idempotency-conflict``, or ``malformed-json``, ``not-an-object``,
    ``msg-id-mismatch``, ``database-error``, ``internal-error``, ``retries-exhausted``)."""

    disposition: Disposition
    event_id: str | None = None
    reason: str | None = None
    detail: str | None = None
    points: int | None = None


def apply_message(
    engine: Engine, *, merchant_id: str, data: bytes, headers: Mapping[str, str] | None = None
) -> Outcome:
    """Apply one message's event in its own transaction, committed before this returns.

    Never raises for a bad message: the outcome says whether it applied, was a replay, can never
    apply (and why) or should be retried later.
    """
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 is a ValueError too
        return Outcome(Disposition.DEAD, reason="malformed-json", detail=f"the message is not JSON: {exc}")
    if not isinstance(body, dict):
        kind = type(body).__name__.replace("dict", "object").replace("list", "array")
        return Outcome(
            Disposition.DEAD, reason="not-an-object", detail=f"the message is a JSON {kind}, not an event"
        )
    event_id = body.get("id") if isinstance(body.get("id"), str) else None
    msg_id = (headers or {}).get(MSG_ID)
    if msg_id is not None and msg_id != event_id:
        return Outcome(
            Disposition.DEAD,
            event_id,
            "msg-id-mismatch",
            f"the {MSG_ID} header {msg_id!r} is not the event id {event_id!r}",
        )
    try:
        with engine.begin() as conn:
            result, created = record_event(conn, merchant_id=merchant_id, body=body)
    except PatronError as exc:
        return Outcome(Disposition.DEAD, event_id, exc.code, _describe(exc))
    except (DBAPIError, PoolTimeout) as exc:
        first_line = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        return Outcome(Disposition.RETRY, event_id, "database-error", first_line[0])
    except Exception as exc:  # a defect, not the message's fault: keep the message, keep going
        return Outcome(Disposition.DEAD, event_id, "internal-error", f"{type(exc).__name__}: {exc}")
    points = result.get("points")
    return Outcome(
        Disposition.APPLIED if created else Disposition.REPLAYED,
        event_id,
        points=points if isinstance(points, int) else None,
    )


def _describe(exc: PatronError) -> str:
    errors = exc.extra.get("errors")
    if not errors:
        return exc.detail
    return exc.detail + ": " + "; ".join(f"{e['loc'] or 'body'}: {e['msg']}" for e in errors)


def default_dead_letter(subject: str) -> str:
    """``patron.events.>`` -> ``patron.dlq.events`` (``orders.>`` -> ``dlq.orders``): the subject's
    literal prefix with a ``dlq`` token, placed so that dead letters do not match the subject."""
    literal: list[str] = []
    for token in subject.split("."):
        if token in ("*", ">"):
            break
        literal.append(token)
    if len(literal) < 2:
        return ".".join(["dlq", *literal])
    return ".".join([literal[0], "dlq", *literal[1:]])


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether the literal ``subject`` is one that the NATS subject ``pattern`` selects."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Where to read and how. Stream, dead-letter stream and durable consumer are created with
    these settings when they do not exist; existing ones are used as they are."""

    url: str = "nats://127.0.0.1:4222"
    stream: str = "PATRON_EVENTS"
    subject: str = "patron.events.>"
    durable: str = "patron"
    dead_letter: str | None = None  # default: default_dead_letter(subject)
    batch: int = 50
    ack_wait: float = 30.0  # seconds a delivered message may stay unacked before redelivery
    max_deliver: int = 50  # deliveries before a failing message is dead-lettered
    retry_delay: float = 1.0  # first nak delay after a database error; doubles, up to a minute
    duplicate_window: float = 120.0  # seconds the stream drops a repeated Nats-Msg-Id
    poll: float = 1.0  # seconds one fetch waits for messages
    connect_timeout: float = 10.0

    @property
    def dead_letter_subject(self) -> str:
        return self.dead_letter or default_dead_letter(self.subject)

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.stream}_DLQ"


@dataclass(slots=True)
class Stats:
    applied: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    retried: int = 0

    @property
    def handled(self) -> int:
        """Messages settled for good: applied, replayed or dead-lettered."""
        return self.applied + self.replayed + self.dead_lettered

    def summary(self) -> str:
        text = f"{self.applied} applied, {self.replayed} replayed, {self.dead_lettered} dead-lettered"
        return text + (f", {self.retried} retried" if self.retried else "")


_BAD_NAME = re.compile(r"[.*>/\\\s]")
_BAD_SUBJECT = re.compile(r"\s|^\.|\.$|\.\.")


def _check_names(s: StreamSettings) -> None:
    for what, name in (("stream", s.stream), ("durable consumer", s.durable)):
        if not name or _BAD_NAME.search(name):
            raise StreamError(f"{what} name {name!r} is not valid: no '.', '*', '>', '/', '\\' or spaces")
    for subject in (s.subject, s.dead_letter_subject):
        if not subject or _BAD_SUBJECT.search(subject):
            raise StreamError(f"subject {subject!r} is not valid: tokens separated by single dots")
    if ">" in s.dead_letter_subject or "*" in s.dead_letter_subject:
        raise StreamError(f"dead-letter subject {s.dead_letter_subject!r} cannot have wildcards")


_SAFE_HEADER = re.compile(r"[\x00-\x1f\x7f]+")


def _header(value: object) -> str:
    return _SAFE_HEADER.sub(" ", str(value)).strip()[:MAX_DETAIL]


class StreamConsumer:
    """Reads one merchant's events from a JetStream stream and applies them until stopped.

    ``run`` connects, creates what is missing, and processes messages until :meth:`stop` is
    called (the message in hand is finished first), until ``max_messages`` are settled, or, with
    ``idle_timeout``, once the consumer has had nothing pending or awaiting an ack for that many
    seconds. ``on_progress`` receives the running totals every ``progress_every`` settled
    messages; ``on_notice`` receives one line per dead letter, retry or connection event.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        merchant_id: str,
        settings: StreamSettings | None = None,
        progress_every: int = 100,
        on_progress: Callable[[Stats], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.engine, self.merchant_id = engine, merchant_id
        self.settings = settings or StreamSettings()
        _check_names(self.settings)
        if subject_matches(self.settings.subject, self.settings.dead_letter_subject):
            raise StreamError(
                f"dead-letter subject {self.settings.dead_letter_subject} is one the consumer reads "
                f"({self.settings.subject}); choose another"
            )
        self.progress_every = max(progress_every, 1)
        self.on_progress, self.on_notice = on_progress, on_notice
        self.stats = Stats()
        self._stopping = asyncio.Event()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._dead_stream: str | None = None
        self._last_error: str | None = None

    def stop(self) -> None:
        """Finish the message in hand, hand back the rest of its batch, and return from run."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self, *, idle_timeout: float | None = None, max_messages: int | None = None) -> Stats:
        await self._connect()
        try:
            sub = await self._prepare()
            await self._loop(sub, idle_timeout=idle_timeout, max_messages=max_messages)
        finally:
            await self._close()
        return self.stats

    # connection and topology

    async def _connect(self) -> None:
        s = self.settings

        async def on_error(exc: Exception) -> None:
            self._last_error = str(exc) or type(exc).__name__

        async def on_disconnect() -> None:
            if self._js is not None and not self.stopping:
                self._notice(f"disconnected from {s.url}; reconnecting")

        async def on_reconnect() -> None:
            self._notice(f"reconnected to {s.url}")

        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    s.url,
                    name="patron-consume",
                    connect_timeout=max(1, int(s.connect_timeout / 2)),
                    max_reconnect_attempts=-1,  # a long-running consumer waits for the server
                    reconnect_time_wait=1,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                ),
                timeout=s.connect_timeout,
            )
        except (TimeoutError, OSError, ValueError, nats.errors.Error) as exc:
            reason = self._last_error or str(exc) or type(exc).__name__
            raise StreamError(f"cannot reach NATS at {s.url}: {reason}") from None
        self._js = self._nc.jetstream(timeout=s.connect_timeout)

    async def _prepare(self) -> JetStreamContext.PullSubscription:
        s, js = self.settings, self._jetstream()
        try:
            await self._ensure_stream(s.stream, s.subject)
            try:
                self._dead_stream = await js.find_stream_name_by_subject(s.dead_letter_subject)
            except nats.js.errors.NotFoundError:
                # several consumers (one per merchant) may share the dead-letter stream: each adds
                # its own subject to it
                await self._ensure_stream(s.dead_letter_stream, s.dead_letter_subject, add_subject=True)
                self._dead_stream = s.dead_letter_stream
            await self._ensure_consumer()
            return await js.pull_subscribe_bind(durable=s.durable, stream=s.stream)
        except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
            raise StreamError(f"JetStream is not enabled on {s.url}") from None
        except nats.js.errors.APIError as exc:
            raise StreamError(f"cannot set up stream {s.stream}: {exc.description or exc}") from None
        except nats.errors.TimeoutError:
            raise StreamError(f"NATS at {s.url} did not answer in time") from None
        except ValueError as exc:  # a name the client refuses
            raise StreamError(str(exc)) from None

    async def _ensure_stream(self, name: str, subject: str, *, add_subject: bool = False) -> None:
        js = self._jetstream()
        try:
            info = await js.stream_info(name)
            subjects = list(info.config.subjects or [])
            if add_subject and subject not in subjects:
                await js.update_stream(dataclasses.replace(info.config, subjects=[*subjects, subject]))
                self._notice(f"stream {name} now also keeps {subject}")
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=name,
                    subjects=[subject],
                    storage=StorageType.FILE,
                    duplicate_window=self.settings.duplicate_window,
                )
            )
            self._notice(f"created stream {name} for {subject}")

    async def _ensure_consumer(self) -> None:
        s, js = self.settings, self._jetstream()
        try:
            info = await js.consumer_info(s.stream, s.durable)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(
                s.stream,
                ConsumerConfig(
                    durable_name=s.durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=s.ack_wait,
                    max_deliver=s.max_deliver,
                    filter_subject=s.subject,
                ),
            )
            self._notice(f"created durable consumer {s.durable} on {s.stream}")
            return
        cfg = info.config
        if cfg.deliver_subject:
            raise StreamError(f"consumer {s.durable} on {s.stream} is a push consumer; use another --durable")
        if cfg.filter_subject and cfg.filter_subject != s.subject:
            raise StreamError(
                f"consumer {s.durable} on {s.stream} reads {cfg.filter_subject}, not {s.subject}; "
                "use another --durable"
            )

    async def _close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
            await nc.flush(timeout=5)  # the server has the acks sent so far
        await nc.close()

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise StreamError("not connected to NATS")
        return self._js

    # the loop

    async def _loop(
        self, sub: JetStreamContext.PullSubscription, *, idle_timeout: float | None, max_messages: int | None
    ) -> None:
        loop = asyncio.get_running_loop()
        idle_since: float | None = None
        while not self.stopping:
            want = self.settings.batch
            if max_messages is not None:
                want = min(want, max_messages - self.stats.handled)
                if want <= 0:
                    return
            try:
                msgs = await sub.fetch(want, timeout=self.settings.poll)
            except nats.errors.TimeoutError:
                msgs = []
            except (nats.errors.Error, OSError) as exc:  # e.g. while reconnecting
                self._notice(f"fetch failed ({exc or type(exc).__name__}); retrying")
                await self._pause(self.settings.poll)
                continue
            if not msgs:
                if idle_timeout is not None:
                    if not await self._drained():
                        idle_since = None
                    elif idle_since is None:
                        idle_since = loop.time()
                    elif loop.time() - idle_since >= idle_timeout:
                        return
                continue
            idle_since = None
            await self._batch(msgs)

    async def _batch(self, msgs: list[Msg]) -> None:
        for i, msg in enumerate(msgs):
            if self.stopping:
                await self._hand_back(msgs[i:], delay=None)
                return
            delay = await self._handle(msg)
            if delay is not None:
                # keep the member's order: the rest of the batch comes back after this one
                await self._hand_back(msgs[i + 1 :], delay=delay)
                await self._pause(delay)
                return

    async def _handle(self, msg: Msg) -> float | None:
        """Apply and settle one message; the nak delay when it is to be retried."""
        s = self.settings
        outcome = await asyncio.to_thread(
            apply_message, self.engine, merchant_id=self.merchant_id, data=msg.data, headers=msg.headers
        )
        deliveries = msg.metadata.num_delivered
        if outcome.disposition is Disposition.RETRY and 0 < s.max_deliver <= deliveries:
            outcome = replace(
                outcome,
                disposition=Disposition.DEAD,
                reason="retries-exhausted",
                detail=f"gave up after {deliveries} deliveries: {outcome.reason}: {outcome.detail}",
            )
        if outcome.disposition is Disposition.RETRY:
            delay = min(s.retry_delay * 2.0 ** max(deliveries - 1, 0), MAX_RETRY_DELAY)
            await msg.nak(delay=delay)
            self.stats.retried += 1
            self._notice(f"{outcome.event_id or 'message'}: {outcome.detail}; retrying in {delay:g}s")
            return delay
        if outcome.disposition is Disposition.DEAD:
            try:
                await self._dead_letter(msg, outcome)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                delay = s.retry_delay
                await msg.nak(delay=delay)
                self.stats.retried += 1
                self._notice(f"could not dead-letter {outcome.event_id or 'a message'} ({exc}); retrying")
                return delay
            await msg.term()
            self.stats.dead_lettered += 1
            self._notice(
                f"dead-lettered {outcome.event_id or 'a message'} to {s.dead_letter_subject}: "
                f"{outcome.reason}: {outcome.detail}"
            )
        else:
            await self._ack(msg)
            if outcome.disposition is Disposition.APPLIED:
                self.stats.applied += 1
            else:
                self.stats.replayed += 1
        if self.on_progress is not None and self.stats.handled % self.progress_every == 0:
            self.on_progress(self.stats)
        return None

    async def _ack(self, msg: Msg) -> None:
        """Acknowledge a message whose event is committed (a seam for crash tests)."""
        await msg.ack()

    async def _dead_letter(self, msg: Msg, outcome: Outcome) -> None:
        meta = msg.metadata
        headers = {
            REASON: _header(outcome.reason or "unknown"),
            DETAIL: _header(outcome.detail or ""),
            "Patron-Stream": meta.stream,
            "Patron-Subject": _header(msg.subject),
            "Patron-Sequence": str(meta.sequence.stream),
            "Patron-Deliveries": str(meta.num_delivered),
            # redelivered after a crash, the same dead letter is dropped by the stream
            MSG_ID: f"{meta.stream}:{meta.sequence.stream}",
        }
        if outcome.event_id:
            headers["Patron-Event-Id"] = _header(outcome.event_id)
        if msg.headers and MSG_ID in msg.headers:
            headers["Patron-Msg-Id"] = _header(msg.headers[MSG_ID])
        await self._jetstream().publish(
            self.settings.dead_letter_subject, msg.data, headers=headers, stream=self._dead_stream
        )

    async def _hand_back(self, msgs: list[Msg], *, delay: float | None) -> None:
        for msg in msgs:
            with contextlib.suppress(nats.errors.Error):  # unacked, it comes back after the ack wait
                await msg.nak(delay=delay)

    async def _drained(self) -> bool:
        try:
            info = await self._jetstream().consumer_info(self.settings.stream, self.settings.durable)
        except (nats.errors.Error, TimeoutError):
            return False
        return not info.num_pending and not info.num_ack_pending

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _notice(self, line: str) -> None:
        if self.on_notice is not None:
            self.on_notice(line)
