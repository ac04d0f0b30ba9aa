"""Follow-up cases: a member at risk, or with a low survey score, is followed up by staff.

A case moves through::

    open --assign--> assigned --contacted--> contacted --resolve--> resolved
      \\______________contacted______________/                        |
    resolved --reopen--> open (no assignee) or assigned (assignee kept)

* ``assign`` (re)assigns a case that is not resolved; an open case becomes ``assigned``, a
  contacted one stays ``contacted`` (only the assignee changes).
* ``contacted`` records that someone reached the member: this closes the loop. It is allowed once
  per round (from ``open`` or ``assigned``).
* ``resolve`` needs the loop closed first: a case is resolved only after the member was
  contacted, so that no case is closed without anyone talking to the member.
* ``reopen`` takes a resolved case back to work; the member must be contacted again before it
  can be resolved again.
* ``comment`` is allowed at any time and never changes the status.

Every action is appended to the case's timeline (an append-only list of events); the case row
holds the current state. A member has at most one case that is not resolved per source and
source reference (e.g. one open at-risk case, one case per low survey response).
"""

from __future__ import annotations

from enum import StrEnum

from patron.domain.errors import Conflict


class Status(StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    CONTACTED = "contacted"
    RESOLVED = "resolved"


class Source(StrEnum):
    AT_RISK = "at_risk"
    SURVEY = "survey"
    MANUAL = "manual"


class Action(StrEnum):
    """What happened, as written to the timeline."""

    OPENED = "opened"
    ASSIGNED = "assigned"
    COMMENTED = "commented"
    CONTACTED = "contacted"
    RESOLVED = "resolved"
    REOPENED = "reopened"


#: The source reference of at-risk cases: one open at-risk case per member at a time.
AT_RISK_REF = "at_risk"

#: Statuses in which a case is still being worked on.
UNRESOLVED = (Status.OPEN, Status.ASSIGNED, Status.CONTACTED)


class InvalidTransition(Conflict):
    code = "invalid-case-transition"
    title = "The case cannot do that in its current status"


_ALLOWED: dict[Action, tuple[Status, ...]] = {
    Action.ASSIGNED: UNRESOLVED,
    Action.COMMENTED: tuple(Status),
    Action.CONTACTED: (Status.OPEN, Status.ASSIGNED),
    Action.RESOLVED: (Status.CONTACTED,),
    Action.REOPENED: (Status.RESOLVED,),
}

_WHY = {
    Action.ASSIGNED: "a resolved case cannot be assigned; reopen it first",
    Action.CONTACTED: "the member was already contacted in this round"
    " (resolve the case, or reopen it after resolving)",
    Action.RESOLVED: "contact the member before resolving the case",
    Action.REOPENED: "only a resolved case can be reopened",
}


def transition(status: Status, action: Action, *, has_assignee: bool) -> Status:
    """The status after ``action`` on a case in ``status``, or :class:`InvalidTransition`.

    ``has_assignee`` is whether the case has an assignee after the action (for ``reopen``:
    whether it kept one)."""
    if action == Action.OPENED:
        raise InvalidTransition("a case is opened only once")
    if status not in _ALLOWED[action]:
        why = _WHY.get(action, "not allowed")
        if action == Action.CONTACTED and status == Status.RESOLVED:
            why = "the case is resolved; reopen it first"
        elif action == Action.RESOLVED and status == Status.RESOLVED:
            why = "the case is already resolved"
        raise InvalidTransition(
            f"case is {status.value}: {why}", case_status=status.value, action=action.value
        )
    if action == Action.ASSIGNED:
        return Status.ASSIGNED if status == Status.OPEN else status
    if action == Action.CONTACTED:
        return Status.CONTACTED
    if action == Action.RESOLVED:
        return Status.RESOLVED
    if action == Action.REOPENED:
        return Status.ASSIGNED if has_assignee else Status.OPEN
    return status


def initial_status(*, has_assignee: bool) -> Status:
    return Status.ASSIGNED if has_assignee else Status.OPEN
