"""Suspension by an operator: the API refuses the account (403), nothing is sent, inbound
messages are held with the reason, the operator can still export; unsuspending
restores everything. Driven through the CLI, the API and a signed Twilio webhook."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from config import Settings
from gateway import outbound
from gateway.app import create_app
from gateway.cli import main
from gateway.openapi import openapi_document
from inbox import store, suspension
from inbox.addresses import E164
from inbox.db import Database
from inbox.errors import NotFound
from inbox.models import messages_t
from inbox.outbound import SendRefused
from tests.conftest import twilio_form
from tests.integration.helpers import make_user, post_signed, trust_sender
from tests.integration.openapi_check import Reply, checked_call

Client = TestClient[Any, Any]
ADA_NUMBER = "+14155550199"
FRIEND = "+14155550100"


@pytest.fixture
async def client(settings: Settings, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def ada(db: Database) -> str:
    user_id = make_user(db, phone="+14155550150", sms_number=ADA_NUMBER)
    trust_sender(db, user_id, FRIEND)
    return user_id


async def call(client: Client, method: str, path: str, token: str, body: Any = None) -> Reply:
    return await checked_call(client, openapi_document(), method, path, token=token, json=body)


def stored(db: Database, text: str) -> Any:
    with db.read.connect() as conn:
        return conn.execute(
            sa.select(messages_t.c.folder, messages_t.c.reason).where(messages_t.c.text == text)
        ).one()


async def test_a_suspended_users_api_requests_are_403(
    db: Database, client: Client, ada: str
) -> None:
    token = store.create_token(db, ada)[1]
    suspension.set_suspended(db, ada, True)
    for method, path in (("GET", "/messages"), ("GET", "/exports"), ("POST", "/exports")):
        reply = await call(client, method, path, token)
        assert reply.status == 403, path
        assert reply.content_type == "application/problem+json"
        assert reply.body["detail"].startswith("account suspended")


async def test_unsuspending_restores_api_access(db: Database, client: Client, ada: str) -> None:
    token = store.create_token(db, ada)[1]
    suspension.set_suspended(db, ada, True)
    suspension.set_suspended(db, ada, False)
    assert (await call(client, "GET", "/messages", token)).status == 200


async def test_a_suspended_user_cannot_send(
    settings: Settings, db: Database, client: Client, ada: str
) -> None:
    token = store.create_token(db, ada)[1]
    suspension.set_suspended(db, ada, True)
    reply = await call(client, "POST", "/messages", token, {"to": FRIEND, "text": "hi"})
    assert reply.status == 403
    # Whatever the path (an SMS command, a job), the store refuses too.
    with pytest.raises(SendRefused, match="suspended"):
        outbound.create_sms(settings, db, ada, E164(FRIEND), "hi")
    with db.read.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(messages_t)).scalar() == 0


async def test_inbound_for_a_suspended_user_is_held_with_the_reason(
    db: Database, client: Client, ada: str
) -> None:
    suspension.set_suspended(db, ada, True)
    resp = await post_signed(client, twilio_form(sender=FRIEND, to=ADA_NUMBER, body="held one"))
    assert resp.status == 200
    assert tuple(stored(db, "held one")) == ("quarantine", "held: account suspended")


async def test_inbound_reaches_the_inbox_again_after_unsuspending(
    db: Database, client: Client, ada: str
) -> None:
    suspension.set_suspended(db, ada, True)
    suspension.set_suspended(db, ada, False)
    resp = await post_signed(client, twilio_form(sender=FRIEND, to=ADA_NUMBER, body="back"))
    assert resp.status == 200
    assert stored(db, "back").folder == "inbox"


async def test_a_suspension_does_not_hold_another_users_mail(db: Database, client: Client) -> None:
    ada = make_user(db, phone="+14155550150", sms_number=ADA_NUMBER)
    bob = make_user(db, phone="+14155550151", sms_number="+14155550198", first="Bob")
    trust_sender(db, bob, FRIEND)
    suspension.set_suspended(db, ada, True)
    resp = await post_signed(client, twilio_form(sender=FRIEND, to="+14155550198", body="bob's"))
    assert resp.status == 200
    assert stored(db, "bob's").folder == "inbox"


def test_suspending_twice_keeps_the_first_time(db: Database, ada: str) -> None:
    first = suspension.set_suspended(db, ada, True).suspended_at
    assert suspension.set_suspended(db, ada, True).suspended_at == first


def test_suspending_an_unknown_user_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        suspension.set_suspended(db, "usr_" + "0" * 32, True)


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_config(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An optmsg.toml naming the test's database (SQLite or PostgreSQL) and blobs."""
    import os

    for name in list(os.environ):
        if name.startswith("OPTMSG_") and name != "OPTMSG_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    path = tmp_path / "optmsg.toml"
    url = settings.database.url.replace("\\", "/")
    path.write_text(
        f'[database]\nurl = "{url}"\n[storage]\nblob_dir = "{settings.storage.blob_dir}"\n'
        "[bridges.twilio]\nenabled = false\n"
    )
    monkeypatch.setenv("OPTMSG_CONFIG", str(path))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main([*argv])
    out, err = capsys.readouterr()
    data = json.loads(out) if "--json" in argv and out.strip() else out
    return code, data, err


