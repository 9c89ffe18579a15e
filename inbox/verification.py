"""Proving a mobile number with a 6-digit code sent by SMS: for sign-up, sign-in and
a change of number.

A verification row holds an argon2 hash of the code, an expiry, a count of guesses
and ``consumed_at``. :func:`verify` is safe under concurrent calls for one code:

1. a conditional UPDATE reserves one guess (``attempts < max``, not consumed, not
   expired) before the code is compared, so concurrent guesses can never exceed the
   allowed number;
2. the code is compared (argon2, constant time) outside any transaction;
3. a right code is consumed by a second conditional UPDATE (``WHERE consumed_at IS
   NULL``) in the same transaction that creates the account or issues the token, so
   exactly one of several concurrent right guesses wins.

Sign-in for a number with no account gets a verification like any other (the answer
must not tell whether a number has an account), but no code is sent and it can never
succeed: its ``user_id`` is empty, so even a lucky guess is a wrong code.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from inbox import store
from inbox.accounts import AuthMethod, AuthOutcome, log_attempt
from inbox.addresses import E164, region_of
from inbox.db import Database, as_utc
from inbox.errors import InboxError
from inbox.ids import new_id
from inbox.models import users_t, verifications_t

CODE_DIGITS = 6


class Purpose(StrEnum):
    SIGNUP = "signup"
    LOGIN = "login"
    PHONE_CHANGE = "phone_change"


class CorruptVerification(InboxError):
    """Raised when a sign-up verification's stored form cannot be read back (the row
    was altered outside the gateway)."""


@dataclass(frozen=True, slots=True)
class SignupForm:
    """What a new account is made of, kept with the verification until the number is
    proved (and deleted from it then)."""

    first_name: str
    last_name: str
    date_of_birth: date
    referral_code: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "first_name": self.first_name,
                "last_name": self.last_name,
                "date_of_birth": self.date_of_birth.isoformat(),
                "referral_code": self.referral_code,
            }
        )

    @classmethod
    def from_json(cls, raw: str | None) -> SignupForm:
        try:
            data = json.loads(raw or "")
            return cls(
                first_name=str(data["first_name"]),
                last_name=str(data["last_name"]),
                date_of_birth=date.fromisoformat(data["date_of_birth"]),
                referral_code=data.get("referral_code"),
            )
        except (ValueError, KeyError, TypeError):
            raise CorruptVerification(
                "the sign-up form of this verification is unreadable"
            ) from None


class CodeHasher:
    """argon2id with deliberately low cost (t=1, 8 MiB: ~4 ms a hash on this machine
    class). A code has only 10^6 values, so a fast hash (SHA-256: a microsecond)
    would give up every outstanding code from a database dump at once; at ~4 ms a
    guess, one code costs about an hour of CPU, longer than it lives (auth.code_ttl_s).
    Much higher cost would not buy much more against 10^6 guesses, but would make
    every sign-in attempt a CPU burden an attacker can trigger."""

    def __init__(self, *, time_cost: int = 1, memory_kib: int = 8192) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)

    def hash(self, code: str) -> str:
        return self._hasher.hash(code)

    def matches(self, code_hash: str, code: str) -> bool:
        # argon2 compares the derived keys in constant time.
        try:
            return self._hasher.verify(code_hash, code)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def looks_like_code(text: object) -> bool:
    return isinstance(text, str) and len(text) == CODE_DIGITS and text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class Started:
    id: str
    expires_at: datetime


def user_by_phone(db: Database, phone: E164) -> tuple[str, bool] | None:
    """(user id, suspended) of the account with this mobile number, if any."""
    with db.read.connect() as conn:
        row = conn.execute(
            sa.select(users_t.c.id, users_t.c.suspended_at).where(users_t.c.phone == phone)
        ).first()
    return None if row is None else (str(row.id), row.suspended_at is not None)


def start(
    db: Database,
    purpose: Purpose,
    phone: E164,
    code_hash: str,
    *,
    ttl_s: int,
    now: datetime,
    user_id: str | None = None,
    form: SignupForm | None = None,
) -> Started:
    """Store a verification of ``phone``. ``user_id``: the account it signs in to
    (login, or sign-up for a number that already has one) or whose number it changes;
    empty for a sign-up that creates an account and for a login that cannot succeed."""
    verification_id = new_id("vrf")
    expires_at = now + timedelta(seconds=ttl_s)
    with db.write.begin() as conn:
        conn.execute(
            verifications_t.insert().values(
                id=verification_id,
                purpose=purpose.value,
                phone=phone,
                user_id=user_id,
                code_hash=code_hash,
                details=form.to_json() if form is not None else None,
                created_at=now,
                expires_at=expires_at,
                attempts=0,
            )
        )
    return Started(verification_id, expires_at)


def void(db: Database, verification_id: str) -> None:
    """Delete a verification whose code could not be sent."""
    with db.write.begin() as conn:
        conn.execute(verifications_t.delete().where(verifications_t.c.id == verification_id))


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verification attempt came to. ``outcome`` is None for a verification
    that does not exist (for this caller); ``token`` is set when a token was issued."""

    outcome: AuthOutcome | None
    user_id: str | None = None
    token_id: str | None = None
    token: str | None = None
    attempts_left: int = 0


