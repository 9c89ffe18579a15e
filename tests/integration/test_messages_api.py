"""Messages through the client API, over real HTTP: the unread filter, ETags,
marking read, deleting (rows and blobs), and downloading attachments.

Every response is checked against the OpenAPI document the server serves
(tests.integration.openapi_check): its status must be documented for the
operation, its body must match the documented schema, and the headers the
document marks required must be there.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.app import create_app
from gateway.keys import BLOBS
from gateway.openapi import openapi_document
from inbox import raw_store, store
from inbox.addresses import E164
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.message import Channel, Inbound, InboundAttachment
from inbox.models import attachments_t, messages_t, raw_messages_t
from tests.integration.helpers import make_user, run_batch, trust_sender
from tests.integration.openapi_check import Reply, checked_call

Client = TestClient[Any, Any]

ADA_NUMBER = "+14155550199"  # Ada's OptMsg number (inbound traffic to it routes to her)
BOB_NUMBER = "+14155550198"
FRIEND = "+14155550100"  # trusted by both: their messages land in the inbox
API = "/api/v1"
PHOTO = b"\x89PNG\r\n\x1a\n" + b"a photo of a cat" * 64
MEDIA_URL = "https://api.twilio.com/2010-04-01/Accounts/AC0/Messages/MM0/Media/ME0"


@dataclass
class World:
    client: Client
    db: Database
    blobs: BlobStore
    blob_dir: Path
    users: dict[str, str]
    tokens: dict[str, str]
    doc: dict[str, Any] = field(default_factory=openapi_document)

    async def call(
        self,
        method: str,
        path: str,
        *,
        who: str | None = "ada",
        token: str | None = None,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request to the API as ``who``; the reply is checked against the document."""
        if token is None and who is not None:
            token = self.tokens[who]
        return await checked_call(
            self.client, self.doc, method, path, token=token, json=json, data=data, headers=headers
        )

    def receive(
        self,
        text: str = "hi",
        *,
        to: str = ADA_NUMBER,
        attachments: Sequence[InboundAttachment] = (),
        raw_id: str | None = None,
    ) -> str:
        """An MMS from FRIEND stored by the ingest pipeline (inline attachments put in
        the app's blob store first, as a bridge does); returns the message id."""
        for attachment in attachments:
            if attachment.content is not None:
                self.blobs.put(attachment.content)
        message = Inbound(
            bridge="twilio",
            external_id="MM" + secrets.token_hex(16),
            channel=Channel.MMS,
            sender=E164(FRIEND),
            recipient=E164(to),
            text=text,
            received_at=datetime.now(UTC),
            attachments=tuple(attachments),
            raw_id=raw_id,
        )
        (result,) = run_batch(self.db, [message])
        assert result.message_id is not None, result
        return result.message_id

    def receive_photo(self, name: str | None = "cat.png", data: bytes = PHOTO) -> tuple[str, str]:
        """A message with one stored photo: (message id, attachment id)."""
        message_id = self.receive(
            "look", attachments=[InboundAttachment("image/png", name, content=data)]
        )
        return message_id, self.attachment_ids(message_id)[0]

    def attachment_ids(self, message_id: str) -> list[str]:
        with self.db.read.connect() as conn:
            return list(
                conn.execute(
                    sa.select(attachments_t.c.id)
                    .where(attachments_t.c.message_id == message_id)
                    .order_by(attachments_t.c.id)
                ).scalars()
            )

    def blob_file(self, data: bytes) -> Path:
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        return self.blob_dir / digest[:2] / digest[2:4] / digest

    def update(self, table: sa.Table, row_id: str, **values: Any) -> None:
        with self.db.write.begin() as conn:
            conn.execute(table.update().where(table.c.id == row_id).values(**values))

    async def page(self, query: str, who: str = "ada") -> tuple[list[str], str | None]:
        reply = await self.call("GET", f"/messages?{query}", who=who)
        assert reply.status == 200, reply.body
        return [m["text"] for m in reply.body["items"]], reply.body["next"]

    async def texts(self, query: str, who: str = "ada") -> list[str]:
        """The texts of every page of a list, following ``next`` to the end."""
        texts, cursor = await self.page(query, who)
        while cursor is not None:
            more, cursor = await self.page(f"{query}&cursor={cursor}", who)
            texts += more
        return texts

    async def mark(self, message_id: str, read: bool) -> None:
        reply = await self.call("PATCH", f"/messages/{message_id}", json={"read": read})
        assert reply.status == 200, reply.body


