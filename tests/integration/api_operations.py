"""The client API's operations as the OpenAPI document lists them, and what a test
needs to call any of them: a user's own object for every path parameter, a minimal
valid body and query. Used by the document-driven tests (test_api_contract,
test_api_schemathesis), so an endpoint another change adds is covered as soon as it
is in the document.

To cover a new path parameter, add a factory to :data:`FACTORIES` under the
parameter's name; the tests fail, naming the parameter, until there is one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from inbox import conversations, drafts, export, store
from inbox.addresses import E164
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.message import Channel, Inbound, InboundAttachment
from optin import trust
from tests.integration.helpers import run_batch
from tests.integration.openapi_check import resolve

PHOTO = b"\x89PNG\r\n\x1a\n" + b"a photo of a cat" * 64
FRIEND = "+14155550100"
VCARD = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Grace\r\nTEL:+14155550177\r\nEND:VCARD\r\n"


@dataclass(frozen=True)
class Operation:
    method: str  # lower case, as in the document
    template: str  # the path without the server prefix, e.g. /messages/{message_id}
    spec: dict[str, Any]
    params: tuple[dict[str, Any], ...]  # path-level and operation-level, resolved
    security: tuple[dict[str, Any], ...]  # empty: a public operation

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(p["name"] for p in self.params if p["in"] == "path")

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.template}"

    @property
    def secured(self) -> bool:
        return bool(self.security)

    def json_body_schema(self) -> dict[str, Any] | None:
        content = self.spec.get("requestBody", {}).get("content", {})
        media = content.get("application/json")
        return None if media is None else dict(media.get("schema", {}))

    def other_body_types(self) -> list[str]:
        content = self.spec.get("requestBody", {}).get("content", {})
        return [t for t in content if t != "application/json"]


def operations(doc: dict[str, Any]) -> Iterator[Operation]:
    for template, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method, spec in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            params = tuple(resolve(doc, p) for p in (*shared, *spec.get("parameters", [])))
            security = tuple(spec.get("security", doc.get("security", [])))
            yield Operation(method, template, spec, params, security)


# --- objects a path parameter names -------------------------------------------------------


@dataclass
class Seed:
    """What a factory may use: the store, the user who will own the object."""

    db: Database
    blobs: BlobStore
    user_id: str
    sms_number: str


Factory = Callable[[Seed], dict[str, str]]


def receive(seed: Seed, text: str = "hi", photo: bool = False) -> str:
    """A message from FRIEND to the user, stored by the ingest pipeline (its id); a
    photo goes in the blob store first, as a bridge puts it."""
    if photo:
        seed.blobs.put(PHOTO)
    message = Inbound(
        bridge="twilio",
        external_id="MM" + secrets.token_hex(16),
        channel=Channel.MMS if photo else Channel.SMS,
        sender=E164(FRIEND),
        recipient=E164(seed.sms_number),
        text=text,
        received_at=datetime.now(UTC),
        attachments=(InboundAttachment("image/png", "cat.png", content=PHOTO),) if photo else (),
    )
    (result,) = run_batch(seed.db, [message])
    assert result.message_id is not None, result
    return result.message_id


def _message(seed: Seed) -> dict[str, str]:
    return {"message_id": receive(seed)}


def _attachment(seed: Seed) -> dict[str, str]:
    message_id = receive(seed, "look", photo=True)
    item = store.get_message(seed.db, seed.user_id, message_id)
    return {"message_id": message_id, "attachment_id": item["attachments"][0]["id"]}


def _trust_entry(seed: Seed) -> dict[str, str]:
    address = "+1415555" + str(secrets.randbelow(9000) + 1000)
    trust.add(seed.db, seed.user_id, E164(address))
    return {"address": address}


def _token(seed: Seed) -> dict[str, str]:
    token_id, _ = store.create_token(seed.db, seed.user_id, "another device")
    return {"token_id": token_id}


def _draft(seed: Seed) -> dict[str, str]:
    draft = drafts.create_draft(seed.db, seed.user_id, "sms", to=(FRIEND,), text="see you")
    return {"draft_id": draft["id"]}


def _draft_attachment(seed: Seed) -> dict[str, str]:
    draft_id = _draft(seed)["draft_id"]
    draft = drafts.add_attachment(
        seed.db,
        seed.blobs,
        seed.user_id,
        draft_id,
        content_type="image/png",
        filename="cat.png",
        data=PHOTO,
        limits_for=lambda _: drafts.AttachmentLimits(types=("image/*",), max_bytes=1 << 20),
    )
    return {"draft_id": draft_id, "attachment_id": draft["attachments"][0]["id"]}


def _export(seed: Seed) -> dict[str, str]:
    return {"export_id": export.request_export(seed.db, seed.user_id).id}


def _conversation(seed: Seed) -> dict[str, str]:
    receive(seed, "are you there?")
    return {"key": conversations.sms_key(FRIEND)}


#: One factory per path parameter name: it creates an object the user owns and
#: returns the path parameters naming it (an attachment names its message too).
#: A name used under two parents is keyed "parent.name" for the second.
FACTORIES: dict[str, Factory] = {
    "message_id": _message,
    "attachment_id": _attachment,
    "address": _trust_entry,
    "token_id": _token,
    "draft_id": _draft,
    "draft_id.attachment_id": _draft_attachment,
    "export_id": _export,
    "key": _conversation,
}

#: Path parameters that select within the user's own data rather than name an object
#: (a conversation is keyed by the counterpart's address, which several users may
#: share): another user's value is an empty list, exactly like an unknown one.
FILTERS = frozenset({"key"})


def factory_for(op: Operation, name: str) -> Factory:
    """The factory for one of the operation's path parameters (LookupError: none)."""
    names = op.path_params
    at = names.index(name)
    if at > 0 and f"{names[at - 1]}.{name}" in FACTORIES:
        return FACTORIES[f"{names[at - 1]}.{name}"]
    if name not in FACTORIES:
        raise LookupError(name)
    return FACTORIES[name]