def _scope(verification_id: str, purposes: Collection[Purpose], for_user: str | None) -> Any:
    v = verifications_t.c
    clause = sa.and_(v.id == verification_id, v.purpose.in_([p.value for p in purposes]))
    if for_user is not None:
        clause = sa.and_(clause, v.user_id == for_user)
    return clause


@dataclass(frozen=True, slots=True)
class Attempt:
    """Who is trying: shown in the account's authentication log."""

    device: str | None
    ip: str | None
    now: datetime


def verify(
    db: Database,
    hasher: CodeHasher,
    verification_id: str,
    code: str,
    attempt: Attempt,
    *,
    purposes: Collection[Purpose],
    max_attempts: int,
    for_user: str | None = None,
) -> Verified:
    """Check ``code`` against the verification and act on it: sign up (create the
    account), sign in (issue a token to ``attempt.device``) or change the number of
    ``for_user``. Every attempt on an existing account is logged for its owner."""
    v = verifications_t.c
    now = attempt.now
    scope = _scope(verification_id, purposes, for_user)
    with db.write.begin() as conn:
        reserved = conn.execute(
            verifications_t.update()
            .where(scope, v.consumed_at.is_(None), v.attempts < max_attempts, v.expires_at > now)
            .values(attempts=v.attempts + 1)
        ).rowcount
        row = conn.execute(sa.select(verifications_t).where(scope)).first()
        if row is None:
            return Verified(None)
        purpose = Purpose(row.purpose)
        if not reserved:
            if row.consumed_at is not None:
                outcome = AuthOutcome.ALREADY_USED
            elif as_utc(row.expires_at) <= now:
                outcome = AuthOutcome.EXPIRED
            else:
                outcome = AuthOutcome.TOO_MANY_ATTEMPTS
            _log(conn, row.user_id, purpose, outcome, attempt)
            return Verified(outcome, user_id=row.user_id)
    attempts_left = max(0, max_attempts - int(row.attempts))
    # A login for a number without an account is compared too (the same time spent),
    # and fails whatever the code.
    right = hasher.matches(row.code_hash, code)
    if not right or (purpose is Purpose.LOGIN and row.user_id is None):
        with db.write.begin() as conn:
            _log(conn, row.user_id, purpose, AuthOutcome.WRONG_CODE, attempt)
        return Verified(AuthOutcome.WRONG_CODE, user_id=row.user_id, attempts_left=attempts_left)
    with db.write.begin() as conn:
        consumed = conn.execute(
            verifications_t.update()
            .where(v.id == verification_id, v.consumed_at.is_(None))
            .values(consumed_at=now, details=None)
        ).rowcount
        if not consumed:
            _log(conn, row.user_id, purpose, AuthOutcome.ALREADY_USED, attempt)
            return Verified(AuthOutcome.ALREADY_USED, user_id=row.user_id)
        if purpose is Purpose.PHONE_CHANGE:
            return _change_number(conn, row, attempt)
        return _sign_in(conn, row, attempt)