@pytest.fixture
async def world(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> World:
    ada = make_user(db, phone="+14155550150", sms_number=ADA_NUMBER)
    bob = make_user(db, phone="+442079460959", sms_number=BOB_NUMBER, first="Bob")
    trust_sender(db, ada, FRIEND)
    trust_sender(db, bob, FRIEND)
    client = await aiohttp_client(create_app(settings))
    tokens = {"ada": store.create_token(db, ada)[1], "bob": store.create_token(db, bob)[1]}
    return World(
        client,
        db,
        client.app[BLOBS],
        Path(settings.storage.blob_dir),
        {"ada": ada, "bob": bob},
        tokens,
    )


# --- the unread filter -------------------------------------------------------------------


async def test_unread_true_pages_through_only_the_unread_messages(world: World) -> None:
    ids = [world.receive(f"m{i}") for i in range(5)]
    await world.mark(ids[1], True)
    await world.mark(ids[3], True)
    first, cursor = await world.page("unread=true&limit=2")
    assert first == ["m4", "m2"]
    assert await world.texts("unread=true&limit=2") == ["m4", "m2", "m0"]
    assert cursor is not None


async def test_unread_false_lists_only_the_read_messages(world: World) -> None:
    ids = [world.receive(f"m{i}") for i in range(4)]
    await world.mark(ids[0], True)
    await world.mark(ids[2], True)
    assert await world.texts("unread=false&limit=1") == ["m2", "m0"]


async def test_unread_filter_composes_with_the_folder(world: World) -> None:
    world.receive("inbox unread")
    held = world.receive("held unread")
    world.update(messages_t, held, folder="quarantine")
    assert await world.texts("folder=quarantine&unread=true") == ["held unread"]
    assert await world.texts("folder=inbox&unread=true") == ["inbox unread"]


@pytest.mark.parametrize(
    ("issued", "used"),
    [
        ("unread=true", "unread=false"),
        ("unread=true", "folder=inbox"),
        ("folder=inbox", "unread=true"),
        ("unread=true", "folder=quarantine&unread=true"),
    ],
)
async def test_a_cursor_is_refused_for_another_filter(world: World, issued: str, used: str) -> None:
    for i in range(3):
        world.receive(f"m{i}")
    # Nothing is read: unread=false lists nothing, so its cursor would never be issued.
    _, cursor = await world.page(f"{issued}&limit=1")
    assert cursor is not None
    reply = await world.call("GET", f"/messages?{used}&cursor={cursor}")
    assert reply.status == 400
    assert reply.body["detail"] == "the cursor belongs to another list"


@pytest.mark.parametrize("value", ["yes", "1", "TRUE", ""])
async def test_unread_must_be_true_or_false(world: World, value: str) -> None:
    reply = await world.call("GET", f"/messages?unread={value}")
    assert reply.status == 400
    assert reply.body["detail"] == "unread must be true or false"


# --- ETag and If-None-Match ----------------------------------------------------------------


async def test_list_with_its_etag_in_if_none_match_is_304_without_a_body(world: World) -> None:
    world.receive("one")
    first = await world.call("GET", "/messages")
    etag = first.headers["ETag"]
    again = await world.call("GET", "/messages", headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.raw == b""
    assert again.headers["ETag"] == etag


async def test_marking_read_changes_the_list_etag(world: World) -> None:
    message_id = world.receive("one")
    etag = (await world.call("GET", "/messages")).headers["ETag"]
    await world.mark(message_id, True)
    after = await world.call("GET", "/messages", headers={"If-None-Match": etag})
    assert after.status == 200
    assert after.headers["ETag"] != etag
    assert after.body["items"][0]["read"] is True


async def test_a_new_message_changes_the_list_etag(world: World) -> None:
    world.receive("one")
    etag = (await world.call("GET", "/messages")).headers["ETag"]
    world.receive("two")
    after = await world.call("GET", "/messages", headers={"If-None-Match": etag})
    assert after.status == 200
    assert [m["text"] for m in after.body["items"]] == ["two", "one"]


async def test_message_with_its_etag_in_if_none_match_is_304_without_a_body(
    world: World,
) -> None:
    message_id = world.receive("one")
    etag = (await world.call("GET", f"/messages/{message_id}")).headers["ETag"]
    again = await world.call("GET", f"/messages/{message_id}", headers={"If-None-Match": etag})
    assert (again.status, again.raw, again.headers["ETag"]) == (304, b"", etag)


async def test_marking_read_changes_the_message_etag(world: World) -> None:
    message_id = world.receive("one")
    etag = (await world.call("GET", f"/messages/{message_id}")).headers["ETag"]
    patched = await world.call("PATCH", f"/messages/{message_id}", json={"read": True})
    after = await world.call("GET", f"/messages/{message_id}", headers={"If-None-Match": etag})
    assert after.status == 200
    assert after.headers["ETag"] != etag
    assert after.headers["ETag"] == patched.headers["ETag"]


@pytest.mark.parametrize("form", ["W/{etag}", '"stale", {etag}', "*"])
async def test_weak_listed_and_wildcard_if_none_match_also_match(world: World, form: str) -> None:
    message_id = world.receive("one")
    etag = (await world.call("GET", f"/messages/{message_id}")).headers["ETag"]
    header = form.format(etag=etag)
    again = await world.call("GET", f"/messages/{message_id}", headers={"If-None-Match": header})
    assert again.status == 304


async def test_a_stale_etag_gets_the_full_response(world: World) -> None:
    world.receive("one")
    reply = await world.call("GET", "/messages", headers={"If-None-Match": '"stale"'})
    assert reply.status == 200
    assert [m["text"] for m in reply.body["items"]] == ["one"]


# --- PATCH: read and unread ------------------------------------------------------------------


async def test_patch_read_true_marks_the_message_read(world: World) -> None:
    message_id = world.receive("one")
    reply = await world.call("PATCH", f"/messages/{message_id}", json={"read": True})
    assert reply.status == 200
    assert (reply.body["id"], reply.body["read"]) == (message_id, True)
    assert (await world.call("GET", f"/messages/{message_id}")).body["read"] is True


async def test_patch_read_false_marks_the_message_unread_again(world: World) -> None:
    message_id = world.receive("one")
    await world.mark(message_id, True)
    reply = await world.call("PATCH", f"/messages/{message_id}", json={"read": False})
    assert (reply.status, reply.body["read"]) == (200, False)
    assert (await world.call("GET", f"/messages/{message_id}")).body["read"] is False


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"read": "yes"}', "read must be true or false"),
        (b'{"read": 1}', "read must be true or false"),
        (b'{"read": null}', "read must be true or false"),
        (b"{}", "read must be true or false"),
        (b'{"folder": "inbox"}', "unknown field 'folder'"),
        (b'{"read": true, "text": "edited"}', "unknown field 'text'"),
        (b"[true]", "the body must be a JSON object"),
        (b"", "the body must be a JSON object"),
        (b"{read: true}", "the body is not valid JSON"),
    ],
)
async def test_patch_with_a_bad_body_is_400_and_changes_nothing(
    world: World, body: bytes, detail: str
) -> None:
    message_id = world.receive("one")
    reply = await world.call(
        "PATCH",
        f"/messages/{message_id}",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 400
    assert reply.body["detail"].startswith(detail)
    message = (await world.call("GET", f"/messages/{message_id}")).body
    assert (message["read"], message["folder"], message["text"]) == (False, "inbox", "one")


# --- DELETE --------------------------------------------------------------------------------


def _rows(world: World, table: sa.Table, column: str, value: str) -> int:
    with world.db.read.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c[column] == value)
            ).scalar_one()
        )


