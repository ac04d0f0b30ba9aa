"""Households: family pooling of redeemable points, with status kept individual.

A household belongs to one program and has a **head** and members, each with a **role**:

* ``head``   the one who manages the household (exactly one; headship can be handed over);
* ``adult``  spends from the pool under the ``pool`` policy;
* ``member`` (a child, say) contributes to the pool; spends from it only when allowed.

Rules
-----
1. Size: a household holds at most ``max_members`` people, the head included.
2. A member is in at most one household at a time. After leaving (or being removed) a member waits
   ``cooldown_days`` before joining *another* household (rejoining the same one is not hopping).
3. Who may spend the pool (``spending``): under ``pool`` the head and every adult, and a
   ``member`` the head has allowed (``can_spend``); under ``head_allows`` the head, and anyone
   else only when allowed.
4. The head leaves last: while others remain, headship must be handed to someone else first.
5. Pooled spending (:func:`plan_pool_draw`): the redeemer's own available points go first; the
   rest is drawn from the other members' lots that expire soonest (then the oldest).
6. The points move with one balanced journal (:func:`pool_transfer`) between member ``available``
   accounts only: contributors' lots are debited, the redeemer is credited with new lots that keep
   the original earned, available-from and expiry times. No program account is touched, so
   ``lifetime_earned``, redeemed, expired and every tier figure stay individual and unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from patron.domain.errors import Conflict, Forbidden, InsufficientPoints, InvalidInput
from patron.domain.ledger import Account, Journal, JournalKind, Lot, Posting, spending_order


class Role(StrEnum):
    HEAD = "head"
    ADULT = "adult"
    MEMBER = "member"


class Spending(StrEnum):
    POOL = "pool"
    HEAD_ALLOWS = "head_allows"


class EventKind(StrEnum):
    CREATED = "created"
    JOINED = "joined"
    LEFT = "left"
    REMOVED = "removed"
    ROLE_CHANGED = "role_changed"
    PERMISSION_CHANGED = "permission_changed"


@dataclass(frozen=True, slots=True)
class HouseholdSpec:
    """Program setting ``households``: absent, the program offers no households.

    ``max_members``: people per household, the head included (2-50). ``cooldown_days``: days a
    member who left waits before joining another household (0-3650). ``spending``: ``pool`` (the
    head and every adult spend from the pool) or ``head_allows`` (only members the head allows).
    """

    __pydantic_config__ = {"extra": "forbid"}  # read by Pydantic when the program is validated

    max_members: int = 6
    cooldown_days: int = 90
    spending: Literal["pool", "head_allows"] = "pool"

    def __post_init__(self) -> None:
        if not 2 <= self.max_members <= 50:
            raise ValueError("max_members must be between 2 and 50")
        if not 0 <= self.cooldown_days <= 3650:
            raise ValueError("cooldown_days must be between 0 and 3650")


class HouseholdsNotOffered(InvalidInput):
    code = "households-not-offered"
    title = "The program does not offer households"


class WrongProgram(InvalidInput):
    code = "wrong-program"
    title = "Member belongs to another program"


class HouseholdFull(Conflict):
    code = "household-full"
    title = "Household is full"


class AlreadyInHousehold(Conflict):
    code = "already-in-household"
    title = "Member is already in a household"


class HouseholdCooldown(Conflict):
    code = "household-cooldown"
    title = "Member left a household too recently"


class HouseholdClosed(Conflict):
    code = "household-closed"
    title = "Household was dissolved"


class HeadMustStay(Conflict):
    code = "household-head-must-stay"
    title = "The head cannot leave while others remain"


class SpendingNotAllowed(Forbidden):
    code = "household-spending-not-allowed"
    title = "Member may not spend the household pool"


@dataclass(frozen=True, slots=True)
class Membership:
    """A member's current or last place in a household (``left_at`` set once they left)."""

    household_id: str
    member_id: str
    role: Role
    can_spend: bool
    joined_at: datetime
    left_at: datetime | None = None

    @property
    def current(self) -> bool:
        return self.left_at is None


def cooldown_until(last: Membership | None, spec: HouseholdSpec) -> datetime | None:
    """When a member who left may join another household (None: not waiting)."""
    if last is None or last.left_at is None:
        return None
    return last.left_at + timedelta(days=spec.cooldown_days)


def check_join(
    spec: HouseholdSpec, *, household_id: str, size: int, last: Membership | None, now: datetime
) -> None:
    """May a member whose current or last membership is ``last`` join ``household_id``, which now
    holds ``size`` people? Raises the reason why not."""
    if last is not None and last.current:
        where = "this household" if last.household_id == household_id else "another household"
        raise AlreadyInHousehold(
            f"member {last.member_id} is already in {where} ({last.household_id}); "
            "they must leave it before joining",
            household_id=last.household_id,
        )
    until = cooldown_until(last, spec)
    if last is not None and last.household_id != household_id and until is not None and now < until:
        raise HouseholdCooldown(
            f"member {last.member_id} left a household on {last.left_at:%Y-%m-%d}; they can join "
            f"another one from {until.isoformat()} ({spec.cooldown_days}-day cooldown)",
            cooldown_until=until,
        )
    if size >= spec.max_members:
        raise HouseholdFull(
            f"the household already has {size} people, the most this program allows "
            f"({spec.max_members}, head included)",
            max_members=spec.max_members,
        )


