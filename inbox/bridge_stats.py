"""What `optmsg bridges status` reports from the store: per bridge, messages received
and sent, attachments still pending or failed, and the latest error.

Prometheus counters live in each gateway process and reset when it restarts; these
figures come from the database, so they cover every process and survive restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from inbox.db import Database, as_utc
from inbox.models import attachments_t, messages_t, raw_messages_t

#: Raw emails that could not be parsed (kept and quarantined) carry an error; this is
#: the store's name of the email bridge (gateway.email_ingest.BRIDGE).
EMAIL_BRIDGE = "email"


@dataclass(frozen=True, slots=True)
class LastError:
    at: datetime
    what: str

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "what": self.what}


@dataclass(frozen=True, slots=True)
class BridgeStats:
    bridge: str
    #: Inbound messages stored, by folder, all time and within the window.
    received: dict[str, int] = field(default_factory=dict)
    received_recent: int = 0
    #: Outbound messages by delivery status.
    sent: dict[str, int] = field(default_factory=dict)
    attachments_pending: int = 0
    attachments_failed: int = 0
    #: Raw emails received but not yet parsed (email bridge only).
    raw_pending: int = 0
    last_received_at: datetime | None = None
    last_error: LastError | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "bridge": self.bridge,
            "received": self.received,
            "received_recent": self.received_recent,
            "sent": self.sent,
            "attachments_pending": self.attachments_pending,
            "attachments_failed": self.attachments_failed,
            "raw_pending": self.raw_pending,
            "last_received_at": self.last_received_at.isoformat()
            if self.last_received_at
            else None,
            "last_error": self.last_error.as_json() if self.last_error else None,
        }


def _later(a: LastError | None, b: LastError | None) -> LastError | None:
    if a is None or b is None:
        return a or b
    return a if a.at >= b.at else b


def bridge_stats(
    db: Database, bridges: tuple[str, ...], window: timedelta, now: datetime | None = None
) -> list[BridgeStats]:
    """Figures for each of ``bridges`` (also those with no traffic yet); ``window`` is
    what "recent" means for ``received_recent``. Aggregates over whole tables: meant
    for an operator's command, not for a request path."""
    since = (now or datetime.now(UTC)) - window
    m, a, r = messages_t.c, attachments_t.c, raw_messages_t.c
    received: dict[str, dict[str, int]] = {b: {} for b in bridges}
    recent: dict[str, int] = dict.fromkeys(bridges, 0)
    last_at: dict[str, datetime] = {}
    sent: dict[str, dict[str, int]] = {b: {} for b in bridges}
    att_pending: dict[str, int] = dict.fromkeys(bridges, 0)
    att_failed: dict[str, int] = dict.fromkeys(bridges, 0)
    errors: dict[str, LastError | None] = dict.fromkeys(bridges, None)
    raw_pending = 0
    with db.read.connect() as conn:
        for row in conn.execute(
            sa.select(m.bridge, m.folder, sa.func.count(), sa.func.max(m.received_at))
            .where(m.direction == "inbound", m.bridge.in_(bridges))
            .group_by(m.bridge, m.folder)
        ):
            received[row[0]][row[1]] = row[2]
            if row[3] is not None:
                at = as_utc(row[3])
                last_at[row[0]] = max(at, last_at.get(row[0], at))
        for row in conn.execute(
            sa.select(m.bridge, sa.func.count())
            .where(m.direction == "inbound", m.bridge.in_(bridges), m.received_at >= since)
            .group_by(m.bridge)
        ):
            recent[row[0]] = row[1]
        for row in conn.execute(
            sa.select(m.bridge, sa.func.coalesce(m.status, "unknown"), sa.func.count())
            .where(m.direction == "outbound", m.bridge.in_(bridges))
            .group_by(m.bridge, m.status)
        ):
            sent[row[0]][row[1]] = row[2]
        for row in conn.execute(
            sa.select(m.bridge, a.status, sa.func.count())
            .select_from(attachments_t.join(messages_t, a.message_id == m.id))
            .where(m.bridge.in_(bridges), a.status.in_(("pending", "failed")))
            .group_by(m.bridge, a.status)
        ):
            (att_pending if row[1] == "pending" else att_failed)[row[0]] = row[2]
        for bridge in bridges:
            failed_att = conn.execute(
                sa.select(a.created_at, a.error)
                .select_from(attachments_t.join(messages_t, a.message_id == m.id))
                .where(m.bridge == bridge, a.status == "failed")
                .order_by(a.created_at.desc())
                .limit(1)
            ).first()
            if failed_att is not None:
                errors[bridge] = LastError(
                    as_utc(failed_att[0]), f"attachment: {failed_att[1] or 'failed'}"
                )
            failed_send = conn.execute(
                sa.select(m.received_at, m.status, m.error_code)
                .where(
                    m.bridge == bridge,
                    m.direction == "outbound",
                    m.status.in_(("failed", "undelivered")),
                )
                .order_by(m.id.desc())
                .limit(1)
            ).first()
            if failed_send is not None:
                code = f" (error {failed_send[2]})" if failed_send[2] is not None else ""
                errors[bridge] = _later(
                    errors[bridge],
                    LastError(as_utc(failed_send[0]), f"send {failed_send[1]}{code}"),
                )
        if EMAIL_BRIDGE in bridges:
            raw_pending = conn.execute(
                sa.select(sa.func.count()).where(r.state == "pending")
            ).scalar_one()
            unparsed = conn.execute(
                sa.select(r.received_at, r.error)
                .where(r.error.is_not(None))
                .order_by(r.id.desc())
                .limit(1)
            ).first()
            if unparsed is not None:
                errors[EMAIL_BRIDGE] = _later(
                    errors[EMAIL_BRIDGE], LastError(as_utc(unparsed[0]), f"parse: {unparsed[1]}")
                )
    return [
        BridgeStats(
            bridge=b,
            received=received[b],
            received_recent=recent[b],
            sent=sent[b],
            attachments_pending=att_pending[b],
            attachments_failed=att_failed[b],
            raw_pending=raw_pending if b == EMAIL_BRIDGE else 0,
            last_received_at=last_at.get(b),
            last_error=errors[b],
        )
        for b in bridges
    ]
