"""Public identifiers: a type prefix and a time-ordered random body.

The body is 32 lower-case hex digits: 48 bits of milliseconds since the epoch,
then 80 random bits. Ids sort by creation time, so cursor pagination can use
them directly, and they are random enough that one user cannot guess or count
another user's objects (sequential integers would leak message volume). Hex
rather than base32 because ``bytes.hex`` is C code and the stdlib base32
encoder is pure Python (18 µs an id, on the ingest hot path).

Within one process ids are strictly increasing, also within one millisecond
(the random part then grows by a random step, as monotonic ULIDs do): lists
keep the order things were made in (a batch of messages, an imported address
book) instead of a random order among same-millisecond ids.
"""

from __future__ import annotations

import os
import threading
import time

_HEX = frozenset("0123456789abcdef")
_BODY_LENGTH = 32
_RANDOM_BITS = 80
_RANDOM_LIMIT = 1 << _RANDOM_BITS


class _Monotonic:
    """The last id's (millisecond, random part); one per process, as the clock is."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.millis = 0
        self.random = 0

    def next(self) -> tuple[int, int]:
        millis = time.time_ns() // 1_000_000
        with self.lock:
            if millis > self.millis:
                self.millis = millis
                self.random = int.from_bytes(os.urandom(10), "big")
            else:
                # Same millisecond (or the clock stepped back): stay after the last id.
                step = 1 + int.from_bytes(os.urandom(4), "big")
                self.random += step
                if self.random >= _RANDOM_LIMIT:
                    self.millis += 1
                    self.random = int.from_bytes(os.urandom(10), "big") >> 1
            return self.millis, self.random


_SEQUENCE = _Monotonic()
# A forked child must not hand out the ids its parent goes on handing out.
os.register_at_fork(after_in_child=_SEQUENCE.reset)


def new_id(prefix: str) -> str:
    millis, random = _SEQUENCE.next()
    return f"{prefix}_{millis:012x}{random:020x}"


def looks_like_id(prefix: str, value: str) -> bool:
    body = value[len(prefix) + 1 :]
    return (
        value.startswith(prefix + "_")
        and len(body) == _BODY_LENGTH
        and all(ch in _HEX for ch in body)
    )
