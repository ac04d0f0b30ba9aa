"""Outbound webhooks: endpoints, fan-out of the outbox, signed delivery, retries, the log, replay.

A merchant registers endpoints (an http(s) URL and, optionally, the event types it wants). The
dispatcher (:func:`dispatch`, one pass; ``patron webhooks deliver`` runs it in a loop) first *fans
out* new outbox events: one delivery row per matching enabled endpoint, made in one transaction
with marking the events fanned out, so an event is never fanned out twice or lost. It then sends
the deliveries that are due, outside any transaction, and records every attempt in the log.

Signatures follow Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature:
v1,<base64 HMAC-SHA256 of "id.timestamp.body">``) with the ``standardwebhooks`` package; the
``webhook-id`` is the event id, the same on every retry and replay, so receivers can deduplicate.

Retries. A failed attempt (no 2xx answer in time) is retried after ``30 s x 4^(n-1)``, at most a
day: 30 s, 2 min, 8 min, 32 min, 2 h 8 min, 8 h 32 min, then daily; no jitter, so the schedule is
predictable and testable. An endpoint is disabled when it answers ``410 Gone``, or after
``FAILURE_LIMIT`` failed attempts in a row spanning at least ``FAILING_FOR`` (a brief outage with
many members' deliveries in flight must not disable it). A disabled endpoint keeps its pending
deliveries; enabling it again resumes them in order. Deliveries never give up on their own.

Ordering. An endpoint never receives a member's event while an earlier event of the same member
(lower ``seq``, see ``services/outbox.py``) is still pending to it, or not yet fanned out. A
claimed delivery stays ``pending`` under a lease while it is sent, so a second dispatcher neither
sends it again nor overtakes it.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Connection, Engine
from standardwebhooks.webhooks import Webhook

from patron.domain.errors import Conflict, InvalidInput, NotFound
from patron.services import outbox
from patron.services.clock import utcnow
from patron.storage import outbox as repo
from patron.storage.ids import new_id

FIRST_RETRY: Final = timedelta(seconds=30)
LONGEST_RETRY: Final = timedelta(days=1)
FAILURE_LIMIT: Final = 8
FAILING_FOR: Final = timedelta(days=1)
TIMEOUT: Final = 10.0  # seconds for one attempt
EXCERPT: Final = 500  # characters of the answer kept in the log
BATCH: Final = 100
WORKERS: Final = 8
MAX_ENDPOINTS: Final = 50


# --- pure rules ---------------------------------------------------------------------------------


def retry_delay(failed_attempts: int) -> timedelta:
    """How long to wait after the ``failed_attempts``-th failure: 30 s x 4^(n-1), at most a day."""
    if failed_attempts < 1:
        raise ValueError("failed_attempts starts at 1")
    exponent = min(failed_attempts - 1, 10)
    delay: timedelta = FIRST_RETRY * int(4**exponent)
    return min(delay, LONGEST_RETRY)


def matches(event_types: list[str], event_type: str) -> bool:
    """An endpoint with no filter takes every event; otherwise the types it lists."""
    return not event_types or event_type in event_types


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, *, msg_id: str, timestamp: datetime, body: str) -> str:
    """The ``webhook-signature`` header value (``v1,<base64>``)."""
    # the library reads the clock fields as UTC: hand it UTC, whatever offset ``timestamp`` has
    return Webhook(secret).sign(msg_id=msg_id, timestamp=timestamp.astimezone(UTC), data=body)


def payload(
    *, event_id: str, event_type: str, member_id: str | None, seq: int, at: datetime, data: Any
) -> str:
    """The body sent: the Standard Webhooks envelope (``type``, ``timestamp``, ``data``)."""
    return json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "timestamp": at.isoformat().replace("+00:00", "Z"),
            "member_id": member_id,
            "sequence": seq,
            "data": data,
        },
        separators=(",", ":"),
    )


def check_url(url: str) -> str:
    url = url.strip()
    problem = InvalidInput(f"url must be an absolute http(s) URL, not {url!r}", field="url")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise problem
    try:
        parts = urlsplit(url)
        port = parts.port  # out of range or not a number: ValueError
    except ValueError:
        raise problem from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise problem
    return url


def check_description(description: str) -> str:
    if not description.isprintable():
        raise InvalidInput("description must be printable text on one line", field="description")
    return description


def check_event_types(event_types: list[str]) -> list[str]:
    unknown = [t for t in event_types if t not in outbox.EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            f"unknown event types {', '.join(map(repr, unknown))}; types: {', '.join(outbox.EVENT_TYPES)}",
            field="event_types",
        )
    return list(dict.fromkeys(event_types))


# --- endpoints ----------------------------------------------------------------------------------


def endpoint_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "url": row["url"],
        "description": row["description"],
        "event_types": list(row["event_types"]),
        "enabled": row["enabled"],
        "disabled_reason": row["disabled_reason"],
        "disabled_at": row["disabled_at"],
        "consecutive_failures": row["consecutive_failures"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _endpoint(conn: Connection, merchant_id: str, endpoint_id: str) -> dict[str, Any]:
    row = repo.get_endpoint(conn, merchant_id, endpoint_id) if outbox.plausible_id(endpoint_id) else None
    if row is None:
        raise NotFound(f"webhook endpoint {endpoint_id} not found")
    return row


def create_endpoint(
    conn: Connection,
    *,
    merchant_id: str,
    url: str,
    description: str = "",
    event_types: list[str] | None = None,
) -> dict[str, Any]:
    """A new enabled endpoint. The view includes ``secret``, shown this once."""
    if len(repo.list_endpoints(conn, merchant_id)) >= MAX_ENDPOINTS:
        raise Conflict(f"a merchant can have at most {MAX_ENDPOINTS} webhook endpoints")
    now = utcnow()
    row = {
        "merchant_id": merchant_id,
        "id": new_id("whe"),
        "url": check_url(url),
        "description": check_description(description),
        "event_types": check_event_types(event_types or []),
        "secret": new_secret(),
        "enabled": True,
        "consecutive_failures": 0,
        "failing_since": None,
        "disabled_reason": None,
        "disabled_at": None,
        "created_at": now,
        "updated_at": now,
    }
    repo.insert_endpoint(conn, row)
    return {**endpoint_view(row), "secret": row["secret"]}


def list_endpoints(conn: Connection, *, merchant_id: str) -> list[dict[str, Any]]:
    return [endpoint_view(r) for r in repo.list_endpoints(conn, merchant_id)]


def get_endpoint(conn: Connection, *, merchant_id: str, endpoint_id: str) -> dict[str, Any]:
    return endpoint_view(_endpoint(conn, merchant_id, endpoint_id))


def update_endpoint(
    conn: Connection, *, merchant_id: str, endpoint_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change ``url``, ``description``, ``event_types`` or ``enabled``. Enabling a disabled
    endpoint clears its failures and resumes its pending deliveries, oldest first."""
    row = _endpoint(conn, merchant_id, endpoint_id)
    values: dict[str, Any] = {}
    if "url" in changes:
        values["url"] = check_url(changes["url"])
    if "description" in changes:
        values["description"] = check_description(changes["description"])
    if "event_types" in changes:
        values["event_types"] = check_event_types(changes["event_types"])
    if "enabled" in changes and changes["enabled"] != row["enabled"]:
        values["enabled"] = changes["enabled"]
        if changes["enabled"]:
            values |= {
                "consecutive_failures": 0,
                "failing_since": None,
                "disabled_reason": None,
                "disabled_at": None,
            }
        else:
            values |= {"disabled_reason": repo.BY_THE_MERCHANT, "disabled_at": utcnow()}
    if values:
        values["updated_at"] = utcnow()
        repo.update_endpoint(conn, merchant_id, endpoint_id, values)
    return endpoint_view({**row, **values})


