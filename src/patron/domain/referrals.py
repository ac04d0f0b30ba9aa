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
VELOCITY_ADDRESS = "velocity_address"
EXISTING_CUSTOMER = "existing_customer"
ADVOCATE_ORDER = "advocate_placed_order"

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
    devices: frozenset[str] = frozenset()  # device ids and IP addresses seen on their orders
    addresses: frozenset[str] = frozenset()  # normalised postal addresses


def normalise_address(address: str | None) -> str | None:
    """An address compared loosely: case folded, punctuation dropped, spaces collapsed."""
    if not address:
        return None
    kept = "".join(ch if ch.isalnum() else " " for ch in address.casefold())
    return " ".join(kept.split()) or None


@dataclass(frozen=True, slots=True)
class Order:
    """Who placed the qualifying order, as far as the order says."""

    email: str | None = None
    devices: frozenset[str] = frozenset()
    address: str | None = None


def advocate_placed(order: Order, referrer: Party) -> bool:
    """True if the referee's qualifying order was placed by the referrer: with the referrer's
    email, from a device or IP address seen on the referrer's orders, or shipped to the
    referrer's address."""
    mine = email_identity(order.email)
    if mine is not None and mine == email_identity(referrer.email):
        return True
    if order.devices & referrer.devices:
        return True
    address = normalise_address(order.address)
    return address is not None and address in referrer.addresses


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
    order: Order | None = None,
    address_completed_at: Iterable[datetime] = (),
) -> str | None:
    """The first check the referral trips (self-referral, an order the advocate placed,
    velocity per advocate and per referee address, existing customer), or None."""
    reason = self_referral(referee, referrer)
    if reason:
        return reason
    if order is not None and advocate_placed(order, referrer):
        return ADVOCATE_ORDER
    if too_fast(referrer_completed_at, at, max_per_week):
        return VELOCITY
    if referee.addresses and too_fast(address_completed_at, at, max_per_week):
        return VELOCITY_ADDRESS
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
