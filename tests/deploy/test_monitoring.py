"""Prometheus configuration, alert rules and the Grafana dashboard.

promtool (Debian's prometheus package, installed by `make tools`) checks the configuration and
the rules for real and runs the rules' unit tests; without it those tests skip and say why.
Every metric a rule or a panel reads must be one the code defines, or vLLM's or redis_exporter's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_support import (
    DEPLOY,
    EXPORTER_METRICS,
    PROMETHEUS,
    ROOT,
    VLLM_METRICS,
    defined_tiqu_metrics,
    load_script,
    metric_names,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (`make tools` installs Debian's prometheus package; it "
    "could not here: see var/log/tools.log)",
)
ALERTS = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "tiqu.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


def recorded_names() -> set[str]:
    rules = [rule for group in ALERTS["groups"] for rule in group["rules"]]
    return {rule["record"] for rule in rules if "record" in rule}


def unknown_metrics(expr: str) -> set[str]:
    known = defined_tiqu_metrics() | VLLM_METRICS | EXPORTER_METRICS | recorded_names()
    return metric_names(expr) - known


# -- promtool --------------------------------------------------------------------------------


@needs_promtool
@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_accepts_the_configuration(config: str) -> None:
    result = promtool("check", "config", str(PROMETHEUS / config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    assert len(tested) >= 2


@needs_promtool
def test_alert_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests compare values: a wrong expectation makes promtool fail."""
    broken = (PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8")
    broken = broken.replace("has 20 requests waiting", "has 21 requests waiting")
    (tmp_path / "alerts.yml").write_text((PROMETHEUS / "alerts.yml").read_text())
    (tmp_path / "alerts_test.yml").write_text(broken)
    result = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode != 0 and "has 20 requests waiting" in result.stdout + result.stderr


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query checked by promtool, as a recording rule (Grafana's $__ ranges → 5m)."""
    rules = [
        {"record": f"tiqu:dashboard_query_{i}", "expr": re.sub(r"\$__\w+", "5m", expr)}
        for i, expr in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# -- scrape configuration --------------------------------------------------------------------


def jobs(config: str) -> dict[str, list[str]]:
    loaded = yaml.safe_load((PROMETHEUS / config).read_text(encoding="utf-8"))
    assert loaded["rule_files"] == ["alerts.yml"]
    return {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in loaded["scrape_configs"]
    }


def test_compose_and_local_configurations_scrape_the_same_jobs() -> None:
    compose, local = jobs("prometheus.yml"), jobs("prometheus.local.yml")
    assert set(compose) == set(local)
    for job, targets in compose.items():
        # Same port wherever the process listens on a fixed one (vLLM: 8000 in its container,
        # TIQU_ENGINE_PORT locally).
        if job != "vllm":
            assert [t.split(":")[1] for t in targets] == [t.split(":")[1] for t in local[job]], job
        assert all(t.startswith("127.0.0.1:") for t in local[job]), job


def test_local_engine_target_is_the_engine_port() -> None:
    from shared.settings import Settings

    port = Settings.model_fields["engine_port"].default
    assert jobs("prometheus.local.yml")["vllm"] == [f"127.0.0.1:{port}"]


# -- metric names ----------------------------------------------------------------------------


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (adapter, le) (rate(tiqu_x_bucket{a="b"}[5m]))) '
        "/ on () vllm:num_requests_waiting offset 1d > 0.5 unless up"
    )
    assert metric_names(expr) == {"tiqu_x_bucket", "vllm:num_requests_waiting", "up"}


def test_alerts_read_only_known_metrics() -> None:
    for group in ALERTS["groups"]:
        for rule in group["rules"]:
            unknown = unknown_metrics(rule["expr"])
            assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown}"


def test_alerts_cover_the_issue_list() -> None:
    rules = [rule for group in ALERTS["groups"] for rule in group["rules"]]
    alerts = {rule["alert"]: rule["expr"] for rule in rules if "alert" in rule}
    wanted = {
        "TiquGatewayErrorRateHigh": "tiqu:gateway_server_errors:rate5m",
        "TiquGatewayLatencyHigh": "tiqu_extract_latency_seconds_bucket",
        "TiquQueueBacklogGrowing": "redis_key_size",
        "TiquVllmRequestsWaiting": "vllm:num_requests_waiting",
        "TiquBatchJobStalled": "tiqu_batch_rows_total",
        "TiquTeacherErrorRateHigh": "tiqu_teacher_requests_total",
        "TiquExtractionValidityFalling": "adapter:tiqu_extract_json_valid:ratio_rate30m",
        "TiquGroundingRateFalling": "adapter:tiqu_extract_fields_grounded:ratio_rate30m",
    }
    for alert, metric in wanted.items():
        assert metric in alerts[alert], alert
    for group in ALERTS["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
                assert rule["annotations"]["summary"] and rule["annotations"]["description"]


# -- the dashboard ---------------------------------------------------------------------------


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_is_up_to_date() -> None:
    generator = load_script(DEPLOY / "grafana" / "dashboard.py")
    assert DASHBOARD.read_text(encoding="utf-8") == generator.render(), "stale: run `make docs`"


def test_dashboard_panels_read_only_known_metrics() -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    for expr in queries:
        assert not unknown_metrics(expr), f"{expr}: {unknown_metrics(expr)}"


def test_dashboard_covers_the_issue_list() -> None:
    text = " ".join(dashboard_queries())
    for needed in (
        "tiqu_extract_requests_total",  # traffic, errors per adapter
        "tiqu_extract_latency_seconds_bucket",  # latency
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_waiting",
        "redis_key_size",  # queue depths
        "tiqu_batch_rows_total",  # batch progress
        "tiqu_teacher_cost_total",  # distill cost
    ):
        assert needed in text, needed


def test_dashboard_layout_and_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )
    assert provisioned["datasources"][0]["type"] == "prometheus"
    assert provisioned["datasources"][0]["url"] == "http://prometheus:9090"
