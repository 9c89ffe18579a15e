"""Public identifiers: a type prefix and a time-ordered random body (ULID-like).

Ids sort by creation time, so cursor pagination can use them directly, and they
are random enough that one user cannot guess or count another user's objects
(sequential integers would leak message volume across accounts).
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower-case


def _b32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """``prefix_`` + 10 chars of milliseconds since the epoch + 16 random chars."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_b32(millis, 10)}{_b32(rand, 16)}"


def looks_like_id(prefix: str, value: str) -> bool:
    body = value[len(prefix) + 1 :]
    return (
        value.startswith(prefix + "_") and len(body) == 26 and all(ch in _ALPHABET for ch in body)
    )
