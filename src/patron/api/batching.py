"""Single purchases from concurrent requests, applied together.

At a busy till many purchases arrive at once, each its own request. One transaction per event
spends most of its time on round trips and fixed costs that do not grow with the number of
events; the batch path (``services.ingest.record_purchases``) does the same work for many events
in a few statements, with the same results as one at a time. So ``POST /v1/events`` hands a
purchase to this process's batcher: a thread that takes whatever purchases are waiting (up to
:data:`MOST`), authenticates their keys and applies them per merchant in one transaction, then
answers each request with its own result or error. Nothing waits for a batch to fill: a purchase
that arrives alone is applied alone, at once, the way other events are (for one event that path
takes about half the time the batch path takes).

A request is answered only once its batch has committed. When the batch as a whole fails (the
database went away, a deadlock), or an event in it met a concurrent writer, those requests are
run again one at a time, as without the batcher: an event id is its idempotency key, so one that
did commit answers as a replay. Requests with an ``Idempotency-Key`` header, and every other kind
of event, never go through here.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from patron.domain.errors import PatronError
from patron.services import ingest
from patron.services.merchants import Principal, authorize

log = logging.getLogger(__name__)

#: the most purchases applied in one transaction
MOST = 64
#: the scope a purchase needs (as ``POST /v1/events`` asks one at a time)
SCOPE = "pos"


class RunAlone(Exception):
    """The request is to be run on its own (nothing else was waiting, its batch failed, or it met
    a concurrent writer)."""


@dataclass(slots=True)
class _Item:
    key: str
    body: Any
    done: Future[tuple[dict[str, Any], bool]] = field(default_factory=Future)


class EventBatcher:
    """One per process: started on first use (so in each worker, after the server forks)."""

    def __init__(self, engine: Engine, most: int = MOST, alone: bool = True) -> None:
        """``alone``: a purchase with nothing else waiting runs on its own (False: as a batch of
        one, which tests use to go through the batch path)."""
        self.engine, self.most, self.alone = engine, most, alone
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._started = False
        self._lock = threading.Lock()

    async def apply(self, key: str, body: Any) -> tuple[dict[str, Any], bool]:
        """Apply one purchase (``body``) with the API key ``key``: ``(result, created)`` as
        ``services.events.record_event`` returns it, or its error (a ``PatronError``), or
        :class:`RunAlone`. The event loop serves other requests while the batch is applied."""
        self._start()
        item = _Item(key, body)
        self._queue.put(item)
        return await asyncio.wrap_future(item.done)

    def _start(self) -> None:
        if self._started:
            return
        with self._lock:
            if not self._started:
                threading.Thread(target=self._loop, name="patron-event-batcher", daemon=True).start()
                self._started = True

    def _loop(self) -> None:
        while True:
            self._once(self._queue.get())

    def _once(self, first: _Item) -> None:
        """Apply ``first`` and whatever else is waiting (up to :attr:`most`), and answer them."""
        items = [first]
        while len(items) < self.most:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        # a request given up before its batch began (the client went away) is not applied; from
        # here on it cannot be cancelled, so every one taken gets its answer
        items = [i for i in items if i.done.set_running_or_notify_cancel()]
        if len(items) == 1 and self.alone:  # nothing to apply it with: the one-event path is quicker
            items[0].done.set_exception(RunAlone())
            return
        if not items:
            return
        try:
            self._apply(items)
        except Exception as exc:  # the whole batch: each request runs again on its own
            # (the exception's name only: its text may quote the statement's parameters)
            log.warning(
                "a batch of %d purchases failed (%s); each runs on its own", len(items), type(exc).__name__
            )
            for item in items:
                if not item.done.done():
                    item.done.set_exception(RunAlone())
        except BaseException as exc:  # never leave a request waiting
            for item in items:
                if not item.done.done():
                    item.done.set_exception(exc)
            raise

    def _apply(self, items: list[_Item]) -> None:
        answers: list[Callable[[], None]] = []
        with self.engine.begin() as conn:
            principals: dict[str, Principal | PatronError] = {}
            by_merchant: dict[str, list[_Item]] = {}
            for item in items:
                found = principals.get(item.key)
                if found is None:
                    found = principals[item.key] = _principal(conn, item.key)
                if isinstance(found, PatronError):
                    answers.append(_fail(item, found))
                else:
                    by_merchant.setdefault(found.merchant_id, []).append(item)
            for merchant_id, mine in by_merchant.items():
                outcomes = ingest.record_purchases(
                    conn, merchant_id=merchant_id, bodies=[i.body for i in mine], pause_gc=False
                )
                for item, outcome in zip(mine, outcomes, strict=True):
                    if isinstance(outcome.error, PatronError):
                        answers.append(_fail(item, outcome.error))
                    elif outcome.error is not None:  # a concurrent writer got there first
                        answers.append(_fail(item, RunAlone()))
                    else:
                        assert outcome.result is not None
                        answers.append(_succeed(item, (outcome.result, outcome.created)))
        for answer in answers:  # committed: now each request has its answer
            answer()


def _principal(conn: Any, key: str) -> Principal | PatronError:
    try:
        return authorize(conn, key=key, scope=SCOPE)
    except PatronError as exc:
        return exc


def _fail(item: _Item, error: Exception) -> Callable[[], None]:
    return lambda: item.done.set_exception(error)


def _succeed(item: _Item, value: tuple[dict[str, Any], bool]) -> Callable[[], None]:
    return lambda: item.done.set_result(value)
