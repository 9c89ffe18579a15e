"""OpenAPI part: GET /events (Server-Sent Events)."""

from __future__ import annotations

from typing import Any

from gateway.events_route import RESET, RETRY_MS
from gateway.openapi_support import PROBLEM
from inbox import events

_DESCRIPTION = f"""\
A `text/event-stream` (Server-Sent Events) that stays open and carries the user's
changes as they are committed, for any SSE client that sends the `Authorization`
header (the browser's native `EventSource` cannot; use `fetch()` or a polyfill). Each event
has an `id:` line (an increasing integer), an `event:` line (its kind) and one
`data:` line of JSON; the stream starts with `retry: {RETRY_MS}` and sends a comment
line (`: keep-alive`) when idle.

Events carry ids, never content: fetch the message (`GET /messages/{{id}}`) or the
list you show when you hear of a change. Kinds (ignore kinds you do not know):

- `{events.MESSAGE_CREATED}`: a message arrived or was sent — `EventMessageCreated`
- `{events.MESSAGE_STATUS}`: an outbound message's delivery status moved — `EventMessageStatus`
- `{events.MESSAGE_UPDATED}`: marked read or unread — `EventMessageUpdated`
- `{events.MESSAGE_DELETED}`: deleted — `EventMessageDeleted`
- `{events.SCREENER_CHANGED}`: a screener allow, block or undo moved held messages —
  `EventScreenerChanged`
- `{RESET}`: your position is unknown (too far behind, or older than the server keeps
  events): refetch your lists; the stream continues from this event's id — `EventReset`

Resuming: send the last `id` you received as the `Last-Event-ID` header (SSE
clients do this by themselves on reconnect), or as `?last_event_id=`. The stream
then first replays every event you missed, in order, then continues live. Without
one, only events from now on are sent. A value that is not a whole number is a 400.

The stream ends when the server shuts down (reconnect after `retry`), when your token
is revoked or your account suspended (checked every keep-alive interval, at most 15 s
apart, however busy the stream), or when you read too slowly: a write not taken within
20 s, or over 1 MiB of events waiting (reconnect with `Last-Event-ID`; nothing is
lost). Each user may hold a limited number of streams open at once on one server
(`events.max_clients_per_user`); one more is a 429. A server holding its maximum of
streams (`events.max_streams`) answers 503 with `Retry-After`."""


def _event_data(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


_ID = {"type": "string", "description": "The message's id"}
_RETRY_AFTER = {
    "Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
}


def paths() -> dict[str, Any]:
    return {
        "/events": {
            "get": {
                "operationId": "streamEvents",
                "summary": "Live updates (Server-Sent Events), resumable",
                "description": _DESCRIPTION,
                "parameters": [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "description": "The id of the last event received; replay after it",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                    },
                    {
                        "name": "last_event_id",
                        "in": "query",
                        "description": "The same, for clients that cannot set headers",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The event stream (open until either side closes it)",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": {**PROBLEM, "description": "Last-Event-ID is not an event id"},
                    "401": PROBLEM,
                    "429": {
                        **PROBLEM,
                        "description": "Too many streams open for this user; retry later",
                        "headers": _RETRY_AFTER,
                    },
                    "503": {
                        **PROBLEM,
                        "description": "The server is shutting down or holds its maximum "
                        "of streams; retry later (another server may take it)",
                        "headers": _RETRY_AFTER,
                    },
                },
            }
        }
    }


def schemas() -> dict[str, Any]:
    folder = {"type": "string", "enum": ["inbox", "quarantine", "sent", "drafts"]}
    return {
        "EventMessageCreated": _event_data(
            {
                "message_id": _ID,
                "folder": folder,
                "channel": {"type": "string", "enum": ["sms", "mms", "email"]},
                "direction": {"type": "string", "enum": ["inbound", "outbound"]},
            }
        ),
        "EventMessageStatus": _event_data({"message_id": _ID, "status": {"type": "string"}}),
        "EventMessageUpdated": _event_data({"message_id": _ID, "read": {"type": "boolean"}}),
        "EventMessageDeleted": _event_data({"message_id": _ID}),
        "EventScreenerChanged": _event_data(
            {
                "action": {"type": "string", "enum": ["allow", "block", "undo"]},
                "decision_id": {"type": "string"},
                "messages": {"type": "integer", "minimum": 0},
            }
        ),
        "EventReset": _event_data({"reason": {"type": "string"}}),
        "EventKinds": {
            "description": "The kinds of event the stream sends (the `event:` line)",
            "type": "string",
            "enum": [*events.KINDS, RESET],
        },
    }
