"""Inbound integrations: platform webhooks turned into Patron events, each delivery applied once.

A platform adapter (``patron.integrations.<platform>``) checks the signature and translates a
payload into :data:`Action` values: earn on a purchase for a customer, reverse a purchase already
recorded, enrol a customer, or ignore. :func:`receive` applies them for the integration's merchant
and program through :func:`patron.services.events.record_event`, and records the delivery in the
inbox (``webhook_deliveries``) in the same transaction:

* a delivery id already ``processed`` or ``ignored`` is acknowledged without being applied again;
* a purchase whose event id is already recorded (the same order delivered under a new delivery
  id) earns nothing more;
* a delivery that cannot be applied writes nothing but its inbox row, ``failed`` with the reason,
  and is tried afresh when the platform delivers it again (a refund that arrives before its order
  succeeds on a later retry).

Customers are matched by email, then by the platform's customer id as ``external_id``, and
enrolled when neither is known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection

from patron.domain.errors import DuplicateMember, InvalidInput, NotFound, PatronError
from patron.services import events, members
from patron.services.clock import utcnow
from patron.services.ledger import decode_cursor, encode_cursor
from patron.services.members import MemberCreate
from patron.services.programs import _errors
from patron.storage import events as events_repo
from patron.storage import idempotency
from patron.storage import integrations as repo
from patron.storage import programs as programs_repo
from patron.storage.ids import new_id

TYPES = ("shopify", "square", "woocommerce", "stripe")
Type = Literal["shopify", "square", "woocommerce", "stripe"]
PROCESSED, IGNORED, FAILED = "processed", "ignored", "failed"
STATUSES = (PROCESSED, IGNORED, FAILED)


class IntegrationCreate(BaseModel):
    """Connect a platform to a program. ``secret`` is the one the platform signs webhooks with:
    Shopify's app client secret, Square's signature key, WooCommerce's webhook secret or Stripe's
    endpoint signing secret (``whsec_...``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: Type
    program_id: Annotated[str, Field(min_length=1, max_length=40)]
    secret: Annotated[str, Field(min_length=8, max_length=500)]


class MalformedPayload(PatronError):
    """The webhook body is not the JSON the platform sends for this topic (HTTP 400)."""

    code = "malformed-payload"
    title = "Malformed webhook payload"


class NoCustomer(InvalidInput):
    code = "no-customer"
    title = "No customer to credit"


class NotRecorded(InvalidInput):
    code = "purchase-not-recorded"
    title = "The purchase this refers to is not recorded"


@dataclass(frozen=True, slots=True)
class Customer:
    """Who a purchase is for, as the platform knows them."""

    email: str | None = None
    external_id: str | None = None  # the platform's customer id
    name: str | None = None
    since: datetime | None = None  # when they became the merchant's customer, if known


@dataclass(frozen=True, slots=True)
class Earn:
    """A purchase event (the contract's JSON without ``member_id``) for a customer."""

    event: dict[str, Any]
    customer: Customer | None


@dataclass(frozen=True, slots=True)
class Reverse:
    """A refund or cancel event with ``refers_to`` and without ``member_id``: the member is the
    purchase's. A refund by ``amount`` larger than what is left of the purchase's eligible amount
    (platform refunds include tax, shipping and tips) takes back what is left. A cancel, or an
    ``optional`` refund, of a purchase never recorded is ignored; a refund fails (to be retried)."""

    event: dict[str, Any]
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Enrol:
    customer: Customer


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str


@dataclass(frozen=True, slots=True)
class MembershipPaid:
    """A payment for the paid membership whose provider subscription id is ``subscription``."""

    subscription: str
    amount: int
    currency: str
    paid_at: datetime
    reference: str  # the provider's invoice id: a second delivery is the same payment


@dataclass(frozen=True, slots=True)
class MembershipCancelled:
    subscription: str
    at: datetime


Action = Earn | Reverse | Enrol | Ignore | MembershipPaid | MembershipCancelled


@dataclass(frozen=True, slots=True)
class Target:
    """The integration a webhook is addressed to."""

    id: str
    merchant_id: str
    program_id: str
    type: str
    secret: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """What became of one delivery."""

    delivery_id: str
    topic: str
    status: str
    outcome: list[dict[str, Any]] = field(default_factory=list)
    error: PatronError | None = None
    replayed: bool = False  # the delivery id was seen before: nothing was applied this time

    def body(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "topic": self.topic,
            "status": self.status,
            "replayed": self.replayed,
            "outcome": self.outcome,
        }


def webhook_url(public_url: str, type_: str, integration_id: str) -> str:
    return f"{public_url.rstrip('/')}/v1/webhooks/{type_}/{integration_id}"


def _view(row: dict[str, Any], public_url: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "program_id": row["program_id"],
        "webhook_url": webhook_url(public_url, row["type"], row["id"]),
        "created_at": row["created_at"],
    }


def create_integration(
    conn: Connection, *, merchant_id: str, data: IntegrationCreate, public_url: str
) -> dict[str, Any]:
    if programs_repo.get_program(conn, merchant_id, data.program_id) is None:
        raise NotFound(f"program {data.program_id} not found")
    integration_id = new_id("int")
    repo.insert_integration(
        conn,
        merchant_id=merchant_id,
        id=integration_id,
        type=data.type,
        program_id=data.program_id,
        secret=data.secret,
        created_at=utcnow(),
    )
    return get_integration(
        conn, merchant_id=merchant_id, integration_id=integration_id, public_url=public_url
    )


def get_integration(
    conn: Connection, *, merchant_id: str, integration_id: str, public_url: str
) -> dict[str, Any]:
    row = repo.get_integration(conn, merchant_id, integration_id)
    if row is None:
        raise NotFound(f"integration {integration_id} not found")
    return _view(row, public_url)


def list_integrations(conn: Connection, *, merchant_id: str, public_url: str) -> list[dict[str, Any]]:
    return [_view(r, public_url) for r in repo.list_integrations(conn, merchant_id)]


def webhook_target(conn: Connection, *, integration_id: str, type_: str) -> Target:
    """The integration a webhook URL names; 404 unless it exists and is of that platform."""
    row = repo.integration_by_id(conn, integration_id)
    if row is None or row["type"] != type_:
        raise NotFound(f"no {type_} integration {integration_id}")
    return Target(row["id"], row["merchant_id"], row["program_id"], row["type"], row["secret"])


def receive(
    conn: Connection,
    *,
    target: Target,
    delivery_id: str,
    topic: str,
    translate: Callable[[], Sequence[Action]],
) -> Receipt:
    """Apply one signed delivery once and record it in the inbox. Never raises for bad input:
    a failure is a ``failed`` receipt carrying the error."""
    now = utcnow()
    topic = topic[:100]
    seen = repo.get_delivery(conn, target.merchant_id, target.id, delivery_id)
    if seen is not None and seen["status"] != FAILED:
        return Receipt(delivery_id, seen["topic"], seen["status"], list(seen["outcome"]), replayed=True)
    error: PatronError | None = None
    outcome: list[dict[str, Any]] = []
    try:
        actions = translate()
        with repo.savepoint(conn):
            outcome = [_apply(conn, target, action) for action in actions]
    except PatronError as exc:
        error, outcome = exc, []
    if error is not None:
        status = FAILED
    elif any(o["status"] in ("recorded", "enrolled") for o in outcome):
        status = PROCESSED
    else:
        status = IGNORED
    values = {
        "topic": topic,
        "status": status,
        "error": error.detail[:2000] if error else None,
        "outcome": outcome,
        "updated_at": now,
    }
    if seen is None:
        repo.insert_delivery(
            conn,
            merchant_id=target.merchant_id,
            integration_id=target.id,
            delivery_id=delivery_id,
            attempts=1,
            received_at=now,
            **values,
        )
    else:
        repo.update_delivery(
            conn, target.merchant_id, target.id, delivery_id, attempts=seen["attempts"] + 1, **values
        )
    return Receipt(delivery_id, topic, status, outcome, error)


def _apply(conn: Connection, target: Target, action: Action) -> dict[str, Any]:
    if isinstance(action, Ignore):
        return {"action": "ignore", "status": "ignored", "reason": action.reason}
    if isinstance(action, Enrol):
        member, created = _member_for(conn, target, action.customer, at=action.customer.since)
        return {
            "action": "enrol",
            "status": "enrolled" if created else "ignored",
            "member_id": member["id"],
            **({} if created else {"reason": "already a member"}),
        }
    if isinstance(action, Earn):
        return _earn(conn, target, action)
    if isinstance(action, MembershipPaid | MembershipCancelled):
        return _membership(conn, target, action)
    return _reverse(conn, target, action)


def _membership(
    conn: Connection, target: Target, action: MembershipPaid | MembershipCancelled
) -> dict[str, Any]:
    """Paid memberships started with ``external_id`` = the provider's subscription id renew on
    its payments and end on its cancellation; other subscriptions are none of Patron's business."""
    from patron.services import memberships

    out: dict[str, Any] = {"action": "membership", "subscription": action.subscription}
    try:
        if isinstance(action, MembershipPaid):
            view, created = memberships.payment_received(
                conn,
                merchant_id=target.merchant_id,
                external_id=action.subscription,
                amount=action.amount,
                currency=action.currency,
                paid_at=action.paid_at,
                external_ref=action.reference,
            )
            status = "recorded" if created else "ignored"
            return {**out, "status": status, "membership_id": view["id"], "state": view["state"]}
        view = memberships.subscription_cancelled(
            conn, merchant_id=target.merchant_id, external_id=action.subscription, at=action.at
        )
        return {**out, "status": "recorded", "membership_id": view["id"], "state": view["state"]}
    except NotFound:
        return {**out, "status": "ignored", "reason": f"no membership has subscription {action.subscription}"}


def _earn(conn: Connection, target: Target, action: Earn) -> dict[str, Any]:
    event_id = str(action.event["id"])
    prior = events_repo.get_event(conn, target.merchant_id, event_id)
    if prior is not None:
        return {
            "action": "purchase",
            "status": "ignored",
            "event_id": event_id,
            "member_id": prior["member_id"],
            "reason": f"{event_id} is already recorded",
        }
    if idempotency.get(conn, target.merchant_id, _cancelled_key(event_id)) is not None:
        return {
            "action": "purchase",
            "status": "ignored",
            "event_id": event_id,
            "reason": f"{event_id} was cancelled before its payment was delivered: it earns nothing",
        }
    customer = action.customer
    if customer is None or not (customer.email or customer.external_id):
        raise NoCustomer(f"{event_id} has no customer email or customer id: there is no member to credit")
    at = events.parse_event({**action.event, "member_id": "-"}).occurred_at
    member, _ = _member_for(conn, target, customer, at=at)
    result, created = events.record_event(
        conn, merchant_id=target.merchant_id, body={**action.event, "member_id": member["id"]}
    )
    out = {"action": "purchase", "event_id": event_id, "member_id": member["id"]}
    if not created:  # recorded by a concurrent delivery since we looked
        return {**out, "status": "ignored", "reason": f"{event_id} is already recorded"}
    return {**out, "status": "recorded", "points": result["points"]}


def _cancelled_key(event_id: str) -> str:
    return f"cancelled-before-paid:{event_id}"[:255]


def _remember_cancelled(conn: Connection, merchant_id: str, event_id: str) -> None:
    """A platform's cancel of an order Patron has not recorded: either it was never paid, or its
    payment's webhook is still on its way (deliveries come in any order). Kept with the
    merchant's idempotency keys, so that the payment, when it comes, is not credited."""
    idempotency.claim(
        conn,
        merchant_id=merchant_id,
        key=_cancelled_key(event_id),
        method="POST",
        path="integrations",
        body_hash="",
        status_code=200,
        response={"cancelled": event_id},
        created_at=utcnow(),
    )


def _reverse(conn: Connection, target: Target, action: Reverse) -> dict[str, Any]:
    body = dict(action.event)
    kind, event_id, refers_to = str(body["type"]), str(body["id"]), str(body["refers_to"])
    out = {"action": kind, "event_id": event_id, "refers_to": refers_to}
    prior = events_repo.get_event(conn, target.merchant_id, event_id)
    if prior is not None:
        return {**out, "status": "ignored", "reason": f"{event_id} is already recorded"}
    orig = events_repo.get_event(conn, target.merchant_id, refers_to)
    if orig is None:
        if kind == "cancel":  # remembered: the order's payment, if delivered later, earns nothing
            _remember_cancelled(conn, target.merchant_id, refers_to)
        if kind == "cancel" or action.optional:
            return {
                **out,
                "status": "ignored",
                "reason": f"{refers_to} was never recorded: nothing to {kind}",
            }
        raise NotRecorded(f"{refers_to} is not recorded (yet): nothing to refund")
    left = _left(conn, target.merchant_id, orig["id"])
    if isinstance(body.get("items"), list):
        asked = {str(i["id"]) for i in body["items"]}
        # a line not in the purchase is left to record_event to refuse
        nothing_left = asked <= left.keys() and all(left[line_id][0] == 0 for line_id in asked)
    else:
        nothing_left = all(q == 0 for q, _ in left.values())
    amount_left = sum(a for _, a in left.values())
    if "amount" in body and not nothing_left:
        if amount_left == 0:
            nothing_left = True
        body["amount"] = min(int(body["amount"]), amount_left)
    if nothing_left:
        return {**out, "status": "ignored", "reason": f"{refers_to} is already fully reversed"}
    result, created = events.record_event(
        conn, merchant_id=target.merchant_id, body={**body, "member_id": orig["member_id"]}
    )
    if not created:
        return {**out, "status": "ignored", "reason": f"{event_id} is already recorded"}
    return {**out, "status": "recorded", "member_id": orig["member_id"], "points": result["points"]}


def _left(conn: Connection, merchant_id: str, event_id: str) -> dict[str, tuple[int, int]]:
    """Per line of a recorded purchase: the quantity and eligible amount not yet reversed."""
    back = {r["line_id"]: r for r in events_repo.reversed_lines(conn, merchant_id, event_id)}
    out = {}
    for line in events_repo.lines_of(conn, merchant_id, event_id):
        done = back.get(line["line_id"])
        quantity = int(line["quantity"]) - (int(done["quantity"]) if done else 0)
        amount = int(line["amount"]) - (int(done["amount"]) if done else 0)
        out[str(line["line_id"])] = (quantity, amount)
    return out


def _member_for(
    conn: Connection, target: Target, customer: Customer, *, at: datetime | None
) -> tuple[dict[str, Any], bool]:
    """The program's member for ``customer`` (by email, then by external id), or a new one."""
    member = _find_member(conn, target, customer)
    if member is not None:
        return member, False
    now = utcnow()
    try:
        data = MemberCreate(
            program_id=target.program_id,
            email=customer.email,
            external_id=customer.external_id,
            name=(customer.name or "").strip()[:200] or None,
            enrolled_at=min(at, now) if at else now,
        )
    except ValidationError as exc:
        problems = _errors(exc)
        raise InvalidInput(
            "the customer cannot be enrolled: " + "; ".join(f"{p['loc']}: {p['msg']}" for p in problems),
            errors=problems,
        )
    try:
        return members.enrol(conn, merchant_id=target.merchant_id, data=data), True
    except DuplicateMember:  # enrolled by a concurrent delivery since we looked
        member = _find_member(conn, target, customer)
        if member is None:
            raise
        return member, False


def _find_member(conn: Connection, target: Target, customer: Customer) -> dict[str, Any] | None:
    for key, value in (("email", customer.email), ("external_id", customer.external_id)):
        if value:
            found = members.find(
                conn, merchant_id=target.merchant_id, program_id=target.program_id, limit=1, **{key: value}
            )
            if found:
                return found[0]
    return None


def list_deliveries(
    conn: Connection,
    *,
    merchant_id: str,
    integration_id: str,
    limit: int = 50,
    cursor: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """The integration's inbox, newest first: what each delivery did, or why it failed."""
    if repo.get_integration(conn, merchant_id, integration_id) is None:
        raise NotFound(f"integration {integration_id} not found")
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", field="status")
    after = decode_cursor(cursor) if cursor else None
    rows = repo.list_deliveries(conn, merchant_id, integration_id, limit=limit, after=after, status=status)
    more = len(rows) > limit
    rows = rows[:limit]
    data = [
        {
            "delivery_id": r["delivery_id"],
            "topic": r["topic"],
            "status": r["status"],
            "error": r["error"],
            "outcome": r["outcome"],
            "attempts": r["attempts"],
            "received_at": r["received_at"],
            "updated_at": r["updated_at"],
        }
        for r in rows
    ]
    next_cursor = encode_cursor(rows[-1]["received_at"], rows[-1]["delivery_id"]) if more and rows else None
    return {"data": data, "next_cursor": next_cursor, "has_more": more}
