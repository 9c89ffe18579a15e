"""OpenAPI part: drafts (and sending them) and conversations."""

from __future__ import annotations

from typing import Any

from gateway.openapi_support import (
    BODY_RULES,
    COUNT,
    CURSOR,
    DATE_TIME,
    IF_NONE_MATCH,
    LIMIT,
    NOT_MODIFIED,
    PROBLEM,
    TOO_LARGE_JSON,
    json_body,
    json_response,
    page,
    ref,
)
from inbox import drafts

DRAFT_ID = {
    "name": "draft_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The draft's id (a message id)",
}
ATTACHMENT_ID = {
    "name": "attachment_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
NO_DRAFT = {
    **PROBLEM,
    "description": (
        "No such draft: unknown, another user's, or no longer a draft (sent or "
        "deleted); the cases are indistinguishable"
    ),
}
_BAD_DRAFT = {
    **PROBLEM,
    "description": (
        "A field is malformed, unknown or over its limit (a recipient that cannot be "
        "read, a subject with a line break, too long a text); the detail says which"
    ),
}


def _draft_paths() -> dict[str, Any]:
    return {
        "/drafts": {
            "get": {
                "operationId": "listDrafts",
                "summary": "The user's drafts, the most recently created first",
                "parameters": [LIMIT, CURSOR],
                "responses": {
                    "200": json_response("One page of drafts", "DraftPage"),
                    "400": PROBLEM,
                    "401": PROBLEM,
                },
            },
            "post": {
                "operationId": "createDraft",
                "summary": "Start a draft",
                "description": (
                    BODY_RULES + " `channel` is required and fixed for the draft's life. "
                    f"A user has at most {drafts.MAX_DRAFTS} drafts."
                ),
                "requestBody": json_body("DraftCreate"),
                "responses": {
                    "201": {
                        **json_response("The new draft", "Draft"),
                        "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
                    },
                    "400": _BAD_DRAFT,
                    "401": PROBLEM,
                    "409": {**PROBLEM, "description": "Too many drafts already"},
                    "413": TOO_LARGE_JSON,
                },
            },
        },
        "/drafts/{draft_id}": {
            "get": {
                "operationId": "getDraft",
                "parameters": [DRAFT_ID],
                "summary": "One draft",
                "responses": {
                    "200": json_response("The draft", "Draft"),
                    "401": PROBLEM,
                    "404": NO_DRAFT,
                },
            },
            "patch": {
                "operationId": "updateDraft",
                "parameters": [DRAFT_ID],
                "summary": "Change a draft's recipients, subject or text",
                "description": BODY_RULES
                + " Fields left out are unchanged; subject null clears it.",
                "requestBody": json_body("DraftUpdate"),
                "responses": {
                    "200": json_response("The draft as it is now", "Draft"),
                    "400": _BAD_DRAFT,
                    "401": PROBLEM,
                    "404": NO_DRAFT,
                    "413": TOO_LARGE_JSON,
                },
            },
            "delete": {
                "operationId": "deleteDraft",
                "parameters": [DRAFT_ID],
                "summary": "Delete a draft and its attachments",
                "responses": {
                    "204": {"description": "Deleted"},
                    "401": PROBLEM,
                    "404": NO_DRAFT,
                },
            },
        },
        "/drafts/{draft_id}/attachments": {
            "post": {
                "operationId": "addDraftAttachment",
                "summary": "Attach a file to a draft",
                "description": (
                    "The body is the file itself and Content-Type its media type. SMS "
                    "drafts take what an MMS may carry (bridges.twilio.media_types and "
                    "media_max_bytes), email drafts what email_out allows "
                    "(attachment_types, max_attachment_bytes); at most "
                    f"{drafts.MAX_ATTACHMENTS} attachments per draft."
                ),
                "parameters": [
                    DRAFT_ID,
                    {
                        "name": "filename",
                        "in": "query",
                        "schema": {"type": "string", "maxLength": 255},
                        "description": "The file's name (made safe before it is kept)",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "responses": {
                    "201": json_response("The draft with the new attachment", "Draft"),
                    "400": {
                        **PROBLEM,
                        "description": "Empty, a type not allowed, or too many attachments",
                    },
                    "401": PROBLEM,
                    "404": NO_DRAFT,
                    "413": {
                        **PROBLEM,
                        "description": "The file, or the draft's attachments together, too large",
                    },
                    "415": {**PROBLEM, "description": "A multipart form instead of the file"},
                },
            },
        },
        "/drafts/{draft_id}/attachments/{attachment_id}": {
            "delete": {
                "parameters": [DRAFT_ID, ATTACHMENT_ID],
                "operationId": "removeDraftAttachment",
                "summary": "Remove an attachment from a draft",
                "responses": {
                    "204": {"description": "Removed (its file too, unless still used)"},
                    "401": PROBLEM,
                    "404": {**PROBLEM, "description": "No such draft or attachment"},
                },
            },
        },
        "/drafts/{draft_id}/send": {
            "post": {
                "operationId": "sendDraft",
                "parameters": [DRAFT_ID],
                "summary": "Send a draft",
                "description": (
                    "The draft becomes a message in `sent` with status `pending` and a "
                    "job hands it to Twilio (SMS/MMS) or the SMTP relay (email); follow "
                    "its status at the Location. Recipients are trusted "
                    "(optin.auto_trust_sent_to). On a refusal the draft stays a draft."
                ),
                "responses": {
                    "202": {
                        **json_response("The message being sent", "Message"),
                        "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
                    },
                    "400": {**PROBLEM, "description": "No recipient, or nothing to send"},
                    "401": PROBLEM,
                    "404": NO_DRAFT,
                    "409": {
                        **PROBLEM,
                        "description": (
                            "Cannot be sent: the channel is disabled on this gateway, the "
                            "user has no OptMsg number or email address to send from, or "
                            "the recipient texted STOP"
                        ),
                    },
                },
            },
        },
    }


def _conversation_paths() -> dict[str, Any]:
    return {
        "/conversations": {
            "get": {
                "operationId": "listConversations",
                "summary": "The user's conversations, the most recently active first",
                "description": (
                    "Messages in the inbox and the sent folder, grouped by counterpart "
                    "(SMS/MMS) or email thread. Held (quarantined) mail and drafts are "
                    "in none."
                ),
                "parameters": [LIMIT, CURSOR, IF_NONE_MATCH],
                "responses": {
                    "200": json_response("One page of conversations", "ConversationPage"),
                    "304": NOT_MODIFIED,
                    "400": PROBLEM,
                    "401": PROBLEM,
                },
            },
        },
        "/conversations/{key}/messages": {
            "get": {
                "operationId": "listConversationMessages",
                "summary": "The messages of one conversation, newest first",
                "description": (
                    "A key that is not one of the user's conversations gives an empty "
                    "list, whether it is unknown or another user's."
                ),
                "parameters": [
                    {
                        "name": "key",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "A conversation's key, from the list",
                    },
                    LIMIT,
                    CURSOR,
                    IF_NONE_MATCH,
                ],
                "responses": {
                    "200": json_response("One page of messages", "MessagePage"),
                    "304": NOT_MODIFIED,
                    "400": PROBLEM,
                    "401": PROBLEM,
                },
            },
        },
    }


def paths() -> dict[str, Any]:
    return {**_draft_paths(), **_conversation_paths()}


_TEXT = {"type": "string"}
_NULLABLE_TEXT = {"type": ["string", "null"]}


def schemas() -> dict[str, Any]:
    to = {
        "type": "array",
        "items": {"type": "string"},
        "maxItems": drafts.MAX_EMAIL_RECIPIENTS,
        "description": (
            "Recipients as typed: one phone number (SMS) or up to "
            f"{drafts.MAX_EMAIL_RECIPIENTS} email addresses; stored canonical"
        ),
    }
    return {
        "Draft": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "channel", "to", "subject", "text", "updated_at", "attachments"],
            "properties": {
                "id": _TEXT,
                "channel": {"type": "string", "enum": list(drafts.CHANNELS)},
                "to": {"type": "array", "items": _TEXT},
                "subject": _NULLABLE_TEXT,
                "text": _TEXT,
                "updated_at": DATE_TIME,
                "attachments": {"type": "array", "items": ref("DraftAttachment")},
            },
        },
        "DraftAttachment": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "filename", "content_type", "size"],
            "properties": {
                "id": _TEXT,
                "filename": _NULLABLE_TEXT,
                "content_type": _TEXT,
                "size": {"type": ["integer", "null"], "minimum": 1},
            },
        },
        "DraftPage": page("Draft"),
        "DraftCreate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["channel"],
            "properties": {
                "channel": {"type": "string", "enum": list(drafts.CHANNELS)},
                "to": to,
                "subject": {**_NULLABLE_TEXT, "maxLength": drafts.MAX_SUBJECT},
                "text": _TEXT,
            },
        },
        "DraftUpdate": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "to": to,
                "subject": {**_NULLABLE_TEXT, "maxLength": drafts.MAX_SUBJECT},
                "text": _TEXT,
            },
        },
        "Conversation": {
            "type": "object",
            "additionalProperties": False,
            "required": ["key", "kind", "counterpart", "subject", "messages", "unread", "latest"],
            "properties": {
                "key": {
                    "type": "string",
                    "description": (
                        "The counterpart's address (SMS/MMS) or email: and a digest of "
                        "the thread's root Message-ID"
                    ),
                },
                "kind": {"type": "string", "enum": ["sms", "email"]},
                "counterpart": {
                    "type": "string",
                    "description": "The other party of the latest message",
                },
                "subject": {
                    **_NULLABLE_TEXT,
                    "description": "The latest message's subject (email)",
                },
                "messages": COUNT,
                "unread": COUNT,
                "latest": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id", "direction", "preview", "at"],
                    "properties": {
                        "id": _TEXT,
                        "direction": {"type": "string", "enum": ["inbound", "outbound"]},
                        "preview": _TEXT,
                        "at": DATE_TIME,
                    },
                },
            },
        },
        "ConversationPage": page("Conversation"),
    }
