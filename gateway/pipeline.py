"""The ingest pipeline: route, decide and store a batch of inbound messages in one
transaction (run by the group-commit writer thread)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

import sqlalchemy as sa

from inbox import events
from inbox.addresses import EmailAddress, domain_of, is_email
from inbox.ingest_store import (
    NewMessage,
    StoredRef,
    insert_messages,
    lookup_routes,
    lookup_trust,
    record_opt_outs,
)
from inbox.message import Folder, Inbound, IngestResult, Outcome, Verdict
from inbox.suspension import HELD_REASON
from optin.decide import Decision, Policy, TrustVerdict, decide

log = logging.getLogger(__name__)

_STOP, _START = "stop", "start"
REASON_UNROUTABLE = "recipient address is not an OptMsg number of any user"

_FOLDER = {Verdict.ADMIT: Folder.INBOX, Verdict.QUARANTINE: Folder.QUARANTINE}
_OUTCOME = {
    str(Folder.INBOX): Outcome.ADMITTED,
    str(Folder.QUARANTINE): Outcome.QUARANTINED,
    # A retry of a message the user has since blocked from the screener.
    str(Folder.DISCARDED): Outcome.DROPPED,
}


class IngestPipeline:
    """``process(conn, batch)`` is the group committer's work function."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def process(self, conn: sa.Connection, batch: Sequence[Inbound]) -> list[IngestResult]:
        routes = lookup_routes(conn, (m.recipient for m in batch))
        wanted: list[tuple[str, str]] = []
        for m in batch:
            user = routes.get(m.recipient)
            if user is not None:
                wanted.append((user, m.sender))
                if is_email(m.sender):
                    wanted.append((user, domain_of(EmailAddress(m.sender))))
        trust = lookup_trust(conn, wanted)
        results: list[IngestResult | None] = [None] * len(batch)
        to_store: list[NewMessage] = []
        slots: list[int] = []
        # Held by the flood limit: stored, and (but for the first) not announced.
        flooded: set[int] = set()
        for i, msg in enumerate(batch):
            user_id = routes.get(msg.recipient)
            if user_id is None:
                results[i] = IngestResult(Outcome.UNROUTABLE, REASON_UNROUTABLE)
                continue
            entry = trust.get((user_id, msg.sender))
            domain_entry = (
                trust.get((user_id, domain_of(EmailAddress(msg.sender))))
                if is_email(msg.sender)
                else None
            )
            decision: Decision = decide(
                msg.sender,
                TrustVerdict(entry) if entry else None,
                msg.auth,
                self.policy,
                TrustVerdict(domain_entry) if domain_entry else None,
                msg.flood,
            )
            if decision.verdict is Verdict.DROP:
                # Blocked senders leave no trace: nothing stored, nothing notified.
                results[i] = IngestResult(Outcome.DROPPED, decision.reason)
                continue
            if msg.hold_reason is not None:
                # The bridge found it hostile or unreadable: held even from a trusted
                # sender, with the bridge's reason.
                decision = Decision(Verdict.QUARANTINE, msg.hold_reason)
            elif user_id in routes.suspended:
                # An operator suspended the account: nothing reaches its inbox.
                decision = Decision(Verdict.QUARANTINE, HELD_REASON)
            to_store.append(
                NewMessage(user_id, msg, str(_FOLDER[decision.verdict]), decision.reason)
            )
            slots.append(i)
            if decision.flood:
                flooded.add(i)
        refs: list[StoredRef] = insert_messages(conn, to_store)
        announced: list[events.NewEvent] = []
        for i, new, ref in zip(slots, to_store, refs, strict=True):
            flood = new.inbound.flood if i in flooded else None
            silent = flood is not None and not flood.announce
            results[i] = IngestResult(
                _OUTCOME[ref.folder],
                ref.reason,
                message_id=ref.message_id,
                duplicate=not ref.inserted,
                user_id=new.user_id if ref.inserted and not silent else None,
                held_for_flood=flood is not None and ref.inserted,
            )
            if ref.inserted and not silent:
                announced.append(
                    events.message_created(
                        new.user_id, ref.message_id, ref.folder, new.inbound.channel.value
                    )
                )
        # Same transaction, one statement for the whole batch.
        events.insert(conn, announced)
        # Opt-outs count whatever the filter decided (a STOP from a blocked number
        # still means "do not text me"), but a provider's retry of an old STOP must
        # not undo a START sent since: duplicates are skipped.
        record_opt_outs(
            conn,
            [
                (routes[m.recipient], m.sender, m.keyword == _STOP)
                for m, r in zip(batch, results, strict=True)
                if m.keyword in (_STOP, _START)
                and r is not None
                and r.outcome is not Outcome.UNROUTABLE
                and not r.duplicate
            ],
        )
        if any(r is None for r in results):
            raise RuntimeError("the store returned fewer results than messages")
        return cast(list[IngestResult], results)
