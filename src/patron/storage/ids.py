"""Identifiers: prefixed, time-ordered (ULID-like, monotonic within a process), URL-safe."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from datetime import datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_lock = threading.Lock()
_last = [0, 0]


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # two digits for each 10-bit value
#: RFC 4648's base32 alphabet (what ``base64.b32encode`` writes) to ours, digit for digit
_FROM_RFC = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def _b32(n: int, width: int) -> str:
    """The low ``width`` base32 digits of ``n``, most significant first."""
    out = []
    for _ in range(width // 2):
        out.append(_PAIRS[n & 1023])
        n >>= 10
    if width % 2:
        out.append(_ALPHABET[n & 31])
    return "".join(reversed(out))


def _digits26(ms: int, rand: int) -> str:
    """``_b32(ms, 10) + _b32(rand, 16)`` in one C call: the 130 bits padded to 160 bits (20
    bytes, 32 digits), of which the first 26 digits are ours."""
    n = ((ms & (1 << 50) - 1) << 80 | (rand & (1 << 80) - 1)) << 30
    return base64.b32encode(n.to_bytes(20, "big"))[:26].translate(_FROM_RFC).decode()


def _reserve(count: int) -> tuple[int, int]:
    """``count`` consecutive identifiers of the process-wide order: (milliseconds, first counter)."""
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last[0]:
            ms = _last[0]
            rand = _last[1] + 1
        else:
            rand = secrets.randbits(79)
        _last[0], _last[1] = ms, rand + count - 1
    return ms, rand


def new_id(prefix: str) -> str:
    """``prefix_`` + 10 chars of milliseconds + 16 chars that increase within a millisecond."""
    ms, rand = _reserve(1)
    return f"{prefix}_{_digits26(ms, rand)}"


def derived_id(prefix: str, at: datetime, source: str) -> str:
    """An identifier that the same ``(at, source)`` always gives: ``at``'s milliseconds, as
    :func:`new_id` starts, so that it sorts among the others by that time, then 16 digits of a
    hash of ``source``. For a record a job may find due again: the second has the first's id."""
    digest = int.from_bytes(hashlib.md5(source.encode(), usedforsecurity=False).digest()[:10], "big")
    return f"{time_head(prefix, at)}{_b32(digest, 16)}"


def time_head(prefix: str, at: datetime) -> str:
    """``prefix_`` and ``at``'s 10 digits of milliseconds: what an id made at ``at`` starts with
    (a statement that names many rows adds 16 digits of its own)."""
    return f"{prefix}_{_b32(int(at.timestamp() * 1000), 10)}"


class Ids:
    """:func:`new_id` for many rows: the same format and the same process-wide order, from blocks
    reserved at once (one reservation per ``block`` identifiers); the counter's first 14 digits
    are encoded once per 1,024 identifiers, the last two looked up."""

    def __init__(self, block: int = 4096) -> None:
        self.block = block
        self.head = ""
        self.next = self.end = 0
        self.upper = -1  # rand >> 10 of the encoded ``middle``
        self.middle = ""

    def __call__(self, prefix: str) -> str:
        if self.next >= self.end:
            ms, self.next = _reserve(self.block)
            self.head, self.end = _b32(ms, 10), self.next + self.block
        rand = self.next
        self.next = rand + 1
        if rand >> 10 != self.upper:
            self.upper = rand >> 10
            self.middle = self.head + _b32(self.upper, 14)
        return f"{prefix}_{self.middle}{_PAIRS[rand & 1023]}"


def random_code(length: int, alphabet: str = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789") -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def random_digits(length: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(length))