def delete_endpoint(conn: Connection, *, merchant_id: str, endpoint_id: str) -> None:
    """Remove the endpoint, its pending deliveries and its log."""
    _endpoint(conn, merchant_id, endpoint_id)
    repo.delete_endpoint(conn, merchant_id, endpoint_id)


# --- the log and replay -------------------------------------------------------------------------


def _attempt_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "attempt": row["attempt"],
        "at": row["at"],
        "status_code": row["status_code"],
        "duration_ms": row["duration_ms"],
        "error": row["error"],
        "response": row["response"],
    }


def delivery_view(row: dict[str, Any], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "endpoint_id": row["endpoint_id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "member_id": row["member_id"],
        "replay": row["replay"] > 0,
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt_at": row["next_attempt_at"] if row["status"] == "pending" else None,
        "created_at": row["created_at"],
        "delivered_at": row["delivered_at"],
        "log": [_attempt_view(a) for a in attempts],
    }


def deliveries(
    conn: Connection, *, merchant_id: str, endpoint_id: str, limit: int = 50, cursor: str | None = None
) -> dict[str, Any]:
    """The endpoint's deliveries, newest first, each with the log of its attempts."""
    _endpoint(conn, merchant_id, endpoint_id)
    if not 1 <= limit <= 200:
        raise InvalidInput("limit must be between 1 and 200", field="limit")
    before = outbox.decode_cursor(cursor) if cursor else None
    rows, next_cursor = outbox.page(
        repo.deliveries_page(conn, merchant_id, endpoint_id, limit=limit, before=before), limit
    )
    log: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in repo.attempts_of(conn, merchant_id, [r["id"] for r in rows]):
        log[a["delivery_id"]].append(a)
    return {
        "data": [delivery_view(r, log[r["id"]]) for r in rows],
        "next_cursor": next_cursor,
        "has_more": bool(next_cursor),
    }


def replay(conn: Connection, *, merchant_id: str, endpoint_id: str, event_id: str) -> dict[str, Any]:
    """Send the event to the endpoint again (whatever its filter), in the member's order, with
    the same ``webhook-id``. The endpoint must be enabled."""
    endpoint = _endpoint(conn, merchant_id, endpoint_id)
    event = outbox.get_event(conn, merchant_id=merchant_id, event_id=event_id)
    if not endpoint["enabled"]:
        raise Conflict(f"webhook endpoint {endpoint_id} is disabled; enable it first")
    now = utcnow()
    row = {
        "merchant_id": merchant_id,
        "id": new_id("whd"),
        "endpoint_id": endpoint_id,
        "event_id": event_id,
        "replay": max(repo.last_replay(conn, merchant_id, endpoint_id, event_id), 0) + 1,
        "stream": event["stream"],
        "seq": event["seq"],
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "delivered_at": None,
    }
    repo.insert_deliveries(conn, [row])
    return delivery_view({**row, "event_type": event["type"], "member_id": event["member_id"]}, [])


# --- the dispatcher -----------------------------------------------------------------------------


@dataclass(slots=True)
class DispatchResult:
    fanned_out: int = 0  # events
    queued: int = 0  # deliveries made by the fan-out
    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    disabled: list[str] = field(default_factory=list)  # endpoint ids


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    duration_ms: int
    error: str | None
    response: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def fan_out(
    conn: Connection, *, now: datetime, limit: int, merchant_id: str | None = None
) -> tuple[int, int]:
    """One delivery per (event, matching endpoint) for events not fanned out yet; returns the
    numbers of events and deliveries. An endpoint gets the events emitted after it was created."""
    events = repo.events_to_fan_out(conn, limit, merchant_id)
    if not events:
        return 0, 0
    keys = [(e["merchant_id"], e["id"]) for e in events]
    endpoints: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ep in repo.receiving_endpoints(conn, {e["merchant_id"] for e in events}):
        endpoints[ep["merchant_id"]].append(ep)
    done = repo.existing_pairs(conn, keys)
    rows = [
        {
            "merchant_id": e["merchant_id"],
            "id": new_id("whd"),
            "endpoint_id": ep["id"],
            "event_id": e["id"],
            "replay": 0,
            "stream": e["stream"],
            "seq": e["seq"],
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "delivered_at": None,
        }
        for e in events
        for ep in endpoints[e["merchant_id"]]
        if ep["created_at"] <= e["created_at"]
        and matches(ep["event_types"], e["type"])
        and (e["merchant_id"], ep["id"], e["id"]) not in done
    ]
    repo.insert_deliveries(conn, rows)
    repo.mark_fanned_out(conn, keys, now)
    return len(events), len(rows)


def send(client: httpx.Client, delivery: dict[str, Any], *, now: datetime, timeout: float) -> Outcome:
    """One signed POST of the delivery's event; never raises for network trouble."""
    body = payload(
        event_id=delivery["event_id"],
        event_type=delivery["event_type"],
        member_id=delivery["member_id"],
        seq=delivery["seq"],
        at=delivery["occurred_at"],
        data=delivery["data"],
    )
    headers = {
        "content-type": "application/json",
        "user-agent": "Patron-Webhooks/1",
        "webhook-id": delivery["event_id"],
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign(delivery["secret"], msg_id=delivery["event_id"], timestamp=now, body=body),
    }
    start = time.perf_counter()
    status: int | None = None
    error: str | None = None
    excerpt: str | None = None
    try:
        with client.stream("POST", delivery["url"], content=body, headers=headers, timeout=timeout) as r:
            status = r.status_code
            got = b""
            for chunk in r.iter_bytes():
                got += chunk
                if len(got) >= EXCERPT * 4:
                    break
            excerpt = got.decode("utf-8", errors="replace")[:EXCERPT]
    except httpx.TimeoutException:
        error = f"no answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:EXCERPT]
    duration = int((time.perf_counter() - start) * 1000)
    if status is not None and not 200 <= status < 300:
        error = f"HTTP {status}"
    return Outcome(status, duration, error, excerpt)


def _record(
    conn: Connection, batch: list[dict[str, Any]], outcomes: list[Outcome], now: datetime
) -> list[str]:
    """Log the attempts, settle or reschedule the deliveries, count endpoint failures; return the
    endpoints this disabled."""
    attempts, settled = [], []
    per_endpoint: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for d, o in zip(batch, outcomes, strict=True):
        n = d["attempts"] + 1
        attempts.append(
            {
                "merchant_id": d["merchant_id"],
                "id": new_id("wha"),
                "delivery_id": d["id"],
                "endpoint_id": d["endpoint_id"],
                "attempt": n,
                "at": now,
                "status_code": o.status_code,
                "duration_ms": o.duration_ms,
                "error": o.error,
                "response": o.response,
            }
        )
        settled.append(
            {
                "merchant_id": d["merchant_id"],
                "delivery_id": d["id"],
                "status": "delivered" if o.ok else d["status"],
                "attempts": n,
                "delivered_at": now if o.ok else d.get("delivered_at"),
                "next_attempt_at": now if o.ok else now + retry_delay(n),
            }
        )
        per_endpoint[(d["merchant_id"], d["endpoint_id"])].append(o)
    repo.record_deliveries(conn, settled)
    repo.insert_attempts(conn, attempts)
    disabled = []
    for (merchant_id, endpoint_id), results in per_endpoint.items():
        last_ok = max((i for i, o in enumerate(results) if o.ok), default=-1)
        endpoint = repo.count_failures(
            conn, merchant_id, endpoint_id, failures=len(results) - last_ok - 1, reset=last_ok >= 0, at=now
        )
        if endpoint is None or not endpoint["enabled"]:
            continue
        reason = None
        if any(o.status_code == 410 for o in results[last_ok + 1 :]):
            reason = "the endpoint answered 410 Gone"
        elif (
            endpoint["consecutive_failures"] >= FAILURE_LIMIT
            and endpoint["failing_since"] <= now - FAILING_FOR
        ):
            reason = (
                f"{endpoint['consecutive_failures']} failed attempts in a row since "
                f"{endpoint['failing_since'].isoformat()}"
            )
        if reason:
            repo.update_endpoint(
                conn,
                merchant_id,
                endpoint_id,
                {"enabled": False, "disabled_reason": reason, "disabled_at": now, "updated_at": now},
            )
            disabled.append(endpoint_id)
    return disabled


def dispatch(
    engine: Engine,
    *,
    now: datetime,
    limit: int = 500,
    timeout: float = TIMEOUT,
    client: httpx.Client | None = None,
    workers: int = WORKERS,
    merchant_id: str | None = None,
) -> DispatchResult:
    """One pass: fan out new events, then send what is due at ``now``, at most ``limit``
    attempts. Safe to run in several processes at once. Sending happens outside transactions; a
    claimed delivery is leased for ``timeout`` plus a minute so that a crash only delays it."""
    if now.tzinfo is None:
        raise InvalidInput("now needs a timezone offset")
    result = DispatchResult()
    with engine.begin() as conn:
        result.fanned_out, result.queued = fan_out(conn, now=now, limit=limit, merchant_id=merchant_id)
    own = client is None
    http = client or httpx.Client(follow_redirects=False)
    # each delivery is signed with the time it is sent: a pass behind a slow endpoint can take
    # minutes, and receivers refuse signatures older than five
    began = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while result.attempted < limit:
                with engine.begin() as conn:
                    batch = repo.claim_due(
                        conn, now=now, limit=min(BATCH, limit - result.attempted), merchant_id=merchant_id
                    )
                    keys = [(d["merchant_id"], d["id"]) for d in batch]
                    repo.lease(conn, keys, now + timedelta(seconds=timeout + 60))
                if not batch:
                    break
                go: Callable[[dict[str, Any]], Outcome] = lambda d: send(  # noqa: E731
                    http, d, now=now + timedelta(seconds=time.monotonic() - began), timeout=timeout
                )
                outcomes = list(pool.map(go, batch))
                with engine.begin() as conn:
                    result.disabled += _record(conn, batch, outcomes, now)
                result.attempted += len(batch)
                result.delivered += sum(o.ok for o in outcomes)
                result.failed += sum(not o.ok for o in outcomes)
    finally:
        if own:
            http.close()
    return result
