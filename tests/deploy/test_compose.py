"""docker-compose.yml and the CPU override: structure, health, and agreement with the code.

Docker is not available on these machines, so the files are checked as data: the keys Compose
requires, health checks behind every `service_healthy`, images pinned, and every setting,
port, path and command agreeing with the settings class, the CLI, the Dockerfiles, the
Prometheus scrape configuration and `tiqu serve engine`.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from shared.settings import Settings
from tests.deploy.deploy_support import (
    PROMETHEUS,
    ROOT,
    SECRET_NAMES,
    SETTING_NAMES,
    Tagged,
    command_option,
    default_of,
    gpu_engine_command,
    interpolate,
    interpolations,
    load_compose,
    merge_compose,
    parse_cli,
    read_env_file,
    same_value,
    tiqu_names,
)

COMPOSE = load_compose()
CPU = load_compose("docker-compose.cpu.yml")
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports", "volumes",
    "depends_on", "healthcheck", "restart", "deploy", "logging", "shm_size", "user",
}  # fmt: skip
TIQU_IMAGES = ("tiqu/",)
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
ENV_EXAMPLE = read_env_file(ROOT / ".env.example", commented=True)
# A .env made from .env.example with the values compose requires filled in.
FILLED_ENV = {
    **{k: v for k, v in read_env_file(ROOT / ".env.example").items()},
    "MINIO_ROOT_PASSWORD": "x" * 12,
    "GRAFANA_ADMIN_PASSWORD": "x" * 12,
    "TIQU_S3_ACCESS_KEY": "tiqu-services",
    "TIQU_S3_SECRET_KEY": "y" * 12,
    "TIQU_REDIS_PASSWORD": "r" * 16,
    "TIQU_ENGINE_API_KEY": "e" * 16,
}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a map"
    return {k: str(v) for k, v in env.items()}


def is_tiqu(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith(TIQU_IMAGES) and "build" in service


def tiqu_command(service: dict[str, Any]) -> list[str]:
    return [str(word) for word in service["command"]]


def published(service: dict[str, Any]) -> dict[int, str]:
    """Container port -> host binding of each published port."""
    found = {}
    for port in service.get("ports", []):
        *host, container = str(port).split(":")
        found[int(container)] = ":".join(host)
    return found


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume name (or host path) of each mount."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        found[target] = source
    return found


# -- structure -------------------------------------------------------------------------------


def test_top_level_and_service_keys_are_compose_keys() -> None:
    assert set(COMPOSE) - {"name", "services", "volumes", "networks"} <= {
        k for k in COMPOSE if k.startswith("x-")
    }
    for name, service in SERVICES.items():
        unknown = set(service) - SERVICE_KEYS
        assert not unknown, f"{name}: unknown keys {unknown}"
        assert "image" in service, f"{name}: every service names its image (tag included)"


def test_every_role_has_its_container() -> None:
    roles = {
        "ingest-api": ["api", "ingest"],
        "ingest-worker": ["worker", "ingest"],
        "distill-api": ["api", "distill"],
        "distill-worker": ["worker", "distill"],
        "train-api": ["api", "train"],
        "train-worker": ["worker", "train"],
        "gateway": ["api", "serve"],
        "batch-worker": ["worker", "batch"],
    }
    for name, prefix in roles.items():
        assert tiqu_command(SERVICES[name])[:2] == prefix, name
    for infrastructure in ("redis", "minio", "createbuckets", "vllm", "prometheus", "grafana"):
        assert infrastructure in SERVICES


def test_images_are_pinned() -> None:
    for name, service in {**SERVICES, **CPU["services"]}.items():
        image = str(service.get("image", ""))
        if not image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: pin {image}"
        if image.startswith(TIQU_IMAGES):
            assert tag == VERSION, f"{name}: tiqu images are tagged with the project version"


def test_builds_use_the_role_dockerfiles() -> None:
    for name, service in {**SERVICES, **CPU["services"]}.items():
        if "build" not in service:
            continue
        dockerfile = ROOT / service["build"]["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        role = str(service["image"]).split("/")[1].split(":")[0]
        assert dockerfile.name == f"{role}.Dockerfile", f"{name}: image {role} from {dockerfile}"
        assert service["build"]["context"] == "."


def test_redis_persists_and_never_evicts() -> None:
    command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert mounts(SERVICES["redis"])["/data"] in COMPOSE["volumes"]


def test_minio_bucket_is_created_and_is_the_store() -> None:
    script = SERVICES["createbuckets"]["command"][0]
    bucket = urlparse(environment(SERVICES["ingest-api"])["TIQU_STORE_URL"]).netloc
    assert f"mc mb --ignore-existing local/{bucket}" in script
    assert SERVICES["createbuckets"]["depends_on"]["minio"]["condition"] == "service_healthy"


# -- health and start order ------------------------------------------------------------------


def test_long_running_services_have_healthchecks() -> None:
    for name, service in SERVICES.items():
        if service.get("restart") == "no":
            continue  # one-shot set-up containers
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_depends_on_uses_conditions_that_can_be_met() -> None:
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on with conditions"
        for other, rule in depends.items():
            assert other in SERVICES, f"{name} depends on unknown {other}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[other], f"{name}: {other} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert SERVICES[other].get("restart") == "no", f"{other} is not a one-shot"
            else:
                pytest.fail(f"{name}: condition {condition} for {other}")


def test_tiqu_services_wait_for_redis_and_the_bucket() -> None:
    for name, service in SERVICES.items():
        if is_tiqu(service) and service.get("restart") != "no":
            depends = service["depends_on"]
            assert depends["redis"]["condition"] == "service_healthy", name
            assert depends["createbuckets"]["condition"] == "service_completed_successfully"


def test_api_healthchecks_and_ports_match_their_command() -> None:
    for name, service in SERVICES.items():
        if not is_tiqu(service) or tiqu_command(service)[0] != "api":
            continue
        port = int(command_option(tiqu_command(service), "--port"))
        assert command_option(tiqu_command(service), "--host") == "0.0.0.0", name
        assert port in published(service), f"{name}: port {port} not published"
        assert f"http://127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"]), name


def test_worker_healthchecks_ping_their_own_node() -> None:
    for name, service in SERVICES.items():
        if is_tiqu(service) and tiqu_command(service)[0] == "worker":
            queue = tiqu_command(service)[1]
            test = " ".join(service["healthcheck"]["test"])
            assert f"inspect ping -d {queue}@$${{HOSTNAME}}" in test, name


# -- settings --------------------------------------------------------------------------------


def all_text() -> str:
    return (ROOT / "docker-compose.yml").read_text(encoding="utf-8") + (
        ROOT / "docker-compose.cpu.yml"
    ).read_text(encoding="utf-8")


def test_every_tiqu_variable_is_a_setting() -> None:
    unknown = tiqu_names(all_text()) - SETTING_NAMES
    assert not unknown, f"not in shared/settings.py: {sorted(unknown)}"


def test_interpolated_variables_are_documented_and_defaults_agree() -> None:
    for variable, operator, argument in interpolations(all_text()):
        assert variable in ENV_EXAMPLE, f"${{{variable}}} is not in .env.example"
        if variable in SETTING_NAMES and operator in (":-", "-") and argument:
            assert same_value(variable, argument), (
                f"${{{variable}:-{argument}}} differs from the default {default_of(variable)!r}"
            )


def test_secrets_are_never_written_in_the_file() -> None:
    for name, service in {**SERVICES, **CPU["services"]}.items():
        for variable, value in environment(service).items():
            if variable in SECRET_NAMES or "PASSWORD" in variable:
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", value), (
                    f"{name}: {variable} must come from .env and be required"
                )


def test_compose_refuses_to_start_without_the_secrets() -> None:
    text = all_text()
    interpolate(text, FILLED_ENV)  # complete: no error
    for required in (
        "MINIO_ROOT_PASSWORD",
        "TIQU_S3_SECRET_KEY",
        "GRAFANA_ADMIN_PASSWORD",
        "TIQU_REDIS_PASSWORD",
        "TIQU_ENGINE_API_KEY",
    ):
        incomplete = {k: v for k, v in FILLED_ENV.items() if k != required}
        with pytest.raises(KeyError, match=required):
            interpolate(text, incomplete)


def test_tiqu_containers_read_dot_env() -> None:
    for name, service in SERVICES.items():
        if is_tiqu(service):
            assert service["env_file"] == [{"path": ".env", "required": False}], name


def test_tiqu_environment_is_valid_settings() -> None:
    for name, service in SERVICES.items():
        if not is_tiqu(service) and name != "vllm":
            continue
        env = {
            k: interpolate(v, FILLED_ENV)
            for k, v in environment(service).items()
            if k.startswith("TIQU_")
        }
        Settings.model_validate({k.removeprefix("TIQU_").lower(): v for k, v in env.items()})


# -- how the services find each other --------------------------------------------------------


def test_the_gateway_calls_vllm_and_the_batch_worker_calls_the_gateway() -> None:
    gateway = environment(SERVICES["gateway"])
    engine = urlparse(gateway["TIQU_ENGINE_URL"])
    vllm_command = SERVICES["vllm"]["command"][0]
    assert engine.hostname == "vllm"
    assert f"--port {engine.port}" in vllm_command
    assert environment(SERVICES["vllm"])["TIQU_ENGINE_PORT"] == str(engine.port)
    batch = urlparse(environment(SERVICES["batch-worker"])["TIQU_GATEWAY_URL"])
    assert batch.hostname == "gateway"
    assert batch.port == int(command_option(tiqu_command(SERVICES["gateway"]), "--port"))
    assert SERVICES["batch-worker"]["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert SERVICES["gateway"]["depends_on"]["vllm"]["condition"] == "service_healthy"


def test_adapters_and_models_are_shared_at_the_same_paths() -> None:
    adapter_dir = environment(SERVICES["gateway"])["TIQU_ADAPTER_DIR"]
    model_cache = environment(SERVICES["gateway"])["TIQU_MODEL_CACHE"]
    for name in ("gateway", "vllm"):
        assert mounts(SERVICES[name]).get(adapter_dir) == "adapters", name
        assert environment(SERVICES[name])["TIQU_ADAPTER_DIR"] == adapter_dir
    for name in ("vllm", "train-worker", "gateway", "base-model"):
        assert mounts(SERVICES[name]).get(model_cache) == "models", name
        assert environment(SERVICES[name])["TIQU_MODEL_CACHE"] == model_cache
    assert "/var/lib/tiqu/adapters:ro" in SERVICES["vllm"]["volumes"][1], "vLLM only reads"
    model = command_option(shlex.split(SERVICES["vllm"]["command"][0]), "--model")
    assert Path(model).parent == Path(model_cache)
    assert f"link = '{model}'" in SERVICES["base-model"]["command"][0]
    train_dir = environment(SERVICES["train-worker"])["TIQU_TRAIN_WORK_DIR"]
    assert mounts(SERVICES["train-worker"]).get(train_dir) == "train-work"


def test_named_volumes_are_declared() -> None:
    for name, service in SERVICES.items():
        for source in mounts(service).values():
            if not source.startswith((".", "/")):
                assert source in COMPOSE["volumes"], f"{name}: volume {source} not declared"
            else:
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_volumes_are_made_writable_for_the_unprivileged_user() -> None:
    chown = SERVICES["volumes-init"]["command"]
    targets = set(mounts(SERVICES["volumes-init"]))
    assert chown[:3] == ["chown", "-R", "10001:10001"] and set(chown[3:]) == targets
    for name in ("gateway", "train-worker", "base-model", "vllm"):
        assert SERVICES[name]["depends_on"].get("volumes-init") or SERVICES[name]["depends_on"].get(
            "base-model"
        ), name


def test_prometheus_scrapes_every_process_at_its_port() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]
    }
    for name, service in SERVICES.items():
        if not is_tiqu(service) or service.get("restart") == "no":
            continue
        command = tiqu_command(service)
        if command[0] == "api":
            port = command_option(command, "--port")
        else:
            port = environment(service)["TIQU_WORKER_METRICS_PORT"]
        assert targets.get(name) == f"{name}:{port}", f"{name} is not scraped at port {port}"
    assert targets["vllm"] == "vllm:8000"
    assert targets["redis"] == "redis-exporter:9121"
    worker_ports = [
        environment(s)["TIQU_WORKER_METRICS_PORT"]
        for s in SERVICES.values()
        if is_tiqu(s) and s.get("command", [""])[0] == "worker"
    ]
    assert len(worker_ports) == len(set(worker_ports)) == 4
    exporter = environment(SERVICES["redis-exporter"])["REDIS_EXPORTER_CHECK_SINGLE_KEYS"]
    from shared.queue import QUEUES

    assert exporter == ",".join(f"db0={queue}" for queue in QUEUES)


def test_prometheus_and_grafana_get_their_configuration() -> None:
    assert mounts(SERVICES["prometheus"])["/etc/prometheus"] == "./deploy/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]
    grafana = mounts(SERVICES["grafana"])
    assert grafana["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/tiqu.yml").read_text(encoding="utf-8")
    )
    assert grafana[provider["providers"][0]["options"]["path"]] == "./deploy/grafana/dashboards"


# -- commands --------------------------------------------------------------------------------


def test_tiqu_commands_parse() -> None:
    parsed = []
    for name, service in {**SERVICES, **merge_compose(COMPOSE, CPU)["services"]}.items():
        ours = str(service.get("image", "")).startswith(TIQU_IMAGES)
        if (ours and "entrypoint" not in service) or service.get("entrypoint") == ["tiqu"]:
            parse_cli(tiqu_command(service))
            parsed.append(name)
    assert len(parsed) == 9, parsed  # 8 roles and the CPU engine


def engine_flags(argv: list[str]) -> dict[str, str | None]:
    flags: dict[str, str | None] = {}
    index = 0
    while index < len(argv):
        word = argv[index]
        if word.startswith("--"):
            has_value = index + 1 < len(argv) and not argv[index + 1].startswith("--")
            flags[word] = argv[index + 1] if has_value else None
            index += 2 if has_value else 1
        else:
            index += 1
    if "--structured-outputs-config" in flags:
        flags["--structured-outputs-config"] = json.loads(flags["--structured-outputs-config"])
    return flags


def test_vllm_runs_with_the_flags_of_tiqu_serve_engine() -> None:

    command = shlex.split(interpolate(SERVICES["vllm"]["command"][0], FILLED_ENV))
    assert command[:4] == ["exec", "python3", "-m", "vllm.entrypoints.openai.api_server"]
    settings = Settings.model_validate({"engine_host": "0.0.0.0", "engine_port": 8000})
    expected = gpu_engine_command(settings, command)
    assert expected.argv[1:3] == command[2:4]
    assert engine_flags(command) == engine_flags(expected.argv)
    assert environment(SERVICES["vllm"]).items() >= expected.env.items()


def test_cpu_override_runs_tiqu_serve_engine_without_gpus() -> None:
    merged = merge_compose(COMPOSE, CPU)["services"]
    engine = merged["vllm"]
    assert engine["build"]["dockerfile"] == "deploy/docker/engine-cpu.Dockerfile"
    assert engine["entrypoint"] == ["tiqu"] and engine["command"] == ["serve", "engine"]
    assert parse_cli(engine["command"])[0] == "engine"
    for name, service in SERVICES.items():
        if "deploy" in service:
            assert isinstance(CPU["services"][name]["deploy"], Tagged), f"{name} keeps its GPU"
    for name, service in merged.items():
        assert "deploy" not in service, f"{name} still reserves a GPU"
    assert merged["train-worker"]["environment"]["TIQU_TRAIN_DEVICE"] == "cpu"
    assert merged["vllm"]["environment"]["TIQU_ENGINE_HOST"] == "0.0.0.0"


def test_gpu_services_reserve_a_gpu() -> None:
    for name in ("vllm", "train-worker"):
        devices = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name


def test_redis_requires_the_password_every_client_holds() -> None:
    """Scenario 21 (static half): nobody on the compose network reaches the queues without it."""
    redis_command = SERVICES["redis"]["command"]
    password = environment(SERVICES["redis"])["REDISCLI_AUTH"]
    assert password.startswith("${TIQU_REDIS_PASSWORD:?")
    assert redis_command[redis_command.index("--requirepass") + 1] == password
    for name, service in SERVICES.items():
        if is_tiqu(service):
            assert environment(service)["TIQU_REDIS_PASSWORD"] == password, name
    assert environment(SERVICES["redis-exporter"])["REDIS_PASSWORD"] == password


def test_the_engine_key_is_held_by_vllm_and_the_gateway_only() -> None:
    key = environment(SERVICES["vllm"])["VLLM_API_KEY"]
    assert key.startswith("${TIQU_ENGINE_API_KEY:?")
    assert environment(SERVICES["gateway"])["TIQU_ENGINE_API_KEY"] == key
    holders = {
        name
        for name, service in SERVICES.items()
        if any("TIQU_ENGINE_API_KEY" in value for value in environment(service).values())
    }
    assert holders == {"vllm", "gateway"}
