"""Public ids: prefixed, time-ordered, unguessable."""

from __future__ import annotations

import time

from inbox.ids import looks_like_id, new_id


def test_ids_carry_their_prefix_and_a_32_hex_digit_body() -> None:
    value = new_id("msg")
    assert looks_like_id("msg", value)
    assert not looks_like_id("usr", value)


def test_ids_sort_by_creation_time() -> None:
    earlier = new_id("msg")
    time.sleep(0.002)
    later = new_id("msg")
    assert earlier < later


def test_ids_made_in_the_same_millisecond_are_distinct() -> None:
    assert len({new_id("msg") for _ in range(10_000)}) == 10_000


def test_ids_made_in_the_same_millisecond_keep_the_order_they_were_made_in() -> None:
    made = [new_id("msg") for _ in range(10_000)]
    assert made == sorted(made)


def test_consecutive_ids_are_not_adjacent_numbers() -> None:
    # Within one millisecond the random part grows by a random step, so one id does
    # not give away the next one.
    steps = set()
    for _ in range(200):
        a, b = new_id("msg"), new_id("msg")
        if a[4:16] == b[4:16]:
            steps.add(int(b[16:], 16) - int(a[16:], 16))
    assert steps and min(steps) > 0 and len(steps) > 1
