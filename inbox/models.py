"""SQLModel tables. Schema changes go through alembic migrations in inbox/migrations."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# Naming convention so that alembic migrations name constraints the same on every engine.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _fk(target: str) -> sa.ForeignKey:
    return sa.ForeignKey(target, ondelete="CASCADE")


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=40)
    first_name: str = Field(max_length=100)
    last_name: str = Field(max_length=100)
    date_of_birth: date
    phone: str = Field(max_length=20, unique=True)
    # Default region for numbers this user types without a country code.
    region: str = Field(max_length=2)
    created_at: datetime
    # Set by an operator ("breach of terms"): no sign-in, no sending, inbound held.
    suspended_at: datetime | None = None
    # The referral code given at sign-up, if any (kept with the account, exported).
    referral_code: str | None = Field(default=None, max_length=40)


class UserAddress(SQLModel, table=True):
    """An address that routes inbound traffic to a user: an OptMsg SMS number or email."""

    __tablename__ = "user_addresses"

    address: str = Field(primary_key=True, max_length=254)
    user_id: str = Field(
        sa_column=sa.Column(sa.String(40), _fk("users.id"), nullable=False, index=True)
    )
    kind: str = Field(max_length=10)
    created_at: datetime


class TrustEntry(SQLModel, table=True):
    """A sender the user trusts or blocks. ``address`` is canonical (E.164 or email)."""

    __tablename__ = "trust_entries"
    __table_args__ = (sa.UniqueConstraint("user_id", "address"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(sa_column=sa.Column(sa.String(40), _fk("users.id"), nullable=False))
    address: str = Field(max_length=254)
    verdict: str = Field(max_length=10)  # trusted | blocked
    source: str = Field(max_length=20)  # manual | contacts | sent_to | sms_command | release
    created_at: datetime


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        sa.UniqueConstraint("bridge", "external_id"),
        sa.Index("ix_messages_user_folder_id", "user_id", "folder", "id"),
        sa.Index("ix_messages_user_sender", "user_id", "sender"),
        # The screener groups a user's held messages by sender; the retention job
        # finds held messages by age across all users.
        sa.Index("ix_messages_user_folder_sender_id", "user_id", "folder", "sender", "id"),
        sa.Index("ix_messages_folder_received_at", "folder", "received_at"),
        # Retention deletes raw emails no message refers to.
        sa.Index("ix_messages_raw_id", "raw_id"),
        sa.Index("ix_messages_user_conversation_id", "user_id", "conversation", "id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    user_id: str = Field(sa_column=sa.Column(sa.String(40), _fk("users.id"), nullable=False))
    bridge: str = Field(max_length=32)
    external_id: str = Field(max_length=255)
    direction: str = Field(max_length=10)  # inbound | outbound
    channel: str = Field(max_length=10)
    folder: str = Field(max_length=16)
    sender: str = Field(max_length=254)
    recipient: str = Field(max_length=254)
    subject: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    text: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    html: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    received_at: datetime
    read: bool = False
    reason: str = Field(max_length=200)
    auth: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    provider_meta: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    # The raw email this message was parsed from (kept for export as .eml).
    raw_id: str | None = Field(default=None, max_length=40)
    # Outbound only: the provider's delivery status (pending, queued, sent,
    # delivered, undelivered, failed, ...) and its error code when it failed.
    status: str | None = Field(default=None, max_length=16)
    error_code: int | None = None
    # What the message is grouped under: the counterpart's number (SMS/MMS) or the
    # root of the email thread (from References/In-Reply-To/Message-ID).
    conversation: str | None = Field(default=None, max_length=254)


class Attachment(SQLModel, table=True):
    __tablename__ = "attachments"

    id: str = Field(primary_key=True, max_length=40)
    message_id: str = Field(
        sa_column=sa.Column(sa.String(40), _fk("messages.id"), nullable=False, index=True)
    )
    user_id: str = Field(
        sa_column=sa.Column(sa.String(40), _fk("users.id"), nullable=False, index=True)
    )
    filename: str | None = Field(default=None, max_length=255)
    content_type: str = Field(max_length=255)
    size: int | None = None
    status: str = Field(max_length=10)  # pending | stored | failed
    sha256: str | None = Field(default=None, max_length=64)
    remote_url: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    error: str | None = Field(default=None, max_length=500)
    created_at: datetime


class RawMessage(SQLModel, table=True):
    """An email exactly as received, committed before the SMTP ``250``; parsed after.

    ``state`` is ``pending`` until every recipient's message is stored, then
    ``done``; a pending row found at start-up is parsed again (idempotently).
    """

    __tablename__ = "raw_messages"
    __table_args__ = (sa.Index("ix_raw_messages_state_id", "state", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    received_at: datetime
    peer_ip: str = Field(max_length=64)
    helo: str = Field(max_length=255)
    mail_from: str = Field(max_length=320)
    recipients: str = Field(sa_column=sa.Column(sa.Text, nullable=False))  # JSON list
    size: int
    sha256: str = Field(max_length=64)
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    state: str = Field(max_length=10)
    error: str | None = Field(default=None, max_length=500)
    # Our Authentication-Results header value; prepended to ``data`` on export
    # (rewriting the whole message to add one line cost 8% of the email path).
    auth_results: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


class Contact(SQLModel, table=True):
    """One entry of a user's uploaded address book; numbers and addresses canonical."""

    __tablename__ = "contacts"

    id: str = Field(primary_key=True, max_length=40)
    user_id: str = Field(
        sa_column=sa.Column(sa.String(40), _fk("users.id"), nullable=False, index=True)
    )
    name: str = Field(max_length=200)
    phones: str = Field(sa_column=sa.Column(sa.Text, nullable=False))  # JSON list of E.164
    emails: str = Field(sa_column=sa.Column(sa.Text, nullable=False))  # JSON list
    created_at: datetime


