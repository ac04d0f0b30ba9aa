"""Paid membership: plans, billing periods and the state of a membership at any instant.

A **plan** has a fee (integer minor units of its currency), an interval (``lifetime``, ``year`` or
``month``), an optional trial (``trial_days``) and a grace period (``grace_days``). A membership
of a plan moves through these states:

* ``trialing``: from the start until the trial ends, before any payment;
* ``active``: paid; a periodic plan is paid through the end of its current billing period, a
  lifetime plan for good;
* ``past_due``: a renewal (or the first payment after a trial) is due and unpaid; the member has
  ``grace_days`` to pay;
* ``lapsed``: the grace period ran out without a payment (final);
* ``cancelled``: renewal was stopped; access runs to the end of the period already paid (or of the
  trial), then ends (final).

Billing periods count calendar months or years from the **anchor**, the start of the first paid
period: period ``k`` runs from ``anchor + k`` intervals to ``anchor + k + 1`` intervals, computed
from the anchor every time so that a membership started on the 31st renews on the last day of
shorter months and returns to the 31st afterwards (never drifting).

Invariants
----------
1. The state is a pure function of the membership record and the instant: reads as of any time
   need no job to have run; the ``memberships`` job only writes the history down.
2. Each payment pays exactly one period, for exactly the plan's fee in the plan's currency, so
   the sum of a membership's payments equals the fees charged (``fee * periods_paid``).
3. A lifetime membership, once paid, never lapses.
4. ``lapsed`` and ``cancelled`` are final: a new membership starts over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from patron.domain.errors import Conflict, InvalidInput
from patron.domain.expiry import add_months


class State(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELLED = "cancelled"
    LAPSED = "lapsed"


class Interval(StrEnum):
    LIFETIME = "lifetime"
    YEAR = "year"
    MONTH = "month"


FINAL = frozenset({State.CANCELLED, State.LAPSED})


class MembershipConflict(Conflict):
    code = "membership-conflict"
    title = "The membership's state does not allow this"


class PaymentMismatch(InvalidInput):
    code = "payment-mismatch"
    title = "The payment does not match the plan's fee"


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    name: str
    fee: int
    currency: str
    interval: Interval
    trial_days: int = 0
    grace_days: int = 0
    tier: str | None = None
    benefits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Membership:
    """What is stored of a membership; everything else is derived.

    ``anchor`` is the start of the first paid period (``None`` before the first payment);
    ``periods_paid`` counts paid periods; ``cancelled_at`` is when renewal was stopped.
    """

    interval: Interval
    started_at: datetime
    trial_ends_at: datetime | None = None
    anchor: datetime | None = None
    periods_paid: int = 0
    cancelled_at: datetime | None = None
    grace_days: int = 0


def period_boundary(anchor: datetime, interval: Interval, k: int) -> datetime:
    """The start of billing period ``k`` (0-based) of a periodic plan, counted from ``anchor``."""
    if interval == Interval.LIFETIME:
        raise ValueError("a lifetime plan has no billing periods")
    return add_months(anchor, k * (12 if interval == Interval.YEAR else 1))


def paid_through(m: Membership) -> datetime | None:
    """When the paid access ends: ``None`` for a paid lifetime membership (never) or before any
    payment; else the end of the last paid period."""
    if m.anchor is None or m.periods_paid == 0 or m.interval == Interval.LIFETIME:
        return None
    return period_boundary(m.anchor, m.interval, m.periods_paid)


def access_end(m: Membership) -> datetime | None:
    """When the plan's benefits stop if nothing more is paid; ``None``: never (paid lifetime).

    A cancellation stops renewal, not the period already paid for: access runs to its end. A
    lifetime membership has no period, so cancelling it ends access at once.
    """
    if m.periods_paid == 0:
        return m.trial_ends_at if m.trial_ends_at is not None else m.started_at
    if m.interval == Interval.LIFETIME:
        return m.cancelled_at
    return paid_through(m)


def due_at(m: Membership) -> datetime | None:
    """When the next payment is due (the end of the trial or of the paid periods), or ``None``
    when nothing is ever due again (paid lifetime, cancelled)."""
    if m.cancelled_at is not None:
        return None
    if m.periods_paid == 0:
        return m.trial_ends_at if m.trial_ends_at is not None else m.started_at
    return paid_through(m)


def lapse_at(m: Membership) -> datetime | None:
    """When the membership lapses if the payment due is never made (``None``: never)."""
    due = due_at(m)
    return None if due is None else due + timedelta(days=m.grace_days)


def state_at(m: Membership, at: datetime) -> State:
    """The membership's state at ``at`` (see the module docstring)."""
    if m.cancelled_at is not None and at >= m.cancelled_at:
        return State.CANCELLED
    if m.trial_ends_at is not None and (m.anchor is None or at < m.anchor):
        if at < m.trial_ends_at:
            return State.TRIALING
        if m.anchor is not None:  # the trial ended unpaid and was paid (within grace) at the anchor
            return State.PAST_DUE
    due = due_at(m)
    if due is None or at < due:
        return State.ACTIVE
    if at < due + timedelta(days=m.grace_days):
        return State.PAST_DUE
    return State.LAPSED


