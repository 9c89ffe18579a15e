"""``optmsg worker`` with ``worker.processes`` > 1: a small supervisor of N workers.

Each child is the same ``optmsg worker`` command run again, told by
:data:`SUPERVISOR_ENV` that it is supervised (so it runs jobs instead of
supervising in turn, and stops by itself if the supervisor disappears). The
supervisor runs no jobs and opens no database connection. It:

- forwards SIGHUP to every child (each reloads its own configuration);
- on SIGTERM or SIGINT sends SIGTERM to every child, waits up to
  ``stop_wait_s`` for them to finish the jobs in hand, SIGKILLs the rest, and
  returns 0;
- restarts a child that exits on its own, after a delay chosen by
  :class:`RestartPolicy`; a child that keeps failing right after its start, before
  it has ever run for ``settle_s``, makes the supervisor stop the others and return
  the child's exit code (bad configuration, unreachable database), rather than
  restarting it forever.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

# Set in a child's environment to the supervisor's PID.
SUPERVISOR_ENV = "OPTMSG_WORKER_SUPERVISOR"
# How often the supervisor looks at its children when no signal wakes it.
POLL_S = 0.2
# A child finishes the jobs in hand within dramatiq's 30 s stop timeout, then closes
# the broker; past this it is killed (its unacknowledged jobs go to another worker).
STOP_WAIT_S = 45.0


class SupervisorError(Exception):
    """Root of the supervisor's errors."""


class GiveUp(SupervisorError):
    """Raised by :meth:`RestartPolicy.after_exit` when a child that has never run for
    ``settle_s`` failed at start ``failures`` times in a row: restarting it again
    would only repeat the failure."""

    def __init__(self, failures: int) -> None:
        super().__init__(f"failed {failures} times in a row right after starting")
        self.failures = failures


@dataclass(frozen=True, slots=True)
class SlotHistory:
    """What the policy remembers of one child slot: its exits within ``settle_s`` of
    their start since the last longer run, and whether any run ever lasted that long."""

    quick_failures: int = 0
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Restart:
    """Start the slot's child again after ``delay_s``; ``history`` replaces the old."""

    delay_s: float
    history: SlotHistory


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When to start an exited child again: the decision, free of processes and clocks."""

    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    # A child up this long had started fine: its next exit is a crash, not a failure
    # to start, and the delay starts again from first_delay_s.
    settle_s: float = 30.0
    # Quick exits in a row, before any settled run, that make the supervisor give up.
    max_start_failures: int = 3

    def after_exit(self, history: SlotHistory, uptime_s: float) -> Restart:
        """The restart after a child of ``history`` exited having run ``uptime_s``;
        raises :class:`GiveUp` when it has only ever failed at start."""
        if uptime_s >= self.settle_s:
            return Restart(self.first_delay_s, SlotHistory(quick_failures=0, settled=True))
        failures = history.quick_failures + 1
        if not history.settled and failures >= self.max_start_failures:
            raise GiveUp(failures)
        # Doubling per quick exit; a slot that worked before keeps retrying at the cap
        # (the database may come back), which is a slow retry, not a spin.
        delay = min(self.max_delay_s, self.first_delay_s * 2 ** (failures - 1))
        return Restart(delay, SlotHistory(quick_failures=failures, settled=history.settled))


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``killed by SIGKILL`` (Popen's negative return codes)."""
    if returncode < 0:
        return f"killed by {_name(-returncode)}"
    return f"exit code {returncode}"


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def supervisor_pid(environ: Mapping[str, str]) -> int | None:
    """The supervisor's PID when this process is one of its children, else None."""
    value = environ.get(SUPERVISOR_ENV)
    if value is None:
        return None
    if not value.isdigit():
        raise SupervisorError(f"{SUPERVISOR_ENV} must be a process id, not {value!r}")
    return int(value)


def metrics_address(listen: str | None, slot: int) -> str | None:
    """Child ``slot``'s (0-based) ``--metrics`` address: the given port plus ``slot``."""
    if listen is None:
        return None
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + slot}"


def worker_argv(
    slot: int, *, config: str | None, metrics: str | None, python: str = sys.executable
) -> list[str]:
    """The command of child ``slot``: this ``optmsg worker`` again, through the
    ``optmsg`` script next to the interpreter when there is one (so that ``ps`` shows
    ``optmsg worker``), else ``python -m gateway.cli``."""
    script = Path(python).with_name("optmsg")
    argv = [python, str(script)] if script.is_file() else [python, "-m", "gateway.cli"]
    argv.append("worker")
    if config is not None:
        argv += ["--config", config]
    address = metrics_address(metrics, slot)
    if address is not None:
        argv += ["--metrics", address]
    return argv


def _ignore_interactive_signals() -> None:
    # Runs in the child between fork and exec. An ignored signal stays ignored across
    # exec, so a Ctrl-C reaching the whole process group, or a SIGHUP forwarded while
    # the child is still starting, cannot kill it before `optmsg worker` installs its
    # own handlers (a SIGHUP's default action is to terminate).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@dataclass(slots=True)
