"""The optmsg CLI, run in-process through main() with --json output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main

pytestmark = pytest.mark.usefixtures("cli_env")

GOOD_CONFIG = """
[database]
url = "{db_url}"
[storage]
blob_dir = "{blobs}"
[bridges.twilio]
enabled = true
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "cli-test-token-0123456789"
"""


@pytest.fixture
def cli_env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file for the CLI; every CLI test runs on SQLite and on PostgreSQL."""
    import os

    for name in list(os.environ):
        if name.startswith("OPTMSG_") and name != "OPTMSG_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    path = tmp_path / "optmsg.toml"
    path.write_text(GOOD_CONFIG.format(db_url=db_url, blobs=tmp_path / "blobs"))
    monkeypatch.setenv("OPTMSG_CONFIG", str(path))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main([*argv])
    out, err = capsys.readouterr()
    data = json.loads(out) if "--json" in argv and out.strip() else out
    return code, data, err


def create_user(
    capsys: pytest.CaptureFixture[str], phone: str = "+44 20 7946 0958", sms: str = "(415) 555-0199"
) -> str:
    code, user, _ = run(
        capsys,
        "users",
        "create",
        "--first-name",
        "Ada",
        "--last-name",
        "Lovelace",
        "--dob",
        "1990-12-10",
        "--phone",
        phone,
        "--sms-number",
        sms,
        "--json",
    )
    assert code == 0
    return str(user["id"])


def test_users_create_prints_the_user_with_canonical_numbers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, user, _ = run(
        capsys,
        "users",
        "create",
        "--first-name",
        "Ada",
        "--last-name",
        "Lovelace",
        "--dob",
        "1990-12-10",
        "--phone",
        "+44 20 7946 0958",
        "--sms-number",
        "(415) 555-0199",
        "--json",
    )
    assert code == 0
    assert user["phone"] == "+442079460958"
    assert user["addresses"] == ["+14155550199"]
    assert user["id"].startswith("usr_")


def test_users_list_and_delete(capsys: pytest.CaptureFixture[str]) -> None:
    user_id = create_user(capsys)
    _, listing, _ = run(capsys, "users", "list", "--json")
    assert [u["id"] for u in listing["items"]] == [user_id]
    assert run(capsys, "users", "delete", user_id, "--json")[0] == 0
    _, listing, _ = run(capsys, "users", "list", "--json")
    assert listing["items"] == []


def test_bad_phone_exits_2_naming_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "users",
        "create",
        "--first-name",
        "A",
        "--last-name",
        "B",
        "--dob",
        "1990-01-01",
        "--phone",
        "12",
        "--json",
    )
    assert code == 2
    assert "--phone" in err and "too few digits" in err


def test_bad_date_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "users",
        "create",
        "--first-name",
        "A",
        "--last-name",
        "B",
        "--dob",
        "10/12/1990",
        "--phone",
        "+442079460958",
    )
    assert code == 2 and "--dob" in err


def test_duplicate_phone_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    create_user(capsys)
    code, _, err = run(
        capsys,
        "users",
        "create",
        "--first-name",
        "A",
        "--last-name",
        "B",
        "--dob",
        "1990-01-01",
        "--phone",
        "+442079460958",
    )
    assert code == 1 and "already exists" in err


def test_tokens_create_prints_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    user_id = create_user(capsys)
    code, data, _ = run(capsys, "tokens", "create", user_id, "--json")
    assert code == 0
    assert data["token"].startswith("optmsg_")


def test_tokens_for_unknown_user_fail(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tokens", "create", "usr_nope", "--json")
    assert code == 1 and "not found" in err


def test_optin_add_list_remove_with_national_format(capsys: pytest.CaptureFixture[str]) -> None:
    user_id = create_user(capsys)
    code, entry, _ = run(capsys, "optin", "add", user_id, "(415) 555-0100", "--json")
    assert code == 0 and entry["address"] == "+14155550100" and entry["verdict"] == "trusted"
    run(capsys, "optin", "add", user_id, "+1 415-555-0100", "--json")
    _, listing, _ = run(capsys, "optin", "list", user_id, "--json")
    assert [e["address"] for e in listing["items"]] == ["+14155550100"]
    assert run(capsys, "optin", "remove", user_id, "415.555.0100", "--json")[0] == 0
    _, listing, _ = run(capsys, "optin", "list", user_id, "--json")
    assert listing["items"] == []


def test_optin_add_email_address(capsys: pytest.CaptureFixture[str]) -> None:
    user_id = create_user(capsys)
    _, entry, _ = run(capsys, "optin", "add", user_id, "Ada@Example.COM", "--json")
    assert entry["address"] == "Ada@example.com"


def test_optin_add_unparseable_exits_2_and_adds_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    user_id = create_user(capsys)
    code, _, err = run(capsys, "optin", "add", user_id, "not a number", "--json")
    assert code == 2 and "ADDRESS" in err
    _, listing, _ = run(capsys, "optin", "list", user_id, "--json")
    assert listing["items"] == []


def test_optin_remove_absent_entry_fails(capsys: pytest.CaptureFixture[str]) -> None:
    user_id = create_user(capsys)
    code, _, err = run(capsys, "optin", "remove", user_id, "+14155550100")
    assert code == 1 and "not on the list" in err


def test_quarantine_list_of_unknown_user_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "quarantine", "list", "usr_nope", "--json")
    assert code == 1