class ScreenerDecision(SQLModel, table=True):
    """A screener allow/block, kept so that the user can undo it for a short while.

    ``payload`` (JSON) holds, per sender, the trust entry it replaced and the ids of
    the messages it moved, grouped by their previous reason.
    """

    __tablename__ = "screener_decisions"
    __table_args__ = (sa.Index("ix_screener_decisions_user_id_id", "user_id", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    user_id: str = Field(sa_column=sa.Column(sa.String(40), _fk("users.id"), nullable=False))
    action: str = Field(max_length=10)  # allow | block
    payload: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime
    undone: bool = False


class SmsOptOut(SQLModel, table=True):
    """A counterpart who texted STOP to a user's number: no SMS from that user to them
    until they text START. Recorded in the ingest transaction of the STOP message."""

    __tablename__ = "sms_opt_outs"

    user_id: str = Field(
        sa_column=sa.Column(sa.String(40), _fk("users.id"), primary_key=True, nullable=False)
    )
    address: str = Field(primary_key=True, max_length=254)
    created_at: datetime


class ApiToken(SQLModel, table=True):
    """A client API bearer token. Only the SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=40)
    user_id: str = Field(
        sa_column=sa.Column(sa.String(40), _fk("users.id"), nullable=False, index=True)
    )
    token_hash: str = Field(max_length=64, unique=True)
    # The device (or "cli") the token was issued to, shown in the device list.
    name: str = Field(max_length=100)
    created_at: datetime
    last_used_at: datetime | None = None


class Verification(SQLModel, table=True):
    """A code sent by SMS to prove a mobile number: for sign-up (``details`` holds the
    sign-up form as JSON until the account exists), sign-in or a number change.
    Only a hash of the code is stored; it expires, allows a few guesses, and is used
    once (``consumed_at``)."""

    __tablename__ = "verifications"
    __table_args__ = (sa.Index("ix_verifications_phone_created_at", "phone", "created_at"),)

    id: str = Field(primary_key=True, max_length=40)
    purpose: str = Field(max_length=16)  # signup | login | phone_change
    phone: str = Field(max_length=20)
    user_id: str | None = Field(
        default=None,
        sa_column=sa.Column(sa.String(40), _fk("users.id"), nullable=True, index=True),
    )
    code_hash: str = Field(max_length=255)
    details: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime
    expires_at: datetime
    attempts: int = 0
    consumed_at: datetime | None = None


class AuthEvent(SQLModel, table=True):
    """One sign-in attempt on an account, shown to its owner. ``ip`` is erased after
    ``privacy.ip_log_days``."""

    __tablename__ = "auth_log"
    __table_args__ = (
        sa.Index("ix_auth_log_user_id_id", "user_id", "id"),
        sa.Index("ix_auth_log_created_at", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    user_id: str = Field(sa_column=sa.Column(sa.String(40), _fk("users.id"), nullable=False))
    created_at: datetime
    method: str = Field(max_length=16)  # sms_code | token
    outcome: str = Field(max_length=32)  # success | wrong_code | expired | ...
    device: str | None = Field(default=None, max_length=100)
    ip: str | None = Field(default=None, max_length=64)


class AbuseFlag(SQLModel, table=True):
    """A client IP tied to abuse (repeated failed codes, floods): kept past the IP
    purge and listed for operators."""

    __tablename__ = "abuse_flags"
    __table_args__ = (sa.UniqueConstraint("ip", "reason"),)

    id: str = Field(primary_key=True, max_length=40)
    ip: str = Field(max_length=64)
    reason: str = Field(max_length=100)
    count: int = 0
    first_seen: datetime
    last_seen: datetime


class Event(SQLModel, table=True):
    """A change a user's clients hear about live (new message, status change,
    screener change); kept a while so that a reconnecting client resumes from
    ``Last-Event-ID``."""

    __tablename__ = "events"
    __table_args__ = (
        sa.Index("ix_events_user_id_id", "user_id", "id"),
        sa.Index("ix_events_created_at", "created_at"),
    )

    id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )
    user_id: str = Field(sa_column=sa.Column(sa.String(40), _fk("users.id"), nullable=False))
    kind: str = Field(max_length=32)
    data: str = Field(sa_column=sa.Column(sa.Text, nullable=False))  # JSON
    created_at: datetime


class DataExport(SQLModel, table=True):
    """A user's request for an archive of all their data, built by a job."""

    __tablename__ = "exports"

    id: str = Field(primary_key=True, max_length=40)
    user_id: str = Field(
        sa_column=sa.Column(sa.String(40), _fk("users.id"), nullable=False, index=True)
    )
    state: str = Field(max_length=10)  # pending | ready | failed
    created_at: datetime
    expires_at: datetime | None = None
    # Bytes: an archive may exceed 2 GiB.
    size: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    sha256: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, max_length=500)