async def test_delete_removes_the_message_its_attachment_rows_and_blobs(world: World) -> None:
    message_id, _ = world.receive_photo()
    assert world.blob_file(PHOTO).exists()
    reply = await world.call("DELETE", f"/messages/{message_id}")
    assert (reply.status, reply.raw) == (204, b"")
    assert _rows(world, messages_t, "id", message_id) == 0
    assert _rows(world, attachments_t, "message_id", message_id) == 0
    assert not world.blob_file(PHOTO).exists()
    assert (await world.call("GET", f"/messages/{message_id}")).status == 404


async def test_delete_keeps_a_blob_another_message_still_uses(world: World) -> None:
    first, _ = world.receive_photo()
    second, second_photo = world.receive_photo()
    assert (await world.call("DELETE", f"/messages/{first}")).status == 204
    assert world.blob_file(PHOTO).exists()
    download = await world.call("GET", f"/messages/{second}/attachments/{second_photo}")
    assert download.raw == PHOTO
    assert (await world.call("DELETE", f"/messages/{second}")).status == 204
    assert not world.blob_file(PHOTO).exists()


async def test_delete_keeps_a_blob_another_users_message_still_uses(world: World) -> None:
    ada_message, _ = world.receive_photo()
    world.receive(
        "bob's", to=BOB_NUMBER, attachments=[InboundAttachment("image/png", content=PHOTO)]
    )
    assert (await world.call("DELETE", f"/messages/{ada_message}")).status == 204
    assert world.blob_file(PHOTO).exists()


