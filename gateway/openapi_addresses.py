"""OpenAPI part: reading a typed address before saving it (gateway.api_addresses)."""

from __future__ import annotations

from typing import Any

from gateway.api_addresses import MAX_VALUE_CHARS
from gateway.openapi_support import PROBLEM, json_response

_NULLABLE_STRING = {"type": ["string", "null"]}


def paths() -> dict[str, Any]:
    return {
        "/addresses/normalize": {
            "get": {
                "operationId": "normalizeAddress",
                "summary": "How an address as typed would be saved on the trust list",
                "description": (
                    "Reads `value` exactly as addTrustedSender reads `address` (a phone "
                    "number in any common spelling, numbers without a country code in the "
                    "user's region; an email address; `@example.com`; `short:12345` or "
                    "`alpha:MYBANK`) and saves nothing, so that a client can show the "
                    "canonical form, or the reason it is not an address, while the user "
                    "types. Text that is not an address is still a 200 answer, with "
                    "`valid` false and the `reason`."
                ),
                "parameters": [
                    {
                        "name": "value",
                        "in": "query",
                        "required": True,
                        "description": "The address as the user typed it",
                        "schema": {
                            "type": "string",
                            "maxLength": MAX_VALUE_CHARS,
                            "examples": ["(415) 555-0100"],
                        },
                    },
                    {
                        "name": "purpose",
                        "in": "query",
                        "required": False,
                        "description": (
                            "`trust` (default): as addTrustedSender reads it, a number "
                            "without a country code in the user's region only. `send`: as a "
                            "draft or sendMessage reads a recipient, trying the user's region "
                            "and then the deployment's default region."
                        ),
                        "schema": {"type": "string", "enum": ["trust", "send"], "default": "trust"},
                    },
                ],
                "responses": {
                    "200": json_response("How the value reads", "AddressReading"),
                    "400": {
                        **PROBLEM,
                        "description": "`value` is missing or too long, or `purpose` unknown",
                    },
                    "401": PROBLEM,
                },
            }
        }
    }


def schemas() -> dict[str, Any]:
    return {
        "AddressReading": {
            "type": "object",
            "additionalProperties": False,
            "required": ["value", "valid", "address", "kind", "display", "reason"],
            "properties": {
                "value": {"type": "string", "description": "The value as sent"},
                "valid": {"type": "boolean"},
                "address": {
                    **_NULLABLE_STRING,
                    "description": (
                        "What addTrustedSender would store (E.164 number, email address, "
                        "@domain, short:/alpha: sender id); null when not valid"
                    ),
                },
                "kind": {
                    "type": ["string", "null"],
                    "enum": ["phone", "email", "domain", "sender_id", None],
                },
                "display": {
                    **_NULLABLE_STRING,
                    "description": (
                        "How the address reads: a phone number in international form "
                        "(`+1 415-555-0100`), so the user sees the country it was read in"
                    ),
                },
                "reason": {
                    **_NULLABLE_STRING,
                    "description": (
                        "Why the value is not an address (e.g. `too few digits for a phone "
                        "number`); null when valid"
                    ),
                },
            },
        }
    }
