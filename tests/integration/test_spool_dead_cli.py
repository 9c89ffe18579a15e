"""`optmsg spool dead`: the operator's view of webhooks the spool could never store."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridges.twilio import StatusUpdate, VerifiedSms
from gateway.cli import main
from gateway.spool_replay import encode_sms, encode_status
from inbox.spool import DEAD_NAME, Spool, encode_record
from tests.conftest import twilio_form

CONFIG = """
[database]
url = "sqlite:///{tmp}/optmsg.db"
[storage]
blob_dir = "{tmp}/blobs"
[spool]
dir = "{tmp}/spool"
[bridges.twilio]
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "cli-test-token-0123456789"
"""
SECRET_BODY = "the user's private words"


@pytest.fixture
def spool_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("OPTMSG_") and name != "OPTMSG_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    config = tmp_path / "optmsg.toml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    monkeypatch.setenv("OPTMSG_CONFIG", str(config))
    return tmp_path / "spool"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(["spool", "dead", *argv])
    out, _ = capsys.readouterr()
    return code, json.loads(out) if "--json" in argv else out


def dead_sms(spool: Spool, sid: str) -> None:
    form = twilio_form(sid=sid, sender="+14155550100", to="+14155550199", body=SECRET_BODY)
    received = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    spool.dead_letter(encode_sms(VerifiedSms(tuple(form.items()), received, None, "")))


def test_dead_sms_and_status_records_are_listed_without_their_text(
    spool_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = Spool.open(spool_root, 1 << 20)
    dead_sms(spool, "SM" + "a" * 32)
    spool.dead_letter(encode_status(StatusUpdate("SM" + "b" * 32, "failed", 30003)))
    spool.close()
    code, data = run(capsys, "--json")
    assert code == 0
    sms, status = data["items"]
    assert (sms["file"], sms["index"], sms["kind"]) == ("instance-0/dead.log", 0, "sms")
    assert sms["fields"] == {
        "MessageSid": "SM" + "a" * 32,
        "From": "+14155550100",
        "To": "+14155550199",
        "NumMedia": "0",
    }
    assert sms["received_at"] == "2026-12-02T10:00:00+00:00"
    assert status["kind"] == "status"
    assert status["fields"] == {"sid": "SM" + "b" * 32, "status": "failed", "error_code": "30003"}
    assert SECRET_BODY not in json.dumps(data)


def test_text_output_names_each_record(
    spool_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = Spool.open(spool_root, 1 << 20)
    dead_sms(spool, "SM" + "c" * 32)
    spool.close()
    code, out = run(capsys)
    assert code == 0
    assert "instance-0/dead.log #0  sms" in out and "MessageSid=SM" + "c" * 32 in out
    assert SECRET_BODY not in out


def test_no_dead_letters_says_so(spool_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys)
    assert code == 0
    assert out.strip() == f"no dead letters under {spool_root}"


def test_unreadable_damaged_and_torn_records_are_reported_not_fatal(
    spool_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = Spool.open(spool_root, 1 << 20)
    one.dead_letter(b"not a spool payload")
    dead_sms(one, "SM" + "d" * 32)
    dead_sms(one, "SM" + "9" * 32)  # after the damage: cannot be read any more
    two = Spool.open(spool_root, 1 << 20)
    dead_sms(two, "SM" + "e" * 32)
    with open(two.path / DEAD_NAME, "ab") as f:  # a crash in the middle of an append
        f.write(encode_record(b'{"v": 1}')[:7])
    damaged = bytearray((one.path / DEAD_NAME).read_bytes())
    first_end = len(encode_record(b"not a spool payload"))
    damaged[first_end + 20] ^= 0xFF  # the second record fails its checksum
    (one.path / DEAD_NAME).write_bytes(bytes(damaged))
    code, data = run(capsys, "--json")
    assert code == 0
    kinds = [(d["file"], d["kind"]) for d in data["items"]]
    assert kinds == [
        ("instance-0/dead.log", "unreadable"),
        ("instance-0/dead.log", "unreadable"),
        ("instance-1/dead.log", "sms"),
        ("instance-1/dead.log", "unreadable"),
    ]
    problems = [d["problem"] for d in data["items"]]
    assert "unreadable spool record" in problems[0]
    assert problems[1].startswith(f"damaged from byte {first_end}")
    assert "cut short" in problems[3]
    one.close()
    two.close()


def test_listing_changes_nothing_and_works_beside_a_running_spool(
    spool_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = Spool.open(spool_root, 1 << 20)  # held, as by a running gateway
    dead_sms(spool, "SM" + "f" * 32)
    before = (spool.path / DEAD_NAME).read_bytes()
    code, data = run(capsys, "--json")
    assert code == 0 and len(data["items"]) == 1
    assert (spool.path / DEAD_NAME).read_bytes() == before
    assert sorted(p.name for p in spool.path.iterdir()) == ["dead.log", "lock"]
    spool.close()


def test_requeue_puts_the_dead_letters_back_and_says_where(
    spool_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = Spool.open(spool_root, 1 << 20)  # a running gateway holds instance-0
    dead_sms(spool, "SM" + "1" * 32)
    dead_sms(spool, "SM" + "2" * 32)
    assert main(["spool", "requeue", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"requeued": 2, "slot": str(spool_root / "instance-1"), "kept": []}
    assert run(capsys, "--json")[1]["items"] == []  # nothing dead any more
    assert main(["spool", "requeue"]) == 0
    assert capsys.readouterr().out.strip() == f"no dead letters under {spool_root}"
    spool.close()


def test_requeue_that_does_not_fit_fails_and_keeps_the_dead_letters(
    spool_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool.open(spool_root, 1 << 20)
    dead_sms(spool, "SM" + "3" * 32)
    monkeypatch.setenv("OPTMSG_SPOOL__MAX_BYTES", "65536")
    spool.dead_letter(b"z" * 70_000)
    assert main(["spool", "requeue"]) == 1
    assert "do not fit" in capsys.readouterr().err
    code, data = run(capsys, "--json")
    assert code == 0 and len(data["items"]) == 2  # both still listed, nothing lost
    spool.close()
