"""Deleting the provider's copy of a message the user deleted (``DELETE
/api/v1/messages/{id}?provider=true``).

Only Twilio holds a copy: an email was received by our own SMTP server (or handed to
the relay, which keeps nothing we could delete). The local delete commits first;
then the Message SID alone (no content) goes to a job, which asks Twilio to delete
the message and, with it, its media. The row is gone by then, so the job is the
only record of the request: a lost job leaves the copy at Twilio, which the API
documents as best effort.
"""

from __future__ import annotations

import logging
from typing import Protocol

from bridges.twilio import BRIDGE as TWILIO
from bridges.twilio_rest import SendFailed, is_message_sid
from inbox.store import DeletedMessage

log = logging.getLogger(__name__)

DELETED = "deleted"
GONE = "gone"  # Twilio had no such message (deleted before, or never kept)
REFUSED = "refused"  # Twilio refused, or kept failing until the last attempt


class MessageDeleter(Protocol):
    def delete_message(self, message_sid: str) -> None: ...


class ProviderDeleteRetry(Exception):
    """Raised by the job for a retryable failure (5xx, 408, 429, a connection
    failure, or Twilio still processing the message): the broker retries."""


def provider_sid(deleted: DeletedMessage) -> str | None:
    """The Message SID to delete at Twilio, or None when the provider holds nothing
    we can name: an email, or an SMS never handed to Twilio (``pending:``/``draft:``
    ids, or one that failed before Twilio accepted it)."""
    if deleted.bridge != TWILIO or not is_message_sid(deleted.external_id):
        return None
    return deleted.external_id


def delete_provider_copy(deleter: MessageDeleter, sid: str, *, last_attempt: bool) -> str:
    """One attempt at deleting message ``sid`` at Twilio; what came of it. Logs name
    the SID and Twilio's status and error code, never Twilio's text (it may quote
    the request) nor anything of the message."""
    try:
        deleter.delete_message(sid)
    except SendFailed as exc:
        if exc.http_status == 404:
            log.info("provider copy of %s was already gone", sid)
            return GONE
        if exc.retryable and not last_attempt:
            raise ProviderDeleteRetry(f"provider copy of {sid} not deleted yet") from None
        log.warning(
            "could not delete the provider copy of %s (HTTP %s, Twilio error %s)",
            sid,
            exc.http_status if exc.http_status is not None else "none",
            exc.code if exc.code is not None else "none",
        )
        return REFUSED
    log.info("provider copy of %s deleted", sid)
    return DELETED
