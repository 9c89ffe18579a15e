"""The start-up check that a process's database pool covers the threads that hold
connections (config.pools), and the CLI refusing to start without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config import ConfigError, Settings
from config.pools import check_pool, gateway_need, pool_capacity, worker_need
from gateway.cli import main
from tests.conftest import make_settings


def settings_with(tmp_path: Path, **sections: Any) -> Settings:
    return make_settings(tmp_path, f"sqlite:///{tmp_path}/optmsg.db", **sections)


def test_defaults_fit_a_gateway_with_smtp_and_its_worker(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, smtp={"enabled": True})
    need = gateway_need(settings, worker=True)
    # 5 read threads + the event loop + 3 writers (ingest, raw spool, raw done)
    # + 4 email threads + 8 job threads.
    assert need.total == 21
    assert pool_capacity(settings) == 25
    check_pool(settings, need)


def test_defaults_fit_a_worker(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    check_pool(settings, worker_need(settings))
    assert worker_need(settings).total == settings.worker.threads


def test_worker_threads_beyond_the_pool_are_refused_naming_the_key(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path, database={"pool_size": 2, "max_overflow": 2}, worker={"threads": 5}
    )
    with pytest.raises(ConfigError) as caught:
        check_pool(settings, worker_need(settings))
    assert caught.value.key == "database.max_overflow"
    assert "optmsg worker may hold 5" in caught.value.message
    assert "at least 3" in caught.value.message


def test_a_gateway_without_its_worker_needs_no_job_connections(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path, database={"pool_size": 4, "max_overflow": 2}, worker={"threads": 50}
    )
    check_pool(settings, gateway_need(settings, worker=False))
    with pytest.raises(ConfigError):
        check_pool(settings, gateway_need(settings, worker=True))


def test_smtp_adds_its_writers_and_email_threads(tmp_path: Path) -> None:
    with_smtp = settings_with(tmp_path, smtp={"enabled": True})
    without = settings_with(tmp_path)
    difference = gateway_need(with_smtp, worker=False).total
    assert difference - gateway_need(without, worker=False).total == 2 + 4


def test_optmsg_worker_exits_2_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "OPTMSG_BRIDGES__TWILIO__ENABLED": "false",
        "OPTMSG_DATABASE__URL": f"sqlite:///{tmp_path}/optmsg.db",
        # Never contacted: the check comes first.
        "OPTMSG_REDIS__URL": "redis://127.0.0.1:1/0",
        "OPTMSG_DATABASE__POOL_SIZE": "2",
        "OPTMSG_DATABASE__MAX_OVERFLOW": "0",
        "OPTMSG_WORKER__THREADS": "4",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPTMSG_CONFIG", raising=False)

    assert main(["worker"]) == 2
    assert "config error: database.max_overflow:" in capsys.readouterr().err
