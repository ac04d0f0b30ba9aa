"""Member email through a real SMTP server (aiosmtpd on loopback): the notifications job sends what
is due once, with the member's numbers; an SMTP server that is down loses nothing and sends nothing
twice; one-click unsubscribe and preferences are honoured; merchants' templates apply."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlparse

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, select

from patron.domain.errors import Conflict
from patron.domain.expiry import add_months
from patron.services.jobs import run_job
from patron.storage.notifications import notifications
from tests.conftest import Api, bean_rewards, purchase


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Inbox:
    """What the SMTP server received: one entry per message handed over."""

    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.startswith("gone@"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for rcpt, m in self.messages if address in rcpt]

    def subjects(self, address: str) -> list[str]:
        return sorted(str(m["Subject"]) for m in self.to(address))


def body(msg: EmailMessage, subtype: str = "plain") -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part.get_content())


class Smtp:
    def __init__(self, port: int) -> None:
        self.port, self.inbox = port, Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Smtp]:
    """A real SMTP server on a free loopback port, and Patron's mail settings pointing at it."""
    server = Smtp(free_port())
    monkeypatch.setenv("PATRON_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("PATRON_SMTP_PORT", str(server.port))
    monkeypatch.setenv("PATRON_MAIL_FROM", "Bean Rewards <rewards@bean.example>")
    monkeypatch.setenv("PATRON_PUBLIC_URL", "http://loyalty.bean.example")
    monkeypatch.setenv("PATRON_SECRET_KEY", "test-secret")
    server.start()
    yield server
    server.stop()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def run(engine: Engine, api: Api, at: datetime) -> tuple[int, int]:
    result = run_job(engine, "notifications", as_of=at, merchant_id=api.merchant_id)
    return result.members, result.lots


def buy(api: Api, member: str, event_id: str, cents: int, at: datetime) -> None:
    item = {"id": "l1", "sku": "BEANS", "category": "merch", "quantity": 1, "unit_price": cents}
    api.event(purchase(member, event_id, [item], occurred_at=at.isoformat()))


def log(engine: Engine, api: Api) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(notifications).where(notifications.c.merchant_id == api.merchant_id)
        ).mappings()
        return [dict(r) for r in rows]


