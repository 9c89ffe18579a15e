"""What the operator sees of the webhook spool's dead letters (``optmsg spool dead``).

A record goes to ``instance-N/dead.log`` when it kept failing while the database
answered (gateway.spool_replay). Those files are binary (inbox.spool's record
format); this reads them without changing anything, so it is safe while gateways
run, and says per record what it was: enough to find the message at Twilio (its
MessageSid) or to tell the sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.spool_replay import SpooledSms, decode
from inbox.errors import SpoolError
from inbox.spool import dead_letter_files, decode_segment

# A dead letter shows these of the Twilio form (never the body: it is the user's).
_SHOWN = ("MessageSid", "SmsMessageSid", "From", "To", "NumMedia")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a dead-letter file. ``fields`` holds what could be read (for
    an SMS: MessageSid, From, To, NumMedia; for a status: sid, status, error_code);
    ``problem`` says why a record could not be read (then ``fields`` is empty)."""

    file: str
    index: int
    kind: str
    received_at: str | None
    fields: dict[str, str]
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "index": self.index,
            "kind": self.kind,
            "received_at": self.received_at,
            "fields": self.fields,
            "problem": self.problem,
        }


def dead_letters(root: Path) -> list[DeadLetter]:
    """Every dead letter under the spool directory ``root``, file by file in order.
    A file cut short or damaged is reported as one more entry with the problem."""
    found: list[DeadLetter] = []
    for path in dead_letter_files(root):
        name = str(path.relative_to(root))
        read = decode_segment(path.read_bytes())
        for index, payload in enumerate(read.records):
            found.append(_describe(name, index, payload))
        if read.corrupt_at is not None:
            problem = f"damaged from byte {read.corrupt_at} on; the rest cannot be read"
            found.append(DeadLetter(name, len(read.records), "unreadable", None, {}, problem))
        elif read.torn:
            problem = "the last record was cut short by a crash (it was never acknowledged)"
            found.append(DeadLetter(name, len(read.records), "unreadable", None, {}, problem))
    return found


def _describe(file: str, index: int, payload: bytes) -> DeadLetter:
    try:
        record = decode(payload)
    except SpoolError as exc:
        return DeadLetter(file, index, "unreadable", None, {}, str(exc))
    if isinstance(record, SpooledSms):
        form = dict(record.pairs)
        if "MessageSid" in form:
            form.pop("SmsMessageSid", None)  # the same SID under its older name
        fields = {name: form[name] for name in _SHOWN if name in form}
        return DeadLetter(file, index, "sms", record.received_at.isoformat(), fields)
    update = record.update
    fields = {"sid": update.sid, "status": update.status}
    if update.error_code is not None:
        fields["error_code"] = str(update.error_code)
    return DeadLetter(file, index, "status", None, fields)