def test_quarantine_release_of_unknown_message_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "quarantine", "release", "msg_nope", "--json")
    assert code == 1 and "not found" in err


def test_config_check_masks_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = run(capsys, "config", "check", "--json")
    assert code == 0
    assert data["bridges"]["twilio"]["auth_token"] == "***"
    code, text, _ = run(capsys, "config", "check")
    assert "cli-test-token" not in text and "auth_token" in text


def test_config_check_exits_2_naming_the_bad_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTMSG_HTTP__LISTEN", "no-port")
    code, _, err = run(capsys, "config", "check", "--json")
    assert code == 2
    assert "http.listen" in err


def test_config_check_refuses_placeholder_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTMSG_BRIDGES__TWILIO__AUTH_TOKEN", "changeme")
    code, _, err = run(capsys, "config", "check")
    assert code == 2 and "bridges.twilio.auth_token" in err and "changeme" not in err


def test_db_upgrade_reports_the_revision(capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = run(capsys, "db", "upgrade", "--json")
    from inbox.migrate import head_revision

    assert code == 0 and data["revision"] == head_revision()


def test_dev_init_writes_a_config_that_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "new-dir" / "dev.toml"
    code, data, _ = run(capsys, "dev", "init", "--path", str(target), "--json")
    assert code == 0 and data["written"] is True
    assert run(capsys, "config", "check", "--config", str(target), "--json")[0] == 0
    code, data, _ = run(capsys, "dev", "init", "--path", str(target), "--json")
    assert data["written"] is False
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_quarantine_list_release_and_deny(
    capsys: pytest.CaptureFixture[str], cli_env: Path
) -> None:
    from config import load_settings
    from inbox.db import open_database
    from tests.integration.helpers import inbound, run_batch

    user_id = create_user(capsys)
    db = open_database(load_settings(cli_env).database)
    try:
        run_batch(
            db,
            [
                inbound("SM1", sender="+14155550111"),
                inbound("SM2", sender="+14155550111"),
                inbound("SM3", sender="+14155550122"),
            ],
        )
    finally:
        db.dispose()
    _, held, _ = run(capsys, "quarantine", "list", user_id, "--json")
    assert len(held["items"]) == 3
    by_sender = {m["sender"]: m["id"] for m in held["items"]}
    code, result, _ = run(capsys, "quarantine", "release", by_sender["+14155550111"], "--json")
    assert code == 0 and result == {"sender": "+14155550111", "verdict": "trusted", "messages": 2}
    code, result, _ = run(capsys, "quarantine", "deny", by_sender["+14155550122"], "--json")
    assert code == 0 and result == {"sender": "+14155550122", "verdict": "blocked", "messages": 1}
    _, held, _ = run(capsys, "quarantine", "list", user_id, "--json")
    assert held["items"] == []
    _, entries, _ = run(capsys, "optin", "list", user_id, "--json")
    assert {(e["address"], e["verdict"], e["source"]) for e in entries["items"]} == {
        ("+14155550111", "trusted", "release"),
        ("+14155550122", "blocked", "manual"),
    }


def test_json_log_format_writes_one_json_object_per_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    monkeypatch.setenv("OPTMSG_LOG__FORMAT", "json")
    assert run(capsys, "db", "upgrade", "--json")[0] == 0
    logging.getLogger("optmsg.test").warning("hello %s", "there")
    _, err = capsys.readouterr()
    record = json.loads(err.strip().splitlines()[-1])
    assert record["event"] == "hello there"
    assert record["level"] == "warning"


def _hold(cli_env: Path, *messages: tuple[str, str]) -> None:
    from config import load_settings
    from inbox.db import open_database
    from tests.integration.helpers import inbound, run_batch

    db = open_database(load_settings(cli_env).database)
    try:
        run_batch(db, [inbound(sid, sender=sender) for sid, sender in messages])
    finally:
        db.dispose()


def test_quarantine_senders_allow_and_undo(
    capsys: pytest.CaptureFixture[str], cli_env: Path
) -> None:
    user_id = create_user(capsys)
    _hold(cli_env, ("SM1", "+14155550111"), ("SM2", "+14155550111"), ("SM3", "+14155550122"))
    _, cards, _ = run(capsys, "quarantine", "senders", user_id, "--json")
    assert [(c["sender"], c["count"]) for c in cards["items"]] == [
        ("+14155550122", 1),
        ("+14155550111", 2),
    ]
    code, result, _ = run(capsys, "quarantine", "allow", user_id, "(415) 555-0111", "--json")
    assert code == 0 and (result["senders"], result["messages"]) == (["+14155550111"], 2)
    code, undone, _ = run(capsys, "quarantine", "undo", user_id, "--json")
    assert code == 0 and undone == {"undone": "allow", "senders": ["+14155550111"], "messages": 2}
    code, _, err = run(capsys, "quarantine", "undo", user_id)
    assert code == 1 and "no recent screener decision" in err


def test_quarantine_block_of_a_sender_with_nothing_held_fails(
    capsys: pytest.CaptureFixture[str], cli_env: Path
) -> None:
    user_id = create_user(capsys)
    code, _, err = run(capsys, "quarantine", "block", user_id, "+14155550111")
    assert code == 1 and "no held messages" in err


def test_quarantine_expire_runs_the_retention_job(
    capsys: pytest.CaptureFixture[str], cli_env: Path
) -> None:
    create_user(capsys)
    code, result, _ = run(capsys, "quarantine", "expire", "--json")
    assert code == 0 and result == {
        "expired": 0,
        "purged": 0,
        "raw_deleted": 0,
        "ips_erased": 0,
        "exports_deleted": 0,
        "verifications_deleted": 0,
        "events_deleted": 0,
        "flags_expired": 0,
        "blob_temps_deleted": 0,
    }


def test_optin_add_domain_entry(capsys: pytest.CaptureFixture[str], cli_env: Path) -> None:
    user_id = create_user(capsys)
    code, entry, _ = run(capsys, "optin", "add", user_id, "@MyBank.example", "--json")
    assert code == 0 and (entry["address"], entry["kind"]) == ("@mybank.example", "domain")


def test_contacts_import_optin_list_and_delete(
    capsys: pytest.CaptureFixture[str], cli_env: Path, tmp_path: Path
) -> None:
    user_id = create_user(capsys)
    book = tmp_path / "book.csv"
    book.write_text("Name,Phone\nAlice,+1 (415) 555-0100\nBob,12\n", encoding="utf-8")
    code, report, _ = run(capsys, "contacts", "import", user_id, str(book), "--json")
    assert code == 0 and report["imported"] == 1
    assert [r["name"] for r in report["rejected"]] == ["Bob"]
    _, listed, _ = run(capsys, "contacts", "list", user_id, "--json")
    assert [c["phones"] for c in listed["items"]] == [["+14155550100"]]
    code, added, _ = run(capsys, "contacts", "optin", user_id, "--all", "--json")
    assert code == 0 and added == {"added": 1}
    code, deleted, _ = run(capsys, "contacts", "delete", user_id, "--untrust", "--json")
    assert code == 0 and deleted == {"contacts": 1, "trusted_senders": 1}


def test_contacts_import_of_a_malformed_file_fails_and_imports_nothing(
    capsys: pytest.CaptureFixture[str], cli_env: Path, tmp_path: Path
) -> None:
    user_id = create_user(capsys)
    book = tmp_path / "book.vcf"
    book.write_text("BEGIN:VCARD\nVERSION:3.0\nFN:Alice\nTEL:+14155550100\n", encoding="utf-8")
    code, _, err = run(capsys, "contacts", "import", user_id, str(book))
    assert code == 1 and "line" in err
    _, listed, _ = run(capsys, "contacts", "list", user_id, "--json")
    assert listed["items"] == []


def test_contacts_optin_needs_ids_or_all(capsys: pytest.CaptureFixture[str], cli_env: Path) -> None:
    user_id = create_user(capsys)
    code, _, err = run(capsys, "contacts", "optin", user_id)
    assert code == 2 and "--all" in err


def test_serve_no_worker_without_redis_is_refused(
    capsys: pytest.CaptureFixture[str], cli_env: Path
) -> None:
    code, _, err = run(capsys, "serve", "--no-worker")
    assert code == 2 and "redis.url" in err


def test_worker_without_redis_is_refused(capsys: pytest.CaptureFixture[str], cli_env: Path) -> None:
    code, _, err = run(capsys, "worker")
    assert code == 2 and "redis.url is empty" in err