async def test_delete_leaves_the_users_other_messages(world: World) -> None:
    keep = world.receive("keep")
    gone = world.receive("gone")
    await world.call("DELETE", f"/messages/{gone}")
    assert await world.texts("limit=50") == ["keep"]
    assert (await world.call("GET", f"/messages/{keep}")).status == 200


async def test_deleting_twice_is_404(world: World) -> None:
    message_id = world.receive("one")
    assert (await world.call("DELETE", f"/messages/{message_id}")).status == 204
    again = await world.call("DELETE", f"/messages/{message_id}")
    assert again.status == 404


async def test_delete_removes_the_raw_email_with_the_last_message_parsed_from_it(
    world: World,
) -> None:
    raw = raw_store.new_raw(
        peer_ip="192.0.2.1",
        helo="mail.example.com",
        mail_from="friend@example.com",
        recipients=["ada@example.com", "bob@example.com"],
        data=b"Subject: hi\r\n\r\nhello both\r\n",
    )
    with world.db.write.begin() as conn:
        raw_store.insert_raw_batch(conn, [raw])
    ada_copy = world.receive("hello both", raw_id=raw.id)
    bob_copy = world.receive("hello both", to=BOB_NUMBER, raw_id=raw.id)
    # Done only once its messages are stored, as the email path does: the app's
    # retention job deletes a done raw email no message refers to, and may run now.
    with world.db.write.begin() as conn:
        raw_store.mark_done_batch(conn, [raw_store.Processed(raw.id)])
    await world.call("DELETE", f"/messages/{ada_copy}")
    assert _rows(world, raw_messages_t, "id", raw.id) == 1  # Bob's copy still comes from it
    await world.call("DELETE", f"/messages/{bob_copy}", who="bob")
    assert _rows(world, raw_messages_t, "id", raw.id) == 0


# --- downloading attachments ---------------------------------------------------------------


async def test_download_answers_the_bytes_with_the_stored_type_as_a_private_download(
    world: World,
) -> None:
    message_id, attachment_id = world.receive_photo("cat.png")
    reply = await world.call("GET", f"/messages/{message_id}/attachments/{attachment_id}")
    assert reply.status == 200
    assert reply.raw == PHOTO
    assert reply.headers["Content-Type"] == "image/png"
    assert reply.headers["Content-Disposition"] == "attachment; filename*=UTF-8''cat.png"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Cache-Control"] == "private"
    assert int(reply.headers["Content-Length"]) == len(PHOTO)


@pytest.mark.parametrize(
    ("stored", "disposition"),
    [
        ('report "final"; v2.pdf', "attachment; filename*=UTF-8''report%20%22final%22%3B%20v2.pdf"),
        ("../../etc/passwd", "attachment; filename*=UTF-8''passwd"),
        (
            "C:\\Users\\me\\résumé 履歴書.pdf",
            "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%20%E5%B1%A5%E6%AD%B4%E6%9B%B8.pdf",
        ),
        ("a\r\nX-Evil: 1.txt", "attachment; filename*=UTF-8''aX-Evil%3A%201.txt"),
        ("100%.txt", "attachment; filename*=UTF-8''100%25.txt"),
        ("..", "attachment"),
        (None, "attachment"),
    ],
)
async def test_download_filename_is_sanitised_and_rfc5987_encoded(
    world: World, stored: str | None, disposition: str
) -> None:
    message_id, attachment_id = world.receive_photo(stored)
    reply = await world.call("GET", f"/messages/{message_id}/attachments/{attachment_id}")
    assert reply.headers["Content-Disposition"] == disposition


@pytest.mark.parametrize(
    ("stored", "served"),
    [
        ("image/png", "image/png"),
        ("Image/PNG", "image/png"),
        ("text/plain; charset=utf-8", "text/plain"),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", None),
        ("not a type", "application/octet-stream"),
        ("text/html\r\nSet-Cookie: a=b", "application/octet-stream"),
        ("image/", "application/octet-stream"),
        ("", "application/octet-stream"),
    ],
)
async def test_download_type_falls_back_to_octet_stream_when_not_a_media_type(
    world: World, stored: str, served: str | None
) -> None:
    message_id = world.receive(
        "typed", attachments=[InboundAttachment(stored, "f", content=b"bytes")]
    )
    (attachment_id,) = world.attachment_ids(message_id)
    reply = await world.call("GET", f"/messages/{message_id}/attachments/{attachment_id}")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == (served or stored)


