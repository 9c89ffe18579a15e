"""The OpenAPI 3.1 document of the client API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from gateway import (
    openapi_accounts,
    openapi_addresses,
    openapi_drafts,
    openapi_events,
    openapi_exports,
    openapi_limits,
)
from gateway.openapi_support import (
    ACTION,
    BODY_RULES,
    COUNT,
    CURSOR,
    DATE_TIME,
    ETAG,
    IF_NONE_MATCH,
    LIMIT,
    MESSAGE_ID,
    NO_MESSAGE,
    NOT_MODIFIED,
    PROBLEM,
    TOO_LARGE_JSON,
    json_body,
    json_response,
    page,
    ref,
    strings,
)
from gateway.problems import PROBLEM_TYPES
from optin.screener import MAX_SENDERS

SUSPENDED = {
    **PROBLEM,
    "description": "The account is suspended by the operator (breach of terms)",
}

#: Modules that describe further routes: each has ``paths()`` and ``schemas()``.
PARTS: tuple[Any, ...] = (
    openapi_exports,
    openapi_events,
    openapi_drafts,
    openapi_accounts,
    openapi_addresses,
)


def openapi_document() -> dict[str, Any]:
    document = _core_document()
    for part in PARTS:
        # Merged per operation: two parts may describe methods of the same path.
        for path, operations in part.paths().items():
            document["paths"].setdefault(path, {}).update(operations)
        document["components"]["schemas"].update(part.schemas())
    # The bearer check answers any authenticated operation with 403 for a suspended
    # account (gateway.api_support.bearer_auth).
    for operations in document["paths"].values():
        for operation in operations.values():
            if operation.get("security") != []:
                operation["responses"].setdefault("403", SUSPENDED)
    openapi_limits.add_per_ip_limit(document)
    return document


def _core_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OptMsg client API",
            "version": "1",
            "description": (
                "What the OptMsg phone apps and web page use. Authenticate with "
                "`Authorization: Bearer <token>` (tokens from `optmsg tokens create`). "
                "Errors are application/problem+json. Lists are "
                '`{"items": [...], "next": cursor-or-null}`, paged with '
                "`?limit=N&cursor=NEXT`."
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApiDocument",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI 3.1 document of the client API",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/messages": {
                "get": {
                    "operationId": "listMessages",
                    "summary": "Messages in one folder, newest first",
                    "parameters": [
                        {
                            "name": "folder",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "enum": ["inbox", "quarantine", "sent"],
                                "default": "inbox",
                            },
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 200,
                                "default": 50,
                            },
                        },
                        {
                            "name": "unread",
                            "in": "query",
                            "description": (
                                "`true`: only unread messages; `false`: only read ones; "
                                "absent: both. A cursor pages only the list it came from "
                                "(same folder, same filter); another list's cursor is a 400"
                            ),
                            "schema": {"type": "string", "enum": ["true", "false"]},
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "description": "The `next` value of the previous page",
                            "schema": {"type": "string"},
                        },
                        IF_NONE_MATCH,
                    ],
                    "responses": {
                        "200": {
                            "description": "One page",
                            "headers": {"ETag": ETAG},
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/MessagePage"}
                                }
                            },
                        },
                        "304": NOT_MODIFIED,
                        "400": PROBLEM,
                        "401": PROBLEM,
                    },
                },
                "post": {
                    "operationId": "sendMessage",
                    "summary": "Send an SMS from the user's OptMsg number",
                    "description": (
                        "The message is stored in `sent` with status `pending` and handed "
                        "to the provider by a background job (retried on provider or "
                        "network trouble); `status` then follows the provider's delivery "
                        "reports. The recipient becomes a trusted sender unless the "
                        "operator turned that off. " + BODY_RULES
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["to"],
                                    "properties": {
                                        "to": {
                                            "type": "string",
                                            "description": (
                                                "Phone number in any common spelling; "
                                                "without a country code, the user's "
                                                "region, then the gateway's"
                                            ),
                                        },
                                        "text": {"type": "string", "maxLength": 1600},
                                        "media": {
                                            "type": "array",
                                            "maxItems": 10,
                                            "description": (
                                                "Makes it an MMS. Together at most "
                                                "bridges.twilio.media_max_bytes, and the "
                                                "whole body at most http.max_api_body_bytes"
                                            ),
                                            "items": {
                                                "type": "object",
                                                "additionalProperties": False,
                                                "required": ["content_type", "data"],
                                                "properties": {
                                                    "content_type": {"type": "string"},
                                                    "filename": {
                                                        "type": "string",
                                                        "maxLength": 255,
                                                    },
                                                    "data": {
                                                        "type": "string",
                                                        "contentEncoding": "base64",
                                                    },
                                                },
                                            },
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Stored; it will be sent",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Message"}
                                }
                            },
                        },
                        "400": PROBLEM,
                        "401": PROBLEM,
                        "409": {
                            **PROBLEM,
                            "description": (
                                "Not sendable: the recipient texted STOP, the user has no "
                                "OptMsg number, or SMS is not enabled"
                            ),
                        },
                        "413": TOO_LARGE_JSON,
                    },
                },
            },
            "/messages/{message_id}": {
                "get": {
                    "operationId": "getMessage",
                    "summary": "One message of the authenticated user",
                    "parameters": [MESSAGE_ID, IF_NONE_MATCH],
                    "responses": {
                        "200": {
                            "description": "The message",
                            "headers": {"ETag": ETAG},
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Message"}
                                }
                            },
                        },
                        "304": NOT_MODIFIED,
                        "401": PROBLEM,
                        "404": NO_MESSAGE,
                    },
                },
                "patch": {
                    "operationId": "updateMessage",
                    "summary": "Mark a message read or unread",
                    "description": BODY_RULES,
                    "parameters": [MESSAGE_ID],
                    "requestBody": json_body("MessageUpdate"),
                    "responses": {
                        "200": {
                            **json_response("The message, as it is now", "Message"),
                            "headers": {"ETag": ETAG},
                        },
                        "400": {
                            **PROBLEM,
                            "description": (
                                'The body is not `{"read": true}` or `{"read": false}`; '
                                "the detail says why"
                            ),
                        },
                        "401": PROBLEM,
                        "404": NO_MESSAGE,
                        "413": TOO_LARGE_JSON,
                    },
                },
                "delete": {
                    "operationId": "deleteMessage",
                    "summary": "Delete a message for good",
                    "description": (
                        "Deletes the message, its attachments (rows and stored files, "
                        "unless another message has the very same file), and the raw "
                        "email it was parsed from once no other message comes from it. "
                        "There is no undo. With `provider=true` the copy Twilio keeps of "
                        "an SMS/MMS (with its media) is deleted too, asynchronously: the "
                        "answer comes once the message is deleted here, and the request "
                        "to Twilio follows from a background job, retried while Twilio "
                        "is unavailable or still processing the message (best effort: "
                        "the outcome is not reported). An email, or an SMS Twilio was "
                        "never handed, has no provider copy: `provider=true` then does "
                        "nothing more."
                    ),
                    "parameters": [
                        MESSAGE_ID,
                        {
                            "name": "provider",
                            "in": "query",
                            "description": (
                                "`true`: also delete the provider's (Twilio's) copy; "
                                "`false` or absent: delete it here only. Any other value "
                                "is a 400 and nothing is deleted"
                            ),
                            "schema": {
                                "type": "string",
                                "enum": ["true", "false"],
                                "default": "false",
                            },
                        },
                    ],
                    "responses": {
                        "204": {"description": "Deleted"},
                        "400": {**PROBLEM, "description": "provider is not true or false"},
                        "401": PROBLEM,
                        "404": {
                            **NO_MESSAGE,
                            "description": (
                                "No such message: unknown, another user's, or already deleted"
                            ),
                        },
                    },
                },
            },
            "/messages/{message_id}/attachments/{attachment_id}": {
                "get": {
                    "operationId": "downloadAttachment",
                    "summary": "Download an attachment's content",
                    "description": (
                        "The bytes, as a download: `Content-Type` is the stored media type "
                        "(`application/octet-stream` when it is not a valid one), and "
                        "`Content-Disposition` is `attachment`, with the sanitised file "
                        "name as an RFC 5987 `filename*` when there is one."
                    ),
                    "parameters": [
                        MESSAGE_ID,
                        {
                            "name": "attachment_id",
                            "in": "path",
                            "required": True,
                            "description": "An `id` from the message's `attachments`",
                            "schema": {"type": "string"},
                        },
                        IF_NONE_MATCH,
                    ],
                    "responses": {
                        "200": {
                            "description": "The attachment's content",
                            "headers": {
                                "ETag": ETAG,
                                "Content-Disposition": {
                                    "required": True,
                                    "description": (
                                        "`attachment`, or `attachment; filename*=UTF-8''"
                                        "NAME` with NAME percent-encoded"
                                    ),
                                    "schema": {"type": "string"},
                                },
                                "X-Content-Type-Options": {
                                    "required": True,
                                    "schema": {"type": "string", "const": "nosniff"},
                                },
                                "Cache-Control": {
                                    "required": True,
                                    "schema": {"type": "string", "const": "private"},
                                },
                            },
                            "content": {"*/*": {}},
                        },
                        "304": NOT_MODIFIED,
                        "401": PROBLEM,
                        "404": {
                            **PROBLEM,
                            "description": (
                                "No such attachment of this message, or the message is "
                                "unknown or another user's"
                            ),
                        },
                        "409": {
                            **PROBLEM,
                            "description": (
                                "The attachment has no content: its media is still being "
                                "fetched (status `pending`, try again later) or could not "
                                "be (status `failed`)"
                            ),
                        },
                    },
                }
            },
            "/trusted-senders": {
                "get": {
                    "operationId": "listTrustedSenders",
                    "summary": "The user's trusted and blocked senders, in address order",
                    "parameters": [
                        {
                            "name": "verdict",
                            "in": "query",
                            "description": "Only the entries with this verdict (default: all)",
                            "schema": {"type": "string", "enum": ["trusted", "blocked"]},
                        },
                        LIMIT,
                        CURSOR,
                    ],
                    "responses": {
                        "200": json_response("One page", "TrustEntryPage"),
                        "400": PROBLEM,
                        "401": PROBLEM,
                    },
                },
                "post": {
                    "operationId": "addTrustedSender",
                    "summary": "Trust or block a sender",
                    "description": (
                        "The address is read as a person types it: a phone number in any "
                        "common spelling (numbers without a country code are read with the "
                        "user's region), an email address, `@example.com` for a whole "
                        "domain, or an SMS sender id (`short:12345`, `alpha:MYBANK`). "
                        "Every spelling of one number is one entry; adding an address "
                        "that is already on the list replaces its verdict (200). " + BODY_RULES
                    ),
                    "requestBody": json_body("NewTrustEntry"),
                    "responses": {
                        "201": {
                            **json_response("The new entry", "TrustEntry"),
                            "headers": {
                                "Location": {
                                    "description": "The entry's URL",
                                    "schema": {"type": "string"},
                                }
                            },
                        },
                        "200": json_response(
                            "The entry, which was already on the list", "TrustEntry"
                        ),
                        "400": {
                            **PROBLEM,
                            "description": (
                                "The body is malformed, or the address is not one; the "
                                "detail says why (e.g. `too few digits for a phone number`)"
                            ),
                        },
                        "401": PROBLEM,
                        "413": TOO_LARGE_JSON,
                    },
                },
            },
            "/trusted-senders/{address}": {
                "delete": {
                    "operationId": "removeTrustedSender",
                    "summary": "Take a sender off the list",
                    "parameters": [
                        {
                            "name": "address",
                            "in": "path",
                            "required": True,
                            "description": (
                                "The address as listed or as typed (URL-encoded), read "
                                "like the address of addTrustedSender"
                            ),
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "204": {"description": "Removed"},
                        "400": {**PROBLEM, "description": "Not an address; the detail says why"},
                        "401": PROBLEM,
                        "404": {**PROBLEM, "description": "The address is not on the list"},
                    },
                }
            },
            "/contacts": {
                "get": {
                    "operationId": "listContacts",
                    "summary": "The user's uploaded address book, in import order",
                    "parameters": [LIMIT, CURSOR],
                    "responses": {
                        "200": json_response("One page", "ContactPage"),
                        "400": PROBLEM,
                        "401": PROBLEM,
                    },
                },
                "post": {
                    "operationId": "uploadContacts",
                    "summary": "Upload an address book (vCard, CSV or JSON)",
                    "description": (
                        "The body is the file itself (not a multipart form). A file whose "
                        "first line is BEGIN:VCARD is a vCard; otherwise the Content-Type, "
                        "then the `filename` extension, then the first character decide. "
                        "Numbers without a country code are read with the user's region. "
                        "The upload is all or nothing: on any error nothing is stored. "
                        "Values that cannot be used (an invalid number, a contact with "
                        "neither number nor email address) are listed in `rejected`, with "
                        "their line (vCard, CSV) or index (JSON) and the reason. Uploading "
                        "adds to the address book; it trusts nobody until opt-in."
                    ),
                    "parameters": [
                        {
                            "name": "filename",
                            "in": "query",
                            "description": "The file's name, to help tell its format",
                            "schema": {"type": "string", "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            media: {"schema": {"type": "string", "format": "binary"}}
                            for media in (
                                "text/vcard",
                                "text/x-vcard",
                                "text/csv",
                                "application/json",
                                "application/octet-stream",
                            )
                        },
                    },
                    "responses": {
                        "201": json_response(
                            "Imported (at least one contact stored)", "ImportResult"
                        ),
                        "200": json_response("Read, but every entry was rejected", "ImportResult"),
                        "400": {
                            **PROBLEM,
                            "description": (
                                "The file cannot be read as an address book; the detail "
                                "says why, with the line number when there is one"
                            ),
                        },
                        "401": PROBLEM,
                        "413": {
                            **PROBLEM,
                            "description": (
                                "Over optin.max_contacts_bytes bytes, or the address book "
                                "would hold more than optin.max_contacts contacts"
                            ),
                        },
                        "415": {**PROBLEM, "description": "A multipart form was sent"},
                    },
                },
                "delete": {
                    "operationId": "deleteContacts",
                    "summary": "Delete the whole address book",
                    "parameters": [
                        {
                            "name": "untrust",
                            "in": "query",
                            "description": (
                                "Also delete the trust entries that came from the address "
                                "book (entries the user made or changed stay)"
                            ),
                            "schema": {"type": "boolean", "default": False},
                        }
                    ],
                    "responses": {
                        "200": json_response("What was deleted", "ContactsDeleted"),
                        "400": PROBLEM,
                        "401": PROBLEM,
                    },
                },
            },
            "/contacts/opt-in": {
                "post": {
                    "operationId": "optInContacts",
                    "summary": "Trust every number and address of some or all contacts",
                    "description": (
                        "An existing entry is never changed: a blocked number stays blocked. "
                        + BODY_RULES
                    ),
                    "requestBody": json_body("OptInRequest"),
                    "responses": {
                        "200": json_response("How many trust entries were added", "OptInResult"),
                        "400": PROBLEM,
                        "401": PROBLEM,
                        "404": {
                            **PROBLEM,
                            "description": "An id is not one of the user's contacts "
                            "(nothing was trusted)",
                        },
                        "413": TOO_LARGE_JSON,
                    },
                }
            },
            "/screener": {
                "get": {
                    "operationId": "listScreenerCards",
                    "summary": "Quarantined messages grouped by sender, newest first",
                    "parameters": [LIMIT, CURSOR],
                    "responses": {
                        "200": json_response("One page", "ScreenerCardPage"),
                        "400": PROBLEM,
                        "401": PROBLEM,
                    },
                }
            },
            "/screener/allow": {
                "post": {
                    "operationId": "allowSenders",
                    "summary": "Trust senders and move their held messages to the inbox",
                    "description": (
                        "One transaction for all the senders (each the `sender` of a "
                        "screener card). Undo with undoScreenerDecision. " + BODY_RULES
                    ),
                    "requestBody": json_body("SendersRequest"),
                    "responses": {
                        "200": json_response("What was done", "Decision"),
                        "400": PROBLEM,
                        "401": PROBLEM,
                        "404": {
                            **PROBLEM,
                            "description": "A sender has no held messages (nothing was changed)",
                        },
                        "413": TOO_LARGE_JSON,
                    },
                }
            },
            "/screener/block": {
                "post": {
                    "operationId": "blockSenders",
                    "summary": "Block senders and discard their held messages",
                    "description": (
                        "The discarded messages disappear from every list at once and are "
                        "deleted when the undo window (optin.undo_seconds) has passed. "
                        + BODY_RULES
                    ),
                    "requestBody": json_body("SendersRequest"),
                    "responses": {
                        "200": json_response("What was done", "Decision"),
                        "400": PROBLEM,
                        "401": PROBLEM,
                        "404": {
                            **PROBLEM,
                            "description": "A sender has no held messages (nothing was changed)",
                        },
                        "413": TOO_LARGE_JSON,
                    },
                }
            },
            "/screener/undo": {
                "post": {
                    "operationId": "undoScreenerDecision",
                    "summary": "Undo the latest allow or block, within the undo window",
                    "responses": {
                        "200": json_response("What was undone", "UndoResult"),
                        "401": PROBLEM,
                        "409": {
                            **PROBLEM,
                            "description": (
                                "Nothing to undo: no decision yet, already undone, or "
                                "older than the undo window"
                            ),
                        },
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": {
                "Limit": {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                },
                "Cursor": {
                    "name": "cursor",
                    "in": "query",
                    "description": "The `next` value of the previous page",
                    "schema": {"type": "string"},
                },
                "MessageId": {
                    "name": "message_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                "IfNoneMatch": {
                    "name": "If-None-Match",
                    "in": "header",
                    "description": (
                        "ETags the client has (weak or strong, compared weakly), or `*`: "
                        "the answer is 304 with no body when the current one is among them"
                    ),
                    "schema": {"type": "string"},
                },
            },
            "headers": {
                "ETag": {
                    "required": True,
                    "description": (
                        "A strong validator of this response: send it back in "
                        "If-None-Match to get 304 while nothing changed"
                    ),
                    "schema": {"type": "string"},
                }
            },
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                },
                "NotModified": {
                    "description": (
                        "Not modified: If-None-Match named the current ETag. No body; "
                        "the ETag header repeats it"
                    ),
                    "headers": {"ETag": ETAG},
                },
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {
                            "type": "string",
                            "enum": list(PROBLEM_TYPES),
                            "description": (
                                "The problem's class, stable: branch on it, not on "
                                "`detail` (worded for people). A tag URI, never fetched"
                            ),
                        },
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                    },
                },
                "Attachment": {
                    "type": "object",
                    "required": ["id", "filename", "content_type", "size", "status"],
                    "properties": {
                        "id": {"type": "string"},
                        "filename": {"type": ["string", "null"]},
                        "content_type": {"type": "string"},
                        "size": {"type": ["integer", "null"]},
                        "status": {"type": "string", "enum": ["pending", "stored", "failed"]},
                        "error": {"type": ["string", "null"]},
                    },
                },
                "Message": {
                    "type": "object",
                    "required": [
                        "id",
                        "folder",
                        "channel",
                        "bridge",
                        "sender",
                        "recipient",
                        "subject",
                        "text",
                        "html",
                        "received_at",
                        "read",
                        "attachments",
                    ],
                    "properties": {
                        "id": {"type": "string"},
                        "folder": {
                            "type": "string",
                            "enum": ["inbox", "quarantine", "sent", "drafts"],
                        },
                        "channel": {"type": "string", "enum": ["sms", "mms", "email"]},
                        "bridge": {"type": "string"},
                        "direction": {"type": "string", "enum": ["inbound", "outbound"]},
                        "sender": {
                            "type": "string",
                            "description": "E.164 number, email address, or short:/alpha: id",
                        },
                        "recipient": {"type": "string"},
                        "subject": {"type": ["string", "null"]},
                        "text": {"type": "string"},
                        "html": {"type": ["string", "null"]},
                        "received_at": {"type": "string", "format": "date-time"},
                        "read": {"type": "boolean"},
                        "reason": {
                            "type": "string",
                            "description": "Why the opt-in filter put it in this folder",
                        },
                        "auth": {"type": ["object", "null"]},
                        "status": {
                            "type": ["string", "null"],
                            "description": (
                                "Outbound only: draft (not sent yet), pending (not yet "
                                "handed to the provider or SMTP relay), then the provider's "
                                "status: queued, sending, sent, delivered, undelivered, "
                                "failed (email: sent once the relay accepted it, failed "
                                "with the relay's reply in reason)"
                            ),
                        },
                        "error_code": {
                            "type": ["integer", "null"],
                            "description": "The provider's error code when sending failed",
                        },
                        "attachments": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Attachment"},
                        },
                    },
                },
                "TrustEntry": {
                    "type": "object",
                    "required": ["address", "kind", "verdict", "source", "created_at"],
                    "properties": {
                        "address": {
                            "type": "string",
                            "description": (
                                "Canonical: E.164 number, email address, @domain, or "
                                "short:/alpha: sender id"
                            ),
                        },
                        "kind": {
                            "type": "string",
                            "enum": ["phone", "email", "domain", "sender_id"],
                        },
                        "verdict": {"type": "string", "enum": ["trusted", "blocked"]},
                        "source": {
                            "type": "string",
                            "enum": ["manual", "contacts", "sent_to", "sms_command", "release"],
                            "description": (
                                "Who made the entry: the user (manual), an address-book "
                                "opt-in (contacts), a message the user sent (sent_to), an "
                                "SMS command, or an allow in the screener (release)"
                            ),
                        },
                        "created_at": DATE_TIME,
                    },
                },
                "TrustEntryPage": page("TrustEntry"),
                "NewTrustEntry": {
                    "type": "object",
                    "required": ["address"],
                    "additionalProperties": False,
                    "properties": {
                        "address": {"type": "string", "examples": ["(415) 555-0100"]},
                        "verdict": {
                            "type": "string",
                            "enum": ["trusted", "blocked"],
                            "default": "trusted",
                        },
                    },
                },
                "Contact": {
                    "type": "object",
                    "required": ["id", "name", "phones", "emails", "created_at"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "phones": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "E.164 numbers",
                        },
                        "emails": {"type": "array", "items": {"type": "string"}},
                        "created_at": DATE_TIME,
                    },
                },
                "ContactPage": page("Contact"),
                "RejectedContact": {
                    "type": "object",
                    "required": ["position", "name", "value", "reason"],
                    "properties": {
                        "position": {
                            "type": "integer",
                            "description": (
                                "1-based line in a vCard or CSV file; 0-based index in a JSON list"
                            ),
                        },
                        "name": {"type": ["string", "null"]},
                        "value": {
                            "type": "string",
                            "description": "The value as written; empty for a whole contact",
                        },
                        "reason": {"type": "string"},
                    },
                },
                "ImportResult": {
                    "type": "object",
                    "required": ["format", "imported", "rejected"],
                    "properties": {
                        "format": {"type": "string", "enum": ["vcard", "csv", "json"]},
                        "imported": COUNT,
                        "rejected": {"type": "array", "items": ref("RejectedContact")},
                    },
                },
                "ContactsDeleted": {
                    "type": "object",
                    "required": ["contacts", "trusted_senders"],
                    "properties": {"contacts": COUNT, "trusted_senders": COUNT},
                },
                "OptInRequest": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["all"],
                            "additionalProperties": False,
                            "properties": {"all": {"const": True}},
                        },
                        {
                            "type": "object",
                            "required": ["ids"],
                            "additionalProperties": False,
                            "properties": {"ids": strings("Contact ids")},
                        },
                    ]
                },
                "OptInResult": {
                    "type": "object",
                    "required": ["added"],
                    "properties": {"added": COUNT},
                },
                "HeldMessageSummary": {
                    "type": "object",
                    "required": ["message_id", "received_at", "subject", "preview"],
                    "properties": {
                        "message_id": {"type": "string"},
                        "received_at": DATE_TIME,
                        "subject": {"type": ["string", "null"]},
                        "preview": {"type": "string"},
                    },
                },
                "ScreenerCard": {
                    "type": "object",
                    "required": [
                        "sender",
                        "kind",
                        "display",
                        "count",
                        "channel",
                        "reason",
                        "first",
                        "latest",
                        "expires_at",
                    ],
                    "properties": {
                        "sender": {
                            "type": "string",
                            "description": "Canonical; what allow and block take",
                        },
                        "kind": {"type": "string", "enum": ["phone", "email", "sender_id"]},
                        "display": {
                            "type": "string",
                            "description": "The sender as the user reads it",
                        },
                        "count": {"type": "integer", "minimum": 1},
                        "channel": {"type": "string", "enum": ["sms", "mms", "email"]},
                        "reason": {
                            "type": "string",
                            "description": "Why the latest message was held",
                        },
                        "first": ref("HeldMessageSummary"),
                        "latest": ref("HeldMessageSummary"),
                        "expires_at": {
                            **DATE_TIME,
                            "description": "When the first held message will be deleted",
                        },
                    },
                },
                "ScreenerCardPage": page("ScreenerCard"),
                "SendersRequest": {
                    "type": "object",
                    "required": ["senders"],
                    "additionalProperties": False,
                    "properties": {
                        "senders": strings("Card senders, as listed", MAX_SENDERS),
                    },
                },
                "Decision": {
                    "type": "object",
                    "required": ["decision_id", "action", "senders", "messages"],
                    "properties": {
                        "decision_id": {"type": "string"},
                        "action": ACTION,
                        "senders": {"type": "array", "items": {"type": "string"}},
                        "messages": {**COUNT, "description": "Held messages moved"},
                    },
                },
                "UndoResult": {
                    "type": "object",
                    "required": ["undone", "senders", "messages"],
                    "properties": {
                        "undone": ACTION,
                        "senders": {"type": "array", "items": {"type": "string"}},
                        "messages": {**COUNT, "description": "Messages held again"},
                    },
                },
                "MessageUpdate": {
                    "type": "object",
                    "required": ["read"],
                    "additionalProperties": False,
                    "properties": {"read": {"type": "boolean"}},
                },
                "MessagePage": {
                    "type": "object",
                    "required": ["items", "next"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Message"},
                        },
                        "next": {"type": ["string", "null"]},
                    },
                },
            },
        },
    }