def check_joining_role(role: Role) -> None:
    if role == Role.HEAD:
        raise InvalidInput(
            "a household has one head: add the member as adult or member, then hand headship over "
            "with PATCH role=head",
            field="role",
        )


def may_spend(spending: Spending | str, role: Role | str, can_spend: bool) -> bool:
    """Rule 3: who may spend the pool."""
    if role == Role.HEAD:
        return True
    if spending == Spending.POOL and role == Role.ADULT:
        return True
    return can_spend


def check_may_spend(spec: HouseholdSpec, m: Membership) -> None:
    if not may_spend(spec.spending, m.role, m.can_spend):
        policy = (
            "only the head, adults and members the head allows"
            if Spending(spec.spending) == Spending.POOL
            else "only the head and members the head allows"
        )
        raise SpendingNotAllowed(
            f"member {m.member_id} ({m.role}) may not spend the household pool: {policy} may"
        )


def check_leave(m: Membership, *, size: int) -> None:
    """Rule 4: the head leaves last (the household is then dissolved)."""
    if m.role == Role.HEAD and size > 1:
        raise HeadMustStay(
            "the head cannot leave while others remain: make another member head first "
            "(PATCH role=head), or remove the others"
        )


def check_role_change(m: Membership, new: Role) -> None:
    if m.role == Role.HEAD and new != Role.HEAD:
        raise InvalidInput(
            "the head keeps the role until another member is made head (PATCH their role to head)",
            field="role",
        )


@dataclass(frozen=True, slots=True)
class Draw:
    """``points`` taken from ``member_id``'s lot ``lot``."""

    member_id: str
    lot: Lot
    points: int


def plan_pool_draw(
    *,
    redeemer_id: str,
    cost: int,
    own_available: int,
    others: Mapping[str, Sequence[Lot]],
) -> list[Draw]:
    """Rule 5: what to move to the redeemer so that they hold ``cost`` available points.

    The redeemer's own points go first; the shortfall comes from the other members' lots,
    soonest-expiring first (never-expiring last), then the oldest. Empty when the redeemer has
    enough. Raises :class:`InsufficientPoints` when the pool holds
    less than ``cost``.

    >>> plan_pool_draw(redeemer_id="a", cost=50, own_available=80, others={})
    []
    """
    if cost < 0:
        raise ValueError("cost must be >= 0")
    need = cost - max(own_available, 0)
    if need <= 0:
        return []
    owner = {lot.id: m for m, held in others.items() if m != redeemer_id for lot in held}
    lots = [lot for m, held in others.items() if m != redeemer_id for lot in held]
    draws: list[Draw] = []
    for lot in spending_order(lots):  # lot ids are unique across members
        if need == 0:
            break
        take = min(lot.remaining, need)
        if take > 0:
            draws.append(Draw(owner[lot.id], lot, take))
            need -= take
    if need:
        pool = own_available + sum(max(lot.remaining, 0) for lot in lots)
        raise InsufficientPoints(
            f"the reward costs {cost} points; the household pool holds {pool}",
            needed=cost,
            available=pool,
        )
    return draws


@dataclass(frozen=True, slots=True)
class PoolTransfer:
    """Rule 6. ``journal`` is balanced (checked by :class:`Journal`); ``owners[i]`` is the member
    whose account ``journal.postings[i]`` moves; ``new_lots`` are the redeemer's new lots."""

    journal: Journal
    owners: tuple[str, ...]
    new_lots: tuple[Lot, ...]


def pool_transfer(
    redeemer_id: str, draws: Sequence[Draw], *, lot_ids: Sequence[str], reason: str
) -> PoolTransfer:
    """Debit each drawn lot of a contributor, credit the redeemer a new lot per drawn lot with the
    same times (``lot_ids`` names them, one per draw), all in one journal summing to zero."""
    if len(lot_ids) != len(draws):
        raise ValueError("one new lot id per draw")
    postings: list[Posting] = []
    owners: list[str] = []
    new_lots: list[Lot] = []
    for draw, lot_id in zip(draws, lot_ids, strict=True):
        if draw.member_id == redeemer_id:
            raise ValueError("the redeemer cannot contribute to their own transfer")
        postings += [
            Posting(Account.AVAILABLE, -draw.points, draw.lot.id),
            Posting(Account.AVAILABLE, draw.points, lot_id),
        ]
        owners += [draw.member_id, redeemer_id]
        new_lots.append(
            Lot(lot_id, draw.lot.earned_at, draw.lot.available_from, draw.lot.expires_at, draw.points)
        )
    journal = Journal(JournalKind.HOUSEHOLD_TRANSFER, tuple(postings), reason)
    return PoolTransfer(journal, tuple(owners), tuple(new_lots))
