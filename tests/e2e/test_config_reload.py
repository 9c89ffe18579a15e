"""``kill -HUP`` reloads a running ``optmsg serve``: a reloadable key changed in
optmsg.toml takes effect over HTTP without a restart; a refused file leaves the
running configuration in force (the error names the key, never the value); a key
that needs a restart is logged as such and left alone; ``optmsg worker`` reloads
too. Each test runs its own processes on a throwaway deployment."""

from __future__ import annotations

import re
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import missing_service, twilio_form
from tests.e2e.test_worker_crash import _Redis, start_worker

from .harness import (
    POLL_INTERVAL_S,
    Deadline,
    Deployment,
    GatewayServer,
    create_deployment,
    free_port,
    tail,
)

pytestmark = pytest.mark.slow

BUDGET_S = 60.0
RELOAD_WAIT_S = 10.0
SMS_PATH = "/bridges/twilio/sms"
# A signed webhook of about 3 KB: over a 2 KiB limit, far under the default 64 KiB.
BIG_FILLER = "x" * 3000


@pytest.fixture
def deadline() -> Deadline:
    return Deadline(BUDGET_S)


@pytest.fixture
def deployment(tmp_path: Path, deadline: Deadline) -> Deployment:
    return create_deployment(tmp_path, deadline)


@pytest.fixture
def gateway(deployment: Deployment, deadline: Deadline) -> Iterator[GatewayServer]:
    server = GatewayServer(deployment)
    server.start(deadline)
    try:
        yield server
    finally:
        server.stop()


def auth_token(deployment: Deployment) -> str:
    return deployment.load_settings().bridges.twilio.auth_token.get_secret_value()


def post_webhook(deployment: Deployment, token: str, **extra: str) -> int:
    """POST a Twilio-signed inbound SMS; the HTTP status."""
    url = deployment.public_url + SMS_PATH
    form = twilio_form(**extra)
    signature = RequestValidator(token).compute_signature(url, form)
    request = urllib.request.Request(
        url,
        data=urlencode(form).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def get(
    deployment: Deployment, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(deployment.public_url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers), exc.read().decode()


def edit_config(deployment: Deployment, section: str, line: str) -> None:
    """Add ``line`` at the top of ``[section]`` (an existing key is replaced)."""
    text = deployment.config_path.read_text(encoding="utf-8")
    key = line.split("=", 1)[0].strip()
    text = re.sub(rf"(?m)^{re.escape(key)} = .*\n", "", text)
    header = f"[{section}]\n"
    assert header in text, f"{header!r} missing from the dev config"
    deployment.config_path.write_text(text.replace(header, header + line + "\n", 1))


def wait_for(condition: Callable[[], bool], what: str, deadline: Deadline) -> None:
    give_up_at = time.monotonic() + min(RELOAD_WAIT_S, deadline.remaining(what))
    while not condition():
        if time.monotonic() > give_up_at:
            pytest.fail(f"timed out waiting for: {what}", pytrace=False)
        time.sleep(POLL_INTERVAL_S)


def reloads(deployment: Deployment, result: str) -> float:
    _, _, text = get(deployment, "/metrics")
    match = re.search(rf'^optmsg_config_reloads_total\{{result="{result}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_sighup_applies_a_smaller_webhook_size_limit(
    deployment: Deployment, gateway: GatewayServer, deadline: Deadline
) -> None:
    token = auth_token(deployment)
    assert post_webhook(deployment, token, Filler=BIG_FILLER) == 200

    edit_config(deployment, "http", "max_webhook_bytes = 2048")
    gateway.send_signal(signal.SIGHUP)

    wait_for(
        lambda: post_webhook(deployment, token, Filler=BIG_FILLER) == 413,
        "a 3 KB webhook refused with 413 after the reload",
        deadline,
    )
    assert post_webhook(deployment, token) == 200
    assert "config reload: applied http.max_webhook_bytes" in gateway.stderr_tail()
    assert reloads(deployment, "ok") == 1.0
    assert gateway.running


def test_sighup_rotates_the_twilio_auth_token(
    deployment: Deployment, gateway: GatewayServer, deadline: Deadline
) -> None:
    old_token = auth_token(deployment)
    new_token = "rotated-token-" + "5f3c9a7e1b2d4c6a"
    edit_config(deployment, "bridges.twilio", f'auth_token = "{new_token}"')
    gateway.send_signal(signal.SIGHUP)

    wait_for(
        lambda: post_webhook(deployment, new_token) == 200,
        "a webhook signed with the new auth token accepted",
        deadline,
    )
    assert post_webhook(deployment, old_token) == 403
    stderr = gateway.stderr_tail(200)
    assert "bridges.twilio.auth_token" in stderr
    assert new_token not in stderr and old_token not in stderr


def test_refused_config_keeps_the_running_one_and_names_the_key(
    deployment: Deployment, gateway: GatewayServer, deadline: Deadline
) -> None:
    token = auth_token(deployment)
    too_short = "tok-XYZ123"
    edit_config(deployment, "bridges.twilio", f'auth_token = "{too_short}"')
    gateway.send_signal(signal.SIGHUP)

    wait_for(
        lambda: "config reload refused" in gateway.stderr_tail(),
        "the refused reload logged",
        deadline,
    )
    stderr = gateway.stderr_tail(200)
    assert "bridges.twilio.auth_token" in stderr
    assert too_short not in stderr
    assert gateway.running
    assert post_webhook(deployment, token) == 200
    assert reloads(deployment, "error") == 1.0
    assert reloads(deployment, "ok") == 0.0


def test_restart_only_key_is_logged_and_left_alone(
    deployment: Deployment, gateway: GatewayServer, deadline: Deadline
) -> None:
    origin = "https://app.example.com"
    edit_config(deployment, "http", f'cors_origins = ["{origin}"]')
    gateway.send_signal(signal.SIGHUP)

    wait_for(
        lambda: "http.cors_origins changed but needs a restart" in gateway.stderr_tail(),
        "the restart-only key logged",
        deadline,
    )
    _, headers, _ = get(deployment, "/api/v1/messages", {"Origin": origin})
    assert "Access-Control-Allow-Origin" not in headers
    assert reloads(deployment, "ok") == 1.0
    assert gateway.running


def test_sighup_reloads_a_worker(tmp_path: Path, deadline: Deadline) -> None:
    if shutil.which("redis-server") is None:
        missing_service("redis-server", "the redis-server binary is not installed")
    redis_server = _Redis(tmp_path)
    redis_server.start()
    metrics_port = free_port()
    deployment = create_deployment(tmp_path, deadline).with_settings(
        OPTMSG_REDIS__URL=f"redis://127.0.0.1:{redis_server.port}/0"
    )
    worker = start_worker(deployment, "worker", "--metrics", f"127.0.0.1:{metrics_port}")
    try:
        edit_config(deployment, "bridges.twilio", "media_attempts = 2")
        worker.send_signal(signal.SIGHUP)
        log = deployment.root / "worker.err"
        wait_for(
            lambda: "applied bridges.twilio.media_attempts" in tail(log),
            "the worker's reload logged",
            deadline,
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'optmsg_config_reloads_total{result="ok"} 1.0' in text
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        redis_server.kill()
