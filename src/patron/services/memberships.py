"""Paid membership: start (with a trial or a first payment), payments that renew, cancellation,
the ``memberships`` job, and the member's store credit.

Fees are money, kept in ``membership_payments`` (minor units with a currency), never in the
points ledger. A plan's tier is granted through the tier-assignment floors of ``services/tiers``:
each trial and each paid period writes one assignment that ends when that period ends, so a
renewal extends the tier and a lapse lets it go, without any row being updated.

For payment providers (Stripe ``invoice.paid``, ``customer.subscription.deleted``):
:func:`payment_received` and :func:`subscription_cancelled` find the membership by its
``external_id`` (the provider's subscription id, set when the membership starts) and are
idempotent by the provider's payment id / the cancellation already recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from patron.domain import memberships as rules
from patron.domain.errors import Conflict, IdempotencyConflict, InvalidInput, NotFound
from patron.services import outbox
from patron.services.clock import utcnow
from patron.services.membership_settings import plans_of
from patron.services.programs import get_program
from patron.storage import members as members_repo
from patron.storage import memberships as repo
from patron.storage import tiers as tiers_repo
from patron.storage.ids import new_id

BATCH = 500
LIVE = (rules.State.TRIALING.value, rules.State.ACTIVE.value, rules.State.PAST_DUE.value)


class InsufficientCredit(Conflict):
    code = "insufficient-store-credit"
    title = "Not enough store credit"


class UnknownPlan(InvalidInput):
    code = "unknown-plan"
    title = "No such membership plan in the program"


def _plans(conn: Connection, merchant_id: str, program_id: str, at: datetime) -> dict[str, rules.Plan]:
    return plans_of(get_program(conn, merchant_id=merchant_id, program_id=program_id, at=at))


def record_of(row: dict[str, Any]) -> rules.Membership:
    return rules.Membership(
        interval=rules.Interval(row["interval"]),
        started_at=row["started_at"],
        trial_ends_at=row["trial_ends_at"],
        anchor=row["anchor_at"],
        periods_paid=row["periods_paid"],
        cancelled_at=row["cancelled_at"],
        grace_days=row["grace_days"],
    )


def _plan_of(conn: Connection, row: dict[str, Any]) -> rules.Plan:
    """The plan as agreed when the membership started (fee, currency, interval, grace), with its
    current name, tier and benefits (or the stored terms alone if the plan was since removed)."""
    found = _plans(conn, row["merchant_id"], row["program_id"], utcnow()).get(row["plan_id"])
    return rules.Plan(
        id=row["plan_id"],
        name=found.name if found else row["plan_id"],
        fee=row["fee"],
        currency=row["currency"],
        interval=rules.Interval(row["interval"]),
        trial_days=found.trial_days if found else 0,
        grace_days=row["grace_days"],
        tier=found.tier if found else None,
        benefits=found.benefits if found else (),
    )


def membership_view(row: dict[str, Any], plan: rules.Plan, *, as_of: datetime) -> dict[str, Any]:
    m = record_of(row)
    state = rules.state_at(m, as_of)
    period: dict[str, Any] | None = None
    if m.periods_paid and m.anchor is not None and m.interval != rules.Interval.LIFETIME:
        period = {
            "start": rules.period_boundary(m.anchor, m.interval, m.periods_paid - 1),
            "end": rules.paid_through(m),
        }
    due = rules.due_at(m)
    access = rules.has_access(m, as_of)
    return {
        "id": row["id"],
        "member_id": row["member_id"],
        "program_id": row["program_id"],
        "plan": {"id": plan.id, "name": plan.name, "interval": plan.interval.value},
        "state": state.value,
        "as_of": as_of,
        "started_at": m.started_at,
        "trial_ends_at": m.trial_ends_at,
        "current_period": period,
        "paid_through": rules.paid_through(m),
        "next_payment_due": due if state not in rules.FINAL else None,
        "lapses_at": rules.lapse_at(m) if state not in rules.FINAL else None,
        "cancelled_at": m.cancelled_at,
        "access_ends_at": rules.access_end(m),
        "active": access,
        "tier": plan.tier if access else None,
        "benefits": list(plan.benefits) if access else [],
        "fees": {
            "currency": plan.currency,
            "fee": plan.fee,
            "periods_paid": m.periods_paid,
            "charged": rules.fees_charged(plan.fee, m.periods_paid),
        },
        "external_id": row["external_id"],
        "created_at": row["created_at"],
    }


def _event(
    row: dict[str, Any], kind: str, from_state: str | None, to_state: str, at: datetime, **detail: Any
) -> dict[str, Any]:
    return {
        "merchant_id": row["merchant_id"],
        "id": new_id("mse"),
        "membership_id": row["id"],
        "member_id": row["member_id"],
        "kind": kind,
        "from_state": from_state,
        "to_state": to_state,
        "at": at,
        "detail": detail,
        "recorded_at": utcnow(),
    }


def _grant(
    conn: Connection, row: dict[str, Any], plan: rules.Plan, start: datetime, end: datetime | None, why: str
) -> str | None:
    """A tier floor for ``[start, end)`` when the plan grants a tier; its id."""
    if plan.tier is None or (end is not None and end <= start):
        return None
    assignment_id = new_id("tas")
    tiers_repo.insert_assignment(
        conn,
        {
            "merchant_id": row["merchant_id"],
            "id": assignment_id,
            "member_id": row["member_id"],
            "tier_id": plan.tier,
            "reason": f"membership {plan.name} ({row['id']}): {why}",
            "starts_at": start,
            "ends_at": end,
            "created_at": utcnow(),
            "held": False,  # the tier lasts while the membership does, not a period longer
        },
    )
    return assignment_id


def _membership(
    conn: Connection, merchant_id: str, membership_id: str, *, lock: bool = False
) -> dict[str, Any]:
    row = repo.get_membership(conn, merchant_id, membership_id, lock=lock)
    if row is None:
        raise NotFound(f"membership {membership_id} not found")
    return row


def start_membership(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    plan_id: str,
    trial: bool = False,
    started_at: datetime | None = None,
    payment: dict[str, Any] | None = None,
    external_id: str | None = None,
) -> dict[str, Any]:
    """Start ``member_id``'s membership of ``plan_id``: in its trial, or with the first payment
    (``{amount, currency, paid_at, external_ref}``), which a plan without a trial requires.
    ``started_at`` (default now, never in the future) lets memberships from before Patron be
    brought in. A member has one membership in force per plan; after a lapse or cancellation
    a new membership (a new id, its own history) can start."""
    member = members_repo.get_member(conn, merchant_id, member_id)
    if member is None:
        raise NotFound(f"member {member_id} not found")
    now = utcnow()
    at = started_at or now
    if not trial and payment is not None:
        if started_at is not None and started_at != payment["paid_at"]:
            raise InvalidInput(
                "without a trial a membership starts with its first payment: leave started_at out "
                "or make it payment.paid_at",
                field="started_at",
            )
        at = payment["paid_at"]
    if at > now:
        field = "started_at" if trial or payment is None else "payment.paid_at"
        raise InvalidInput(f"{field} cannot be in the future", field=field)
    plans = _plans(conn, merchant_id, member["program_id"], now)
    plan = plans.get(plan_id)
    if plan is None:
        known = ", ".join(sorted(plans)) or "none"
        raise UnknownPlan(f"the program has no membership plan {plan_id!r} (plans: {known})", field="plan_id")
    if not trial and payment is None:
        raise InvalidInput(
            f"plan {plan_id!r} starts with its first payment: send `payment` (or `trial`: true)",
            field="payment",
        )
    m = rules.start(plan, at=at, trial=trial)
    if payment is not None and (seen := repo.payment_by_ref(conn, merchant_id, payment["external_ref"])):
        earlier = _membership(conn, merchant_id, seen["membership_id"])
        same = (
            earlier["member_id"],
            earlier["plan_id"],
            seen["amount"],
            seen["currency"],
            seen["paid_at"],
        ) == (
            member_id,
            plan_id,
            payment["amount"],
            payment["currency"],
            payment["paid_at"],
        )
        if not same:
            raise IdempotencyConflict(
                f"payment {payment['external_ref']!r} was recorded with different details"
            )
        return membership_view(earlier, plan, as_of=now)  # the same start again: a replay
    if payment is not None:  # check it before writing anything
        rules.pay(m, plan, amount=payment["amount"], currency=payment["currency"], paid_at=payment["paid_at"])
    if external_id is not None:
        other = repo.membership_by_external_id(conn, merchant_id, external_id)
        if other is not None:
            raise InvalidInput(
                f"external_id {external_id!r} already belongs to membership {other['id']}",
                field="external_id",
            )
    values = {
        "interval": plan.interval.value,
        "fee": plan.fee,
        "currency": plan.currency,
        "grace_days": plan.grace_days,
        # the state as of the last change written down (here, the start): the `memberships` job
        # writes each later change (trial over, payment due, lapse) at the time it took effect,
        # also for a membership recorded after the fact
        "state": (rules.State.TRIALING if trial else rules.State.ACTIVE).value,
        "started_at": m.started_at,
        "trial_ends_at": m.trial_ends_at,
        "anchor_at": None,
        "periods_paid": 0,
        "paid_through": None,
        "cancelled_at": None,
        "external_id": external_id,
        "updated_at": now,
    }
    repo.lock_member(conn, merchant_id, member_id)
    existing = repo.membership_by_plan(conn, merchant_id, member_id, plan_id)
    if existing is not None:
        before = record_of(existing)
        state = rules.state_at(before, now)
        if state not in rules.FINAL:
            raise rules.MembershipConflict(
                f"member {member_id} already has a {state.value} membership of plan {plan_id!r} "
                f"({existing['id']})"
            )
        ended = rules.access_end(before)
        if ended is not None and at < ended:
            raise rules.MembershipConflict(
                f"the member's {state.value} membership of plan {plan_id!r} ({existing['id']}) runs "
                f"until {ended.isoformat()}; a new one can start from then"
            )
    row = {
        "merchant_id": merchant_id,
        "id": new_id("msh"),
        "member_id": member_id,
        "program_id": member["program_id"],
        "plan_id": plan_id,
        "created_at": now,
        **values,
    }
    repo.insert_membership(conn, row)
    first = rules.State.TRIALING if trial else rules.State.ACTIVE
    granted = None
    if trial:
        granted = _grant(conn, row, plan, m.started_at, m.trial_ends_at, "trial")
    repo.insert_events(
        conn, [_event(row, "started", None, first.value, m.started_at, trial=trial, assignment_id=granted)]
    )
    if payment is not None:
        return _apply_payment(conn, row, plan, **payment)
    return membership_view(row, plan, as_of=now)


def _apply_payment(
    conn: Connection,
    row: dict[str, Any],
    plan: rules.Plan,
    *,
    amount: int,
    currency: str,
    paid_at: datetime,
    external_ref: str,
    renewed: bool = False,
) -> dict[str, Any]:
    now = utcnow()
    if paid_at > now:
        raise InvalidInput("paid_at cannot be in the future", field="paid_at")
    before = record_of(row)
    after, paid = rules.pay(before, plan, amount=amount, currency=currency, paid_at=paid_at, renewed=renewed)
    merchant_id = row["merchant_id"]
    repo.insert_payment(
        conn,
        {
            "merchant_id": merchant_id,
            "id": new_id("msp"),
            "membership_id": row["id"],
            "member_id": row["member_id"],
            "amount": amount,
            "currency": currency,
            "paid_at": paid_at,
            "period": paid.period,
            "period_start": paid.start,
            "period_end": paid.end,
            "external_ref": external_ref,
            "created_at": now,
        },
    )
    changes = {
        "anchor_at": after.anchor,
        "periods_paid": after.periods_paid,
        "paid_through": rules.paid_through(after),
        "state": rules.state_at(after, paid_at).value,
        "updated_at": now,
    }
    repo.update_membership(conn, merchant_id, row["id"], **changes)
    row = {**row, **changes}
    granted = _grant(conn, row, plan, max(paid.start, paid_at), paid.end, f"period {paid.period + 1} paid")
    if paid.period > 0:  # the first payment starts the membership; later ones renew it
        outbox.emit(
            conn,
            merchant_id=merchant_id,
            type=outbox.MEMBERSHIP_RENEWED,
            member_id=row["member_id"],
            occurred_at=paid_at,
            data={
                "membership_id": row["id"],
                "plan_id": plan.id,
                "period_start": paid.start.isoformat(),
                "period_end": paid.end.isoformat() if paid.end else None,
                "amount": amount,
                "currency": currency,
            },
        )
    repo.insert_events(
        conn,
        [
            _event(
                row,
                f"payment:{paid.period}",
                rules.state_at(before, paid_at).value,
                rules.state_at(after, paid_at).value,
                paid_at,
                amount=amount,
                currency=currency,
                external_ref=external_ref,
                period_start=paid.start.isoformat(),
                period_end=paid.end.isoformat() if paid.end else None,
                assignment_id=granted,
            )
        ],
    )
    return membership_view(row, plan, as_of=now)


def record_payment(
    conn: Connection,
    *,
    merchant_id: str,
    membership_id: str,
    amount: int,
    currency: str,
    paid_at: datetime,
    external_ref: str,
    renewed: bool = False,
) -> tuple[dict[str, Any], bool]:
    """A payment of the membership's next period: ``(view, created)``. The same ``external_ref``
    again with the same payment is a replay (``created`` False, nothing written); with another
    payment it is :class:`IdempotencyConflict`. ``renewed``: see ``domain.memberships.pay``."""
    row = _membership(conn, merchant_id, membership_id, lock=True)
    plan = _plan_of(conn, row)
    seen = repo.payment_by_ref(conn, merchant_id, external_ref)
    if seen is not None:
        same = (seen["membership_id"], seen["amount"], seen["currency"], seen["paid_at"]) == (
            membership_id,
            amount,
            currency,
            paid_at,
        )
        if not same:
            raise IdempotencyConflict(f"payment {external_ref!r} was recorded with different details")
        return membership_view(row, plan, as_of=utcnow()), False
    view = _apply_payment(
        conn,
        row,
        plan,
        amount=amount,
        currency=currency,
        paid_at=paid_at,
        external_ref=external_ref,
        renewed=renewed,
    )
    return view, True


def payment_received(
    conn: Connection,
    *,
    merchant_id: str,
    external_id: str,
    amount: int,
    currency: str,
    paid_at: datetime,
    external_ref: str,
) -> tuple[dict[str, Any], bool]:
    """For payment providers (Stripe ``invoice.paid``): a payment for the membership whose
    ``external_id`` is the provider's subscription id; idempotent by ``external_ref`` (the
    provider's invoice or charge id). Raises :class:`NotFound` for an unknown subscription.
    A renewal the provider collected after the plan's grace days (its retries take their time)
    still renews a membership that was not cancelled."""
    row = repo.membership_by_external_id(conn, merchant_id, external_id)
    if row is None:
        raise NotFound(f"no membership has external_id {external_id!r}")
    return record_payment(
        conn,
        merchant_id=merchant_id,
        membership_id=row["id"],
        amount=amount,
        currency=currency,
        paid_at=paid_at,
        external_ref=external_ref,
        renewed=True,
    )


def cancel_membership(
    conn: Connection, *, merchant_id: str, membership_id: str, at: datetime | None = None
) -> dict[str, Any]:
    """Stop renewal now (or at ``at``, not in the future): the membership is ``cancelled`` and
    its benefits run to the end of the period already paid (a lifetime one ends at once)."""
    row = _membership(conn, merchant_id, membership_id, lock=True)
    plan = _plan_of(conn, row)
    now = utcnow()
    when = at or now
    if when > now:
        raise InvalidInput("a cancellation cannot be in the future", field="at")
    before = record_of(row)
    after = rules.cancel(before, at=when)
    changes = {"cancelled_at": when, "state": rules.State.CANCELLED.value, "updated_at": now}
    repo.update_membership(conn, merchant_id, membership_id, **changes)
    row = {**row, **changes}
    if before.interval == rules.Interval.LIFETIME and before.periods_paid:
        ids = [
            e["detail"].get("assignment_id")
            for e in repo.events_of(conn, merchant_id, [membership_id])
            if e["detail"].get("assignment_id")
        ]
        repo.end_assignments(conn, merchant_id, ids, when)
    repo.insert_events(
        conn,
        [
            _event(
                row,
                "cancelled",
                rules.state_at(before, when).value,
                rules.State.CANCELLED.value,
                when,
                access_ends_at=(end.isoformat() if (end := rules.access_end(after)) else None),
            )
        ],
    )
    return membership_view(row, plan, as_of=now)


def subscription_cancelled(
    conn: Connection, *, merchant_id: str, external_id: str, at: datetime | None = None
) -> dict[str, Any]:
    """For payment providers (Stripe ``customer.subscription.deleted``): cancel the membership
    whose ``external_id`` is the subscription id. Idempotent: an already cancelled (or lapsed)
    membership is returned as it is."""
    row = repo.membership_by_external_id(conn, merchant_id, external_id)
    if row is None:
        raise NotFound(f"no membership has external_id {external_id!r}")
    now = utcnow()
    if row["cancelled_at"] is not None or rules.state_at(record_of(row), at or now) in rules.FINAL:
        return membership_view(row, _plan_of(conn, row), as_of=now)
    return cancel_membership(conn, merchant_id=merchant_id, membership_id=row["id"], at=at)


def get_membership(
    conn: Connection, *, merchant_id: str, membership_id: str, as_of: datetime | None = None
) -> dict[str, Any]:
    """The membership as of ``as_of`` with its payments and recorded history."""
    row = _membership(conn, merchant_id, membership_id)
    at = as_of or utcnow()
    view = membership_view(row, _plan_of(conn, row), as_of=at)
    payments = [p for p in repo.payments_of(conn, merchant_id, membership_id) if p["paid_at"] <= at]
    view["fees"]["paid"] = sum(p["amount"] for p in payments)
    view["payments"] = [
        {
            "id": p["id"],
            "amount": p["amount"],
            "currency": p["currency"],
            "paid_at": p["paid_at"],
            "period_start": p["period_start"],
            "period_end": p["period_end"],
            "external_ref": p["external_ref"],
        }
        for p in payments
    ]
    view["history"] = [
        {"at": e["at"], "kind": e["kind"].split(":")[0], "from": e["from_state"], "to": e["to_state"]}
        for e in repo.events_of(conn, merchant_id, [membership_id])
        if e["at"] <= at
    ]
    return view


def list_memberships(
    conn: Connection, *, merchant_id: str, member_id: str, as_of: datetime | None = None
) -> list[dict[str, Any]]:
    if members_repo.get_member(conn, merchant_id, member_id) is None:
        raise NotFound(f"member {member_id} not found")
    at = as_of or utcnow()
    out = []
    for row in repo.memberships_of(conn, merchant_id, member_id):
        view = membership_view(row, _plan_of(conn, row), as_of=at)
        view["fees"]["paid"] = sum(
            p["amount"] for p in repo.payments_of(conn, merchant_id, row["id"]) if p["paid_at"] <= at
        )
        out.append(view)
    return out


# the memberships job ----------------------------------------------------------------------------


def run_memberships(
    engine: Engine,
    *,
    as_of: datetime,
    merchant_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Write down every state change (trial over, renewal due, lapse) that took effect by
    ``as_of``, each at the instant it took effect: ``(memberships changed, changes)``. A change
    already recorded is skipped, so a second run for the same time writes nothing."""
    changed = count = 0
    after: tuple[str, str] | None = None
    while True:
        with engine.begin() as conn:
            batch = repo.live_memberships(
                conn, states=LIVE, merchant_id=merchant_id, after=after, limit=BATCH
            )
            if not batch:
                break
            by_merchant: dict[str, list[dict[str, Any]]] = {}
            for row in batch:
                by_merchant.setdefault(row["merchant_id"], []).append(row)
            new_rows: list[dict[str, Any]] = []
            states: list[dict[str, Any]] = []
            for m_id, rows in by_merchant.items():
                known = repo.recorded_states(conn, m_id, [r["id"] for r in rows])
                for row in rows:
                    moves = rules.transitions(record_of(row), until=as_of)
                    fresh = [mv for mv in moves if (row["id"], mv[2].value, mv[0]) not in known]
                    if not fresh:
                        continue
                    new_rows += [_event(row, "state", a.value, b.value, at) for at, a, b in fresh]
                    last = max(
                        [(at, b.value) for at, _, b in moves]
                        + [(at, s) for m, s, at in known if m == row["id"]]
                    )
                    states.append({"merchant_id": m_id, "id": row["id"], "state": last[1]})
            repo.insert_events(conn, new_rows)
            repo.set_states(conn, states, now=utcnow())
        changed += len(states)
        count += len(new_rows)
        after = (batch[-1]["merchant_id"], batch[-1]["id"])
        if progress:
            progress(len(batch))
    return changed, count


