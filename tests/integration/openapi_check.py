"""Check client API responses against the OpenAPI document the server serves.

A minimal JSON Schema checker for the subset the document uses, and
:func:`check_response`: the status must be documented for the operation, the body
must match the documented schema for its media type (exact, ``type/*`` or ``*/*``),
a response documented without content must have no body, and every header the
document marks required must be there (and equal its ``const``, if it has one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def schema_errors(doc: dict[str, Any], schema: dict[str, Any], value: Any, at: str) -> list[str]:
    schema = resolve(doc, schema)
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not schema_errors(doc, s, value, at)]
        return [] if len(matching) == 1 else [f"{at}: matches {len(matching)} of oneOf"]
    if "const" in schema and (value != schema["const"] or type(value) is not type(schema["const"])):
        return [f"{at}: {value!r} is not {schema['const']!r}"]
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in allowed):
            return [f"{at}: {value!r} is not of type {types}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        errors += [f"{at}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            errors += [f"{at}: unexpected {k!r}" for k in value if k not in props]
        for key, sub in props.items():
            if key in value:
                errors += schema_errors(doc, sub, value[key], f"{at}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{at}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{at}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            errors += schema_errors(doc, schema.get("items", {}), item, f"{at}[{i}]")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{at}: shorter than {schema['minLength']}")
        if schema.get("format") == "date-time":
            try:
                datetime.fromisoformat(value)
            except ValueError:
                errors.append(f"{at}: {value!r} is not a date-time")
    if _TYPES["integer"](value):
        if value < schema.get("minimum", value):
            errors.append(f"{at}: {value} below {schema['minimum']}")
        if value > schema.get("maximum", value):
            errors.append(f"{at}: {value} above {schema['maximum']}")
    return errors


def template_for(doc: dict[str, Any], path: str) -> str:
    """The document's path template that ``path`` (without the server prefix) matches."""
    for template in doc["paths"]:
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return str(template)
    raise AssertionError(f"{path} is not in the OpenAPI document")


def _media(content: dict[str, Any], content_type: str) -> dict[str, Any]:
    """The documented media type object for ``content_type``: exact, then range."""
    major = content_type.split("/", 1)[0]
    for key in (content_type, f"{major}/*", "*/*"):
        if key in content:
            return dict(content[key])
    raise AssertionError(f"{content_type} not in {list(content)}")


def check_response(
    doc: dict[str, Any],
    method: str,
    path: str,
    status: int,
    content_type: str,
    body: Any,
    raw: bytes,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Assert that the response is one the document describes; returns its template.
    ``body`` is the parsed JSON (None for other media types), ``raw`` the bytes.
    Headers are checked when given (a case-insensitive mapping, like aiohttp's)."""
    template = template_for(doc, path)
    operation = doc["paths"][template].get(method.lower())
    assert operation is not None, f"{method.upper()} {template} is not documented"
    documented = operation["responses"]
    assert str(status) in documented, (
        f"{method.upper()} {template} answered {status}, documented: {list(documented)}"
    )
    response = resolve(doc, documented[str(status)])
    content = response.get("content")
    if content is None:
        assert raw == b"", f"{status} has a body the document does not describe"
    else:
        media = _media(content, content_type)
        if "schema" in media:
            errors = schema_errors(doc, media["schema"], body, "$")
            assert not errors, f"{method.upper()} {template} {status}: {errors}"
    if headers is not None:
        for name, header in response.get("headers", {}).items():
            header = resolve(doc, header)
            if not header.get("required"):
                continue
            assert name in headers, f"{method.upper()} {template} {status}: no {name} header"
            errors = schema_errors(doc, header.get("schema", {}), headers[name], name)
            assert not errors, f"{method.upper()} {template} {status}: {errors}"
    return template


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    headers: CIMultiDictProxy[str]
    body: Any
    raw: bytes
    template: str


async def checked_call(
    client: TestClient[Any, Any],
    doc: dict[str, Any],
    method: str,
    path: str,
    *,
    token: str | None = None,
    json: Any = None,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request to ``/api/v1`` + ``path``, its reply checked against ``doc``."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    kwargs: dict[str, Any] = {"headers": all_headers}
    if json is not None:
        kwargs["json"] = json
    if data is not None:
        kwargs["data"] = data
    resp = await client.request(method, "/api/v1" + path, **kwargs)
    raw = await resp.read()
    body: Any = None
    if resp.content_type in ("application/json", "application/problem+json") and raw:
        body = await resp.json(content_type=None)
    template = check_response(
        doc,
        method.lower(),
        path.split("?", 1)[0],
        resp.status,
        resp.content_type,
        body,
        raw,
        resp.headers,
    )
    return Reply(resp.status, resp.content_type, resp.headers, body, raw, template)