def has_access(m: Membership, at: datetime) -> bool:
    """Whether the plan's tier and benefits apply at ``at``: while trialing or active, and after
    a cancellation until the end of what was already paid (or of the trial)."""
    if at < m.started_at:
        return False
    state = state_at(m, at)
    if state == State.CANCELLED:
        end = access_end(m)
        return end is None or at < end
    return state in (State.TRIALING, State.ACTIVE)


def transitions(m: Membership, *, until: datetime) -> list[tuple[datetime, State, State]]:
    """Every state change from the start to ``until`` inclusive, as ``(at, from, to)``, each at
    the instant it takes effect. A pure replay of :func:`state_at` at its breakpoints."""
    points = {m.started_at}
    due = due_at(m)
    if m.trial_ends_at is not None:
        points.add(m.trial_ends_at)
    if due is not None:
        points.update({due, due + timedelta(days=m.grace_days)})
    if m.cancelled_at is not None:
        points.add(m.cancelled_at)
    if m.anchor is not None:
        points.add(m.anchor)
    out: list[tuple[datetime, State, State]] = []
    state = state_at(m, m.started_at)
    for at in sorted(p for p in points if m.started_at < p <= until):
        now = state_at(m, at)
        if now != state:
            out.append((at, state, now))
            state = now
    return out


def start(plan: Plan, *, at: datetime, trial: bool) -> Membership:
    """A new membership of ``plan`` starting at ``at``, in its trial when asked (the plan must
    offer one); without a trial, the first payment must come with it."""
    if trial and plan.trial_days <= 0:
        raise InvalidInput(f"plan {plan.id!r} has no trial", field="trial")
    return Membership(
        interval=plan.interval,
        started_at=at,
        trial_ends_at=at + timedelta(days=plan.trial_days) if trial else None,
        grace_days=plan.grace_days,
    )


@dataclass(frozen=True, slots=True)
class Payment:
    """What one payment paid for: the period ``[start, end)`` (``end`` None: for good)."""

    period: int
    start: datetime
    end: datetime | None


def pay(
    m: Membership, plan: Plan, *, amount: int, currency: str, paid_at: datetime, renewed: bool = False
) -> tuple[Membership, Payment]:
    """Record a payment of the next period. It must be exactly the plan's fee in its currency;
    a final (lapsed or cancelled) membership and a paid lifetime one take no payment, except
    that ``renewed`` (a payment provider says the subscription renewed: its retries, not the
    plan's grace days, decide when an unpaid one ends) also pays a lapsed one.

    The first payment anchors the billing periods at ``paid_at`` (so a trial converts to active
    at once; without a trial it is the start itself); later ones pay the next period in turn,
    so a late payment covers the period that was overdue.
    """
    if currency != plan.currency:
        raise PaymentMismatch(
            f"plan {plan.id!r} is billed in {plan.currency}, not {currency}", field="currency"
        )
    if amount != plan.fee:
        raise PaymentMismatch(
            f"plan {plan.id!r} costs {plan.fee} minor units of {plan.currency} per "
            f"{'membership' if plan.interval == Interval.LIFETIME else plan.interval.value}; got {amount}",
            field="amount",
        )
    if paid_at < m.started_at:
        raise InvalidInput("paid_at is before the membership started", field="paid_at")
    opening = m.periods_paid == 0 and m.trial_ends_at is None and paid_at == m.started_at
    state = state_at(m, paid_at)
    if state in FINAL and not opening and not (renewed and state == State.LAPSED):
        raise MembershipConflict(f"the membership is {state.value}; start a new one")
    if m.interval == Interval.LIFETIME and m.periods_paid > 0:
        raise MembershipConflict("this lifetime membership is already paid")
    anchor = m.anchor if m.anchor is not None else paid_at
    k = m.periods_paid
    if m.interval == Interval.LIFETIME:
        payment = Payment(0, anchor, None)
    else:
        payment = Payment(
            k, period_boundary(anchor, m.interval, k), period_boundary(anchor, m.interval, k + 1)
        )
    return replace(m, anchor=anchor, periods_paid=k + 1), payment


def cancel(m: Membership, *, at: datetime) -> Membership:
    """Stop renewal at ``at``: access runs to the end of the period already paid (or the trial),
    then the membership is over. A final membership cannot be cancelled again."""
    if m.cancelled_at is not None:  # an earlier time would move the cancellation back
        raise MembershipConflict(f"the membership was already cancelled at {m.cancelled_at.isoformat()}")
    if at < m.started_at:
        raise InvalidInput("a membership cannot be cancelled before it started", field="at")
    state = state_at(m, at)
    if state in FINAL:
        raise MembershipConflict(f"the membership is already {state.value}")
    return replace(m, cancelled_at=at)


def fees_charged(plan_fee: int, periods_paid: int) -> int:
    """What the member was charged in all: one fee per paid period."""
    return plan_fee * periods_paid


def paid_during(m: Membership, start: datetime, end: datetime) -> bool:
    """Whether a paid period of the membership overlaps ``[start, end)`` (trials do not count)."""
    if m.periods_paid == 0 or m.anchor is None or m.anchor >= end:
        return False
    finish = access_end(m)
    return finish is None or finish > start
