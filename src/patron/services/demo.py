"""Demo data: a coffee shop with a year of loyalty activity, for ``patron demo`` and ``make run``.

What the demo contains
----------------------
* A merchant, **Demo Coffee Co**, with two locations (``downtown`` and ``harbour``) and an
  admin API key (printed once: keys are stored hashed).
* One program, *Demo Coffee Rewards*, in USD and ``America/New_York`` time: 1 point per dollar,
  double points on coffee, a weekday 14:00-17:00 happy hour at 1.5x, 5 points per check-in
  (``visit``), 50 bonus points on orders of $25 or more, 25 points for a ``review`` (once a
  month); Member / Silver ($200 a calendar year) / Gold ($500, 1.25x) tiers with one-level
  downgrade; points expire after 12 months; rewards: free coffee (100), pastry (150), mug (600).
* ``members`` members (300 by default) with made-up names, ``example.com`` emails, external ids
  ``cust-0001``..., most with a US phone number, enrolled over the last 15 months.
* A year of activity ending yesterday, recorded through the real event pipeline in time order:
  weekly regulars, occasional customers and members who lapse after a few months; purchases from
  a small menu during opening hours (07:00-19:00 New York time) at either location, some check-ins
  and reviews, about 3% of purchases partly refunded a few days later, about 1% cancelled at the
  till, and a few goodwill adjustments.

The same ``seed`` gives the same members and activity (database ids are new each time, and the
timestamps move with the current date). Running it again on a database that already has the demo
merchant creates nothing; it issues a fresh admin API key for that merchant instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Connection, func, select

from patron.domain.errors import Conflict, InvalidInput
from patron.services.clock import utcnow
from patron.services.events import record_event
from patron.services.ledger import adjust
from patron.services.members import MemberCreate, enrol
from patron.services.merchants import create_api_key, create_merchant, put_location
from patron.services.programs import create_program
from patron.storage import tables

DEMO_MERCHANT = "Demo Coffee Co"
TIMEZONE = "America/New_York"
LOCATIONS = (("downtown", "Downtown"), ("harbour", "Harbour"))
OPENS, CLOSES = 7, 19  # local hours; the last order is taken before CLOSES
ACTIVITY_DAYS = 365  # a year of activity, ending yesterday
ENROL_DAYS = 450  # members joined over the last ~15 months

PROGRAM: dict[str, Any] = {
    "name": "Demo Coffee Rewards",
    "currency": "USD",
    "timezone": TIMEZONE,
    "points_name": "points",
    "earning_rules": [
        {"id": "base", "name": "1 point per $1", "type": "spend", "points": 1, "per_amount": 100},
        {
            "id": "coffee-2x",
            "name": "Double points on coffee",
            "type": "multiplier",
            "kind": "product",
            "categories": ["coffee"],
            "multiplier": "2",
        },
        {
            "id": "happy-hour",
            "name": "Happy hour: 1.5x on weekday afternoons",
            "type": "multiplier",
            "kind": "promotion",
            "multiplier": "1.5",
            "weekdays": ["mon", "tue", "wed", "thu", "fri"],
            "hours": {"from": "14:00", "to": "17:00"},
        },
        {"id": "check-in", "name": "5 points per check-in", "type": "visit", "points": 5},
        {
            "id": "big-order",
            "name": "50 bonus points on orders of $25 or more",
            "type": "bonus",
            "points": 50,
            "threshold": 2500,
        },
        {
            "id": "review",
            "name": "25 points for a review, once a month",
            "type": "action",
            "action": "review",
            "points": 25,
            "limit": {"count": 1, "per": "month"},
        },
    ],
    "tiers": {
        "metric": "qualifying_spend",
        "period": "calendar_year",
        "downgrade": "one_level",
        "levels": [
            {"id": "member", "name": "Member", "threshold": 0},
            {"id": "silver", "name": "Silver", "threshold": 20000},
            {"id": "gold", "name": "Gold", "threshold": 50000, "multiplier": "1.25"},
        ],
    },
    "expiry": {"months": 12},
    "rewards": [
        {"id": "free-coffee", "name": "Free coffee", "type": "free_product", "cost": 100},
        {"id": "pastry", "name": "Free pastry", "type": "free_product", "cost": 150},
        {"id": "mug", "name": "Demo Coffee Co mug", "type": "free_product", "cost": 600},
    ],
}


@dataclass(frozen=True, slots=True)
class MenuItem:
    sku: str
    category: str
    unit_price: int  # cents


LATTE = MenuItem("LATTE", "coffee", 450)
ESPRESSO = MenuItem("ESPRESSO", "coffee", 300)
CAPPUCCINO = MenuItem("CAPPUCCINO", "coffee", 420)
CROISSANT = MenuItem("CROISSANT", "pastry", 350)
MUFFIN = MenuItem("MUFFIN", "pastry", 325)
BEANS = MenuItem("BEANS-1KG", "beans", 2400)
MUG = MenuItem("MUG", "merch", 1500)
DRINKS = (LATTE, ESPRESSO, CAPPUCCINO)
PASTRIES = (CROISSANT, MUFFIN)

FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "James", "Isabella", "Lucas",
    "Mia", "Mateo", "Amelia", "Benjamin", "Harper", "Henry", "Evelyn", "Theodore", "Aisha", "Omar",
    "Priya", "Arjun", "Mei", "Wei", "Sofia", "Diego", "Chloe", "Samuel", "Grace", "Daniel",
    "Zoe", "Leo", "Hannah", "Jack", "Nora", "Ethan", "Layla", "Gabriel", "Ruby", "Kenji",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
    "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Clark", "Lewis", "Walker",
    "Nguyen", "Patel", "Kim", "Chen", "Wright", "Scott", "Torres", "Hill", "Green", "Adams",
    "Baker", "Nakamura",
)  # fmt: skip
ADJUSTMENT_REASONS = (
    "Goodwill: order made wrong at the bar",
    "Goodwill: long wait at the harbour store",
    "Goodwill: card scan failed at the till",
    "Goodwill: birthday treat from the team",
)
# How likely an outing starts in each opening hour: a morning rush, a lunch bump, a quiet evening.
HOUR_WEIGHTS = (10, 14, 12, 8, 6, 8, 7, 6, 6, 5, 4, 3)


@dataclass(slots=True)
class _Member:
    """One demo member and the habits their activity is drawn from."""

    n: int
    enrolled_at: datetime
    kind: str  # "regular", "occasional" or "lapsing"
    rate: float  # chance of coming in on a given day
    last_day: date  # lapsing members stop coming after this day
    home: str
    drink: MenuItem
    usual_hour: int
    pastry: float  # chance of adding a pastry
    company: float  # chance of buying for a friend or two
    events: int = 0
    member_id: str = ""

    def next_id(self) -> str:
        self.events += 1
        return f"demo-{self.n}-{self.events}"


@dataclass(order=True, slots=True)
class _Planned:
    """An event body (or a goodwill adjustment) to apply at ``at``."""

    at: datetime
    seq: int
    member: _Member = field(compare=False)
    body: dict[str, Any] | None = field(compare=False, default=None)
    adjustment: tuple[int, str] | None = field(compare=False, default=None)


def build_demo(
    conn: Connection, *, members: int = 300, seed: int = 7, progress: Console | None = None
) -> dict[str, Any]:
    """Create the demo merchant, program, members and a year of activity (see the module doc).

    Returns ``merchant_id``, ``program_id``, ``api_key`` (admin scope), the number of
    ``members`` and ``events`` and a ``sample_member`` id (the member with the most events).
    """
    existing = conn.execute(
        select(tables.merchants.c.id)
        .where(tables.merchants.c.name == DEMO_MERCHANT)
        .order_by(tables.merchants.c.created_at)
        .limit(1)
    ).scalar()
    if existing is not None:
        return _existing(conn, str(existing))
    if members < 1:
        raise InvalidInput("the demo needs at least one member", field="members")

    rng = random.Random(seed)
    now = utcnow()
    merchant, api_key = create_merchant(conn, name=DEMO_MERCHANT)
    merchant_id = str(merchant["id"])
    for location_id, name in LOCATIONS:
        put_location(conn, merchant_id=merchant_id, location_id=location_id, name=name)
    program_id = str(create_program(conn, merchant_id=merchant_id, body=PROGRAM)["id"])

    people = _people(rng, members, now)
    staying = [p.n for p in people if p.kind != "lapsing"]
    goodwill = set(rng.sample(staying, k=min(len(staying), max(1, round(members * 0.03)))))
    plan = sorted(p for person in people for p in _activity(rng, person, now, person.n in goodwill))
    recorded = 0
    with Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=progress,
        disable=progress is None,
    ) as bar:
        enrolling = bar.add_task("Enrolling members", total=len(people))
        for person in people:
            person.member_id = _enrol(conn, rng, merchant_id, program_id, person)
            bar.advance(enrolling)
        recording = bar.add_task("Recording events", total=sum(1 for p in plan if p.body is not None))
        for item in plan:
            if item.body is not None:
                body = {**item.body, "member_id": item.member.member_id}
                _, created = record_event(conn, merchant_id=merchant_id, body=body)
                recorded += created
                bar.advance(recording)
            elif item.adjustment is not None:
                points, reason = item.adjustment
                adjust(
                    conn,
                    merchant_id=merchant_id,
                    member_id=item.member.member_id,
                    points=points,
                    reason=reason,
                    occurred_at=item.at,
                )
    _care(conn, rng, merchant_id, program_id, people, now)
    return {
        "merchant_id": merchant_id,
        "program_id": program_id,
        "api_key": api_key,
        "members": len(people),
        "events": recorded,
        "sample_member": _sample_member(conn, merchant_id),
    }


def _care(
    conn: Connection,
    rng: random.Random,
    merchant_id: str,
    program_id: str,
    people: list[_Member],
    now: datetime,
) -> None:
    """Survey answers over the last six months (a low score opens a follow-up case) and today's
    at-risk assessment (lapsing regulars get cases), so the console's care pages have work."""
    from patron.domain.surveys import Kind
    from patron.services import at_risk, surveys

    answering = rng.sample(people, k=max(1, len(people) // 6))
    for person in answering:
        at = now - timedelta(days=rng.randint(1, 180), hours=rng.randint(0, 12))
        if at < person.enrolled_at or not person.member_id:
            continue
        happy = person.kind != "lapsing"
        if rng.random() < 0.7:
            score = rng.choice([9, 10, 10, 8, 7] if happy else [3, 5, 6, 7, 8])
            surveys.submit(
                conn,
                merchant_id=merchant_id,
                member_id=person.member_id,
                kind=Kind.NPS,
                answers=(score,),
                occurred_at=at,
                channel="portal",
            )
        else:
            low, high = (4, 6) if happy else (2, 5)
            answers = tuple(rng.randint(low, high) for _ in range(3))
            surveys.submit(
                conn,
                merchant_id=merchant_id,
                member_id=person.member_id,
                kind=Kind.CLI,
                answers=answers,
                occurred_at=at,
                channel="portal",
            )
    at_risk.assess_program(conn, merchant_id=merchant_id, program_id=program_id, as_of=now)


def _existing(conn: Connection, merchant_id: str) -> dict[str, Any]:
    """The demo is already there: a new key (the first one cannot be shown again) and its counts."""
    program_id = conn.execute(
        select(tables.programs.c.id)
        .where(tables.programs.c.merchant_id == merchant_id)
        .order_by(tables.programs.c.created_at)
        .limit(1)
    ).scalar()
    if program_id is None:
        raise Conflict(f"a merchant named {DEMO_MERCHANT!r} ({merchant_id}) exists but has no program")
    _, api_key = create_api_key(conn, merchant_id=merchant_id, name="demo", scopes=["admin"])
    return {
        "merchant_id": merchant_id,
        "program_id": str(program_id),
        "api_key": api_key,
        "members": _count(conn, tables.members, merchant_id),
        "events": _count(conn, tables.events, merchant_id),
        "sample_member": _sample_member(conn, merchant_id),
    }


def _count(conn: Connection, table: Any, merchant_id: str) -> int:
    stmt = select(func.count()).select_from(table).where(table.c.merchant_id == merchant_id)
    return int(conn.execute(stmt).scalar_one())


def _sample_member(conn: Connection, merchant_id: str) -> str | None:
    """The member with the most events (a regular: the most to look at), else the first one."""
    events = tables.events
    busiest = conn.execute(
        select(events.c.member_id)
        .where(events.c.merchant_id == merchant_id)
        .group_by(events.c.member_id)
        .order_by(func.count().desc(), events.c.member_id)
        .limit(1)
    ).scalar()
    if busiest is not None:
        return str(busiest)
    first = conn.execute(
        select(tables.members.c.id)
        .where(tables.members.c.merchant_id == merchant_id)
        .order_by(tables.members.c.enrolled_at, tables.members.c.id)
        .limit(1)
    ).scalar()
    return None if first is None else str(first)


def _local(day: date, hour: int, minute: int) -> datetime:
    """A New York wall-clock time as aware UTC (opening hours never fall in a DST gap)."""
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(TIMEZONE)).astimezone(UTC)


def _today(now: datetime) -> date:
    return now.astimezone(ZoneInfo(TIMEZONE)).date()


def _people(rng: random.Random, count: int, now: datetime) -> list[_Member]:
    """Members and their habits, numbered in the order they joined."""
    regulars = max(2, round(count * 0.1))
    lapsing = round(count * 0.3)
    kinds = ["regular"] * regulars + ["lapsing"] * lapsing
    kinds += ["occasional"] * (count - len(kinds))
    kinds = kinds[:count]
    rng.shuffle(kinds)
    today = _today(now)
    drafts: list[tuple[datetime, str]] = []
    for kind in kinds:
        day = today - timedelta(days=rng.randint(1, ENROL_DAYS))
        drafts.append((_local(day, rng.randint(OPENS, CLOSES - 1), rng.randint(0, 55)), kind))
    drafts.sort(key=lambda d: d[0])
    people = []
    for n, (enrolled_at, kind) in enumerate(drafts, start=1):
        if kind == "regular":
            rate = rng.uniform(0.08, 0.3)  # once to twice a week
        elif kind == "lapsing":
            rate = rng.uniform(0.03, 0.1)  # keen at first, then gone
        else:
            rate = rng.uniform(0.005, 0.03)  # a few times a year to about once a month
        joined = enrolled_at.astimezone(ZoneInfo(TIMEZONE)).date()
        stays = rng.randint(30, 120) if kind == "lapsing" else ENROL_DAYS
        people.append(
            _Member(
                n=n,
                enrolled_at=enrolled_at,
                kind=kind,
                rate=rate,
                last_day=joined + timedelta(days=stays),
                home=rng.choice(LOCATIONS)[0],
                drink=rng.choices(DRINKS, weights=(5, 2, 3))[0],
                usual_hour=rng.choices(range(OPENS, CLOSES), weights=HOUR_WEIGHTS)[0],
                pastry=rng.uniform(0.3, 0.7) if kind == "regular" else rng.uniform(0.05, 0.5),
                company=rng.uniform(0.0, 0.25),
            )
        )
    return people


def _enrol(conn: Connection, rng: random.Random, merchant_id: str, program_id: str, person: _Member) -> str:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    phone = _phone(rng) if rng.random() < 0.7 else None
    birthday = None
    if rng.random() < 0.5:
        birthday = date(rng.randint(1955, 2006), rng.randint(1, 12), rng.randint(1, 28))
    data = MemberCreate(
        program_id=program_id,
        name=f"{first} {last}",
        email=f"{first}.{last}.{person.n}@example.com".lower(),
        phone=phone,
        external_id=f"cust-{person.n:04d}",
        birthday=birthday,
        marketing_consent=rng.random() < 0.6,
        enrolled_at=person.enrolled_at,
    )
    try:
        member = enrol(conn, merchant_id=merchant_id, data=data)
    except Conflict:  # a phone drawn twice: enrol without it
        member = enrol(conn, merchant_id=merchant_id, data=data.model_copy(update={"phone": None}))
    return str(member["id"])


def _phone(rng: random.Random) -> str | None:
    """A valid San Francisco number (+1 415 ...) in E.164, or None if none was drawn."""
    for _ in range(5):
        candidate = f"+1415{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate, None)):
            return candidate
    return None


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _activity(rng: random.Random, person: _Member, now: datetime, goodwill: bool) -> list[_Planned]:
    """Everything one member does in the year ending yesterday, in no particular order."""
    today = _today(now)
    first_day = today - timedelta(days=ACTIVITY_DAYS)
    last_day = min(today - timedelta(days=1), person.last_day)
    joined = person.enrolled_at.astimezone(ZoneInfo(TIMEZONE)).date()
    out: list[_Planned] = []

    def plan(at: datetime, body: dict[str, Any]) -> None:
        out.append(_Planned(at, rng.getrandbits(32), person, body=body))

    outings: list[datetime] = []
    if joined >= first_day:  # they signed up at the till, then paid
        outings.append(person.enrolled_at + timedelta(minutes=rng.randint(1, 3)))
    day = max(joined + timedelta(days=1), first_day)
    while day <= last_day:
        if rng.random() < person.rate:
            if rng.random() < 0.7:
                hour = min(max(person.usual_hour + rng.randint(-1, 1), OPENS), CLOSES - 1)
            else:
                hour = rng.choices(range(OPENS, CLOSES), weights=HOUR_WEIGHTS)[0]
            outings.append(_local(day, hour, rng.randint(0, 59)) + timedelta(seconds=rng.randint(0, 59)))
        day += timedelta(days=1)

    for at in outings:
        location = person.home if rng.random() < 0.8 else rng.choice(LOCATIONS)[0]
        if rng.random() < 0.08:  # a check-in without a purchase (a tasting, a pick-up)
            plan(
                at,
                {"id": person.next_id(), "type": "visit", "occurred_at": _stamp(at), "location_id": location},
            )
            continue
        items = _basket(rng, person)
        purchase_id = person.next_id()
        plan(
            at,
            {
                "id": purchase_id,
                "type": "purchase",
                "occurred_at": _stamp(at),
                "currency": "USD",
                "location_id": location,
                "items": items,
            },
        )
        units = sum(int(i["quantity"]) for i in items)
        roll = rng.random()
        if units > 1 and roll < 0.075:  # one unit brought back a few days later (~3% of purchases)
            back = at.astimezone(ZoneInfo(TIMEZONE)).date() + timedelta(days=rng.randint(1, 6))
            if back <= today - timedelta(days=1):
                when = _local(back, rng.randint(OPENS, CLOSES - 1), rng.randint(0, 59))
                line = rng.choice(items)
                plan(
                    when,
                    {
                        "id": person.next_id(),
                        "type": "refund",
                        "occurred_at": _stamp(when),
                        "refers_to": purchase_id,
                        "location_id": location,
                        "items": [{"id": line["id"], "quantity": 1}],
                    },
                )
        elif roll > 0.99:  # voided at the till
            when = at + timedelta(minutes=rng.randint(1, 10))
            plan(
                when,
                {
                    "id": person.next_id(),
                    "type": "cancel",
                    "occurred_at": _stamp(when),
                    "refers_to": purchase_id,
                },
            )

    after = max(joined + timedelta(days=1), first_day)
    active_days = (last_day - after).days
    if active_days > 0 and rng.random() < 0.15:  # a review or three, written in the evening
        for _ in range(rng.randint(1, 3)):
            day = after + timedelta(days=rng.randint(0, active_days))
            when = _local(day, rng.randint(19, 22), rng.randint(0, 59))
            plan(when, {"id": person.next_id(), "type": "review", "occurred_at": _stamp(when)})
    if active_days >= 0 and goodwill:
        day = after + timedelta(days=rng.randint(0, active_days))
        when = _local(day, rng.randint(OPENS, CLOSES - 1), rng.randint(0, 59))
        points = rng.choice((20, 25, 50, 100))
        out.append(
            _Planned(when, rng.getrandbits(32), person, adjustment=(points, rng.choice(ADJUSTMENT_REASONS)))
        )
    return out


def _basket(rng: random.Random, person: _Member) -> list[dict[str, Any]]:
    """A realistic order: usually their drink, maybe a pastry, now and then beans or a mug."""
    picks: list[tuple[MenuItem, int]] = []
    if rng.random() < 0.04:  # a bag of beans to take home, nothing else
        picks.append((BEANS, rng.choices((1, 2), weights=(4, 1))[0]))
    else:
        drink = person.drink if rng.random() < 0.85 else rng.choice(DRINKS)
        company = rng.random() < person.company
        picks.append((drink, rng.randint(2, 3) if company else 1))
        if rng.random() < person.pastry:
            picks.append((rng.choice(PASTRIES), rng.randint(1, 2) if company else 1))
        if rng.random() < 0.03:
            picks.append((BEANS, 1))
        if rng.random() < 0.01:
            picks.append((MUG, 1))
    return [
        {
            "id": f"l{i}",
            "sku": item.sku,
            "category": item.category,
            "quantity": quantity,
            "unit_price": item.unit_price,
        }
        for i, (item, quantity) in enumerate(picks, start=1)
    ]
