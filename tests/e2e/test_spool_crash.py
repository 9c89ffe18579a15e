"""Webhooks acknowledged from the spool survive ``kill -9`` of the real ``optmsg serve``.

The database goes away - a SQLite file whose write lock this test holds, as another
process's long transaction would; or PostgreSQL behind a TCP proxy that the test
cuts for 10 s - while signed SMS webhooks keep arriving and are answered 200 from
the spool. The gateway is then killed with SIGKILL, the database comes back, and
the gateway is started again: it replays the spool at start, and every
acknowledged message is stored exactly once.
"""

from __future__ import annotations

import signal
import sqlite3
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from tests.fakes.tcp_proxy import TcpProxy

from .harness import Deadline, GatewayServer, create_deployment

pytestmark = pytest.mark.slow

OPTMSG_NUMBER = "+14155550199"
SENDER = "+14155550142"
MESSAGES = 20
BUDGET_S = 60.0
CUT_S = 10.0
STORE_TIMEOUT_S = "0.5"
# Twilio gives up after 15 s; spooled answers must come far sooner.
ANSWER_BUDGET_S = 5.0


def _post(url: str, params: dict[str, str], token: str) -> tuple[int, float]:
    signature = RequestValidator(token).compute_signature(url, params)
    request = urllib.request.Request(
        url,
        data=urlencode(params).encode(),
        headers={
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
        method="POST",
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status, time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, time.monotonic() - started


def _form(sid: str, account_sid: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": account_sid,
        "From": SENDER,
        "To": OPTMSG_NUMBER,
        "Body": f"spooled {sid}",
        "NumMedia": "0",
    }


def _stored_sids(db_path: Path) -> list[str]:
    with closing(sqlite3.connect(db_path.as_uri() + "?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT external_id FROM messages WHERE bridge = 'twilio'")
        return [r[0] for r in rows]


def test_spooled_webhooks_survive_kill_9_and_are_replayed_once(tmp_path: Path) -> None:
    deadline = Deadline(BUDGET_S)
    deployment = create_deployment(tmp_path, deadline).with_settings(
        OPTMSG_SPOOL__STORE_TIMEOUT_S=STORE_TIMEOUT_S,
        OPTMSG_SPOOL__REPLAY_INTERVAL_S="0.2",
    )
    deployment.cli(
        *["users", "create", "--first-name", "A", "--last-name", "B", "--dob", "1990-01-01"],
        *["--phone", "+442079460958", "--sms-number", OPTMSG_NUMBER],
        deadline=deadline,
    )
    settings = deployment.load_settings()
    url = settings.http.public_url + "/bridges/twilio/sms"
    token = settings.bridges.twilio.auth_token.get_secret_value()
    sids = [f"SM{i:032x}" for i in range(MESSAGES)]
    server = GatewayServer(deployment)
    try:
        server.start(deadline)
        lock = sqlite3.connect(deployment.db_path, timeout=10, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            answers = [
                _post(url, _form(sid, settings.bridges.twilio.account_sid), token) for sid in sids
            ]
            exit_code = server.kill_hard()
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        segments = list((deployment.root / "var" / "spool").glob("instance-*/seg-*.log"))
        stored_before_restart = _stored_sids(deployment.db_path)

        server.start(deadline)
        while len(_stored_sids(deployment.db_path)) < MESSAGES:
            deadline.remaining("the restarted gateway replaying its spool")
            time.sleep(0.1)
        # Twilio retrying some of them after the restart changes nothing.
        retried = [
            _post(url, _form(sid, settings.bridges.twilio.account_sid), token)[0]
            for sid in sids[:5]
        ]
        # The segment goes once all of it is stored, just after the last commit.
        while leftover := list((deployment.root / "var" / "spool").glob("instance-*/seg-*.log")):
            deadline.remaining("the replayed segment to be removed")
            time.sleep(0.1)
    finally:
        server.stop()

    assert [status for status, _ in answers] == [200] * MESSAGES
    assert max(took for _, took in answers) < ANSWER_BUDGET_S
    assert exit_code == -signal.SIGKILL
    assert segments, "nothing was spooled: the lock did not make the store unavailable"
    assert stored_before_restart == []
    assert retried == [200] * 5
    assert sorted(_stored_sids(deployment.db_path)) == sorted(sids)
    assert leftover == []


def _stored_pg_sids(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT external_id FROM messages WHERE bridge = 'twilio'"))
            return [r[0] for r in rows]
    finally:
        engine.dispose()


def test_a_ten_second_postgresql_outage_then_kill_9_loses_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    deadline = Deadline(BUDGET_S + CUT_S)
    with TcpProxy("127.0.0.1", 5432) as proxy:
        proxied = pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        deployment = create_deployment(tmp_path, deadline).with_settings(
            OPTMSG_DATABASE__URL=proxied.replace("postgresql+psycopg://", "postgresql://"),
            OPTMSG_SPOOL__REPLAY_INTERVAL_S="0.2",
        )
        deployment.cli("db", "upgrade", deadline=deadline)
        deployment.cli(
            *["users", "create", "--first-name", "A", "--last-name", "B", "--dob", "1990-01-01"],
            *["--phone", "+442079460958", "--sms-number", OPTMSG_NUMBER],
            deadline=deadline,
        )
        settings = deployment.load_settings()
        url = settings.http.public_url + "/bridges/twilio/sms"
        token = settings.bridges.twilio.auth_token.get_secret_value()
        account = settings.bridges.twilio.account_sid
        server = GatewayServer(deployment)
        answers: list[tuple[int, float]] = []
        sids: list[str] = []
        try:
            server.start(deadline)
            proxy.cut()
            cut_at = time.monotonic()
            while time.monotonic() - cut_at < CUT_S:
                sid = f"SM{len(sids):032x}"
                sids.append(sid)
                answers.append(_post(url, _form(sid, account), token))
                time.sleep(0.2)
            exit_code = server.kill_hard()
            # The database itself never went away, only the gateway's road to it.
            stored_before_restart = _stored_pg_sids(pg_url)
            segments = list((deployment.root / "var" / "spool").glob("instance-*/seg-*.log"))
            proxy.restore()
            server.start(deadline)
            while len(_stored_pg_sids(pg_url)) < len(sids):
                deadline.remaining("the restarted gateway replaying its spool")
                time.sleep(0.1)
            retried = [_post(url, _form(sid, account), token)[0] for sid in sids[:3]]
        finally:
            server.stop()

    assert [status for status, _ in answers] == [200] * len(sids)
    assert max(took for _, took in answers) < ANSWER_BUDGET_S
    assert exit_code == -signal.SIGKILL
    assert stored_before_restart == []
    assert segments, "nothing was spooled"
    assert retried == [200] * 3
    assert sorted(_stored_pg_sids(pg_url)) == sorted(sids)
