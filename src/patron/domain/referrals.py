"""Referral fraud checks and referral milestones: pure rules, no storage.

A referral that trips a check is not credited; it waits in a review queue for a person to
approve or reject it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

SELF_EMAIL = "self_referral_email"
SELF_PHONE = "self_referral_phone"
SELF_PAYMENT = "self_referral_payment"
VELOCITY = "velocity"
EXISTING_CUSTOMER = "existing_customer"

_GMAIL = {"gmail.com", "googlemail.com"}


def email_identity(email: str | None) -> str | None:
    """The mailbox an address delivers to: case folded, ``+tag`` dropped, and for Gmail the dots
    in the local part ignored (``J.Doe+x@googlemail.com`` is ``jdoe@gmail.com``)."""
    if not email or "@" not in email:
        return None
    local, _, domain = email.strip().casefold().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in _GMAIL:
        domain, local = "gmail.com", local.replace(".", "")
    return f"{local}@{domain}" if local and domain else None


@dataclass(frozen=True, slots=True)
class Party:
    """What the checks know of one side of a referral."""

    email: str | None
    phone: str | None
    fingerprints: frozenset[str] = frozenset()


def self_referral(referee: Party, referrer: Party) -> str | None:
    """Why the two sides look like the same person, or None."""
    mine = email_identity(referee.email)
    if mine is not None and mine == email_identity(referrer.email):
        return SELF_EMAIL
    if referee.phone and referee.phone == referrer.phone:
        return SELF_PHONE
    if referee.fingerprints & referrer.fingerprints:
        return SELF_PAYMENT
    return None


def too_fast(completed_at: Iterable[datetime], at: datetime, max_per_week: int | None) -> bool:
    """True if this completion would make more than ``max_per_week`` in the 7 days up to ``at``."""
    if max_per_week is None:
        return False
    since = at - timedelta(days=7)
    recent = sum(1 for t in completed_at if since < t <= at)
    return recent + 1 > max_per_week


def existing_customer(enrolled_at: datetime, at: datetime, max_days: int | None) -> bool:
    """True if the referee enrolled more than ``max_days`` before this first purchase."""
    return max_days is not None and at - enrolled_at > timedelta(days=max_days)


def review_reason(
    *,
    referee: Party,
    referrer: Party,
    referee_enrolled_at: datetime,
    referrer_completed_at: Iterable[datetime],
    at: datetime,
    max_per_week: int | None,
    max_days_to_first_purchase: int | None,
) -> str | None:
    """The first check the referral trips (self-referral, velocity, existing customer), or None."""
    reason = self_referral(referee, referrer)
    if reason:
        return reason
    if too_fast(referrer_completed_at, at, max_per_week):
        return VELOCITY
    if existing_customer(referee_enrolled_at, at, max_days_to_first_purchase):
        return EXISTING_CUSTOMER
    return None


def milestones_due(
    milestones: Iterable[tuple[int, int]], completed: int, credited: Iterable[int]
) -> list[tuple[int, int]]:
    """The ``(count, points)`` milestones ``completed`` referrals have reached and that were never
    credited, smallest count first."""
    done = set(credited)
    return sorted((c, p) for c, p in milestones if c <= completed and c not in done)
