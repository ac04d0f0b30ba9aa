"""Email: settings, templates and SMTP delivery.

Settings come from the environment, read when a run starts (not at import):

``PATRON_SMTP_HOST`` (unset: nothing is sent; messages stay queued and the run reports it),
``PATRON_SMTP_PORT`` (25), ``PATRON_SMTP_USERNAME`` / ``PATRON_SMTP_PASSWORD`` (log in when set),
``PATRON_SMTP_STARTTLS`` (false), ``PATRON_MAIL_FROM`` (``Patron <noreply@localhost>``),
``PATRON_PUBLIC_URL`` (``http://127.0.0.1:8000``, for unsubscribe links) and
``PATRON_SECRET_KEY`` (mixed into the signing key of unsubscribe links).

Templates: each message is ``<kind>.txt.j2`` and ``<kind>.html.j2`` in
``patron/templates/email/``, extending ``base.txt.j2`` / ``base.html.j2``. A merchant overrides
any of them, or a subject, in the program setting ``notifications.templates``::

    "notifications": {"templates": {
        "points_earned": {"subject": "{{ points }} beans for you!",
                          "text": "{% extends 'base.txt.j2' %}{% block body %}...{% endblock %}"}
    }}

Override templates run in Jinja's sandbox (a merchant's template cannot reach Python), with the
same variables as the shipped ones; HTML is autoescaped.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid, parseaddr
from functools import lru_cache
from typing import Any

from jinja2 import ChoiceLoader, DictLoader, PackageLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from pydantic_settings import BaseSettings, SettingsConfigDict

TIMEOUT = 15  # seconds for connecting to and talking with the SMTP server


class MailSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PATRON_", extra="ignore")

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    mail_from: str = "Patron <noreply@localhost>"
    public_url: str = "http://127.0.0.1:8000"
    secret_key: str | None = None


class MailError(Exception):
    """The message could not be handed to the SMTP server; ``server_down`` when no message can."""

    def __init__(self, detail: str, *, server_down: bool) -> None:
        super().__init__(detail)
        self.server_down = server_down


# Templates --------------------------------------------------------------------------------

SUBJECTS = {
    "welcome": "Welcome to {{ program }}",
    "points_earned": "You earned {{ points }} {{ points_name }}",
    "tier_up": "You reached {{ tier }}",
    "tier_down": "Your {{ program }} status is now {{ tier }}",
    "milestone": "Congratulations: {{ milestone }}",
    "reward_issued": "Your reward: {{ reward }}",
    "expiry_warning": "{{ points }} {{ points_name }} expire on {{ expires_on }}",
    "expiry_last_chance": "Last chance: {{ points }} {{ points_name }} expire on {{ expires_on }}",
    "monthly_digest": "Your {{ program }} summary for {{ month }}",
    "win_back": "We miss you at {{ program }}",
}

_PACKAGE = PackageLoader("patron", "templates/email")


@lru_cache(maxsize=256)
def _environment(overrides: tuple[tuple[str, str], ...]) -> SandboxedEnvironment:
    loader = ChoiceLoader([DictLoader(dict(overrides)), _PACKAGE])
    return SandboxedEnvironment(
        loader=loader,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def override_files(templates: dict[str, dict[str, str | None]]) -> tuple[tuple[str, str], ...]:
    """Program template overrides as file names -> sources (``kind.txt.j2``, ``kind.subject``)."""
    files = []
    for kind, parts in sorted(templates.items()):
        for part, ext in (("text", "txt.j2"), ("html", "html.j2"), ("subject", "subject")):
            source = parts.get(part)
            if source:
                files.append((f"{kind}.{ext}", source))
    return tuple(files)


def render(
    kind: str, context: dict[str, Any], overrides: tuple[tuple[str, str], ...] = ()
) -> tuple[str, str, str]:
    """(subject, text, html) of a message of ``kind``."""
    env = _environment(overrides)
    subject_source = dict(overrides).get(f"{kind}.subject", SUBJECTS[kind])
    subject = " ".join(env.from_string(subject_source).render(context).split())
    text = env.get_template(f"{kind}.txt.j2").render(context)
    html = env.get_template(f"{kind}.html.j2").render(context)
    return subject, text, html


def check_templates(templates: dict[str, dict[str, str | None]], sample: dict[str, Any]) -> list[str]:
    """What is wrong with template overrides, rendered against sample data; empty when fine."""
    problems = []
    files = override_files(templates)
    for kind in templates:
        if kind not in SUBJECTS:
            problems.append(f"unknown message {kind!r}")
            continue
        try:
            render(kind, sample, files)
        except Exception as exc:  # a template error of any kind is the merchant's to fix
            problems.append(f"{kind}: {exc}")
    return problems


# Messages and delivery -------------------------------------------------------------------


def build_message(
    *,
    sender: str,
    to: str,
    to_name: str | None,
    subject: str,
    text: str,
    html: str,
    unsubscribe_url: str,
    reference: str,
) -> EmailMessage:
    """A text + HTML message with one-click unsubscribe headers (RFC 8058)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = formataddr((to_name or "", to))
    msg["Subject"] = subject
    domain = parseaddr(sender)[1].rpartition("@")[2] or "patron.local"
    msg["Message-ID"] = make_msgid(idstring=reference, domain=domain)
    msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Patron-Notification"] = reference
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


class Mailer:
    """One SMTP session for a run: ``with Mailer(settings) as m: m.send(msg)``."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self.smtp: smtplib.SMTP | None = None

    def __enter__(self) -> Mailer:
        s = self.settings
        if not s.smtp_host:
            raise MailError("SMTP is not configured (set PATRON_SMTP_HOST)", server_down=True)
        try:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=TIMEOUT)
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password or "")
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(
                f"cannot reach SMTP server {s.smtp_host}:{s.smtp_port}: {exc}", server_down=True
            ) from exc
        self.smtp = smtp
        return self

    def send(self, msg: EmailMessage) -> None:
        assert self.smtp is not None
        try:
            refused = self.smtp.send_message(msg)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
            raise MailError(f"SMTP server refused the message: {exc}", server_down=False) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"SMTP connection lost: {exc}", server_down=True) from exc
        if refused:
            raise MailError(f"SMTP server refused {', '.join(refused)}", server_down=False)

    def __exit__(self, *exc: object) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                self.smtp.close()
            self.smtp = None