class _Slot:
    index: int
    history: SlotHistory = field(default_factory=SlotHistory)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    start_after: float = 0.0


class Supervisor:
    """Runs ``processes`` children, each started with ``command(slot)`` (slot 0..N-1).

    :meth:`run` is the loop; :meth:`signal` hands it a signal (from the OS handlers
    :func:`supervise` installs, or from a test) and may be called from any thread.
    """

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        processes: int,
        *,
        env: Mapping[str, str] | None = None,
        policy: RestartPolicy | None = None,
        stop_wait_s: float = STOP_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if processes < 1:
            raise SupervisorError(f"processes must be at least 1, not {processes}")
        self._command = command
        self._env = {**(os.environ if env is None else env), SUPERVISOR_ENV: str(os.getpid())}
        self._policy = policy or RestartPolicy()
        self._stop_wait_s = stop_wait_s
        self._clock = clock
        self._slots = [_Slot(i) for i in range(processes)]
        self._signals: deque[int] = deque()

    def signal(self, signum: int) -> None:
        """Queue a signal for the loop: SIGHUP is forwarded, any other stops. Only an
        append (atomic): a signal handler must not take a lock the loop may hold."""
        self._signals.append(signum)

    def pids(self) -> list[int]:
        """The PIDs of the children running now, by slot."""
        return [s.process.pid for s in self._slots if s.process is not None]

    def run(self) -> int:
        """Supervise until a stop signal (returns 0) or a child that cannot start
        (returns its exit code, or 1 when it was killed by a signal)."""
        try:
            for slot in self._slots:
                self._start(slot)
            while True:
                time.sleep(POLL_S)
                while self._signals:
                    signum = self._signals.popleft()
                    if signum == signal.SIGHUP:
                        self._forward(signal.SIGHUP)
                    else:
                        running = len(self.pids())
                        log.info("%s: stopping %d worker processes", _name(signum), running)
                        return self._stop(0)
                failed = self._tend()
                if failed is not None:
                    return self._stop(failed)
        except BaseException:
            # E.g. a child that cannot even be executed: leave no child behind.
            self._stop(1)
            raise

    def _tend(self) -> int | None:
        """Restart children that exited and are due; the exit code to give up with."""
        now = self._clock()
        for slot in self._slots:
            process = slot.process
            if process is not None:
                code = process.poll()
                if code is None:
                    continue
                slot.process = None
                uptime = now - slot.started_at
                try:
                    restart = self._policy.after_exit(slot.history, uptime)
                except GiveUp as exc:
                    log.error(
                        "worker process %d (pid %d) %s after %.1f s and %s; stopping",
                        slot.index + 1, process.pid, describe_exit(code), uptime, exc,
                    )  # fmt: skip
                    return code if code > 0 else 1
                log.warning(
                    "worker process %d (pid %d) %s after %.1f s; restarting in %.1f s",
                    slot.index + 1, process.pid, describe_exit(code), uptime, restart.delay_s,
                )  # fmt: skip
                slot.history = restart.history
                slot.start_after = now + restart.delay_s
            if slot.process is None and now >= slot.start_after:
                self._start(slot)
        return None

    def _start(self, slot: _Slot) -> None:
        # The argv is our own command line (worker_argv), not outside input.
        argv = list(self._command(slot.index))
        slot.process = subprocess.Popen(  # noqa: S603
            argv, env=self._env, stdin=subprocess.DEVNULL, preexec_fn=_ignore_interactive_signals
        )
        slot.started_at = self._clock()
        log.info("worker process %d started (pid %d)", slot.index + 1, slot.process.pid)

    def _forward(self, signum: int) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signum)
        if signum == signal.SIGHUP:
            log.info("SIGHUP forwarded to %d worker processes", len(self.pids()))

    def _stop(self, code: int) -> int:
        """Stop every child (SIGTERM, then SIGKILL after stop_wait_s) and return code."""
        self._forward(signal.SIGTERM)
        give_up = self._clock() + self._stop_wait_s
        running = [s for s in self._slots if s.process is not None]
        while running and self._clock() < give_up:
            # Signals during the stop change nothing: the children already have theirs.
            self._signals.clear()
            time.sleep(POLL_S)
            running = [s for s in running if not self._reaped(s)]
        for slot in running:
            assert slot.process is not None
            log.warning(
                "worker process %d (pid %d) still running after %.0f s: killing it",
                slot.index + 1, slot.process.pid, self._stop_wait_s,
            )  # fmt: skip
            slot.process.kill()
            slot.process.wait()
            slot.process = None
        return code

    def _reaped(self, slot: _Slot) -> bool:
        assert slot.process is not None
        code = slot.process.poll()
        if code is None:
            return False
        log.info("worker process %d (pid %d) stopped: %s", slot.index + 1, slot.process.pid,
                 describe_exit(code))  # fmt: skip
        slot.process = None
        return True


def supervise(supervisor: Supervisor) -> int:
    """Run ``supervisor`` on this (main) thread with SIGTERM, SIGINT and SIGHUP handed
    to it; the previous handlers are put back afterwards."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        supervisor.signal(signum)

    caught = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in caught}
    try:
        return supervisor.run()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
