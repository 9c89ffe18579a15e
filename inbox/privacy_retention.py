"""What the privacy policy says we keep only for a while: client IP addresses in the
authentication log (``privacy.ip_log_days``, except IPs flagged for abuse, which
are kept and listed for operators until ``privacy.abuse_keep_days`` after they were
last seen) and used or expired sign-in codes.

The flags are written by :mod:`inbox.abuse`; this module reads, clears and honours
them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from inbox.db import Database, as_utc
from inbox.models import abuse_flags_t, auth_log_t, verifications_t

#: Used or expired verification codes are kept this long (to show a clear "expired"
#: rather than "unknown" to a late guess), then deleted.
VERIFICATION_KEEP = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class FlaggedIp:
    """One flagged IP, its reasons merged: how many times it was flagged in all and
    the first and last time."""

    ip: str
    reasons: tuple[str, ...]
    count: int
    first_seen: datetime
    last_seen: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "reasons": list(self.reasons),
            "count": self.count,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
        }


def _iso(value: datetime) -> str:
    return as_utc(value).astimezone(UTC).isoformat().replace("+00:00", "Z")


def purge_ips(db: Database, *, keep_days: int, now: datetime | None = None) -> int:
    """Erase the IP of authentication log entries older than ``keep_days``, except
    addresses inside a flagged one (an IPv4 address, or the /64 network an IPv6
    client is flagged by); returns how many entries lost their IP."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    a, f = auth_log_t.c, abuse_flags_t.c
    erased = 0
    with db.write.begin() as conn:
        flagged = [_network(ip) for ip in conn.execute(sa.select(f.ip).distinct()).scalars()]
        networks = [n for n in flagged if n is not None]
        rows = conn.execute(
            sa.select(a.id, a.ip).where(a.created_at < cutoff, a.ip.is_not(None))
        ).all()
        erase = [row.id for row in rows if not _inside(row.ip, networks)]
        for start in range(0, len(erase), _BATCH):
            chunk = erase[start : start + _BATCH]
            erased += int(
                conn.execute(auth_log_t.update().where(a.id.in_(chunk)).values(ip=None)).rowcount
            )
    return erased


_BATCH = 500


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _inside(ip: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False  # not an address: nothing flagged keeps it
    return any(address in network for network in networks)


def expire_flags(db: Database, *, keep_days: int, now: datetime | None = None) -> int:
    """Drop abuse flags whose address was last seen over ``keep_days`` ago: the IPs
    they kept in the authentication log are then erased like any other. Returns how
    many flags went."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    with db.write.begin() as conn:
        return int(
            conn.execute(abuse_flags_t.delete().where(abuse_flags_t.c.last_seen < cutoff)).rowcount
        )


def purge_verifications(db: Database, *, now: datetime | None = None) -> int:
    """Delete verification codes used or expired more than a day ago."""
    cutoff = (now or datetime.now(UTC)) - VERIFICATION_KEEP
    v = verifications_t.c
    with db.write.begin() as conn:
        return int(
            conn.execute(
                verifications_t.delete().where(
                    sa.or_(v.expires_at < cutoff, v.consumed_at < cutoff)
                )
            ).rowcount
        )


def list_flags(db: Database) -> list[FlaggedIp]:
    """Every flagged IP, most recently seen first."""
    f = abuse_flags_t.c
    with db.read.connect() as conn:
        rows = list(
            conn.execute(
                sa.select(
                    f.ip, f.reason, f.count.label("times"), f.first_seen, f.last_seen
                ).order_by(f.ip, f.reason)
            )
        )
    merged: dict[str, FlaggedIp] = {}
    for r in rows:
        seen = merged.get(r.ip)
        first, last = as_utc(r.first_seen), as_utc(r.last_seen)
        if seen is None:
            merged[r.ip] = FlaggedIp(r.ip, (r.reason,), r.times, first, last)
        else:
            merged[r.ip] = FlaggedIp(
                r.ip,
                (*seen.reasons, r.reason),
                seen.count + r.times,
                min(seen.first_seen, first),
                max(seen.last_seen, last),
            )
    return sorted(merged.values(), key=lambda flag: (flag.last_seen, flag.ip), reverse=True)


def clear_flag(db: Database, ip: str) -> int:
    """Remove every flag of ``ip`` (its log entries are then purged like any other);
    returns how many flags there were (0: the IP was not flagged)."""
    with db.write.begin() as conn:
        return int(conn.execute(abuse_flags_t.delete().where(abuse_flags_t.c.ip == ip)).rowcount)
