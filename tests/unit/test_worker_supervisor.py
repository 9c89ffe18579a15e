"""The restart policy of `optmsg worker`'s supervisor and the children's command line."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from config import ConfigError, load_settings
from gateway.worker_supervisor import (
    SUPERVISOR_ENV,
    GiveUp,
    RestartPolicy,
    SlotHistory,
    SupervisorError,
    describe_exit,
    metrics_address,
    supervisor_pid,
    worker_argv,
)

CONFIG = "[bridges.twilio]\nenabled = false\n[smtp]\nenabled = false\n"
POLICY = RestartPolicy(first_delay_s=0.5, max_delay_s=4.0, settle_s=10.0, max_start_failures=3)


def test_a_quick_exit_is_restarted_after_the_first_delay() -> None:
    restart = POLICY.after_exit(SlotHistory(), uptime_s=1.0)
    assert restart.delay_s == 0.5
    assert restart.history == SlotHistory(quick_failures=1, settled=False)


def test_the_delay_doubles_with_each_quick_exit_in_a_row() -> None:
    restart = POLICY.after_exit(SlotHistory(quick_failures=1), uptime_s=1.0)
    assert restart.delay_s == 1.0


def test_a_child_that_only_ever_failed_at_start_makes_the_supervisor_give_up() -> None:
    with pytest.raises(GiveUp) as caught:
        POLICY.after_exit(SlotHistory(quick_failures=2), uptime_s=0.3)
    assert caught.value.failures == 3


def test_a_child_that_ran_past_settle_s_restarts_at_the_first_delay() -> None:
    restart = POLICY.after_exit(SlotHistory(quick_failures=2), uptime_s=60.0)
    assert restart.delay_s == 0.5
    assert restart.history == SlotHistory(quick_failures=0, settled=True)


def test_a_slot_that_worked_before_keeps_retrying_at_the_capped_delay() -> None:
    history = SlotHistory(quick_failures=9, settled=True)
    restart = POLICY.after_exit(history, uptime_s=0.2)
    assert restart.delay_s == 4.0
    assert restart.history == SlotHistory(quick_failures=10, settled=True)


def test_exits_are_described_by_code_or_by_signal_name() -> None:
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


def test_each_child_serves_metrics_on_the_port_plus_its_slot() -> None:
    assert metrics_address("127.0.0.1:9100", 0) == "127.0.0.1:9100"
    assert metrics_address("[::1]:9100", 2) == "[::1]:9102"
    assert metrics_address(None, 1) is None


def test_the_child_command_repeats_the_config_path_and_its_metrics_port(tmp_path: Path) -> None:
    python = tmp_path / "python"
    (tmp_path / "optmsg").write_text("#!/bin/sh\n")
    argv = worker_argv(1, config="optmsg.toml", metrics="127.0.0.1:9100", python=str(python))
    assert argv == [
        str(python), str(tmp_path / "optmsg"), "worker",
        "--config", "optmsg.toml", "--metrics", "127.0.0.1:9101",
    ]  # fmt: skip


def test_without_an_optmsg_script_the_child_runs_the_cli_module(tmp_path: Path) -> None:
    python = str(tmp_path / "python")
    argv = worker_argv(0, config=None, metrics=None, python=python)
    assert argv == [python, "-m", "gateway.cli", "worker"]


def test_a_process_is_a_child_only_when_the_supervisor_pid_is_in_its_environment() -> None:
    assert supervisor_pid({}) is None
    assert supervisor_pid({SUPERVISOR_ENV: "4242"}) == 4242
    with pytest.raises(SupervisorError, match=SUPERVISOR_ENV):
        supervisor_pid({SUPERVISOR_ENV: "yes"})


def test_more_than_64_processes_are_refused_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "optmsg.toml").write_text(CONFIG + "[worker]\nprocesses = 65\n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "optmsg.toml")
    assert info.value.key == "worker.processes"


def test_the_supervisor_variable_is_not_taken_for_a_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "optmsg.toml").write_text(CONFIG + "[worker]\nprocesses = 4\n")
    monkeypatch.setenv(SUPERVISOR_ENV, "4242")
    assert load_settings(tmp_path / "optmsg.toml").worker.processes == 4
