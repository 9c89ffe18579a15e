"""`optmsg bridges status`: per-bridge figures from the store and a config summary."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.cli import main
from inbox.addresses import E164
from inbox.bridge_stats import bridge_stats
from inbox.db import Database
from inbox.models import attachments_t, raw_messages_t
from inbox.outbound import insert_outbound_sms, mark_failed
from tests.integration.helpers import inbound, make_user, run_batch, trust_sender
from tests.integration.test_cli import GOOD_CONFIG

BRIDGES = ("twilio", "email")


@pytest.fixture
def user_id(db: Database) -> str:
    return make_user(db, phone="+14155550100", sms_number="+14155550199")


def _by_bridge(db: Database, now: datetime | None = None) -> dict[str, dict[str, object]]:
    return {s.bridge: s.as_json() for s in bridge_stats(db, BRIDGES, timedelta(hours=24), now)}


def test_an_empty_store_reports_every_bridge_with_nothing(db: Database) -> None:
    stats = _by_bridge(db)
    assert set(stats) == set(BRIDGES)
    assert stats["twilio"]["received"] == {}
    assert stats["twilio"]["last_error"] is None
    assert stats["email"]["raw_pending"] == 0


def test_received_messages_are_counted_by_folder(db: Database, user_id: str) -> None:
    trust_sender(db, user_id, "+14155550111")
    run_batch(db, [inbound("SM1"), inbound("SM2"), inbound("SM3", sender="+14155550122")])
    stats = _by_bridge(db)["twilio"]
    assert stats["received"] == {"inbox": 2, "quarantine": 1}
    assert stats["received_recent"] == 3
    assert stats["last_received_at"] is not None


def test_recent_counts_only_messages_inside_the_window(db: Database, user_id: str) -> None:
    run_batch(db, [inbound("SM1")])
    later = datetime.now(UTC) + timedelta(hours=25)
    assert _by_bridge(db, later)["twilio"]["received_recent"] == 0


def test_failed_sends_are_counted_and_reported_as_the_last_error(
    db: Database, user_id: str
) -> None:
    with db.write.begin() as conn:
        sms = insert_outbound_sms(conn, user_id, E164("+14155550111"), "hello")
        mark_failed(conn, sms.message_id, 21211, "invalid 'To' number")
    stats = _by_bridge(db)["twilio"]
    assert stats["sent"] == {"failed": 1}
    assert stats["last_error"]["what"] == "send failed (error 21211)"  # type: ignore[index]


def test_failed_attachments_are_counted_with_their_reason(db: Database, user_id: str) -> None:
    [result] = run_batch(db, [inbound("SM1")])
    with db.write.begin() as conn:
        conn.execute(
            attachments_t.insert().values(
                id="att_0000000000000000000001",
                message_id=result.message_id,
                user_id=user_id,
                content_type="image/jpeg",
                status="failed",
                error="host not allowed",
                created_at=datetime.now(UTC),
            )
        )
    stats = _by_bridge(db)["twilio"]
    assert stats["attachments_failed"] == 1
    assert stats["last_error"]["what"] == "attachment: host not allowed"  # type: ignore[index]


def test_pending_and_unparseable_raw_emails_are_reported_for_the_email_bridge(
    db: Database,
) -> None:
    now = datetime.now(UTC)
    with db.write.begin() as conn:
        for raw_id, state, error in (("raw_1", "pending", None), ("raw_2", "done", "bad MIME")):
            conn.execute(
                raw_messages_t.insert().values(
                    id=raw_id,
                    received_at=now,
                    peer_ip="192.0.2.1",
                    helo="mx.example",
                    mail_from="a@example.com",
                    recipients="[]",
                    size=1,
                    sha256="0" * 64,
                    data=b"x",
                    state=state,
                    error=error,
                )
            )
    stats = _by_bridge(db)["email"]
    assert stats["raw_pending"] == 1
    assert stats["last_error"]["what"] == "parse: bad MIME"  # type: ignore[index]


@pytest.fixture
def cli_config(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    import os

    for name in list(os.environ):
        if name.startswith("OPTMSG_") and name != "OPTMSG_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    path = tmp_path / "optmsg.toml"
    path.write_text(GOOD_CONFIG.format(db_url=db_url, blobs=tmp_path / "blobs"))
    monkeypatch.setenv("OPTMSG_CONFIG", str(path))
    return path


def test_cli_json_has_counts_and_config_without_secrets(
    cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bridges", "status", "--json"]) == 0
    out = capsys.readouterr().out
    report = {b["bridge"]: b for b in json.loads(out)["bridges"]}
    assert report["twilio"]["config"]["auth_token_set"] is True
    assert report["twilio"]["config"]["webhook_url"].endswith("/bridges/twilio/sms")
    assert "cli-test-token-0123456789" not in out


def test_cli_text_names_each_bridge_and_its_last_error(
    cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bridges", "status"]) == 0
    out = capsys.readouterr().out
    assert "twilio (enabled)" in out
    assert "last error: none" in out


@pytest.mark.parametrize("hours", ["0", "-1", "x", "100000"])
def test_cli_refuses_a_bad_window(
    cli_config: Path, capsys: pytest.CaptureFixture[str], hours: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bridges", "status", "--hours", hours])
    assert exited.value.code == 2
    assert "--hours" in capsys.readouterr().err


def test_the_store_is_unchanged_by_a_status_report(db: Database, user_id: str) -> None:
    run_batch(db, [inbound("SM1")])
    with db.read.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one()
    _by_bridge(db)
    with db.read.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one() == before