@pytest.mark.usefixtures("cli_config")
def test_cli_suspend_and_unsuspend(
    capsys: pytest.CaptureFixture[str], db: Database, ada: str
) -> None:
    code, user, err = run(capsys, "users", "suspend", ada, "--json")
    assert code == 0, err
    assert user["id"] == ada and user["suspended"] is True
    assert store.get_user(db, ada).suspended
    code, user, _ = run(capsys, "users", "unsuspend", ada, "--json")
    assert code == 0 and user["suspended"] is False
    assert not store.get_user(db, ada).suspended


@pytest.mark.usefixtures("cli_config")
@pytest.mark.parametrize("command", ["suspend", "unsuspend", "delete"])
def test_cli_user_commands_with_a_bad_id_fail_clearly(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, _, err = run(capsys, "users", command, "usr_" + "0" * 32, "--json")
    assert code == 1 and "not found" in err and "usr_" + "0" * 32 in err


@pytest.mark.usefixtures("cli_config")
def test_cli_export_of_a_suspended_user_writes_the_archive(
    capsys: pytest.CaptureFixture[str], db: Database, ada: str, tmp_path: Path
) -> None:
    suspension.set_suspended(db, ada, True)
    out = tmp_path / "ada.zip"
    code, result, _ = run(capsys, "users", "export", ada, "--out", str(out), "--json")
    assert code == 0 and result["size"] == out.stat().st_size
    with zipfile.ZipFile(out) as zf:
        account = json.loads(zf.read("account.json"))
    assert account["profile"]["id"] == ada and account["profile"]["suspended"] is True
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ada")] == []


@pytest.mark.usefixtures("cli_config")
def test_cli_export_refuses_to_overwrite_without_force(
    capsys: pytest.CaptureFixture[str], ada: str, tmp_path: Path
) -> None:
    out = tmp_path / "ada.zip"
    out.write_bytes(b"keep me")
    code, _, err = run(capsys, "users", "export", ada, "--out", str(out))
    assert code == 2 and "--force" in err
    assert out.read_bytes() == b"keep me"
    assert run(capsys, "users", "export", ada, "--out", str(out), "--force")[0] == 0
    assert zipfile.is_zipfile(out)


@pytest.mark.usefixtures("cli_config")
def test_cli_export_of_an_unknown_user_fails_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "nobody.zip"
    code, _, err = run(capsys, "users", "export", "usr_" + "0" * 32, "--out", str(out))
    assert code == 1 and "not found" in err
    assert list(tmp_path.glob("*nobody*")) == []
