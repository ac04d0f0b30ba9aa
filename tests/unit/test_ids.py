"""Identifiers: ``prefix_`` + 10 base32 digits of milliseconds + 16 that increase within one,
Crockford's alphabet in lower case, so that ids sort by creation time within a process."""

from __future__ import annotations

import itertools
import random
import re
import time

from patron.storage import ids


def digits(n: int, width: int) -> str:
    """The low ``width`` base32 digits of ``n`` one at a time: the definition."""
    out = []
    for _ in range(width):
        n, r = divmod(n, 32)
        out.append("0123456789abcdefghjkmnpqrstvwxyz"[r])
    return "".join(reversed(out))


def test_ids_are_the_milliseconds_and_counter_in_base32() -> None:
    rng = random.Random(20261124)
    for _ in range(5000):
        ms, counter = rng.getrandbits(rng.choice([41, 50, 52])), rng.getrandbits(rng.choice([79, 80, 82]))
        assert ids._digits26(ms, counter) == digits(ms, 10) + digits(counter, 16)
        for width in (10, 13, 14, 16):
            n = rng.getrandbits(90)
            assert ids._b32(n, width) == digits(n, width)


def test_new_ids_have_the_format_and_sort_in_creation_order() -> None:
    made = [ids.new_id("evt") for _ in range(2000)]
    assert all(re.fullmatch(r"evt_[0-9a-hjkmnp-tv-z]{26}", i) for i in made)
    assert made == sorted(made) and len(set(made)) == len(made)


ID = re.compile(r"^evt_[0-9a-hjkmnp-tv-z]{26}$")


def test_bulk_ids_have_the_format_and_order_of_new_id() -> None:
    made = ids.Ids(block=3000)
    got = [made("evt") for _ in range(5000)]  # two blocks, several 1,024-id runs
    assert all(ID.match(i) for i in got)
    assert ID.match(ids.new_id("evt"))
    assert got == sorted(got) and len(set(got)) == len(got)
    after = ids.new_id("evt")  # the process-wide order goes on past the reserved blocks
    assert after > got[-1]
    # within a millisecond the random part counts up by one, encoded as ``new_id`` encodes it
    for a, b in itertools.pairwise(got):
        if a[4:14] == b[4:14]:
            assert int_of(b[14:]) == int_of(a[14:]) + 1
    assert got[-1][14:] == ids._b32(made.next - 1, 16)


def int_of(tail: str) -> int:
    n = 0
    for ch in tail:
        n = n * 32 + ids._ALPHABET.index(ch)
    return n


def test_a_derived_id_is_the_same_for_the_same_inputs_and_sorts_by_its_time() -> None:
    from datetime import UTC, datetime, timedelta

    from patron.storage.ids import derived_id, new_id

    before = new_id("evt")
    at = datetime.now(UTC) + timedelta(milliseconds=5)
    made = derived_id("evt", at, "expiring:mem_1:2027-01-31:30")
    time.sleep(0.02)
    after = new_id("evt")
    assert made == derived_id("evt", at, "expiring:mem_1:2027-01-31:30")
    assert made != derived_id("evt", at, "expiring:mem_1:2027-01-31:7")
    assert before < made < after
    assert ID.match(made)
