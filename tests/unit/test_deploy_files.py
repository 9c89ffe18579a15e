"""The Dockerfile, docker-compose.yml and Prometheus config operators start from:
parsed and checked against the code they run (settings keys, CLI commands, paths)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from config import Settings
from config.settings import ENV_PREFIX
from gateway.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            pairs.append((instruction.upper(), rest.strip()))
    return pairs


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _settings_key_exists(env_name: str) -> bool:
    """Whether OPTMSG_<SECTION>__<KEY>[__<KEY>] names a real settings field."""
    if not env_name.startswith(ENV_PREFIX):
        return False
    model: type[BaseModel] = Settings
    parts = env_name[len(ENV_PREFIX) :].lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def _cli_accepts(argv: list[str]) -> bool:
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        return False
    return True


def test_the_dockerfile_pins_its_base_image() -> None:
    [base] = [args for instruction, args in _dockerfile() if instruction == "FROM"]
    name, _, tag = base.partition(":")
    assert name == "python"
    assert re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), base


def test_the_dockerfile_installs_from_the_lock_file() -> None:
    runs = " ".join(args for instruction, args in _dockerfile() if instruction == "RUN")
    assert "pip install -c requirements.lock -r runtime-requirements.txt" in runs
    assert "pip install --no-deps ." in runs


def _image_requirements() -> list[str]:
    """What the Dockerfile's own command lists as the image's requirements, run here."""
    runs = " ".join(args for instruction, args in _dockerfile() if instruction == "RUN")
    found = re.search(r'python -c "(.+?)" > runtime-requirements\.txt', runs)
    assert found, "the Dockerfile no longer writes runtime-requirements.txt"
    out = subprocess.run(
        [sys.executable, "-c", found.group(1)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_the_image_gets_every_runtime_dependency_at_a_pinned_version() -> None:
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    wanted = _image_requirements()
    assert wanted
    for requirement in wanted:
        name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pinned, requirement


def test_the_image_leaves_out_test_and_lint_tools() -> None:
    names = " ".join(_image_requirements()).lower()
    for tool in ("playwright", "pytest", "mypy", "ruff", "hypothesis"):
        assert tool not in names, tool


def test_the_dockerfile_copies_only_paths_that_exist() -> None:
    for instruction, args in _dockerfile():
        if instruction == "COPY":
            *sources, _target = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"


def test_the_dockerfile_copies_every_package() -> None:
    copied = {
        shlex.split(args)[0]
        for instruction, args in _dockerfile()
        if instruction == "COPY" and len(shlex.split(args)) == 2
    }
    assert {"config", "inbox", "optin", "bridges", "gateway"} <= copied


def test_the_image_runs_as_an_unprivileged_user() -> None:
    users = [args for instruction, args in _dockerfile() if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_the_image_entrypoint_is_the_cli_and_its_default_command_parses() -> None:
    pairs = dict(_dockerfile())
    assert yaml.safe_load(pairs["ENTRYPOINT"]) == ["optmsg"]
    assert _cli_accepts(yaml.safe_load(pairs["CMD"]))


def test_the_image_health_check_asks_healthz() -> None:
    assert "/healthz" in dict(_dockerfile())["HEALTHCHECK"]


def test_the_image_environment_names_real_settings() -> None:
    env = " ".join(args for instruction, args in _dockerfile() if instruction == "ENV")
    names = re.findall(r"(OPTMSG_[A-Z0-9_]+)=", env)
    assert names
    for name in names:
        assert _settings_key_exists(name), name


def test_compose_runs_two_gateways_two_workers_postgres_and_redis() -> None:
    services = _services()
    gateways = [s for s in services.values() if s.get("command") == ["serve", "--no-worker"]]
    assert len(gateways) == 2
    assert services["worker"]["command"][0] == "worker"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")


def test_compose_gives_workers_longer_to_stop_than_the_supervisors_wait() -> None:
    # `optmsg worker` waits up to 45 s for the jobs in hand before it kills them.
    grace = _services()["worker"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) > 45


def test_compose_prometheus_is_optional() -> None:
    assert _services()["prometheus"]["profiles"] == ["metrics"]


@pytest.mark.parametrize("service", ["gateway-1", "gateway-2", "worker", "migrate"])
def test_compose_commands_are_cli_commands(service: str) -> None:
    assert _cli_accepts(_services()[service]["command"])


@pytest.mark.parametrize("service", ["gateway-1", "gateway-2", "worker", "migrate"])
def test_compose_environment_names_real_settings(service: str) -> None:
    environment = _services()[service]["environment"]
    assert environment
    for name in environment:
        assert _settings_key_exists(name), f"{service}: {name} is not a settings key"


@pytest.mark.parametrize("service", ["gateway-1", "gateway-2", "worker"])
def test_compose_app_services_wait_for_migrations_and_healthy_stores(service: str) -> None:
    depends = _services()[service]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"


def test_compose_gateways_and_workers_share_the_blob_volume() -> None:
    services = _services()
    for name in ("gateway-1", "gateway-2", "worker"):
        assert "blobs:/var/lib/optmsg/blobs" in services[name]["volumes"], name


def test_compose_takes_secrets_from_the_environment_never_inline() -> None:
    environment = _services()["gateway-1"]["environment"]
    for key in ("OPTMSG_BRIDGES__TWILIO__AUTH_TOKEN", "OPTMSG_DATABASE__URL"):
        assert "${" in environment[key], f"{key} must come from .env"


def test_compose_database_url_reaches_the_postgres_service_with_the_psycopg_driver() -> None:
    url = _services()["gateway-1"]["environment"]["OPTMSG_DATABASE__URL"]
    assert url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in url


def test_the_example_env_file_lists_every_variable_compose_requires() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    example = (ROOT / "deploy" / "env.example").read_text()
    defined = set(re.findall(r"^(\w+)=", example, flags=re.M))
    assert required <= defined


def _scrape_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_prometheus_scrapes_every_worker_replica_on_its_metrics_port() -> None:
    command = _services()["worker"]["command"]
    port = int(command[command.index("--metrics") + 1].rpartition(":")[2])
    [lookup] = _scrape_jobs()["optmsg-worker"]["dns_sd_configs"]
    assert lookup == {"names": ["worker"], "type": "A", "port": port}


def test_prometheus_scrapes_every_gateway_service_on_its_metrics_listener() -> None:
    job = _scrape_jobs()["optmsg-gateway"]
    targets = set(job["static_configs"][0]["targets"])
    services = _services()
    listen = services["gateway-1"]["environment"]["OPTMSG_HTTP__METRICS_LISTEN"]
    port = listen.rpartition(":")[2]
    assert port not in {p.split(":")[-1] for p in services["gateway-1"]["ports"]}
    gateways = {
        f"{name}:{port}"
        for name, s in services.items()
        if s.get("command") == ["serve", "--no-worker"]
    }
    assert targets == gateways
    assert job["metrics_path"] == "/metrics"


def test_compose_mounts_the_prometheus_config_that_exists() -> None:
    [mount] = _services()["prometheus"]["volumes"]
    source = mount.split(":")[0]
    assert (ROOT / source).is_file()
