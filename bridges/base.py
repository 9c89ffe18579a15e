"""What every bridge is handed and what it answers, free of any web framework."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from bridges.sms_keywords import Command, CommandError
from inbox.message import Inbound, IngestResult

#: Stores one normalised message (route, decide, commit) and says what happened.
#: Raises inbox.StoreUnavailable when the message could not be durably stored.
Ingest = Callable[[Inbound], Awaitable[IngestResult]]

#: Runs a command a user texted to their account (``optin`` lives beyond the bridge).
#: Returns the reply to send back, or None when the sender may not command any account
#: (the message is then an ordinary message and is ingested).
CommandRunner = Callable[[Inbound, "Command | CommandError"], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """An inbound provider request as received. ``path_qs`` is the path and query
    exactly as requested; ``headers`` keys are lower-case."""

    method: str
    path_qs: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    status: int
    content_type: str
    body: bytes
