"""The points ledger: append-only, double-entry.

Chart of accounts
-----------------
Member accounts (one set per member):

* ``available``  points the member can spend now;
* ``pending``    points earned but not yet released (the program's pending period);
* ``reserved``   points held by a redemption that is neither redeemed nor cancelled;
* ``debt``       points the member owes after a refund took back more than they had.

Program accounts (each posting still names the member it concerns, so that every per-member
figure can be recomputed from postings alone):

* ``program:issued``       the counterpart of every earn and every reversal of an earn;
* ``program:redeemed``     points spent on rewards;
* ``program:expired``      points that expired (breakage);
* ``program:adjustments``  manual corrections;
* ``program:written_off``  shortfalls of refunds written off (the ``write_off`` return policy).

Invariants
----------
1. A :class:`Journal` is a set of :class:`Posting` whose ``amount`` values sum to zero, and no
   posting is zero. Checked when the journal is built, before anything is written.
2. Postings are never updated or deleted; a correction is a new journal.
3. A member's balance in an account is the sum of that account's postings. ``debt`` is a contra
   account: its raw amounts are negative holdings, and it is *shown* as a positive number owed
   (:func:`display_points`), so that "sum of ``points`` per account equals the balance" holds for
   the displayed figures too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from patron.domain.errors import InsufficientPoints, LedgerImbalance


class Account(StrEnum):
    AVAILABLE = "available"
    PENDING = "pending"
    RESERVED = "reserved"
    DEBT = "debt"
    ISSUED = "program:issued"
    REDEEMED = "program:redeemed"
    EXPIRED = "program:expired"
    ADJUSTMENTS = "program:adjustments"
    WRITTEN_OFF = "program:written_off"


MEMBER_ACCOUNTS = (Account.AVAILABLE, Account.PENDING, Account.RESERVED, Account.DEBT)


class JournalKind(StrEnum):
    EARN = "earn"
    MILESTONE = "milestone"
    REFERRAL = "referral"
    REFERRAL_REVOKED = "referral_revoked"
    REFUND = "refund"
    CANCEL = "cancel"
    ADJUSTMENT = "adjustment"
    RELEASE = "release"
    EXPIRY = "expiry"
    RESERVATION = "reservation"
    REDEMPTION = "redemption"
    CANCELLATION = "cancellation"
    LAPSE = "lapse"
    HOUSEHOLD_TRANSFER = "household_transfer"  # member available -> member available (pooling)


def display_points(account: str, amount: int) -> int:
    """The number shown for a posting: debt is shown as points owed (positive)."""
    return -amount if account == Account.DEBT else amount


@dataclass(frozen=True, slots=True)
class Posting:
    account: Account
    amount: int
    lot_id: str | None = None


@dataclass(frozen=True, slots=True)
class Journal:
    """A balanced set of postings. Raises :class:`LedgerImbalance` if it does not sum to zero."""

    kind: JournalKind
    postings: tuple[Posting, ...]
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.postings:
            raise LedgerImbalance("a journal needs at least two postings")
        if any(p.amount == 0 for p in self.postings):
            raise LedgerImbalance("a posting of zero points")
        total = sum(p.amount for p in self.postings)
        if total != 0:
            raise LedgerImbalance(f"journal {self.kind} sums to {total}, not 0")


@dataclass(frozen=True, slots=True)
class Balances:
    """A member's figures. All are derived from postings (see :func:`balances_from_postings`)."""

    available: int = 0
    pending: int = 0
    reserved: int = 0
    debt: int = 0
    lifetime_earned: int = 0
    expired: int = 0
    redeemed: int = 0

    def apply(self, postings: Iterable[Posting]) -> Balances:
        return balances_from_postings(postings, start=self)


def balances_from_postings(
    postings: Iterable[Posting | tuple[str, int]], start: Balances | None = None
) -> Balances:
    """Fold postings into balances.

    ``lifetime_earned`` is the net of everything credited by earning and adjustments (the
    negation of ``program:issued``, plus manual credits from ``program:adjustments``; a manual
    debit is not an un-earning, like spending it leaves ``lifetime_earned`` alone); ``expired``
    and ``redeemed`` are the program-side totals of expiry and redemption.
    """
    b = start or Balances()
    values = {
        "available": b.available,
        "pending": b.pending,
        "reserved": b.reserved,
        "debt": b.debt,
        "lifetime_earned": b.lifetime_earned,
        "expired": b.expired,
        "redeemed": b.redeemed,
    }
    for p in postings:
        account, amount = (p.account, p.amount) if isinstance(p, Posting) else p
        if account == Account.ISSUED or (account == Account.ADJUSTMENTS and amount < 0):
            values["lifetime_earned"] -= amount
        elif account == Account.EXPIRED:
            values["expired"] += amount
        elif account == Account.REDEEMED:
            values["redeemed"] += amount
        elif account == Account.DEBT:
            values["debt"] -= amount
        elif account in (Account.WRITTEN_OFF, Account.ADJUSTMENTS):
            continue  # a write-off is the program's loss; a manual debit is not an un-earning
        else:
            values[str(account)] += amount
    return Balances(**values)