def _log(
    conn: sa.Connection,
    user_id: str | None,
    purpose: Purpose,
    outcome: AuthOutcome,
    attempt: Attempt,
) -> None:
    if user_id is None:
        return  # no account (yet): nothing to show anyone
    method = AuthMethod.PHONE_CHANGE if purpose is Purpose.PHONE_CHANGE else AuthMethod.SMS_CODE
    log_attempt(
        conn,
        user_id,
        method=method,
        outcome=outcome,
        device=attempt.device,
        ip=attempt.ip,
        now=attempt.now,
    )


def _existing_user(conn: sa.Connection, phone: str) -> Any:
    return conn.execute(
        sa.select(users_t.c.id, users_t.c.suspended_at).where(users_t.c.phone == phone)
    ).first()


def _sign_in(conn: sa.Connection, row: Any, attempt: Attempt) -> Verified:
    """Inside the consuming transaction: find or create the account, issue a token."""
    user_id: str | None = row.user_id
    outcome = AuthOutcome.SUCCESS
    suspended = False
    if user_id is None:
        # A sign-up: the number had no account when the code was sent; one may have
        # been made since (another sign-up of the same number), which is then signed in.
        user_id, suspended, created = _create_or_find(conn, row, attempt.now)
        if created:
            outcome = AuthOutcome.ACCOUNT_CREATED
    else:
        found = conn.execute(
            sa.select(users_t.c.suspended_at).where(users_t.c.id == user_id)
        ).first()
        suspended = found is not None and found.suspended_at is not None
    if suspended:
        _log(conn, user_id, Purpose(row.purpose), AuthOutcome.SUSPENDED, attempt)
        return Verified(AuthOutcome.SUSPENDED, user_id=user_id)
    token_id, token = store.issue_token(
        conn, user_id, attempt.device or "unnamed device", attempt.now
    )
    _log(conn, user_id, Purpose(row.purpose), outcome, attempt)
    return Verified(outcome, user_id=user_id, token_id=token_id, token=token)


def _create_or_find(conn: sa.Connection, row: Any, now: datetime) -> tuple[str, bool, bool]:
    """(user id, suspended, created) for the sign-up's number."""
    existing = _existing_user(conn, row.phone)
    if existing is not None:
        return str(existing.id), existing.suspended_at is not None, False
    form = SignupForm.from_json(row.details)
    user_id = new_id("usr")
    try:
        # A savepoint: a concurrent sign-up of the same number may win the unique index.
        with conn.begin_nested():
            conn.execute(
                users_t.insert().values(
                    id=user_id,
                    first_name=form.first_name,
                    last_name=form.last_name,
                    date_of_birth=form.date_of_birth,
                    phone=row.phone,
                    region=region_of(E164(row.phone)),
                    created_at=now,
                    referral_code=form.referral_code,
                )
            )
    except sa.exc.IntegrityError:
        existing = _existing_user(conn, row.phone)
        if existing is None:
            raise
        return str(existing.id), existing.suspended_at is not None, False
    return user_id, False, True


def _change_number(conn: sa.Connection, row: Any, attempt: Attempt) -> Verified:
    """Inside the consuming transaction: give the account its proved new number,
    unless another account has it."""
    user_id = str(row.user_id)
    outcome = AuthOutcome.PHONE_CHANGED
    taken = _existing_user(conn, row.phone)
    if taken is not None and taken.id != user_id:
        outcome = AuthOutcome.NUMBER_TAKEN
    else:
        try:
            with conn.begin_nested():
                conn.execute(
                    users_t.update()
                    .where(users_t.c.id == user_id)
                    .values(phone=row.phone, region=region_of(E164(row.phone)))
                )
        except sa.exc.IntegrityError:
            outcome = AuthOutcome.NUMBER_TAKEN
    _log(conn, user_id, Purpose.PHONE_CHANGE, outcome, attempt)
    return Verified(outcome, user_id=user_id)
