"""Write the Grafana dashboard `dashboards/tiqu.json` (`make docs`); tests/deploy keeps it fresh.

Written as code so that every panel has the same shape and the file stays reviewable: a panel is
a title, a unit and PromQL queries. Only metrics tiqu's services, vLLM and redis_exporter expose
are used (tests/deploy checks each query's metric names).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "tiqu.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 8
    stack: bool = False
    max_value: float | None = None


@dataclass
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


ROWS = [
    Row(
        "Traffic",
        [
            Panel(
                "Extractions per second by adapter",
                [(f"sum by (adapter) (rate(tiqu_extract_requests_total[{RATE}]))", "{{adapter}}")],
                unit="reqps",
                stack=True,
            ),
            Panel(
                "HTTP requests per second by service",
                [(f"sum by (service) (rate(tiqu_http_requests_total[{RATE}]))", "{{service}}")],
                unit="reqps",
            ),
            Panel(
                "Extractions in flight (gateway)",
                [("sum(tiqu_extract_inflight)", "in flight")],
                description="Admitted and not yet answered; TIQU_SERVE_MAX_INFLIGHT caps it.",
            ),
        ],
    ),
    Row(
        "Latency",
        [
            Panel(
                "End-to-end extraction latency (p50, p95, p99)",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(tiqu_extract_latency_seconds_bucket[{RATE}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                unit="s",
            ),
            Panel(
                "p95 latency by adapter: gateway total vs vLLM",
                [
                    (
                        "histogram_quantile(0.95, sum by (adapter, le) "
                        f"(rate(tiqu_extract_latency_seconds_bucket[{RATE}])))",
                        "{{adapter}} total",
                    ),
                    (
                        "histogram_quantile(0.95, sum by (adapter, le) "
                        f"(rate(tiqu_engine_latency_seconds_bucket[{RATE}])))",
                        "{{adapter}} engine",
                    ),
                ],
                unit="s",
            ),
            Panel(
                "vLLM request latency (p95)",
                [
                    (
                        "histogram_quantile(0.95, sum by (le) "
                        f"(rate(vllm:e2e_request_latency_seconds_bucket[{RATE}])))",
                        "p95",
                    )
                ],
                unit="s",
            ),
        ],
    ),
    Row(
        "Errors",
        [
            Panel(
                "Failed extractions per second by adapter and status",
                [
                    (
                        "sum by (adapter, status) "
                        f'(rate(tiqu_extract_requests_total{{status!~"2.."}}[{RATE}]))',
                        "{{adapter}} {{status}}",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            Panel(
                "Rejected extractions per second by reason",
                [(f"sum by (reason) (rate(tiqu_extract_rejected_total[{RATE}]))", "{{reason}}")],
                unit="reqps",
                stack=True,
                description="Backpressure: overloaded (429), engine_unavailable (503), timeout.",
            ),
            Panel(
                "Server error ratio by service",
                [
                    (
                        "sum by (service) "
                        f'(rate(tiqu_http_requests_total{{status=~"5.."}}[{RATE}]))'
                        f" / sum by (service) (rate(tiqu_http_requests_total[{RATE}]))",
                        "{{service}}",
                    )
                ],
                unit="percentunit",
            ),
        ],
    ),
    Row(
        "Quality",
        [
            Panel(
                "Valid JSON rate by adapter",
                [
                    (
                        f'sum by (adapter) (rate(tiqu_extract_json_total{{valid="true"}}[{RATE}]))'
                        f" / sum by (adapter) (rate(tiqu_extract_json_total[{RATE}]))",
                        "{{adapter}}",
                    )
                ],
                unit="percentunit",
                max_value=1,
            ),
            Panel(
                "Grounded rate by adapter and field",
                [
                    (
                        "sum by (adapter, field) "
                        f'(rate(tiqu_extract_fields_total{{outcome="grounded"}}[{RATE}]))'
                        " / sum by (adapter, field) "
                        f'(rate(tiqu_extract_fields_total{{outcome=~"grounded|ungrounded"}}[{RATE}]))',
                        "{{adapter}} {{field}}",
                    )
                ],
                unit="percentunit",
                max_value=1,
                description="Share of non-null extracted values found in their complaint.",
            ),
            Panel(
                "Adapter loads by result",
                [
                    (
                        f"sum by (adapter, result) (increase(tiqu_adapter_loads_total[{RATE}]))",
                        "{{adapter}} {{result}}",
                    )
                ],
            ),
        ],
    ),
    Row(
        "vLLM",
        [
            Panel(
                "KV cache usage",
                [("max by (instance) (vllm:kv_cache_usage_perc)", "{{instance}}")],
                unit="percentunit",
                max_value=1,
            ),
            Panel(
                "Requests running and waiting",
                [
                    ("sum by (instance) (vllm:num_requests_running)", "{{instance}} running"),
                    ("sum by (instance) (vllm:num_requests_waiting)", "{{instance}} waiting"),
                ],
                description="The gateway answers 429 once waiting reaches TIQU_SERVE_MAX_WAITING.",
            ),
            Panel(
                "Generated tokens per second",
                [
                    (
                        f"sum by (instance) (rate(vllm:generation_tokens_total[{RATE}]))",
                        "{{instance}}",
                    )
                ],
            ),
        ],
    ),
    Row(
        "Queues and batch jobs",
        [
            Panel(
                "Celery queue depth",
                [
                    (
                        'max by (key) (redis_key_size{key=~"ingest|distill|train|batch"})',
                        "{{key}}",
                    )
                ],
                description="Tasks waiting in Redis (redis_exporter), by queue.",
            ),
            Panel(
                "Batch rows per second",
                [
                    ("sum(tiqu_batch_rows_per_second)", "reported by workers"),
                    (f"sum by (outcome) (rate(tiqu_batch_rows_total[{RATE}]))", "{{outcome}}"),
                ],
            ),
            Panel(
                "Batch jobs finished by result",
                [(f"sum by (result) (increase(tiqu_batch_jobs_total[{RATE}]))", "{{result}}")],
                stack=True,
            ),
        ],
    ),
    Row(
        "Distill, ingest and training",
        [
            Panel(
                "Teacher cost (sum over the time range)",
                [("sum(increase(tiqu_teacher_cost_total[$__range]))", "cost")],
                kind="stat",
                unit="none",
                width=4,
                description="In the currency of TIQU_TEACHER_PRICE_*_PER_1K.",
            ),
            Panel(
                "Teacher cost per hour",
                [(f"sum(rate(tiqu_teacher_cost_total[{RATE}])) * 3600", "cost / hour")],
                unit="none",
                width=4,
            ),
            Panel(
                "Teacher requests per second by status",
                [(f"sum by (status) (rate(tiqu_teacher_requests_total[{RATE}]))", "{{status}}")],
                unit="reqps",
                stack=True,
            ),
            Panel(
                "Teacher tokens per second by kind",
                [(f"sum by (kind) (rate(tiqu_teacher_tokens_total[{RATE}]))", "{{kind}}")],
            ),
            Panel(
                "Distill labels per second by outcome",
                [
                    (
                        f"sum by (outcome, reason) (rate(tiqu_distill_labels_total[{RATE}]))",
                        "{{outcome}} {{reason}}",
                    )
                ],
                stack=True,
            ),
            Panel(
                "Ingested rows per second by outcome",
                [
                    (
                        f"sum by (outcome) (rate(tiqu_ingest_rows_total[{RATE}]))",
                        "{{outcome}}",
                    )
                ],
                stack=True,
            ),
            Panel("Training loss", [("tiqu_train_loss", "{{instance}}")]),
            Panel(
                "Training tokens per second",
                [("tiqu_train_tokens_per_second", "{{instance}}")],
            ),
        ],
    ),
]


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    defaults: dict = {"unit": panel.unit}
    if panel.max_value is not None:
        defaults.update(min=0, max=panel.max_value)
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if panel.stack else 0,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
            "showPoints": "never",
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
        if panel.kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def build() -> dict:
    panels: list[dict] = []
    y = 0
    panel_id = 1
    for row in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(panel_json(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
        y += 8
    return {
        "uid": "tiqu-overview",
        "title": "tiqu",
        "description": "Traffic, latency, errors and quality of the extraction gateway; vLLM; "
        "queues; batch jobs; distill cost; training.",
        "tags": ["tiqu"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
