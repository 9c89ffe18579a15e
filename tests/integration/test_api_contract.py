"""Rules every client API operation keeps, driven by the OpenAPI document the server
serves, so that an operation added to the document is covered with no new test:

- a secured operation answers 401 (problem, WWW-Authenticate) without a token, with a
  malformed one and with a revoked one;
- an operation naming an object by a path parameter answers 404 for another user's
  object, exactly as for a missing one;
- an operation taking a JSON body answers 413 for a body over
  ``http.max_api_body_bytes``, whether or not the client declared its length;
- every problem carries one of the documented stable ``type`` URIs.

Every reply is checked against the document (tests.integration.openapi_check): the
status must be documented for the operation and the body must match its schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.keys import BLOBS, DATABASE
from gateway.openapi import openapi_document
from gateway.problems import problem_type
from inbox import store
from inbox.db import Database
from tests.conftest import make_settings
from tests.integration.api_operations import (
    FILTERS,
    FRIEND,
    Operation,
    Seed,
    any_path,
    operations,
    own_path,
    query_string,
    request_body,
)
from tests.integration.helpers import make_user, trust_sender
from tests.integration.openapi_check import Reply, checked_call

Client = TestClient[Any, Any]
BODY_LIMIT = 4096
API_PREFIX = "/api/v1"


@dataclass
class World:
    client: Client
    db: Database
    seeds: dict[str, Seed]
    tokens: dict[str, str]
    doc: dict[str, Any] = field(default_factory=openapi_document)

    async def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        return await checked_call(self.client, self.doc, method, path, **kwargs)


@pytest.fixture
async def world(
    tmp_path: Path, db_url: str, aiohttp_client: Callable[..., Awaitable[Client]]
) -> World:
    settings = make_settings(
        tmp_path,
        db_url,
        http={"max_api_body_bytes": BODY_LIMIT},
        # An address book (JSON among other formats) has a limit of its own; the same.
        optin={"max_contacts_bytes": BODY_LIMIT},
    )
    client = await aiohttp_client(create_app(settings))
    db = client.app[DATABASE]
    seeds, tokens = {}, {}
    for name, phone, number in (
        ("ada", "+14155550150", "+14155550199"),
        ("bob", "+442079460959", "+14155550198"),
    ):
        user = make_user(db, phone=phone, sms_number=number, first=name.title())
        trust_sender(db, user, FRIEND)
        seeds[name] = Seed(db, client.app[BLOBS], user, number)
        tokens[name] = store.create_token(db, user)[1]
    return World(client, db, seeds, tokens)


def all_operations() -> list[Operation]:
    return list(operations(openapi_document()))


def test_the_document_lists_public_operations_only_under_auth_and_the_document_itself() -> None:
    public = {op.label for op in all_operations() if not op.secured}
    expected = {
        op.label
        for op in all_operations()
        if op.template == "/openapi.json" or op.template.startswith("/auth/")
    }
    assert public == expected


def assert_unauthorized(reply: Reply, label: str, case: str) -> None:
    assert reply.status == 401, f"{label} with {case}: {reply.status} {reply.body}"
    assert reply.body["type"] == problem_type(401), label
    assert reply.headers["WWW-Authenticate"].startswith("Bearer"), label


async def test_every_secured_operation_needs_a_live_token(world: World) -> None:
    token_id, revoked = store.create_token(world.db, world.seeds["ada"].user_id, "lost phone")
    store.revoke_token(world.db, world.seeds["ada"].user_id, token_id)
    cases: dict[str, dict[str, str]] = {
        "no Authorization header": {},
        "another scheme": {"Authorization": "Basic YWRhOnNlY3JldA=="},
        "an empty bearer token": {"Authorization": "Bearer "},
        "a malformed token": {"Authorization": "Bearer not-one-of-ours"},
        "an unknown token": {"Authorization": f"Bearer {revoked[:-4]}abcd"},
        "a revoked token": {"Authorization": f"Bearer {revoked}"},
    }
    secured = [op for op in all_operations() if op.secured]
    assert secured
    for op in secured:
        path = any_path(op) + query_string(world.doc, op)
        for case, headers in cases.items():
            reply = await world.call(op.method, path, headers=headers)
            assert_unauthorized(reply, op.label, case)


async def test_another_users_object_is_not_found_by_every_operation(world: World) -> None:
    with_ids = [op for op in all_operations() if op.path_params and op.secured]
    assert with_ids
    for op in with_ids:
        try:
            path = own_path(op, world.seeds["bob"])
        except LookupError as exc:
            pytest.fail(
                f"{op.label}: no factory for the path parameter {exc.args[0]!r}; add one to "
                "tests/integration/api_operations.FACTORIES"
            )
        path += query_string(world.doc, op)
        body = request_body(world.doc, op)
        as_ada = await world.call(op.method, path, token=world.tokens["ada"], **body)
        as_bob = await world.call(op.method, path, token=world.tokens["bob"], **body)
        if FILTERS.intersection(op.path_params):
            # A selection within the caller's own data: none of the owner's shows.
            assert as_ada.status == 200, f"{op.label} as another user: {as_ada.body}"
            assert as_ada.body["items"] == [], f"{op.label} as another user: {as_ada.body}"
            assert as_bob.status == 200 and as_bob.body["items"], f"{op.label}: {as_bob.body}"
            continue
        assert as_ada.status == 404, f"{op.label} as another user: {as_ada.status} {as_ada.body}"
        assert as_ada.body["type"] == problem_type(404)
        # The object is there: its owner reaches it (so the 404 above was the scoping).
        assert as_bob.status != 404 and as_bob.status < 500, f"{op.label} as owner: {as_bob.body}"


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1024):
        yield data[i : i + 1024]


async def test_every_json_body_over_the_limit_is_refused(world: World) -> None:
    ada = world.seeds["ada"]
    takes_json = [op for op in all_operations() if op.json_body_schema() is not None]
    assert takes_json
    oversized = b'{"text": "' + b"x" * BODY_LIMIT + b'"}'
    for op in takes_json:
        for declared in (True, False):
            path = own_path(op, ada) + query_string(world.doc, op)
            data: Any = oversized if declared else _chunks(oversized)
            token = world.tokens["ada"] if op.secured else None
            reply = await world.call(
                op.method,
                path,
                token=token,
                data=data,
                headers={"Content-Type": "application/json"},
            )
            how = "with Content-Length" if declared else "chunked"
            assert reply.status == 413, f"{op.label} {how}: {reply.status} {reply.body}"
            assert reply.body["type"] == problem_type(413)


async def test_a_problem_names_its_class_by_a_stable_type(world: World) -> None:
    missing = await world.call("GET", "/messages/msg_nothing", token=world.tokens["ada"])
    bad = await world.call("GET", "/messages?limit=0", token=world.tokens["ada"])
    assert (missing.status, missing.body["type"]) == (
        404,
        "tag:optmsg.example,2026:problems/not-found",
    )
    assert (bad.status, bad.body["type"]) == (
        400,
        "tag:optmsg.example,2026:problems/invalid-request",
    )
    assert missing.content_type == bad.content_type == "application/problem+json"


async def test_an_unrouted_api_path_is_a_not_found_problem(world: World) -> None:
    resp = await world.client.get(
        API_PREFIX + "/no-such-thing", headers={"Authorization": f"Bearer {world.tokens['ada']}"}
    )
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["type"] == problem_type(404)
