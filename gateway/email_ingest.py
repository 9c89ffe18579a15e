"""From a spooled raw email to stored messages: parse, authenticate, store blobs,
then one normalised message per recipient through the ordinary ingest pipeline.

Runs after the SMTP ``250`` (the raw bytes were committed first). Parsing and
DNS lookups block, so they run on a thread pool, never on the event loop.
Every step is idempotent: a raw message processed twice (after a crash) yields
the same external ids, which the store deduplicates.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridges.dns import Resolver
from bridges.email_auth import (
    AuthOutcome,
    authenticate,
    authentication_results,
    strip_our_authentication_results,
)
from bridges.email_parse import MimeLimits, ParsedEmail, parse_email_bytes
from bridges.errors import UnparseableEmail
from gateway.metrics import Metrics
from gateway.smtp import ReceivedEmail
from inbox import raw_store
from inbox.addresses import Address, EmailAddress, SenderId, parse_email
from inbox.blobs import BlobStore
from inbox.committer import GroupCommitter
from inbox.conversations import email_thread_key
from inbox.db import Database
from inbox.errors import AddressError
from inbox.message import Channel, Inbound, IngestResult

log = logging.getLogger(__name__)

BRIDGE = "email"
REASON_UNPARSEABLE = "unparseable: the email could not be read; kept as received"
REASON_NO_FROM = "the From header is missing, lists several senders or is ambiguous"
UNKNOWN_SENDER = SenderId("unknown:")


@dataclass(frozen=True, slots=True)
class Prepared:
    inbounds: tuple[Inbound, ...]
    # The raw bytes without incoming headers that claimed our authserv-id, or None
    # when there were none (the common case: nothing is rewritten).
    cleaned: bytes | None
    auth_results: str
    error: str | None


class EmailIngest:
    """``accept`` is the SMTP server's Accept callable; ``recover`` re-processes
    whatever a crash left pending."""

    def __init__(
        self,
        *,
        db: Database,
        blobs: BlobStore,
        spool: GroupCommitter[raw_store.RawEmail, str],
        done: GroupCommitter[raw_store.Processed, None],
        ingest: Callable[[Inbound], Awaitable[IngestResult]],
        pool: ThreadPoolExecutor,
        resolver: Resolver,
        authserv_id: str,
        limits: MimeLimits,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._db = db
        self._blobs = blobs
        self._spool = spool
        self._done = done
        self._ingest = ingest
        self._pool = pool
        self._resolver = resolver
        self._authserv_id = authserv_id
        self._limits = limits
        self._tasks: set[asyncio.Task[None]] = set()
        # Raw ids being processed right now, so the sweeper never starts a second run.
        self._in_flight: set[str] = set()

    async def accept(self, received: ReceivedEmail) -> None:
        raw = raw_store.new_raw(
            peer_ip=received.peer_ip,
            helo=received.helo,
            mail_from=received.mail_from,
            recipients=received.recipients,
            data=received.data,
        )
        await self._spool.submit(raw)
        self._schedule(raw.id, raw)

    def _schedule(self, raw_id: str, raw: raw_store.RawEmail) -> None:
        # In flight from now, not from when the task first runs: under a backlog a
        # sweep could otherwise take the same email in between and process it twice.
        self._in_flight.add(raw_id)
        task = asyncio.create_task(self._process(raw_id, raw), name=f"email-{raw_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def recover(self, *, older_than: datetime | None = None) -> int:
        """Process every raw email still pending — left by a crash, or by a failure
        during processing — except those in flight; returns how many were found.
        ``older_than`` skips the ones received since (the sweeper's grace period)."""
        loop = asyncio.get_running_loop()
        found = 0
        after = ""
        while True:
            ids = await loop.run_in_executor(
                self._pool,
                functools.partial(
                    raw_store.pending_ids, self._db, after=after, older_than=older_than, limit=500
                ),
            )
            if not ids:
                return found
            found += len(ids)
            after = ids[-1]
            for raw_id in ids:
                if raw_id not in self._in_flight:
                    await self.process(raw_id)

    async def sweep_periodically(self, interval: float, grace: float) -> None:
        """The sweeper (DESIGN.md step 7): the rows' state is the source of truth, so
        a raw email whose processing failed or was lost is found again and retried."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.recover(older_than=datetime.now(UTC) - timedelta(seconds=grace))
            except Exception:
                log.exception("raw email sweep failed; will retry")

    async def drain(self) -> None:
        """Wait for the messages being processed (graceful shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def process(self, raw_id: str) -> None:
        """Parse and store one spooled email, read back from the spool (recovery);
        nothing when it is being processed already or was since."""
        if raw_id in self._in_flight:
            return
        self._in_flight.add(raw_id)
        await self._process(raw_id, None)

    async def _process(self, raw_id: str, raw: raw_store.RawEmail | None) -> None:
        """``raw`` is passed when still in memory (just accepted). The caller has put
        ``raw_id`` in flight; it is taken out here."""
        loop = asyncio.get_running_loop()
        try:
            if raw is None:
                raw = await loop.run_in_executor(
                    self._pool, raw_store.load_pending, self._db, raw_id
                )
                if raw is None:
                    return  # processed since the sweep listed it
            prepared = await loop.run_in_executor(self._pool, self._prepare, raw)
            for inbound in prepared.inbounds:
                result = await self._ingest(inbound)
                if self._metrics is not None:
                    # Blocked senders' mail is dropped silently: this count is its trace.
                    self._metrics.count_inbound(
                        inbound.bridge, result.outcome, duplicate=result.duplicate
                    )
            await self._done.submit(
                raw_store.Processed(
                    raw_id,
                    data=prepared.cleaned,
                    auth_results=prepared.auth_results,
                    error=prepared.error,
                )
            )
        except Exception:
            # The raw row stays pending; the sweeper (or the next start) retries it.
            # Nothing acknowledged is lost.
            log.exception("processing raw email %s failed; left pending", raw_id)
        finally:
            self._in_flight.discard(raw_id)

    def _prepare(self, raw: raw_store.RawEmail) -> Prepared:
        error: str | None = None
        parsed: ParsedEmail | None
        try:
            parsed = parse_email_bytes(raw.data, self._limits)
        except UnparseableEmail as exc:
            parsed = None
            error = str(exc)
        sender, hold = self._sender(parsed, raw.mail_from)
        if parsed is None:
            hold = REASON_UNPARSEABLE
        elif parsed.quarantine_reason:
            hold = parsed.quarantine_reason
        # DMARC is about the From header's domain; an address recovered from the
        # envelope would let SPF "align" with itself.
        from_address = parsed.from_address if parsed is not None else None
        from_domain = from_address.split("@", 1)[1] if from_address else None
        outcome: AuthOutcome = authenticate(
            raw.data,
            client_ip=raw.peer_ip,
            helo=raw.helo,
            mail_from=raw.mail_from,
            from_domain=from_domain,
            resolver=self._resolver,
        )
        header = authentication_results(
            self._authserv_id, outcome, mail_from=raw.mail_from, from_domain=from_domain
        )
        stripped = strip_our_authentication_results(raw.data, self._authserv_id)
        cleaned = None if stripped is raw.data else stripped
        attachments = parsed.attachments if parsed is not None else ()
        for attachment in attachments:
            if attachment.content is not None:
                self._blobs.put(attachment.content)
        message_id = (parsed.message_id if parsed is not None else None) or "-"
        # Without any Message-ID the message is a thread of its own (keyed by its bytes).
        thread = email_thread_key(
            parsed.message_id if parsed is not None else None,
            parsed.in_reply_to if parsed is not None else None,
            parsed.references if parsed is not None else (),
            fallback=f"sha256:{raw.sha256}",
        )
        inbounds = tuple(
            Inbound(
                bridge=BRIDGE,
                # One message per (recipient, Message-ID + checksum): a client that
                # resends after a lost 250 sends the same bytes and is deduplicated.
                external_id=_external_id(recipient, message_id, raw.sha256),
                channel=Channel.EMAIL,
                sender=sender,
                recipient=EmailAddress(recipient),
                text=parsed.text if parsed is not None else "",
                html=parsed.html if parsed is not None else None,
                subject=parsed.subject if parsed is not None else None,
                received_at=raw.received_at,
                attachments=attachments,
                auth=outcome.auth,
                hold_reason=hold,
                raw_id=raw.id,
                conversation=thread,
            )
            for recipient in raw.recipients
        )
        return Prepared(inbounds, cleaned, header, error)

    @staticmethod
    def _sender(parsed: ParsedEmail | None, mail_from: str) -> tuple[Address, str | None]:
        if parsed is not None and parsed.from_address is not None:
            return parsed.from_address, None
        try:
            return parse_email(mail_from), REASON_NO_FROM
        except AddressError:
            return UNKNOWN_SENDER, REASON_NO_FROM


def _external_id(recipient: str, message_id: str, checksum: str) -> str:
    # Hashed: the parts together can exceed the column, and truncating could collide.
    key = f"{recipient}\x00{message_id}\x00{checksum}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(key).hexdigest()
