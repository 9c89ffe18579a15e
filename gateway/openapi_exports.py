"""OpenAPI part: data exports and account deletion (gateway.api_exports)."""

from __future__ import annotations

from typing import Any

from gateway.openapi_support import (
    BODY_RULES,
    CURSOR,
    DATE_TIME,
    LIMIT,
    PROBLEM,
    TOO_LARGE_JSON,
    json_body,
    json_response,
    page,
)

EXPORT_ID = {
    "name": "export_id",
    "in": "path",
    "required": True,
    "description": "An export's `id`",
    "schema": {"type": "string"},
}
NO_EXPORT = {
    **PROBLEM,
    "description": "No such export: unknown, another user's, or deleted after it expired",
}


def paths() -> dict[str, Any]:
    return {
        "/exports": {
            "post": {
                "operationId": "requestExport",
                "summary": "Ask for an archive of all your data",
                "description": (
                    "Creates an export in state `pending` and builds it in the background: "
                    "a zip with `account.json` (profile, devices, numbers that opted out), "
                    "`messages.json` (every message of every folder, drafts included, "
                    "with attachment metadata and status), each email as received "
                    "(`emails/<message id>.eml`), each attachment's file "
                    "(`media/<attachment id>-<name>`), the address book as vCard 4.0 "
                    "(`contacts.vcf`), `trusted-senders.json` and `auth-log.json`. Poll "
                    "the export until its state is `ready`, then download it before "
                    "`expires_at` (privacy.export_ttl_hours after it was built). While an "
                    "export is pending, asking again returns that one. No body."
                ),
                "responses": {
                    "202": {
                        **json_response("The pending export", "Export"),
                        "headers": {
                            "Location": {
                                "required": True,
                                "description": "The export's URL",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    "401": PROBLEM,
                    "429": {
                        **PROBLEM,
                        "description": (
                            "Three exports are ready to download already: download them "
                            "or wait until one expires"
                        ),
                    },
                },
            },
            "get": {
                "operationId": "listExports",
                "summary": "Your exports, newest first",
                "parameters": [LIMIT, CURSOR],
                "responses": {
                    "200": json_response("One page", "ExportPage"),
                    "400": PROBLEM,
                    "401": PROBLEM,
                },
            },
        },
        "/exports/{export_id}": {
            "get": {
                "operationId": "getExport",
                "summary": "One export and its state",
                "parameters": [EXPORT_ID],
                "responses": {
                    "200": json_response("The export", "Export"),
                    "401": PROBLEM,
                    "404": NO_EXPORT,
                },
            }
        },
        "/exports/{export_id}/download": {
            "get": {
                "operationId": "downloadExport",
                "summary": "Download a ready export's zip",
                "description": (
                    "Only its owner can; another user's export is a 404, like a missing "
                    "one. Range requests are supported."
                ),
                "parameters": [EXPORT_ID],
                "responses": {
                    "200": {
                        "description": "The archive",
                        "headers": {
                            "Content-Disposition": {
                                "required": True,
                                "description": (
                                    '`attachment; filename="optmsg-export-YYYY-MM-DD.zip"`'
                                ),
                                "schema": {"type": "string"},
                            }
                        },
                        "content": {"application/zip": {}},
                    },
                    "206": {
                        "description": "The requested range of the archive",
                        "content": {"application/zip": {}},
                    },
                    "401": PROBLEM,
                    "404": NO_EXPORT,
                    "409": {
                        **PROBLEM,
                        "description": (
                            "Not downloadable: still being prepared (`pending`) or it could "
                            "not be (`failed`; the detail says why)"
                        ),
                    },
                    "410": {
                        **PROBLEM,
                        "description": "Expired: its file is deleted; request a new export",
                    },
                },
            }
        },
        "/account": {
            "delete": {
                "operationId": "deleteAccount",
                "summary": "Delete your account and all its data, for good",
                "description": (
                    "Deletes the profile, every message and attachment (files another "
                    "user also has stay theirs), raw emails, the address book, trusted "
                    "and blocked senders, devices (every token, this one included), "
                    "sign-in codes and log, live events, exports and their files, and "
                    "the account's keys in Redis. Messages waiting to be sent are not "
                    "sent. There is no undo. " + BODY_RULES
                ),
                "requestBody": json_body("AccountDeletion"),
                "responses": {
                    "204": {"description": "Deleted"},
                    "400": {
                        **PROBLEM,
                        "description": 'The body is not `{"confirm": "delete my account"}`',
                    },
                    "401": PROBLEM,
                    "413": TOO_LARGE_JSON,
                },
            }
        },
    }


def schemas() -> dict[str, Any]:
    return {
        "Export": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "state", "created_at", "expires_at", "size", "sha256", "error"],
            "properties": {
                "id": {"type": "string"},
                "state": {
                    "type": "string",
                    "enum": ["pending", "ready", "failed", "expired"],
                    "description": (
                        "`pending` while being built, then `ready` (downloadable) or "
                        "`failed` (see `error`); `ready` becomes `expired` at `expires_at`"
                    ),
                },
                "created_at": DATE_TIME,
                "expires_at": {**DATE_TIME, "type": ["string", "null"]},
                "size": {"type": ["integer", "null"], "minimum": 0},
                "sha256": {"type": ["string", "null"], "description": "Of the zip file"},
                "error": {"type": ["string", "null"]},
            },
        },
        "ExportPage": page("Export"),
        "AccountDeletion": {
            "type": "object",
            "additionalProperties": False,
            "required": ["confirm"],
            "properties": {"confirm": {"type": "string", "const": "delete my account"}},
        },
    }
