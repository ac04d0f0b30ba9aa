"""What the platform adapters share: signatures, exact JSON, money, times and defensive reading.

Every adapter module has the same four functions, pure (no database, no clock of its own):

* ``verify(secret, body, headers, *, urls, now) -> bool``: the platform's signature over the raw
  body (``urls``: the addresses the webhook may have been sent to, for schemes that sign them);
* ``is_ping(body, headers) -> bool``: an unsigned hello the platform sends when a webhook is set up;
* ``delivery(body, headers) -> (delivery_id, topic)``: never fails, even on a broken body;
* ``translate(topic, body) -> list[Action]``: the Patron actions the payload means, or
  :class:`~patron.services.integrations.MalformedPayload` when it is not what the platform sends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import wraps
from typing import Any, TypeVar

from patron.services.instant import in_range
from patron.services.integrations import Action, Customer, Ignore, MalformedPayload
from patron.services.money import to_minor

__all__ = ["Action", "Customer", "Ignore", "MalformedPayload"]

F = TypeVar("F", bound=Callable[..., list[Action]])


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever its case."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


def hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def base64_matches(signature: str | None, digest: bytes) -> bool:
    """Whether ``signature`` is ``digest`` in base64, compared in constant time."""
    if not signature:
        return False
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, digest)


def body_id(body: bytes) -> str:
    """A delivery id for a delivery that carries none we can read: the hash of its body."""
    return "sha256:" + hashlib.sha256(body).hexdigest()[:40]


def load(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body``. Integers stay exact (64-bit ids), decimals stay decimal."""
    try:
        data = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedPayload(f"the body is not valid JSON: {exc}")
    if not isinstance(data, dict):
        raise MalformedPayload("the body is not a JSON object")
    return data


def peek(body: bytes, *keys: str) -> list[Any]:
    """Top-level fields of a JSON body, or ``None`` each when it cannot be read."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return [None] * len(keys)
    if not isinstance(data, dict):
        return [None] * len(keys)
    return [data.get(k) for k in keys]


def text_id(value: Any) -> str:
    """A platform id as a string, exactly as sent (64-bit integers keep every digit)."""
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value) == "":
        raise MalformedPayload(f"expected an id, got {value!r}")
    return str(value)


def integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedPayload(f"{what} must be an integer, got {value!r}")
    return value


def money(value: Any, currency: str) -> int:
    """A decimal amount in currency units (``"199.00"`` or ``199.0``) in minor units."""
    if isinstance(value, Decimal | int | str) and not isinstance(value, bool):
        return to_minor(value, currency)
    raise MalformedPayload(f"expected an amount, got {value!r}")


def instant(value: Any, *, naive_is_utc: bool = False) -> datetime:
    """An RFC 3339 time (or a Unix timestamp) as an aware UTC datetime."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise MalformedPayload(f"timestamp {value!r} is out of range")
    if not isinstance(value, str):
        raise MalformedPayload(f"expected a time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedPayload(f"{value!r} is not an RFC 3339 time")
    if parsed.tzinfo is None:
        if not naive_is_utc:
            raise MalformedPayload(f"time {value!r} has no offset")
        parsed = parsed.replace(tzinfo=UTC)
    if not in_range(parsed):
        raise MalformedPayload(f"time {value!r} is out of range")
    return parsed.astimezone(UTC)


def currency_of(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise MalformedPayload(f"expected a currency code, got {value!r}")
    return value.upper()


def obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedPayload(f"{what} must be a JSON object")
    return value


def maybe_obj(value: Any) -> dict[str, Any]:
    """An optional JSON object: absent or null reads as empty."""
    return value if isinstance(value, dict) else {}


def items(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedPayload(f"{what} must be a list")
    return value


def text(value: Any, limit: int) -> str | None:
    """Optional free text, trimmed to ``limit`` characters."""
    if value is None:
        return None
    out = str(value).strip()[:limit]
    return out or None


def guarded(fn: F) -> F:
    """Payloads come from outside: a missing field or a wrong type is a malformed payload, never
    a crash."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> list[Action]:
        try:
            return fn(*args, **kwargs)
        except KeyError as exc:
            raise MalformedPayload(f"the payload has no field {exc}")
        except (TypeError, AttributeError, ValueError, ArithmeticError) as exc:
            raise MalformedPayload(f"the payload is not what the platform sends: {exc}")

    return wrapper  # type: ignore[return-value]


def unknown_topic(platform: str, topic: str) -> list[Action]:
    return [Ignore(f"{platform} topic {topic!r} is not one Patron acts on")]
