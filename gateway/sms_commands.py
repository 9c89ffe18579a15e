"""Commands a user texts from their verified mobile: TRUST, BLOCK, LIST, HELP.

Only the account's own verified number commands it, and only when it texts the
user's OptMsg number or the deployment's service number. Anyone else's message that
happens to read "TRUST …" is an ordinary message.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from bridges.sms_keywords import USAGE, Command, CommandError, CommandName
from inbox.addresses import parse_in_regions
from inbox.db import Database
from inbox.errors import AddressError, StoreUnavailable
from inbox.message import Inbound
from inbox.models import user_addresses_t, users_t
from optin import screener, trust
from optin.decide import TrustVerdict
from optin.trust import Source

# An SMS reply is split into segments; keep LIST to what reads well on a phone.
MAX_LISTED = 20


# A suspended account is not changed by anyone but the operator (inbox.suspension);
# its owner is told why nothing happened, and nothing is stored.
SUSPENDED_REPLY = (
    "Your OptMsg account is suspended: commands are turned off. Contact the service's operator."
)


def _commanding_user(
    db: Database, inbound: Inbound, service_number: str
) -> tuple[str, str, bool] | None:
    """(user id, region, suspended) of the account the sender may command here, or
    None."""
    u, a = users_t.c, user_addresses_t.c
    columns = (u.id, u.region, u.suspended_at.is_not(None).label("suspended"))
    with db.read.connect() as conn:
        if service_number and inbound.recipient == service_number:
            row = conn.execute(sa.select(*columns).where(u.phone == inbound.sender)).first()
        else:
            row = conn.execute(
                sa.select(*columns)
                .join(user_addresses_t, a.user_id == u.id)
                .where(a.address == inbound.recipient, u.phone == inbound.sender)
            ).first()
    return (str(row.id), str(row.region), bool(row.suspended)) if row is not None else None


def _list(db: Database, user_id: str, region: str) -> str:
    entries = trust.list_entries(db, user_id)
    if not entries:
        return "Your trusted list is empty. Text TRUST <number> to add someone."
    parts = []
    for verdict, label in ((TrustVerdict.TRUSTED, "Trusted"), (TrustVerdict.BLOCKED, "Blocked")):
        shown = [screener.display_name(e.address, region) for e in entries if e.verdict is verdict]
        if shown:
            more = len(shown) - MAX_LISTED
            text = ", ".join(shown[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")
            parts.append(f"{label}: {text}")
    return ". ".join(parts) + "."


def run_command(
    db: Database,
    service_number: str,
    default_region: str,
    inbound: Inbound,
    parsed: Command | CommandError,
) -> str | None:
    """The reply to a command, or None when the sender may not command an account."""
    found = _commanding_user(db, inbound, service_number)
    if found is None:
        return None
    user_id, region, suspended = found
    if suspended:
        return SUSPENDED_REPLY
    if isinstance(parsed, CommandError):
        return str(parsed)
    if parsed.name is CommandName.HELP:
        return USAGE
    if parsed.name is CommandName.LIST:
        return _list(db, user_id, region)
    try:
        target = parse_in_regions(trust.parse_entry, parsed.argument, (region, default_region))
    except AddressError as exc:
        return f"Could not read {parsed.argument!r}: {exc.reason}. {USAGE}"
    verdict = TrustVerdict.TRUSTED if parsed.name is CommandName.TRUST else TrustVerdict.BLOCKED
    trust.add(db, user_id, target, verdict, Source.SMS_COMMAND)
    shown = screener.display_name(target, region)
    if verdict is TrustVerdict.TRUSTED:
        return f"Trusted {shown}. Their messages now reach your inbox."
    return f"Blocked {shown}. Their messages will be dropped."


class SmsCommands:
    """The bridge's CommandRunner: runs commands on the database pool, off the loop."""

    def __init__(
        self, db: Database, pool: ThreadPoolExecutor, service_number: str, default_region: str
    ) -> None:
        self._db = db
        self._pool = pool
        self._service_number = service_number
        self._default_region = default_region

    async def __call__(self, inbound: Inbound, parsed: Command | CommandError) -> str | None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool,
                functools.partial(
                    run_command,
                    self._db,
                    self._service_number,
                    self._default_region,
                    inbound,
                    parsed,
                ),
            )
        except sa.exc.SQLAlchemyError as exc:
            # The bridge's contract: the webhook is then spooled, not lost.
            raise StoreUnavailable(f"the command could not run ({type(exc).__name__})") from exc