@dataclass(frozen=True, slots=True)
class Lot:
    """Points credited together, with when they can be spent and when they expire."""

    id: str
    earned_at: datetime
    available_from: datetime
    expires_at: datetime | None
    remaining: int = 0


def spending_order(lots: Iterable[Lot]) -> list[Lot]:
    """Soonest-expiring first (lots that never expire last), then the oldest."""
    return sorted(
        lots,
        key=lambda lot: (lot.expires_at is None, lot.expires_at or lot.earned_at, lot.earned_at, lot.id),
    )


def draw(lots: Sequence[Lot], points: int) -> list[tuple[str, int]]:
    """Take ``points`` from ``lots`` (already in spending order). Returns ``(lot_id, taken)``.

    Raises :class:`InsufficientPoints` when the lots hold less than ``points``.
    """
    if points < 0:
        raise ValueError("points to draw must be >= 0")
    taken: list[tuple[str, int]] = []
    left = points
    for lot in lots:
        if left == 0:
            break
        if lot.remaining <= 0:
            continue
        take = min(lot.remaining, left)
        taken.append((lot.id, take))
        left -= take
    if left:
        raise InsufficientPoints(f"needs {points} points, {points - left} available", needed=points)
    return taken


def credit(
    points: int,
    *,
    debt: int,
    into: Account,
    lot_id: str,
    counter: Account,
    kind: JournalKind = JournalKind.EARN,
    reason: str = "",
) -> Journal | None:
    """A journal crediting ``points`` to a member: repays ``debt`` first, the rest into a lot.

    ``into`` is ``available`` or ``pending``; ``counter`` is the program account paying.
    """
    if points <= 0:
        return None
    repay = min(points, max(debt, 0))
    rest = points - repay
    postings = [Posting(counter, -points)]
    if repay:
        postings.append(Posting(Account.DEBT, repay))
    if rest:
        postings.append(Posting(into, rest, lot_id))
    return Journal(kind, tuple(postings), reason)


def returned(held: Sequence[tuple[str, int]], *, debt: int) -> list[Posting]:
    """Postings giving a member back ``held`` (lot id, points) into ``available``, to the same
    lots: a ``debt`` they owe is repaid first (from the first lots), as :func:`credit` does, so
    that points never come back spendable beside a debt for them."""
    owed = max(debt, 0)
    postings: list[Posting] = []
    for lot, points in held:
        repay = min(points, owed)
        owed -= repay
        if points - repay:
            postings.append(Posting(Account.AVAILABLE, points - repay, lot))
    repaid = max(debt, 0) - owed
    if repaid:
        postings.append(Posting(Account.DEBT, repaid))
    return postings


def take_back(
    points: int,
    *,
    sources: Sequence[tuple[Account, Lot]],
    counter: Account,
    kind: JournalKind,
    shortfall_to: Account | None,
    reason: str = "",
) -> Journal | None:
    """A journal taking ``points`` back from a member.

    ``sources`` are (account, lot) pairs in the order to draw from. Whatever they cannot cover
    is posted to ``shortfall_to`` (``debt`` for the debt return policy, ``program:adjustments``
    to write it off); with ``shortfall_to=None`` a shortfall raises
    :class:`InsufficientPoints`. The counter account receives the full ``points``.
    """
    if points <= 0:
        return None
    postings: list[Posting] = [Posting(counter, points)]
    left = points
    for account, lot in sources:
        if left == 0:
            break
        take = min(lot.remaining, left)
        if take > 0:
            postings.append(Posting(account, -take, lot.id))
            left -= take
    if left:
        if shortfall_to is None:
            raise InsufficientPoints(f"needs {points} points, {points - left} available", needed=points)
        postings.append(Posting(shortfall_to, -left))
    return Journal(kind, tuple(postings), reason)