# store credit -----------------------------------------------------------------------------------


def store_credit(
    conn: Connection, *, merchant_id: str, member_id: str, as_of: datetime | None = None, limit: int = 100
) -> dict[str, Any]:
    """The member's store credit (money, per currency) and its newest entries."""
    if members_repo.get_member(conn, merchant_id, member_id) is None:
        raise NotFound(f"member {member_id} not found")
    entries = repo.credits_of(conn, merchant_id, member_id, as_of=as_of)
    return {
        "member_id": member_id,
        "balances": [
            {"currency": c, "amount": a}
            for c, a in sorted(repo.credit_balance(conn, merchant_id, member_id, as_of=as_of).items())
        ],
        "entries": [
            {
                "id": e["id"],
                "amount": e["amount"],
                "currency": e["currency"],
                "kind": e["kind"],
                "reason": e["reason"],
                "occurred_at": e["occurred_at"],
            }
            for e in entries[:limit]
        ],
    }


def adjust_store_credit(
    conn: Connection, *, merchant_id: str, member_id: str, amount: int, currency: str, reason: str
) -> dict[str, Any]:
    """Credit (positive) or spend / take back (negative) store credit; the balance in that
    currency never goes below zero."""
    member = members_repo.get_member(conn, merchant_id, member_id)
    if member is None:
        raise NotFound(f"member {member_id} not found")
    if amount == 0:
        raise InvalidInput("amount cannot be zero", field="amount")
    balance = repo.credit_balance(conn, merchant_id, member_id, lock=True).get(currency, 0)
    if balance + amount < 0:
        raise InsufficientCredit(
            f"the member has {balance} minor units of {currency} store credit; cannot take {-amount}"
        )
    now = utcnow()
    repo.insert_credits(
        conn,
        [
            {
                "merchant_id": merchant_id,
                "id": new_id("scr"),
                "member_id": member_id,
                "program_id": member["program_id"],
                "amount": amount,
                "currency": currency,
                "kind": "adjustment" if amount > 0 else "spend",
                "reason": reason,
                "source_ref": None,
                "occurred_at": now,
                "created_at": now,
            }
        ],
    )
    return store_credit(conn, merchant_id=merchant_id, member_id=member_id)


__all__ = [
    "adjust_store_credit",
    "cancel_membership",
    "get_membership",
    "list_memberships",
    "payment_received",
    "record_payment",
    "run_memberships",
    "start_membership",
    "store_credit",
    "subscription_cancelled",
]