def test_the_job_sends_what_is_due_once_with_the_members_numbers(
    api: Api, engine: Engine, smtp: Smtp
) -> None:
    t = now()
    program = api.program()
    ada = api.member(
        program, email="ada@example.com", name="Ada", enrolled_at=(t - timedelta(days=400)).isoformat()
    )
    buy(api, ada, "old", 1500, t - timedelta(days=345))  # 15 points expiring in about 20 days
    buy(api, ada, "new", 2500, t - timedelta(days=2))  # 25 points, two days ago
    bob = api.member(
        program, email="bob@example.com", name="Bob", enrolled_at=(t - timedelta(days=200)).isoformat()
    )
    buy(api, bob, "bob-1", 1000, t - timedelta(days=150))  # silent since
    api.member(program, email="cy@example.com", name="Cy", enrolled_at=(t - timedelta(days=1)).isoformat())
    api.member(program, phone="+14155550100", enrolled_at=(t - timedelta(days=1)).isoformat())  # no email

    members, messages = run(engine, api, t)
    assert (members, messages) == (3, 6)
    expires = add_months(t - timedelta(days=345), 12).date().isoformat()
    month = (t.replace(day=1) - timedelta(days=1)).strftime("%B %Y")
    assert smtp.inbox.subjects("ada@example.com") == sorted(
        [
            "You earned 25 points",
            f"15 points expire on {expires}",
            f"Your Bean Rewards summary for {month}",
        ]
    )
    assert smtp.inbox.subjects("bob@example.com") == sorted(
        ["We miss you at Bean Rewards", f"Your Bean Rewards summary for {month}"]
    )
    assert smtp.inbox.subjects("cy@example.com") == ["Welcome to Bean Rewards"]
    assert len(smtp.inbox.messages) == 6

    earned = next(m for m in smtp.inbox.to("ada@example.com") if "earned" in str(m["Subject"]))
    assert str(earned["From"]) == "Bean Rewards <rewards@bean.example>"
    assert "Ada" in str(earned["To"])
    text, html = body(earned), body(earned, "html")
    assert "Hello Ada" in text and "You earned 25 points" in text and "Your balance: 40 points" in text
    assert "<strong>25 points</strong>" in html and "40 points" in html
    assert earned["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(earned["List-Unsubscribe"]).startswith("<http://loyalty.bean.example/unsubscribe/")
    warning = next(m for m in smtp.inbox.to("ada@example.com") if "expire" in str(m["Subject"]))
    assert f"15 of your points expire on {expires}" in body(warning)
    win_back = smtp.inbox.to("bob@example.com")
    assert any("your 10 points are waiting" in body(m) for m in win_back)

    assert run(engine, api, t) == (0, 0)  # same time again: nothing new, nothing resent
    assert len(smtp.inbox.messages) == 6
    assert {r["status"] for r in log(engine, api)} == {"sent"}


def test_an_smtp_server_that_is_down_loses_nothing_and_sends_nothing_twice(
    api: Api, engine: Engine, smtp: Smtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = now()
    program = api.program(bean_rewards(notifications={"monthly_digest": False, "win_back_days": None}))
    ada = api.member(
        program, email="ada@example.com", name="Ada", enrolled_at=(t - timedelta(days=30)).isoformat()
    )
    buy(api, ada, "o1", 4200, t - timedelta(hours=3))

    smtp.stop()
    monkeypatch.setenv("PATRON_SMTP_PORT", str(free_port()))  # nothing listens there
    with pytest.raises(Conflict, match="could not be sent") as failed:
        run(engine, api, t)
    assert "next run retries" in failed.value.detail
    rows = log(engine, api)
    assert [(r["kind"], r["status"], r["attempts"]) for r in rows] == [("points_earned", "failed", 1)]
    assert "cannot reach SMTP server" in rows[0]["last_error"]

    monkeypatch.setenv("PATRON_SMTP_PORT", str(smtp.port))
    smtp.start()
    assert run(engine, api, t) == (1, 1)
    assert run(engine, api, t) == (0, 0)
    assert run(engine, api, t + timedelta(hours=1)) == (0, 0)
    assert smtp.inbox.subjects("ada@example.com") == ["You earned 42 points"]
    (row,) = log(engine, api)
    assert (row["status"], row["attempts"]) == ("sent", 2) and row["sent_at"] is not None


def test_one_click_unsubscribe_stops_all_mail(api: Api, engine: Engine, smtp: Smtp) -> None:
    t = now() - timedelta(days=1)
    program = api.program()
    ada = api.member(
        program, email="ada@example.com", name="Ada", enrolled_at=(t - timedelta(hours=1)).isoformat()
    )
    assert run(engine, api, t) == (1, 1)
    (welcome,) = smtp.inbox.to("ada@example.com")
    url = str(welcome["List-Unsubscribe"]).strip("<>")

    done = api.client.post(
        urlparse(url).path,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200
    assert api.get(f"/v1/members/{ada}/preferences").json()["subscribed"] is False

    buy(api, ada, "after", 3000, t + timedelta(hours=1))
    assert run(engine, api, t + timedelta(hours=2)) == (0, 0)
    assert len(smtp.inbox.to("ada@example.com")) == 1


def test_a_message_switched_off_by_the_member_or_the_program_is_not_sent(
    api: Api, engine: Engine, smtp: Smtp
) -> None:
    t = now()
    program = api.program(bean_rewards(notifications={"welcome": False, "win_back_days": None}))
    ada = api.member(program, email="ada@example.com", enrolled_at=(t - timedelta(days=1)).isoformat())
    bob = api.member(program, email="bob@example.com", enrolled_at=(t - timedelta(days=1)).isoformat())
    r = api.put(
        f"/v1/members/{ada}/preferences", {"messages": {"points_earned": False, "monthly_digest": False}}
    )
    assert r.status_code == 200, r.text
    buy(api, ada, "a1", 1200, t - timedelta(hours=2))
    buy(api, bob, "b1", 1300, t - timedelta(hours=2))

    run(engine, api, t)
    assert smtp.inbox.to("ada@example.com") == []
    subjects = smtp.inbox.subjects("bob@example.com")
    assert "You earned 13 points" in subjects and not any("Welcome" in s for s in subjects)


def test_expiry_warning_then_last_chance_once_each(api: Api, engine: Engine, smtp: Smtp) -> None:
    t = now() - timedelta(days=1)
    off = {"welcome": False, "points_earned": False, "monthly_digest": False, "win_back_days": None}
    program = api.program(bean_rewards(notifications=off))
    ada = api.member(program, email="ada@example.com", enrolled_at=(t - timedelta(days=2)).isoformat())
    buy(api, ada, "a1", 3000, t)
    buy(api, ada, "a2", 700, t + timedelta(minutes=5))  # the same expiry day: one message for both
    expires_at = add_months(t, 12)
    day = expires_at.date().isoformat()

    assert run(engine, api, expires_at - timedelta(days=31)) == (0, 0)  # too early
    assert run(engine, api, expires_at - timedelta(days=20)) == (1, 1)
    assert run(engine, api, expires_at - timedelta(days=19)) == (0, 0)
    api.post(f"/v1/members/{ada}/adjustments", {"points": -10, "reason": "correction"})
    assert run(engine, api, expires_at - timedelta(days=5)) == (1, 1)
    assert run(engine, api, expires_at - timedelta(days=5)) == (0, 0)
    assert smtp.inbox.subjects("ada@example.com") == sorted(
        [f"37 points expire on {day}", f"Last chance: 27 points expire on {day}"]
    )


def test_expiry_warnings_are_announced_as_points_expiring_to_webhooks_with_or_without_email(
    api: Api, engine: Engine, smtp: Smtp
) -> None:
    t = now() - timedelta(days=1)
    off = {"welcome": False, "points_earned": False, "monthly_digest": False, "win_back_days": None}
    program = api.program(bean_rewards(notifications=off))
    enrolled = (t - timedelta(days=2)).isoformat()
    ada = api.member(program, email="ada@example.com", enrolled_at=enrolled)
    bob = api.member(program, external_id="till-only-bob", enrolled_at=enrolled)  # no email on file
    for who in (ada, bob):
        buy(api, who, f"{who}-1", 3000, t)
    expires_at = add_months(t, 12)
    day = expires_at.date().isoformat()

    def expiring(member: str) -> list[dict[str, Any]]:
        r = api.get("/v1/outbox-events", params={"member_id": member, "type": "points.expiring"})
        assert r.status_code == 200, r.text
        return sorted(r.json()["data"], key=lambda e: e["sequence"])  # the member's stream order

    run(engine, api, expires_at - timedelta(days=31))
    assert expiring(ada) == expiring(bob) == []  # too early
    run(engine, api, expires_at - timedelta(days=20))
    run(engine, api, expires_at - timedelta(days=19))  # the same window: nothing new
    run(engine, api, expires_at - timedelta(days=5))
    run(engine, api, expires_at - timedelta(days=5))
    for who in (ada, bob):
        got = expiring(who)
        assert [(e["data"]["points"], e["data"]["expires_on"], e["data"]["last_chance"]) for e in got] == [
            (30, day, False),
            (30, day, True),
        ], got
        # days left on the program's local calendar (a daylight-saving change may move it by one)
        assert got[0]["data"]["days"] in (19, 20, 21) and got[1]["data"]["days"] in (4, 5, 6), got
    assert smtp.inbox.subjects("ada@example.com") == sorted(
        [f"30 points expire on {day}", f"Last chance: 30 points expire on {day}"]
    )
    # the list is newest first, the warnings in their place among the member's other events
    api.post(f"/v1/members/{bob}/adjustments", {"points": 5, "reason": "goodwill"})
    listed = api.get("/v1/outbox-events", params={"member_id": bob}).json()["data"]
    assert [e["type"] for e in listed] == [
        "points.expiring",  # a year from now: the runs above were as of then
        "points.expiring",
        "points.adjusted",
        "points.earned",
        "member.enrolled",
    ]
    assert [e["occurred_at"] for e in listed] == sorted((e["occurred_at"] for e in listed), reverse=True)


def test_a_merchant_template_overrides_the_shipped_one(api: Api, engine: Engine, smtp: Smtp) -> None:
    t = now()
    templates = {
        "points_earned": {
            "subject": "{{ points }} beans for {{ member_name }}!",
            "text": "{% extends 'base.txt.j2' %}{% block body %}Beans: {{ points }}.{% endblock %}",
        }
    }
    program = api.program(bean_rewards(notifications={"welcome": False, "templates": templates}))
    ada = api.member(
        program, email="ada@example.com", name="Ada", enrolled_at=(t - timedelta(days=1)).isoformat()
    )
    buy(api, ada, "a1", 800, t - timedelta(hours=1))
    run(engine, api, t)
    earned = [m for m in smtp.inbox.to("ada@example.com") if "beans" in str(m["Subject"])]
    assert [str(m["Subject"]) for m in earned] == ["8 beans for Ada!"]
    assert "Beans: 8." in body(earned[0]) and "8 points" in body(earned[0], "html")

    bad = api.post(
        "/v1/programs", bean_rewards(notifications={"templates": {"welcome": {"text": "{{ nope }}"}}})
    )
    assert bad.status_code == 422 and "template" in bad.text


def test_tier_up_milestone_and_reward_are_announced(api: Api, engine: Engine, smtp: Smtp) -> None:
    t = now()
    quiet = {"welcome": False, "monthly_digest": False, "win_back_days": None}
    milestones = [
        {"id": "big", "name": "Big spender", "type": "lifetime_spend", "threshold": 10000, "points": 50}
    ]
    program = api.program(bean_rewards(notifications=quiet, milestones=milestones))
    ada = api.member(
        program, email="ada@example.com", name="Ada", enrolled_at=(t - timedelta(days=10)).isoformat()
    )
    buy(api, ada, "big-order", 25000, t - timedelta(hours=1))  # 250 points: Silver, and the milestone
    r = api.post(f"/v1/members/{ada}/redemptions", {"reward_id": "free-coffee"})
    assert r.status_code == 201, r.text
    code = r.json()["code"]

    at = now() + timedelta(minutes=1)
    assert run(engine, api, at) == (1, 4)
    assert smtp.inbox.subjects("ada@example.com") == sorted(
        [
            "You earned 250 points",
            "You reached Silver",
            "Congratulations: Big spender",
            "Your reward: Free coffee",
        ]
    )
    mails = {str(m["Subject"]): m for m in smtp.inbox.to("ada@example.com")}
    assert code in body(mails["Your reward: Free coffee"])
    assert "Your balance: 200 points" in body(mails["Your reward: Free coffee"])  # 250 + 50 - 100
    assert "up from Member" in body(mails["You reached Silver"])
    assert "We added 50 points" in body(mails["Congratulations: Big spender"])
    assert run(engine, api, at) == (0, 0)
    assert run_job(engine, "requalify-tiers", as_of=at, merchant_id=api.merchant_id)
    assert run(engine, api, at + timedelta(minutes=1)) == (0, 0)


def test_a_refused_recipient_fails_alone_and_is_retried_without_resending_the_others(
    api: Api, engine: Engine, smtp: Smtp
) -> None:
    t = now()
    program = api.program(bean_rewards(notifications={"monthly_digest": False, "win_back_days": None}))
    api.member(program, email="gone@example.com", enrolled_at=(t - timedelta(hours=2)).isoformat())
    api.member(program, email="ada@example.com", enrolled_at=(t - timedelta(hours=2)).isoformat())

    with pytest.raises(Conflict, match="1 email"):
        run(engine, api, t)
    assert smtp.inbox.subjects("ada@example.com") == ["Welcome to Bean Rewards"]
    failed = [r for r in log(engine, api) if r["status"] == "failed"]
    assert len(failed) == 1 and "No such mailbox" in failed[0]["last_error"]

    with pytest.raises(Conflict):
        run(engine, api, t)
    assert len(smtp.inbox.messages) == 1
    statuses = sorted((r["status"], r["attempts"]) for r in log(engine, api))
    assert statuses == [("failed", 2), ("sent", 1)]
