"""Console users (owners, managers, till staff), password sign-in and browser sessions.

Sign-in never says which part was wrong: an unknown email, a wrong password and a locked account
all fail the same way, and an unknown email still costs one Argon2 verification so that timing
does not tell either. After ``LOCK_AFTER`` failures in a row the account is locked for
``LOCK_FOR``; a success resets the count. The failure count must persist even though sign-in
failed, so :func:`authenticate` returns ``None`` instead of raising (raising would roll back).

A session is a random token in an HttpOnly cookie; only its SHA-256 is stored, with its kind
(``user`` for the console and POS, ``member`` for the portal), its expiry and the CSRF token that
every form of the session must send back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection

from patron.domain.errors import Conflict, InvalidInput, NotFound
from patron.domain.identity import normalise_email
from patron.services.clock import utcnow
from patron.services.members import check_email
from patron.storage import merchants as merchants_repo
from patron.storage import web as repo
from patron.storage.ids import new_id

Role = Literal["owner", "manager", "staff"]
ROLES: tuple[Role, ...] = ("owner", "manager", "staff")
#: Roles that may use the admin console; every role may use the POS screen.
CONSOLE_ROLES = frozenset({"owner", "manager"})
LOCK_AFTER = 5
LOCK_FOR = timedelta(minutes=15)
MIN_PASSWORD = 10
SESSION_TTL = {"user": timedelta(hours=12), "member": timedelta(days=30)}
SessionKind = Literal["user", "member"]


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _decoy() -> str:
    return _hasher().hash(secrets.token_hex(16))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def user_view(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "merchant_id", "email", "role", "created_at", "last_login_at")}


def create_user(
    conn: Connection, *, merchant_id: str, email: str, password: str, role: str = "owner"
) -> dict[str, Any]:
    """A console user of ``merchant_id``. Emails are unique across all merchants (one sign-in form)."""
    if merchants_repo.get_merchant(conn, merchant_id) is None:
        raise NotFound(f"merchant {merchant_id} not found")
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    try:
        email = check_email(email.strip())
    except ValueError as exc:
        raise InvalidInput(str(exc), field="email")
    if not MIN_PASSWORD <= len(password) <= 1024:
        raise InvalidInput(f"the password needs at least {MIN_PASSWORD} characters", field="password")
    key = normalise_email(email)
    if repo.user_by_email(conn, key) is not None:
        raise Conflict("a user with this email already exists", field="email")
    row = {
        "merchant_id": merchant_id,
        "id": new_id("usr"),
        "email": email,
        "email_key": key,
        "password_hash": _hasher().hash(password),
        "role": role,
        "created_at": utcnow(),
        "failed_logins": 0,
        "locked_until": None,
        "last_login_at": None,
    }
    repo.insert_user(conn, row)
    return user_view(row)


def ensure_user(
    conn: Connection, *, merchant_id: str, email: str, password: str, role: str = "owner"
) -> dict[str, Any]:
    """Create the user, or give the merchant's existing user with this email a new password (and
    clear any lockout): what a demo or a first-run script needs to print working logins."""
    existing = repo.user_by_email(conn, normalise_email(email))
    if existing is None:
        return create_user(conn, merchant_id=merchant_id, email=email, password=password, role=role)
    if existing["merchant_id"] != merchant_id:
        raise Conflict("a user with this email already exists", field="email")
    if not MIN_PASSWORD <= len(password) <= 1024:
        raise InvalidInput(f"the password needs at least {MIN_PASSWORD} characters", field="password")
    repo.update_user(
        conn,
        merchant_id,
        existing["id"],
        password_hash=_hasher().hash(password),
        role=role,
        failed_logins=0,
        locked_until=None,
    )
    return user_view({**existing, "role": role})


def authenticate(conn: Connection, *, email: str, password: str) -> dict[str, Any] | None:
    """The user if ``email`` and ``password`` match and the account is not locked, else ``None``.
    Commit the transaction either way: failures are counted."""
    now = utcnow()
    user = repo.user_by_email(conn, normalise_email(email.strip())) if email.strip() else None
    if user is None:
        _verify(_decoy(), password)
        return None
    if user["locked_until"] is not None and user["locked_until"] > now:
        _verify(_decoy(), password)
        return None
    if not _verify(user["password_hash"], password):
        failures = repo.count_failure(conn, user["merchant_id"], user["id"])
        if failures >= LOCK_AFTER:
            repo.update_user(
                conn, user["merchant_id"], user["id"], failed_logins=0, locked_until=now + LOCK_FOR
            )
        return None
    changes: dict[str, Any] = {"failed_logins": 0, "locked_until": None, "last_login_at": now}
    if _hasher().check_needs_rehash(user["password_hash"]):
        changes["password_hash"] = _hasher().hash(password)
    repo.update_user(conn, user["merchant_id"], user["id"], **changes)
    return user_view({**user, **changes})


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher().verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def get_user(conn: Connection, *, merchant_id: str, user_id: str) -> dict[str, Any]:
    row = repo.get_user(conn, merchant_id, user_id)
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return user_view(row)


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    merchant_id: str
    kind: SessionKind
    subject_id: str
    csrf: str
    expires_at: datetime

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), (sent or "").encode())


def start_session(
    conn: Connection, *, merchant_id: str, kind: SessionKind, subject_id: str
) -> tuple[str, Session]:
    """A new session; returns the token for the cookie (shown only here) and the session."""
    now = utcnow()
    repo.purge_sessions(conn, now)
    token = secrets.token_urlsafe(32)
    session = Session(
        new_id("ses"), merchant_id, kind, subject_id, secrets.token_urlsafe(32), now + SESSION_TTL[kind]
    )
    repo.insert_session(
        conn,
        {
            "merchant_id": merchant_id,
            "id": session.id,
            "token_hash": token_hash(token),
            "kind": kind,
            "subject_id": subject_id,
            "csrf": session.csrf,
            "created_at": now,
            "expires_at": session.expires_at,
        },
    )
    return token, session


def session_for(conn: Connection, *, token: str | None, kind: SessionKind) -> Session | None:
    """The live session of ``kind`` the token opens, else ``None``."""
    if not token or len(token) > 200:
        return None
    row = repo.session_by_hash(conn, token_hash(token))
    if row is None or row["kind"] != kind or row["expires_at"] <= utcnow():
        return None
    return Session(
        row["id"], row["merchant_id"], row["kind"], row["subject_id"], row["csrf"], row["expires_at"]
    )


def end_session(conn: Connection, *, token: str | None) -> None:
    if token:
        repo.delete_session(conn, token_hash(token))
