"""The account as its owner sees and edits it: profile fields and the authentication
log (every sign-in attempt on the account: when, how, the outcome, the device and,
until the IP purge, the client IP)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from inbox.db import Database, as_utc
from inbox.errors import InboxError, NotFound
from inbox.ids import new_id
from inbox.models import auth_log_t, users_t
from inbox.store import Page, decode_cursor, encode_cursor

MAX_NAME_CHARS = 100
MAX_DEVICE_CHARS = 100
MAX_REFERRAL_CHARS = 40
MAX_IP_CHARS = 64
OLDEST_BIRTH_YEAR = 1900


class InvalidProfile(InboxError, ValueError):
    """Raised when a profile field (name, date of birth, referral code, device name)
    is empty, too long, has control characters, or is not a plausible date; the
    message names the field."""


class AuthMethod(StrEnum):
    SMS_CODE = "sms_code"  # sign-up or sign-in with a code sent by SMS
    PHONE_CHANGE = "phone_change"  # proving a new mobile number


class AuthOutcome(StrEnum):
    SUCCESS = "success"
    ACCOUNT_CREATED = "account_created"
    PHONE_CHANGED = "phone_changed"
    WRONG_CODE = "wrong_code"
    EXPIRED = "expired"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    ALREADY_USED = "already_used"
    SUSPENDED = "suspended"
    NUMBER_TAKEN = "number_taken"


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in text)


def check_name(field: str, value: object) -> str:
    """A first or last name, trimmed."""
    if not isinstance(value, str):
        raise InvalidProfile(f"{field} must be a string")
    text = value.strip()
    if not text:
        raise InvalidProfile(f"{field} must not be empty")
    if len(text) > MAX_NAME_CHARS:
        raise InvalidProfile(f"{field} must be at most {MAX_NAME_CHARS} characters")
    if _has_control(text):
        raise InvalidProfile(f"{field} must not contain control characters")
    return text


def check_birth_date(value: object, today: date) -> date:
    """A date of birth written YYYY-MM-DD, not in the future nor before 1900."""
    if not isinstance(value, str) or len(value) != 10:
        raise InvalidProfile("date_of_birth must be a date written YYYY-MM-DD")
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        raise InvalidProfile("date_of_birth must be a date written YYYY-MM-DD") from None
    if parsed > today:
        raise InvalidProfile("date_of_birth is in the future")
    if parsed.year < OLDEST_BIRTH_YEAR:
        raise InvalidProfile(f"date_of_birth must be in {OLDEST_BIRTH_YEAR} or later")
    return parsed


def check_referral(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidProfile("referral_code must be a string")
    text = value.strip()
    if not text:
        return None
    if len(text) > MAX_REFERRAL_CHARS or _has_control(text):
        raise InvalidProfile(
            f"referral_code must be at most {MAX_REFERRAL_CHARS} characters, no control characters"
        )
    return text


def check_device(value: object) -> str:
    """The name a client gives its device (shown in the token list)."""
    if value is None:
        return "unnamed device"
    if not isinstance(value, str) or not value.strip():
        raise InvalidProfile("device must be a non-empty string")
    text = value.strip()
    if len(text) > MAX_DEVICE_CHARS or _has_control(text):
        raise InvalidProfile(
            f"device must be at most {MAX_DEVICE_CHARS} characters, no control characters"
        )
    return text


@dataclass(frozen=True, slots=True)
class ProfileChange:
    first_name: str | None = None
    last_name: str | None = None
    date_of_birth: date | None = None

    def values(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("first_name", self.first_name),
                ("last_name", self.last_name),
                ("date_of_birth", self.date_of_birth),
            )
            if v is not None
        }


def update_profile(db: Database, user_id: str, change: ProfileChange) -> None:
    """Apply the (already checked) change; NotFound when the user no longer exists."""
    values = change.values()
    if not values:
        return
    with db.write.begin() as conn:
        updated = conn.execute(
            users_t.update().where(users_t.c.id == user_id).values(**values)
        ).rowcount
    if not updated:
        raise NotFound(f"no user {user_id}")


# --- authentication log ------------------------------------------------------------------


def log_attempt(
    conn: sa.Connection,
    user_id: str,
    *,
    method: AuthMethod,
    outcome: AuthOutcome,
    device: str | None,
    ip: str | None,
    now: datetime,
) -> None:
    """Record one sign-in attempt on the account, in the caller's transaction."""
    conn.execute(
        auth_log_t.insert().values(
            id=new_id("aul"),
            user_id=user_id,
            created_at=now,
            method=method.value,
            outcome=outcome.value,
            device=device[:MAX_DEVICE_CHARS] if device else None,
            ip=ip[:MAX_IP_CHARS] if ip else None,
        )
    )


def auth_log_page(db: Database, user_id: str, *, limit: int, cursor: str | None) -> Page:
    """The user's authentication log, newest first."""
    c = auth_log_t.c
    query = sa.select(c.id, c.created_at, c.method, c.outcome, c.device, c.ip).where(
        c.user_id == user_id
    )
    if cursor is not None:
        query = query.where(c.id < decode_cursor(cursor, "auth-log"))
    with db.read.connect() as conn:
        rows = list(conn.execute(query.order_by(c.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "id": r.id,
            "created_at": as_utc(r.created_at).isoformat(),
            "method": r.method,
            "outcome": r.outcome,
            "device": r.device,
            "ip": r.ip,
        }
        for r in rows
    ]
    return Page(items, encode_cursor("auth-log", rows[-1].id) if more else None)
