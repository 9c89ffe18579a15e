"""The supervisor of `optmsg worker` against real child processes: tiny Python scripts
that stand in for the worker, so each behaviour takes a second, not a broker start."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.worker_supervisor import RestartPolicy, Supervisor

FAST = RestartPolicy(first_delay_s=0.1, max_delay_s=0.4, settle_s=1.0, max_start_failures=3)

# Records its PID in DIR/started, then waits for SIGTERM (stops) or SIGHUP (noted).
WAITER = """
import os, signal, sys, time
d = sys.argv[1]
with open(os.path.join(d, "started"), "a") as f:
    f.write(f"{os.getpid()}\\n")
signal.signal(signal.SIGHUP, lambda *_: open(os.path.join(d, f"hup-{os.getpid()}"), "w").close())
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(0.05)
"""


def script(body: str, *args: str) -> Callable[[int], Sequence[str]]:
    return lambda _slot: [sys.executable, "-c", body, *args]


def started(tmp_path: Path) -> list[int]:
    path = tmp_path / "started"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def wait_for(what: str, ok: Callable[[], bool], seconds: float = 10.0) -> None:
    give_up = time.monotonic() + seconds
    while not ok():
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def running(supervisor: Supervisor) -> Iterator[list[int]]:
    """Run the supervisor on a thread; yields a list that receives its return code."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()), daemon=True)
    thread.start()
    try:
        yield result
    finally:
        supervisor.signal(signal.SIGTERM)
        thread.join(timeout=20)
        assert not thread.is_alive(), "the supervisor did not stop"


def test_every_process_is_started(tmp_path: Path) -> None:
    supervisor = Supervisor(script(WAITER, str(tmp_path)), 3, policy=FAST)
    with running(supervisor):
        wait_for("three children", lambda: len(started(tmp_path)) == 3)
        assert sorted(supervisor.pids()) == sorted(started(tmp_path))


def test_a_child_killed_with_sigkill_is_started_again(tmp_path: Path) -> None:
    supervisor = Supervisor(script(WAITER, str(tmp_path)), 2, policy=FAST)
    with running(supervisor):
        wait_for("two children", lambda: len(started(tmp_path)) == 2)
        victim = started(tmp_path)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for("a replacement", lambda: len(started(tmp_path)) == 3)
        assert victim not in supervisor.pids()
        assert len(supervisor.pids()) == 2


def test_sighup_is_forwarded_to_every_child(tmp_path: Path) -> None:
    supervisor = Supervisor(script(WAITER, str(tmp_path)), 2, policy=FAST)
    with running(supervisor):
        wait_for("two children", lambda: len(started(tmp_path)) == 2)
        time.sleep(0.3)  # their handlers are installed right after the PID is written
        supervisor.signal(signal.SIGHUP)
        wait_for(
            "both reloads",
            lambda: all((tmp_path / f"hup-{pid}").exists() for pid in started(tmp_path)),
        )


def test_a_stop_ends_every_child_and_returns_zero(tmp_path: Path) -> None:
    supervisor = Supervisor(script(WAITER, str(tmp_path)), 2, policy=FAST)
    with running(supervisor) as result:
        wait_for("two children", lambda: len(started(tmp_path)) == 2)
        time.sleep(0.3)
    assert result == [0]
    assert not any(alive(pid) for pid in started(tmp_path))


def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_wait(tmp_path: Path) -> None:
    stubborn = WAITER.replace("lambda *_: sys.exit(0)", "signal.SIG_IGN")
    supervisor = Supervisor(script(stubborn, str(tmp_path)), 1, policy=FAST, stop_wait_s=1.0)
    with running(supervisor) as result:
        wait_for("the child", lambda: len(started(tmp_path)) == 1)
        time.sleep(0.3)
        stopping_at = time.monotonic()
    assert result == [0]
    assert 1.0 <= time.monotonic() - stopping_at < 5.0
    assert not alive(started(tmp_path)[0])


def test_a_child_that_keeps_failing_at_start_ends_the_supervisor_with_its_code(
    tmp_path: Path,
) -> None:
    failing = "import os, sys\nopen(sys.argv[1] + '/started', 'a').write(f'{os.getpid()}\\n')\n"
    failing += "sys.exit(3)\n"
    supervisor = Supervisor(script(failing, str(tmp_path)), 1, policy=FAST)
    give_up = time.monotonic() + 10
    assert supervisor.run() == 3
    assert time.monotonic() < give_up
    assert len(started(tmp_path)) == FAST.max_start_failures


def test_a_child_that_cannot_be_executed_leaves_no_other_child_running(tmp_path: Path) -> None:
    def command(slot: int) -> Sequence[str]:
        if slot == 0:
            return [sys.executable, "-c", WAITER, str(tmp_path)]
        return [str(tmp_path / "no-such-program")]

    supervisor = Supervisor(command, 2, policy=FAST, stop_wait_s=5.0)
    with pytest.raises(FileNotFoundError):
        supervisor.run()
    assert supervisor.pids() == []
    assert not any(alive(pid) for pid in started(tmp_path))
