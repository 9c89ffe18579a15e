"""Run the real gateway for end-to-end tests.

A :class:`Deployment` is a throwaway directory with its own config (written by
``optmsg dev init``), SQLite file, blob directory and free ports, plus the ``optmsg``
CLI pointed at it. A :class:`GatewayServer` runs ``optmsg serve`` for a deployment and
can stop it, ``kill -9`` it and start it again on the same port.

Every wait is bounded by a :class:`Deadline`, so a hung process fails the test with a
message naming the step instead of hanging the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from config import Settings, load_settings

# The console script installed next to the interpreter running pytest (.venv/bin/optmsg).
OPTMSG = Path(sys.executable).with_name("optmsg")
ENV_PREFIX = "OPTMSG_"
CLI_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.05


class Deadline:
    """One time budget shared by the steps of a scenario; running out names the step."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends_at = time.monotonic() + seconds

    def remaining(self, step: str) -> float:
        left = self._ends_at - time.monotonic()
        if left <= 0:
            pytest.fail(
                f"the {self.seconds:.0f} s time budget ran out before: {step}", pytrace=False
            )
        return left


def stop_process(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM (a graceful stop), SIGKILL if it lingers past ``timeout``; reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment_without_optmsg_settings() -> dict[str, str]:
    """The caller's environment minus any ``OPTMSG_*`` variable that could leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no output)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(no output)"


@dataclass(frozen=True)
class Deployment:
    root: Path
    config_path: Path
    db_path: Path
    listen: str
    public_url: str
    settings_env: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        """The full environment for a child process of this deployment."""
        return environment_without_optmsg_settings() | self.settings_env

    @property
    def smtp_address(self) -> tuple[str, int]:
        """(host, port) of the deployment's SMTP listener."""
        host, _, port = self.settings_env["OPTMSG_SMTP__LISTEN"].rpartition(":")
        return host.strip("[]"), int(port)

    def with_settings(self, **env: str) -> Deployment:
        """The same deployment with more ``OPTMSG_*`` settings for its processes."""
        assert all(name.startswith(ENV_PREFIX) for name in env), f"not a setting: {env}"
        return dataclasses.replace(self, settings_env=self.settings_env | env)

    def cli(self, *args: str, deadline: Deadline) -> Any:
        """Run ``optmsg ARGS --json``; return its JSON document or fail with its stderr."""
        return run_optmsg_json([*args, "--json"], cwd=self.root, env=self.env, deadline=deadline)

    def load_settings(self) -> Settings:
        """The settings exactly as the deployment's processes see them (file + env)."""
        with pytest.MonkeyPatch.context() as mp:
            for name in os.environ:
                if name.startswith(ENV_PREFIX):
                    mp.delenv(name)
            for name, value in self.settings_env.items():
                mp.setenv(name, value)
            return load_settings(self.config_path)


def run_optmsg_json(args: list[str], *, cwd: Path, env: dict[str, str], deadline: Deadline) -> Any:
    command = " ".join(["optmsg", *args])
    timeout = min(CLI_TIMEOUT_S, deadline.remaining(command))
    try:
        done = subprocess.run(
            [str(OPTMSG), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{command}` did not finish within {timeout:.0f} s", pytrace=False)
    if done.returncode != 0:
        pytest.fail(
            f"`{command}` exited with {done.returncode}:\n{done.stderr.strip()}", pytrace=False
        )
    return json.loads(done.stdout)


def create_deployment(root: Path, deadline: Deadline) -> Deployment:
    """Write a dev config with ``optmsg dev init`` and point it at ``root`` and free ports."""
    assert OPTMSG.exists(), f"{OPTMSG} is missing: install the package into this virtualenv"
    config_path = root / "tmp" / "optmsg.toml"
    # `dev init` does not create missing parent directories.
    config_path.parent.mkdir(parents=True, exist_ok=True)
    run_optmsg_json(
        ["dev", "init", "--path", "tmp/optmsg.toml", "--json"],
        cwd=root,
        env=environment_without_optmsg_settings(),
        deadline=deadline,
    )
    listen = f"127.0.0.1:{free_port()}"
    public_url = f"http://{listen}"
    db_path = root / "optmsg.db"
    settings_env = {
        "OPTMSG_CONFIG": str(config_path),
        "OPTMSG_HTTP__LISTEN": listen,
        "OPTMSG_HTTP__PUBLIC_URL": public_url,
        "OPTMSG_DATABASE__URL": f"sqlite:///{db_path}",
        "OPTMSG_STORAGE__BLOB_DIR": str(root / "blobs"),
        # Never let a test gateway collide on the dev config's 2525.
        "OPTMSG_SMTP__LISTEN": f"127.0.0.1:{free_port()}",
    }
    return Deployment(root, config_path, db_path, listen, public_url, settings_env)


class GatewayServer:
    """``optmsg serve`` for one deployment. Each start is a new process on the same port,
    with its stdout and stderr kept in ``serve-N.stdout`` / ``serve-N.stderr``."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.ready_line = f"optmsg: listening on http://{deployment.listen}"
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, deadline: Deadline) -> None:
        """Start ``optmsg serve`` and return once it printed its ready line."""
        assert self._process is None, "the gateway is already running"
        self.starts += 1
        stdout_path = self.deployment.root / f"serve-{self.starts}.stdout"
        stderr_path = self.deployment.root / f"serve-{self.starts}.stderr"
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            self._process = subprocess.Popen(
                [str(OPTMSG), "serve"],
                cwd=self.deployment.root,
                env=self.deployment.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        self._wait_until_ready(stdout_path, stderr_path, deadline)

    def _wait_until_ready(self, stdout_path: Path, stderr_path: Path, deadline: Deadline) -> None:
        assert self._process is not None
        step = f"start #{self.starts} of optmsg serve"
        timeout = min(STARTUP_TIMEOUT_S, deadline.remaining(step))
        give_up_at = time.monotonic() + timeout
        while self.ready_line not in stdout_path.read_text(encoding="utf-8", errors="replace"):
            exit_code = self._process.poll()
            if exit_code is not None:
                self._process = None
                pytest.fail(
                    f"optmsg serve (start #{self.starts}) exited with {exit_code} before it "
                    f"was ready; stderr:\n{tail(stderr_path)}",
                    pytrace=False,
                )
            if time.monotonic() > give_up_at:
                self.stop()
                pytest.fail(
                    f"optmsg serve (start #{self.starts}) did not print {self.ready_line!r} "
                    f"within {timeout:.0f} s; stderr:\n{tail(stderr_path)}",
                    pytrace=False,
                )
            time.sleep(POLL_INTERVAL_S)

    @property
    def running(self) -> bool:
        """True while the last started process is alive (False once it exited)."""
        return self._process is not None and self._process.poll() is None

    def stderr_tail(self, lines: int = 30) -> str:
        """The end of the current (or last) start's stderr, for failure messages."""
        return tail(self.deployment.root / f"serve-{self.starts}.stderr", lines)

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the running gateway (e.g. SIGHUP: reload the config)."""
        assert self._process is not None, "the gateway is not running"
        self._process.send_signal(sig)

    def kill_hard(self) -> int:
        """``kill -9`` the running gateway; returns its exit status (``-SIGKILL``)."""
        assert self._process is not None, "the gateway is not running"
        process, self._process = self._process, None
        process.send_signal(signal.SIGKILL)
        return process.wait(timeout=SHUTDOWN_TIMEOUT_S)

    def stop(self) -> None:
        """Terminate the gateway if it runs (SIGTERM, then SIGKILL if it lingers)."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, SHUTDOWN_TIMEOUT_S)
