"""The retention run's privacy part: IP addresses erased from the auth log after
privacy.ip_log_days except those flagged for abuse, old verification codes deleted;
and the operator's view of the flags (`optmsg abuse list|clear`)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import Settings
from gateway.cli import main
from gateway.retention import run_retention
from inbox import abuse, privacy_retention
from inbox.blobs import TEMP_PREFIX, DirectoryBlobStore
from inbox.db import Database
from inbox.ids import new_id
from inbox.models import abuse_flags_t, auth_log_t, verifications_t
from tests.integration.helpers import make_user

NOW = datetime.now(UTC)
FLAGGED = "203.0.113.66"
OTHER = "198.51.100.23"


def log_entry(db: Database, user_id: str, ip: str | None, age: timedelta) -> str:
    entry_id = new_id("aut")
    with db.write.begin() as conn:
        conn.execute(
            auth_log_t.insert().values(
                id=entry_id,
                user_id=user_id,
                created_at=NOW - age,
                method="sms_code",
                outcome="wrong_code",
                device="phone",
                ip=ip,
            )
        )
    return entry_id


def ips(db: Database) -> dict[str, str | None]:
    with db.read.connect() as conn:
        return {r.id: r.ip for r in conn.execute(sa.select(auth_log_t.c.id, auth_log_t.c.ip))}


def flag(db: Database, ip: str, reason: abuse.AbuseReason, when: datetime = NOW) -> None:
    with db.write.begin() as conn:
        abuse.flag(conn, ip, reason, when)


@pytest.fixture
def user(db: Database) -> str:
    return make_user(db, phone="+14155550150", sms_number="+14155550199")


def retain(settings: Settings, db: Database) -> Any:
    return run_retention(settings, db, DirectoryBlobStore(Path(settings.storage.blob_dir)))


def test_old_ips_are_erased_and_flagged_ones_kept(
    settings: Settings, db: Database, user: str
) -> None:
    days = settings.privacy.ip_log_days
    flag(db, FLAGGED, abuse.AbuseReason.FAILED_CODES)
    old_flagged = log_entry(db, user, FLAGGED, timedelta(days=days + 1))
    old_other = log_entry(db, user, OTHER, timedelta(days=days + 1))
    recent = log_entry(db, user, OTHER, timedelta(days=days - 1))
    result = retain(settings, db)
    assert result.ips_erased == 1
    assert ips(db) == {old_flagged: FLAGGED, old_other: None, recent: OTHER}


def test_the_purge_keeps_the_entries_themselves(
    settings: Settings, db: Database, user: str
) -> None:
    entry = log_entry(db, user, OTHER, timedelta(days=365))
    retain(settings, db)
    with db.read.connect() as conn:
        row = conn.execute(sa.select(auth_log_t).where(auth_log_t.c.id == entry)).one()
    assert (row.ip, row.outcome, row.device) == (None, "wrong_code", "phone")


def test_a_cleared_flag_lets_its_ip_be_purged(settings: Settings, db: Database, user: str) -> None:
    flag(db, FLAGGED, abuse.AbuseReason.FAILED_CODES)
    entry = log_entry(db, user, FLAGGED, timedelta(days=settings.privacy.ip_log_days + 2))
    assert retain(settings, db).ips_erased == 0
    assert privacy_retention.clear_flag(db, FLAGGED) == 1
    assert retain(settings, db).ips_erased == 1
    assert ips(db)[entry] is None


def test_a_flag_not_seen_for_abuse_keep_days_expires_and_its_ips_are_erased(
    settings: Settings, db: Database, user: str
) -> None:
    keep = settings.privacy.abuse_keep_days
    flag(db, FLAGGED, abuse.AbuseReason.FAILED_CODES, when=NOW - timedelta(days=keep + 1))
    entry = log_entry(db, user, FLAGGED, timedelta(days=keep + 2))
    result = retain(settings, db)
    assert (result.flags_expired, result.ips_erased) == (1, 1)
    assert privacy_retention.list_flags(db) == []
    assert ips(db)[entry] is None


def test_a_flag_seen_lately_is_kept_with_its_ips(
    settings: Settings, db: Database, user: str
) -> None:
    keep = settings.privacy.abuse_keep_days
    flag(db, FLAGGED, abuse.AbuseReason.FAILED_CODES, when=NOW - timedelta(days=keep - 1))
    entry = log_entry(db, user, FLAGGED, timedelta(days=keep + 2))
    assert retain(settings, db).flags_expired == 0
    assert ips(db)[entry] == FLAGGED


def test_an_ipv6_flag_on_a_64_keeps_the_log_ips_inside_it_only(
    settings: Settings, db: Database, user: str
) -> None:
    days = settings.privacy.ip_log_days
    flag(db, "2001:db8:1:2::/64", abuse.AbuseReason.FAILED_CODES)
    inside = log_entry(db, user, "2001:db8:1:2::abcd", timedelta(days=days + 1))
    outside = log_entry(db, user, "2001:db8:1:3::abcd", timedelta(days=days + 1))
    assert retain(settings, db).ips_erased == 1
    found = ips(db)
    assert found[inside] == "2001:db8:1:2::abcd" and found[outside] is None


def test_a_second_run_erases_nothing_more(settings: Settings, db: Database, user: str) -> None:
    log_entry(db, user, OTHER, timedelta(days=30))
    assert retain(settings, db).ips_erased == 1
    assert retain(settings, db).ips_erased == 0


def test_old_verification_codes_are_deleted_and_live_ones_kept(
    settings: Settings, db: Database
) -> None:
    def code(created: timedelta, expires: timedelta, consumed: timedelta | None) -> str:
        code_id = new_id("ver")
        with db.write.begin() as conn:
            conn.execute(
                verifications_t.insert().values(
                    id=code_id,
                    purpose="login",
                    phone="+14155550150",
                    code_hash="h",
                    created_at=NOW - created,
                    expires_at=NOW - expires,
                    consumed_at=None if consumed is None else NOW - consumed,
                )
            )
        return code_id

    expired_long_ago = code(timedelta(days=3), timedelta(days=2), None)
    used_long_ago = code(timedelta(days=2), timedelta(days=-1), timedelta(days=2))
    expired_recently = code(timedelta(hours=2), timedelta(hours=1), None)
    live = code(timedelta(minutes=1), timedelta(minutes=-9), None)
    assert retain(settings, db).verifications_deleted == 2
    with db.read.connect() as conn:
        left = set(conn.execute(sa.select(verifications_t.c.id)).scalars())
    assert left == {expired_recently, live}
    assert not {expired_long_ago, used_long_ago} & left


def test_flags_are_listed_per_ip_with_reasons_merged(db: Database) -> None:
    flag(db, FLAGGED, abuse.AbuseReason.FAILED_CODES, NOW - timedelta(days=2))
    flag(db, FLAGGED, abuse.AbuseReason.FAILED_CODES, NOW - timedelta(days=1))
    flag(db, FLAGGED, abuse.AbuseReason.CODE_REQUEST_FLOOD, NOW)
    flag(db, OTHER, abuse.AbuseReason.CODE_ATTEMPT_FLOOD, NOW - timedelta(hours=1))
    flags = privacy_retention.list_flags(db)
    assert [f.ip for f in flags] == [FLAGGED, OTHER]
    first = flags[0]
    assert sorted(first.reasons) == ["code_request_flood", "failed_codes"]
    assert first.count == 3
    assert first.first_seen <= NOW - timedelta(days=2) + timedelta(seconds=1)


def test_clearing_an_ip_that_is_not_flagged_clears_nothing(db: Database) -> None:
    flag(db, FLAGGED, abuse.AbuseReason.FAILED_CODES)
    assert privacy_retention.clear_flag(db, OTHER) == 0
    with db.read.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(abuse_flags_t)).scalar() == 1


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_config(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("OPTMSG_") and name != "OPTMSG_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    path = tmp_path / "optmsg.toml"
    path.write_text(
        f'[database]\nurl = "{settings.database.url}"\n'
        f'[storage]\nblob_dir = "{settings.storage.blob_dir}"\n'
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
def test_cli_abuse_list_prints_the_flags(capsys: pytest.CaptureFixture[str], db: Database) -> None:
    flag(db, FLAGGED, abuse.AbuseReason.FAILED_CODES)
    flag(db, FLAGGED, abuse.AbuseReason.FAILED_CODES)
    code, listing, _ = run(capsys, "abuse", "list", "--json")
    assert code == 0 and listing["next"] is None
    (item,) = listing["items"]
    assert item["ip"] == FLAGGED and item["reasons"] == ["failed_codes"] and item["count"] == 2
    assert set(item) == {"ip", "reasons", "count", "first_seen", "last_seen"}
    code, text, _ = run(capsys, "abuse", "list")
    assert code == 0 and FLAGGED in text and "x2" in text


@pytest.mark.usefixtures("cli_config")
def test_cli_abuse_list_with_nothing_flagged(capsys: pytest.CaptureFixture[str]) -> None:
    code, listing, _ = run(capsys, "abuse", "list", "--json")
    assert code == 0 and listing == {"items": [], "next": None}


@pytest.mark.usefixtures("cli_config")
def test_cli_abuse_clear_removes_the_flag(capsys: pytest.CaptureFixture[str], db: Database) -> None:
    flag(db, FLAGGED, abuse.AbuseReason.FAILED_CODES)
    code, result, _ = run(capsys, "abuse", "clear", FLAGGED, "--json")
    assert code == 0 and result == {"ip": FLAGGED, "cleared": 1}
    assert privacy_retention.list_flags(db) == []


@pytest.mark.usefixtures("cli_config")
def test_cli_abuse_clear_of_an_unflagged_ip_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "abuse", "clear", OTHER)
    assert code == 1 and "not flagged" in err and OTHER in err


def test_retention_deletes_blob_files_a_crash_left_half_written(
    settings: Settings, db: Database
) -> None:
    blobs = DirectoryBlobStore(Path(settings.storage.blob_dir))
    digest = blobs.put(b"a stored attachment")
    leaf = Path(settings.storage.blob_dir) / digest[:2] / digest[2:4]
    half = leaf / f"{TEMP_PREFIX}cut-short"
    half.write_bytes(b"half an attach")
    old = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    os.utime(half, (old, old))
    assert retain(settings, db).blob_temps_deleted == 1
    assert not half.exists()
    assert blobs.get(digest) == b"a stored attachment"
