"""Building blocks of the OpenAPI document shared by its parts (references, common
responses and parameters, list pages)."""

from __future__ import annotations

from typing import Any

PROBLEM = {"$ref": "#/components/responses/Problem"}
LIMIT = {"$ref": "#/components/parameters/Limit"}
CURSOR = {"$ref": "#/components/parameters/Cursor"}
IF_NONE_MATCH = {"$ref": "#/components/parameters/IfNoneMatch"}
MESSAGE_ID = {"$ref": "#/components/parameters/MessageId"}
NOT_MODIFIED = {"$ref": "#/components/responses/NotModified"}
ETAG = {"$ref": "#/components/headers/ETag"}
NO_MESSAGE = {
    **PROBLEM,
    "description": "No such message: unknown, or another user's (the two are indistinguishable)",
}


def ref(schema: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema}"}


def json_response(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


def json_body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(schema)}}}


def page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": ref(item)},
            "next": {"type": ["string", "null"]},
        },
    }


def strings(description: str, max_items: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "minLength": 1},
        "description": description,
    }
    if max_items is not None:
        schema["maxItems"] = max_items
    return schema


DATE_TIME = {"type": "string", "format": "date-time"}
COUNT = {"type": "integer", "minimum": 0}
ACTION = {"type": "string", "enum": ["allow", "block"]}
TOO_LARGE_JSON = {
    **PROBLEM,
    "description": "The JSON body is over the server's limit (http.max_api_body_bytes)",
}
BODY_RULES = (
    "The body is a JSON object with only the fields below; anything else is a 400 "
    "problem whose detail names the field at fault."
)