class Lease(SQLModel, table=True):
    """A named lease (inbox.leases): which process runs a periodic job, and until when."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: datetime


users_t = User.__table__  # type: ignore[attr-defined]
user_addresses_t = UserAddress.__table__  # type: ignore[attr-defined]
trust_entries_t = TrustEntry.__table__  # type: ignore[attr-defined]
messages_t = Message.__table__  # type: ignore[attr-defined]
attachments_t = Attachment.__table__  # type: ignore[attr-defined]
api_tokens_t = ApiToken.__table__  # type: ignore[attr-defined]
raw_messages_t = RawMessage.__table__  # type: ignore[attr-defined]
contacts_t = Contact.__table__  # type: ignore[attr-defined]
screener_decisions_t = ScreenerDecision.__table__  # type: ignore[attr-defined]
sms_opt_outs_t = SmsOptOut.__table__  # type: ignore[attr-defined]
verifications_t = Verification.__table__  # type: ignore[attr-defined]
auth_log_t = AuthEvent.__table__  # type: ignore[attr-defined]
abuse_flags_t = AbuseFlag.__table__  # type: ignore[attr-defined]
events_t = Event.__table__  # type: ignore[attr-defined]
exports_t = DataExport.__table__  # type: ignore[attr-defined]
leases_t = Lease.__table__  # type: ignore[attr-defined]
