"""Client IPs tied to abuse of sign-in (repeated wrong codes, floods of code requests).

A flag is one row per (ip, reason): ``count`` says how many times it was raised,
``first_seen``/``last_seen`` when. Flagged IPs are kept past the IP purge and listed
for operators; this module only writes them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa

from inbox.ids import new_id
from inbox.models import abuse_flags_t

MAX_IP_CHARS = 64


class AbuseReason(StrEnum):
    FAILED_CODES = "failed_codes"  # privacy.abuse_failed_codes wrong codes in auth.window_s
    CODE_REQUEST_FLOOD = "code_request_flood"  # over auth.codes_per_ip
    CODE_ATTEMPT_FLOOD = "code_attempt_flood"  # over auth.attempts_per_ip


def flag(conn: sa.Connection, ip: str, reason: AbuseReason, now: datetime) -> None:
    """Raise (or raise again) the flag of ``ip`` for ``reason``, in the caller's
    transaction. Safe when two processes flag the same IP at once: the update runs
    first, and an insert that loses the race to the unique (ip, reason) falls back
    to the update."""
    ip = ip[:MAX_IP_CHARS]
    if _bump(conn, ip, reason, now):
        return
    insert = abuse_flags_t.insert().values(
        id=new_id("abf"), ip=ip, reason=reason.value, count=1, first_seen=now, last_seen=now
    )
    try:
        with conn.begin_nested():
            conn.execute(insert)
    except sa.exc.IntegrityError:
        _bump(conn, ip, reason, now)


def _bump(conn: sa.Connection, ip: str, reason: AbuseReason, now: datetime) -> bool:
    result = conn.execute(
        abuse_flags_t.update()
        .where(abuse_flags_t.c.ip == ip, abuse_flags_t.c.reason == reason.value)
        .values(count=abuse_flags_t.c.count + 1, last_seen=now)
    )
    return result.rowcount > 0
