"""Write prometheus-rule.yaml: deploy/prometheus/alerts.yml as a Prometheus operator PrometheusRule.

Run by `make docs`; tests/deploy fails when the two disagree.
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parents[1] / "prometheus" / "alerts.yml"
OUT = HERE / "prometheus-rule.yaml"
HEADER = (
    "# Generated from deploy/prometheus/alerts.yml by deploy/k8s/monitoring/prometheus_rule.py\n"
    "# (`make docs`): edit alerts.yml, not this file.\n"
)


def render() -> str:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "tiqu", "labels": {"app.kubernetes.io/part-of": "tiqu"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(rule, sort_keys=False, allow_unicode=True, width=100)


def main() -> None:
    OUT.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