async def test_download_with_its_etag_in_if_none_match_is_304_without_a_body(
    world: World,
) -> None:
    message_id, attachment_id = world.receive_photo()
    path = f"/messages/{message_id}/attachments/{attachment_id}"
    etag = (await world.call("GET", path)).headers["ETag"]
    again = await world.call("GET", path, headers={"If-None-Match": etag})
    assert (again.status, again.raw, again.headers["ETag"]) == (304, b"", etag)


@pytest.mark.parametrize("status", ["pending", "failed"])
async def test_an_attachment_without_content_is_409_saying_so(world: World, status: str) -> None:
    message_id = world.receive(
        "mms", attachments=[InboundAttachment("image/jpeg", remote_url=MEDIA_URL)]
    )
    (attachment_id,) = world.attachment_ids(message_id)
    if status == "failed":
        world.update(attachments_t, attachment_id, status="failed", error="HTTP 404")
    reply = await world.call("GET", f"/messages/{message_id}/attachments/{attachment_id}")
    assert reply.status == 409
    assert f"status {status}" in reply.body["detail"]


async def test_an_attachment_of_another_message_is_404(world: World) -> None:
    _, attachment_id = world.receive_photo()
    other = world.receive("no attachments")
    reply = await world.call("GET", f"/messages/{other}/attachments/{attachment_id}")
    assert reply.status == 404


@pytest.mark.parametrize("attachment_id", ["att_nope", "msg_" + "0" * 32, "att_" + "0" * 32])
async def test_an_unknown_attachment_is_404(world: World, attachment_id: str) -> None:
    message_id, _ = world.receive_photo()
    reply = await world.call("GET", f"/messages/{message_id}/attachments/{attachment_id}")
    assert reply.status == 404


# --- other users, hidden messages, authentication ----------------------------------------------


async def _operation(world: World, op: str, message_id: str, attachment_id: str, who: str) -> Reply:
    if op == "get":
        return await world.call("GET", f"/messages/{message_id}", who=who)
    if op == "patch":
        return await world.call("PATCH", f"/messages/{message_id}", json={"read": True}, who=who)
    if op == "delete":
        return await world.call("DELETE", f"/messages/{message_id}", who=who)
    return await world.call("GET", f"/messages/{message_id}/attachments/{attachment_id}", who=who)


OPERATIONS = ["get", "patch", "delete", "download"]


@pytest.mark.parametrize("op", OPERATIONS)
async def test_another_users_message_is_404_and_untouched(world: World, op: str) -> None:
    message_id, attachment_id = world.receive_photo()
    reply = await _operation(world, op, message_id, attachment_id, who="bob")
    assert reply.status == 404
    assert reply.body["detail"] in ("no such message", "no such attachment")
    mine = await world.call("GET", f"/messages/{message_id}")
    assert (mine.status, mine.body["read"]) == (200, False)
    assert world.blob_file(PHOTO).exists()


@pytest.mark.parametrize("op", OPERATIONS)
async def test_a_discarded_message_is_404_and_untouched(world: World, op: str) -> None:
    message_id, attachment_id = world.receive_photo()
    world.update(messages_t, message_id, folder="discarded")
    reply = await _operation(world, op, message_id, attachment_id, who="ada")
    assert reply.status == 404
    assert _rows(world, messages_t, "id", message_id) == 1
    assert world.blob_file(PHOTO).exists()


NEW_OPERATIONS = [
    ("GET", "/messages?unread=true"),
    ("PATCH", "/messages/{message}"),
    ("DELETE", "/messages/{message}"),
    ("GET", "/messages/{message}/attachments/{attachment}"),
]


@pytest.mark.parametrize(("method", "template"), NEW_OPERATIONS)
@pytest.mark.parametrize("token", [None, "optmsg_not-a-real-token"])
async def test_new_operations_need_a_valid_token(
    world: World, method: str, template: str, token: str | None
) -> None:
    message_id, attachment_id = world.receive_photo()
    path = template.format(message=message_id, attachment=attachment_id)
    reply = await world.call(method, path, who=None, token=token, json={"read": True})
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    mine = await world.call("GET", f"/messages/{message_id}")
    assert (mine.status, mine.body["read"]) == (200, False)
