"""The OpenAPI 3.1 document of the client API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

_PROBLEM = {"$ref": "#/components/responses/Problem"}


def openapi_document() -> dict[str, Any]:
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
                                "enum": ["inbox", "quarantine"],
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
                            "name": "cursor",
                            "in": "query",
                            "description": "The `next` value of the previous page",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "One page",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/MessagePage"}
                                }
                            },
                        },
                        "400": _PROBLEM,
                        "401": _PROBLEM,
                    },
                }
            },
            "/messages/{message_id}": {
                "get": {
                    "operationId": "getMessage",
                    "summary": "One message of the authenticated user",
                    "parameters": [
                        {
                            "name": "message_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The message",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Message"}
                                }
                            },
                        },
                        "401": _PROBLEM,
                        "404": _PROBLEM,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
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
                        "folder": {"type": "string", "enum": ["inbox", "quarantine"]},
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
                        "attachments": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Attachment"},
                        },
                    },
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
