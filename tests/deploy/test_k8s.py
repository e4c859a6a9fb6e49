"""deploy/k8s: every manifest parsed and checked for the keys Kubernetes requires and for
agreement with the settings, the CLI, the Dockerfiles, the alert rules and `tiqu serve engine`.

No cluster or schema download is possible here; the checks are the ones that catch real
mistakes: selectors that select nothing, Services whose targetPort no container has, probes on
the wrong path, unpinned images, missing resources, settings that do not exist, secrets in
plain config, autoscalers aimed at nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from shared.queue import QUEUES
from shared.settings import Settings
from tests.deploy.deploy_support import (
    K8S,
    PROMETHEUS,
    ROOT,
    SECRET_NAMES,
    SETTING_NAMES,
    command_option,
    gpu_engine_command,
    load_script,
    load_yaml_docs,
    parse_cli,
    read_env_file,
    tiqu_names,
)

KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
DOCS: list[tuple[str, dict[str, Any]]] = [
    (path.name, doc)
    for path in sorted(K8S.glob("*.yaml"))
    if path.name != "kustomization.yaml"
    for doc in load_yaml_docs(path)
]
CONFIG = read_env_file(K8S / "config.env")
SECRETS = read_env_file(K8S / "secrets.env.example")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}
API_VERSIONS = {
    "Namespace": "v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Job": "batch/v1",
    "PodDisruptionBudget": "policy/v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in DOCS if doc["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in DOCS if doc["kind"] in WORKLOAD_KINDS}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any], init: bool = True) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def is_tiqu(container: dict[str, Any]) -> bool:
    return container["image"].startswith("tiqu/")


def container_env(container: dict[str, Any]) -> dict[str, str]:
    env = {}
    for ref in container.get("envFrom", []):
        if "configMapRef" in ref:
            env.update(CONFIG)
    env.update({item["name"]: str(item.get("value", "")) for item in container.get("env", [])})
    return env


def port_number(container: dict[str, Any], port: int | str) -> int | None:
    for declared in container.get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["containerPort"])
    return None


# -- every document --------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    listed = set(KUSTOMIZATION["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    monitoring = yaml.safe_load((K8S / "monitoring/kustomization.yaml").read_text())
    assert set(monitoring["resources"]) == {p.name for p in (K8S / "monitoring").glob("*.yaml")} - {
        "kustomization.yaml"
    }
    generated = {g["name"]: g["envs"] for g in KUSTOMIZATION["configMapGenerator"]}
    assert generated == {"tiqu-config": ["config.env"]}
    secrets = {g["name"]: g["envs"] for g in KUSTOMIZATION["secretGenerator"]}
    assert secrets == {"tiqu-secrets": ["secrets.env"]}
    assert "secrets.env" in (K8S / ".gitignore").read_text().split()


def test_every_document_has_the_required_keys() -> None:
    monitoring = [
        (p.name, doc)
        for p in sorted((K8S / "monitoring").glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for doc in load_yaml_docs(p)
    ]
    assert DOCS and monitoring
    for file, doc in [*DOCS, *monitoring]:
        assert doc.get("kind") in API_VERSIONS, f"{file}: unexpected kind {doc.get('kind')}"
        assert doc.get("apiVersion") == API_VERSIONS[doc["kind"]], f"{file}: {doc['kind']}"
        name = doc.get("metadata", {}).get("name")
        assert name and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), f"{file}: {name}"
        assert "namespace" not in doc["metadata"], f"{file}: the kustomization sets it"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tiqu", file
    names = [(doc["kind"], doc["metadata"]["name"]) for _, doc in DOCS]
    assert len(names) == len(set(names)), "duplicate objects"


def test_workloads_select_their_own_pods() -> None:
    for name, workload in workloads().items():
        if workload["kind"] == "Job":
            assert pod_spec(workload)["restartPolicy"] in ("OnFailure", "Never")
            continue
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
        assert labels["app.kubernetes.io/part-of"] == "tiqu", f"{name}: the PodMonitor needs it"


def test_containers_have_pinned_images_and_resources() -> None:
    for name, workload in workloads().items():
        for container in containers(workload):
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and tag and tag != "latest", f"{name}: pin {image}"
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), name
            assert "memory" in resources.get("limits", {}), name
            security = container.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, name


def test_tiqu_pods_run_unprivileged_with_a_writable_tmp() -> None:
    for name, workload in workloads().items():
        for container in containers(workload, init=False):
            if not is_tiqu(container):
                continue
            pod = pod_spec(workload)["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001, name
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be writable"


def test_images_are_the_role_images() -> None:
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, workload in workloads().items():
        for container in containers(workload):
            if is_tiqu(container):
                role, tag = container["image"].removeprefix("tiqu/").split(":")
                assert (ROOT / f"deploy/docker/{role}.Dockerfile").is_file(), name
                assert tag == version, name


# -- HTTP serving, probes and Services -------------------------------------------------------


def test_apis_are_probed_on_readyz_and_healthz() -> None:
    apis = 0
    for name, workload in workloads().items():
        for container in containers(workload, init=False):
            if not is_tiqu(container) or container["args"][0] != "api":
                continue
            apis += 1
            port = int(command_option(container["args"], "--port"))
            assert command_option(container["args"], "--host") == "0.0.0.0", name
            ready = container["readinessProbe"]["httpGet"]
            live = container["livenessProbe"]["httpGet"]
            assert ready["path"] == "/readyz" and live["path"] == "/healthz", name
            assert port_number(container, ready["port"]) == port, name
            assert port_number(container, live["port"]) == port, name
    assert apis == 4


def test_vllm_is_probed_on_its_health_route() -> None:
    (container,) = containers(of_kind("Deployment")["vllm"], init=False)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"


def test_workers_are_probed_and_publish_metrics() -> None:
    ports = []
    for name, workload in workloads().items():
        for container in containers(workload, init=False):
            if not is_tiqu(container) or container["args"][0] != "worker":
                continue
            queue = container["args"][1]
            probe = " ".join(container["livenessProbe"]["exec"]["command"])
            assert f"inspect ping -d {queue}@$HOSTNAME" in probe, name
            port = container_env(container)["TIQU_WORKER_METRICS_PORT"]
            assert port_number(container, "metrics") == int(port), name
            ports.append(port)
            grace = pod_spec(workload)["terminationGracePeriodSeconds"]
            assert grace >= 300, f"{name}: let Celery finish its task"
    assert len(ports) == 4


def test_services_target_a_port_their_pods_have() -> None:
    for name, service in of_kind("Service").items():
        selector = service["spec"]["selector"]
        targets = [
            w
            for w in workloads().values()
            if w["kind"] != "Job"
            and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert targets, f"Service {name} selects no pods"
        for port in service["spec"]["ports"]:
            for workload in targets:
                numbers = {port_number(c, port["targetPort"]) for c in containers(workload)}
                assert numbers - {None}, f"Service {name}: no container port {port['targetPort']}"


def test_urls_in_the_config_point_at_services() -> None:
    services = of_kind("Service")
    for variable, service_name in (
        ("TIQU_ENGINE_URL", "vllm"),
        ("TIQU_GATEWAY_URL", "gateway"),
        ("TIQU_REDIS_URL", "redis"),
    ):
        url = urlparse(CONFIG[variable])
        assert url.hostname == service_name, variable
        assert url.port in [p["port"] for p in services[service_name]["spec"]["ports"]], variable


# -- settings and secrets --------------------------------------------------------------------


def test_config_holds_real_settings_and_no_secrets() -> None:
    assert set(CONFIG) <= SETTING_NAMES, set(CONFIG) - SETTING_NAMES
    assert not set(CONFIG) & SECRET_NAMES
    Settings.model_validate({k.removeprefix("TIQU_").lower(): v for k, v in CONFIG.items()})


def test_secrets_are_exactly_the_secret_settings() -> None:
    assert set(SECRETS) == SECRET_NAMES, "a SecretStr setting needs a place in secrets.env"


def test_every_pod_gets_config_and_secrets() -> None:
    for name, workload in workloads().items():
        for container in containers(workload, init=False):
            if is_tiqu(container):
                refs = container["envFrom"]
                assert {"configMapRef": {"name": "tiqu-config"}} in refs, name
                assert {"secretRef": {"name": "tiqu-secrets"}} in refs, name


def test_every_tiqu_variable_is_a_setting() -> None:
    text = "".join(p.read_text(encoding="utf-8") for p in K8S.rglob("*") if p.is_file())
    unknown = tiqu_names(text) - SETTING_NAMES
    assert not unknown, sorted(unknown)


def test_tiqu_commands_parse() -> None:
    count = 0
    for workload in workloads().values():
        for container in containers(workload, init=False):
            if is_tiqu(container) and "command" not in container:
                parse_cli([str(arg) for arg in container["args"]])
                count += 1
    assert count == 8


# -- storage, GPUs, the engine ---------------------------------------------------------------


def test_claims_exist_and_shared_folders_are_mounted_at_their_settings() -> None:
    claims = of_kind("PersistentVolumeClaim")
    for name, workload in workloads().items():
        volumes = pod_spec(workload).get("volumes", [])
        for volume in volumes:
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in claims, f"{name}: no claim {claim}"
        by_name = {v["name"]: v for v in volumes}
        for template in workload["spec"].get("volumeClaimTemplates", []):
            by_name[template["metadata"]["name"]] = template
        for container in containers(workload):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in by_name, f"{name}: volume {mount['name']}"
    for claim in ("tiqu-models", "tiqu-adapters", "tiqu-train-work"):
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"], claim

    def claim_at(workload: str, path: str) -> str:
        (container,) = containers(of_kind("Deployment")[workload], init=False)
        volumes = {v["name"]: v for v in pod_spec(of_kind("Deployment")[workload])["volumes"]}
        for mount in container["volumeMounts"]:
            if mount["mountPath"] == path:
                return volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        raise AssertionError(f"{workload}: nothing mounted at {path}")

    adapters, models = CONFIG["TIQU_ADAPTER_DIR"], CONFIG["TIQU_MODEL_CACHE"]
    assert claim_at("gateway", adapters) == claim_at("vllm", adapters) == "tiqu-adapters"
    assert claim_at("vllm", models) == claim_at("train-worker", models) == "tiqu-models"
    assert claim_at("train-worker", CONFIG["TIQU_TRAIN_WORK_DIR"]) == "tiqu-train-work"


def test_vllm_and_training_run_on_the_gpu_pool() -> None:
    for name in ("vllm", "train-worker"):
        workload = of_kind("Deployment")[name]
        spec = pod_spec(workload)
        assert spec["nodeSelector"] == {"tiqu.io/pool": "gpu"}, name
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"]), name
        (container,) = containers(workload, init=False)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, name
    for name, workload in workloads().items():
        if name not in ("vllm", "train-worker"):
            assert "nodeSelector" not in pod_spec(workload), f"{name} does not need a GPU"


def test_vllm_runs_with_the_flags_of_tiqu_serve_engine() -> None:
    from tests.deploy.test_compose import engine_flags

    (container,) = containers(of_kind("Deployment")["vllm"], init=False)
    argv = [*container["command"], *container["args"]]
    port = int(command_option(argv, "--port"))
    settings = Settings.model_validate(
        {
            **{k.removeprefix("TIQU_").lower(): v for k, v in CONFIG.items()},
            "engine_host": "0.0.0.0",
            "engine_port": port,
        }
    )
    expected = gpu_engine_command(settings, argv)
    assert argv[:3] == expected.argv[:3]
    assert engine_flags(argv) == engine_flags(expected.argv)
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    assert env.items() >= expected.env.items()
    assert Path(command_option(argv, "--model")).parent == Path(CONFIG["TIQU_MODEL_CACHE"])
    job = of_kind("Job")["base-model"]
    assert f"link = '{command_option(argv, '--model')}'" in containers(job)[0]["args"][0]
    assert port_number(container, "http") == port == urlparse(CONFIG["TIQU_ENGINE_URL"]).port


def test_vllm_waits_for_the_base_model() -> None:
    (wait,) = pod_spec(of_kind("Deployment")["vllm"])["initContainers"]
    (container,) = containers(of_kind("Deployment")["vllm"], init=False)
    model = command_option([*container["command"], *container["args"]], "--model")
    assert f"{model}/config.json" in " ".join(wait["command"])


# -- autoscaling -----------------------------------------------------------------------------


def test_workers_scale_on_their_queue_length() -> None:
    scaled = of_kind("ScaledObject")
    deployments = of_kind("Deployment")
    redis = of_kind("Service")["redis"]["spec"]["ports"][0]["port"]
    queues = set()
    for name, scaler in scaled.items():
        target = scaler["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, f"{name} scales nothing"
        assert 1 <= scaler["spec"]["minReplicaCount"] <= scaler["spec"]["maxReplicaCount"]
        (container,) = containers(deployments[target], init=False)
        for trigger in scaler["spec"]["triggers"]:
            if trigger["type"] != "redis":
                continue
            meta = trigger["metadata"]
            assert meta["listName"] == container["args"][1], name
            assert meta["listLength"] == command_option(container["args"], "--concurrency"), name
            assert meta["address"] == f"redis.tiqu.svc.cluster.local:{redis}"
            assert meta["databaseIndex"] == urlparse(CONFIG["TIQU_REDIS_URL"]).path.strip("/")
            queues.add(meta["listName"])
    assert queues == set(QUEUES)


def test_gateway_scales_on_request_rate() -> None:
    (trigger,) = of_kind("ScaledObject")["gateway"]["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert re.fullmatch(r"sum\(rate\(tiqu_extract_requests_total\{[^}]*\}\[\d+m\]\)\)",
                        trigger["metadata"]["query"])  # fmt: skip
    threshold = trigger["metadata"]["threshold"]
    # Either the measured number, or the placeholder that makes KEDA refuse it until set.
    assert re.fullmatch(r"\d+(\.\d+)?", threshold) or threshold.startswith("REPLACE_WITH_")


# -- monitoring ------------------------------------------------------------------------------


def test_prometheus_rule_is_alerts_yml() -> None:
    generator = load_script(K8S / "monitoring" / "prometheus_rule.py")
    path = K8S / "monitoring" / "prometheus-rule.yaml"
    assert path.read_text(encoding="utf-8") == generator.render(), "stale: run `make docs`"
    (rule,) = load_yaml_docs(path)
    alerts = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == alerts["groups"]


def test_podmonitor_scrapes_the_ports_pods_declare() -> None:
    (monitor,) = load_yaml_docs(K8S / "monitoring" / "podmonitor.yaml")
    ports = {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]}
    for name, workload in workloads().items():
        if workload["kind"] == "Job" or name == "redis":
            continue
        declared = {p.get("name") for c in containers(workload) for p in c.get("ports", [])}
        assert declared & ports, f"{name} is not scraped"


@pytest.mark.parametrize("name", ["config.env", "secrets.env.example"])
def test_env_files_are_plain_name_value_lines(name: str) -> None:
    for line in (K8S / name).read_text(encoding="utf-8").splitlines():
        assert not line or line.startswith("#") or re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*", line), line


# -- inside the cluster (scenario 21, static half) --------------------------------------------


def secret_env(container: dict[str, Any]) -> dict[str, str]:
    """Variables a container takes from tiqu-secrets, by the secret key they read."""
    return {
        item["name"]: item["valueFrom"]["secretKeyRef"]["key"]
        for item in container.get("env", [])
        if item.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "tiqu-secrets"
    }


def test_redis_requires_the_password_and_every_client_has_it() -> None:
    redis = containers(workloads()["redis"])[0]
    assert secret_env(redis) == {
        "TIQU_REDIS_PASSWORD": "TIQU_REDIS_PASSWORD",
        "REDISCLI_AUTH": "TIQU_REDIS_PASSWORD",
    }
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(TIQU_REDIS_PASSWORD)"
    exporter = containers(workloads()["redis-exporter"])[0]
    assert secret_env(exporter)["REDIS_PASSWORD"] == "TIQU_REDIS_PASSWORD"
    assert "TIQU_REDIS_PASSWORD" in SECRETS  # every tiqu pod gets tiqu-secrets whole
    auth = of_kind("TriggerAuthentication")["tiqu-redis"]["spec"]["secretTargetRef"]
    assert auth == [{"parameter": "password", "name": "tiqu-secrets", "key": "TIQU_REDIS_PASSWORD"}]
    generator = KUSTOMIZATION["secretGenerator"][0]
    assert generator["options"]["disableNameSuffixHash"] is True  # the name KEDA refers to
    for name, scaled in of_kind("ScaledObject").items():
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "redis":
                assert trigger["authenticationRef"] == {"name": "tiqu-redis"}, name


def test_vllm_requires_the_engine_key() -> None:
    vllm = containers(workloads()["vllm"], init=False)[0]
    assert secret_env(vllm) == {"VLLM_API_KEY": "TIQU_ENGINE_API_KEY"}
    assert "TIQU_ENGINE_API_KEY" in SECRETS


def test_only_the_gateway_and_prometheus_reach_vllm_and_only_tiqu_reaches_redis() -> None:
    policies = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: p["spec"]
        for p in of_kind("NetworkPolicy").values()
    }
    assert set(policies) == {"vllm", "redis"}
    vllm = policies["vllm"]
    assert vllm["policyTypes"] == ["Ingress"]
    sources = [source for rule in vllm["ingress"] for source in rule["from"]]
    assert [s["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for s in sources] == [
        "gateway",
        "prometheus",
    ]
    assert all(rule["ports"] == [{"port": "http"}] for rule in vllm["ingress"])
    gateway_pods = pod_spec(workloads()["gateway"])
    assert (
        workloads()["gateway"]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        == "gateway"
        and gateway_pods
    )
    redis = policies["redis"]
    (rule,) = redis["ingress"]
    assert rule["ports"] == [{"port": "redis"}]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "tiqu"}}} in rule["from"]
