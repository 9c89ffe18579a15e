"""The normalised inbound message every bridge produces, and what ingest answers."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from inbox.addresses import Address


class Channel(enum.StrEnum):
    SMS = "sms"
    MMS = "mms"
    EMAIL = "email"


class Folder(enum.StrEnum):
    INBOX = "inbox"
    QUARANTINE = "quarantine"
    SENT = "sent"
    # Outbound messages being written: editable until sent, never delivered anywhere.
    DRAFTS = "drafts"
    # Held messages of a sender the user blocked from the screener: hidden from every
    # list and lookup, kept only while the block can be undone, then deleted.
    DISCARDED = "discarded"


class Verdict(enum.StrEnum):
    ADMIT = "admit"
    QUARANTINE = "quarantine"
    DROP = "drop"


class AttachmentStatus(enum.StrEnum):
    PENDING = "pending"
    STORED = "stored"
    FAILED = "failed"


class AuthResult(enum.StrEnum):
    """RFC 8601 result words used for SPF, DKIM and DMARC."""

    PASS = "pass"  # noqa: S105 - an RFC 8601 result word, not a password
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class SenderAuth:
    """How far the sender's identity was verified (email: SPF/DKIM/DMARC).

    ``aligned`` is True when a passing SPF or DKIM identity aligns with the From
    domain (the DMARC test), whether or not the domain publishes a DMARC policy.
    """

    spf: AuthResult = AuthResult.NONE
    dkim: AuthResult = AuthResult.NONE
    dmarc: AuthResult = AuthResult.NONE
    aligned: bool = False

    @property
    def authenticated(self) -> bool:
        return self.dmarc is AuthResult.PASS or self.aligned


@dataclass(frozen=True, slots=True)
class InboundAttachment:
    """An attachment as received: inline bytes (email; the bridge has already put
    them in the blob store, so the row is written as stored) or a remote reference
    (MMS; fetched later)."""

    content_type: str
    filename: str | None = None
    content: bytes | None = None
    remote_url: str | None = None


@dataclass(frozen=True, slots=True)
class Flood:
    """The gateway found this message over the per-sender limit (``limits.sender_*``):
    more than ``limit`` messages from its sender to its recipient within ``window_s``.
    ``announce`` is True for the first such message of a window: that one is told to
    the user's live clients, the rest of the flood is stored silently."""

    limit: int
    window_s: int
    announce: bool = True


@dataclass(frozen=True, slots=True)
class Inbound:
    """One inbound message, normalised. Bridges build it; nothing provider-specific
    leaks in except the opaque ``provider_meta`` kept for support and export."""

    bridge: str
    external_id: str
    channel: Channel
    sender: Address
    recipient: Address
    text: str
    received_at: datetime
    subject: str | None = None
    html: str | None = None
    attachments: tuple[InboundAttachment, ...] = ()
    # None: the channel has no sender authentication of its own (SMS: the carrier's word).
    auth: SenderAuth | None = None
    provider_meta: Mapping[str, str] = field(default_factory=dict)
    # Set by a bridge that found the message hostile or unreadable (a MIME bomb, an
    # unparseable email): held in quarantine with this reason whoever the sender is.
    hold_reason: str | None = None
    # The raw email this was parsed from, kept for export.
    raw_id: str | None = None
    # An opt-out keyword the whole message is ("stop", "start", "help"): a STOP
    # records that the counterpart wants no more SMS from the user, START undoes it.
    keyword: str | None = None
    # The conversation the message belongs to (inbox.conversations): set by the email
    # bridge (its thread root); None for SMS/MMS, whose key is the sender itself.
    conversation: str | None = None
    # Set by the gateway's flood limit, never by a bridge (see Flood).
    flood: Flood | None = None


class Outcome(enum.StrEnum):
    ADMITTED = "admitted"
    QUARANTINED = "quarantined"
    DROPPED = "dropped"
    UNROUTABLE = "unroutable"
    # A user's command to their own account (SMS TRUST/BLOCK/LIST): answered, not stored.
    COMMAND = "command"


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one inbound message. ``duplicate`` is True when the provider
    retried something already stored: the first result is returned, nothing is new."""

    outcome: Outcome
    reason: str
    message_id: str | None = None
    duplicate: bool = False
    # The user a new message was stored for (their live streams are told after the
    # commit); None when nothing new was stored, or when it is part of a flood
    # stored silently (Flood.announce).
    user_id: str | None = None
    # Newly stored and held because its sender went over the per-sender limit.
    held_for_flood: bool = False
