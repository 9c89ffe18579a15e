"""Public identifiers: a type prefix and a time-ordered random body.

The body is 32 lower-case hex digits: 48 bits of milliseconds since the epoch,
then 80 random bits. Ids sort by creation time, so cursor pagination can use
them directly, and they are random enough that one user cannot guess or count
another user's objects (sequential integers would leak message volume). Hex
rather than base32 because ``bytes.hex`` is C code and the stdlib base32
encoder is pure Python (18 µs an id, on the ingest hot path).
"""

from __future__ import annotations

import os
import time

_HEX = frozenset("0123456789abcdef")
_BODY_LENGTH = 32


def new_id(prefix: str) -> str:
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{(millis.to_bytes(6, 'big') + os.urandom(10)).hex()}"


def looks_like_id(prefix: str, value: str) -> bool:
    body = value[len(prefix) + 1 :]
    return (
        value.startswith(prefix + "_")
        and len(body) == _BODY_LENGTH
        and all(ch in _HEX for ch in body)
    )