def own_values(op: Operation, seed: Seed) -> dict[str, str]:
    """Path parameter values naming objects the seed's user owns."""
    values: dict[str, str] = {}
    # The last parameter's factory may provide the earlier ones (an attachment's message).
    for name in reversed(op.path_params):
        if name not in values:
            values.update(factory_for(op, name)(seed))
    return values


def own_path(op: Operation, seed: Seed) -> str:
    """The operation's path naming objects the seed's user owns."""
    return fill(op, own_values(op, seed))


def fill(op: Operation, values: dict[str, str]) -> str:
    path = op.template
    for name in op.path_params:
        path = path.replace("{" + name + "}", quote(values[name], safe=""))
    return path


def any_path(op: Operation) -> str:
    """The operation's path with made-up parameter values (for checks that come first)."""
    return fill(op, {name: "x" + name for name in op.path_params})


# --- minimal valid requests -----------------------------------------------------------


def sample(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """The smallest value the schema accepts (documented examples and defaults first)."""
    schema = resolve(doc, schema)
    for key in ("examples", "default", "const", "enum"):
        if key in schema:
            value = schema[key]
            return value[0] if key in ("examples", "enum") else value
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return sample(doc, schema[key][0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: sample(doc, props.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return [sample(doc, schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    if kind == "string":
        if schema.get("format") == "date-time":
            return datetime.now(UTC).isoformat()
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    return None


#: Valid JSON bodies where the schema's smallest value is not one (the schema cannot
#: say everything: "at least one of these members").
BODIES: dict[str, Any] = {
    "PATCH /drafts/{draft_id}": {"text": "edited"},
}
#: A valid body of each other media type an operation takes (``*/*``: a file).
RAW_BODIES: dict[str, tuple[str, bytes]] = {
    "*/*": ("image/png", PHOTO),
    "application/octet-stream": ("image/png", PHOTO),
    "text/vcard": (
        "text/vcard",
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Grace\r\nTEL:+14155550177\r\nEND:VCARD\r\n",
    ),
}


def request_body(doc: dict[str, Any], op: Operation) -> dict[str, Any]:
    """checked_call arguments carrying a valid body for the operation (none: {})."""
    if op.label in BODIES:
        return {"json": BODIES[op.label]}
    schema = op.json_body_schema()
    if schema is not None:
        return {"json": sample(doc, schema)}
    for media_type in op.other_body_types():
        if media_type in RAW_BODIES:
            content_type, data = RAW_BODIES[media_type]
            return {"data": data, "headers": {"Content-Type": content_type}}
    assert not op.other_body_types(), f"{op.label}: add a body to RAW_BODIES"
    return {}


def query_string(doc: dict[str, Any], op: Operation) -> str:
    """The required query parameters, each with a sample value."""
    required = {
        p["name"]: sample(doc, p.get("schema", {}))
        for p in op.params
        if p["in"] == "query" and p.get("required")
    }
    return "?" + urlencode(required) if required else ""
