"""Adapters: every registered version, its evaluation, what the gateway serves; promote or roll
back (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.serve.console.web import (
    CONSOLE_PATH,
    PageError,
    StoreDep,
    VisitorDep,
    page,
    require,
)
from services.serve.lifecycle import version_key
from shared import adapters as registry
from shared.api import KeyScope
from shared.errors import TiquError
from shared.store import Layout, Store

# The charts training and `tiqu eval` write beside eval.json (services/train/report.py).
CHARTS = {"loss.png": "Training and validation loss", "fields.png": "Exact match and F1 per field"}

router = APIRouter(prefix=CONSOLE_PATH, include_in_schema=False)


def _serving_state(request: Request, name: str, version: str) -> tuple[str, str | None]:
    """(`loaded`, `refused` or `not loaded`, and the refusal's reason) in this gateway."""
    gateway = getattr(request.app.state, "gateway", None)
    manager = gateway.adapters if gateway is not None else None
    if manager is None:
        return "not loaded", None
    key = version_key(name, version)
    if key in manager.refused:
        return "refused", manager.refused[key][0]
    return ("loaded", None) if key in manager.loaded else ("not loaded", None)


def _checked(store: Store, name: str, version: str) -> dict[str, Any]:
    """The manifest of `name@version`, or a 404 page (names and versions checked before any
    store access)."""
    if not registry.ADAPTER_NAME.match(name) or not registry.VERSION.match(version):
        raise PageError(404, "Not found", f"No adapter {name}@{version} here.")
    manifest = registry.load_manifest(store, name, version)
    if manifest is None:
        raise PageError(404, "Not found", f"No adapter {name}@{version} here.")
    return manifest


def evaluation_sets(evaluation: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per evaluated set: its name, rows, headline rates and per-field exact match of the base
    model and the adapter, for bars."""
    sets = []
    for set_name, entry in ((evaluation or {}).get("sets") or {}).items():
        adapter, base = entry["adapter"], entry.get("base")
        sets.append(
            {
                "name": set_name,
                "rows": entry["rows"],
                "all_fields_correct": adapter.get("all_fields_correct"),
                "schema_valid": adapter.get("schema_valid"),
                "base_all_fields_correct": base.get("all_fields_correct") if base else None,
                "fields": [
                    {
                        "name": field,
                        "adapter": scores.get("exact_match"),
                        "base": base["fields"][field].get("exact_match") if base else None,
                    }
                    for field, scores in adapter["fields"].items()
                ],
            }
        )
    return sets


@router.get("/adapters")
def adapter_list(request: Request, visitor: VisitorDep, store: StoreDep) -> HTMLResponse:
    require(visitor, KeyScope.extract, "the adapter list")
    rows = []
    for name in registry.names(store):
        alias = registry.read_alias(store, name) or {}
        for version in reversed(registry.versions(store, name)):
            manifest = registry.load_manifest(store, name, version) or {}
            serving, reason = _serving_state(request, name, version)
            rows.append(
                {
                    "name": name,
                    "version": version,
                    "promoted": alias.get("version") == version,
                    "previous": alias.get("previous_version")
                    if alias.get("version") == version
                    else None,
                    "created_at": manifest.get("created_at"),
                    "run_id": manifest.get("run_id"),
                    "metrics": manifest.get("metrics", {}),
                    "serving": serving,
                    "refused_reason": reason,
                }
            )
    return page(request, "adapters.html", rows=rows)


@router.get("/adapters/{name}/{version}")
def adapter_detail(
    request: Request, name: str, version: str, visitor: VisitorDep, store: StoreDep
) -> HTMLResponse:
    require(visitor, KeyScope.extract, "an adapter's report")
    manifest = _checked(store, name, version)
    eval_key = Layout.adapter(name, version, registry.EVAL_FILE)
    evaluation = store.read_json(eval_key) if store.exists(eval_key) else None
    alias = registry.read_alias(store, name) or {}
    serving, reason = _serving_state(request, name, version)
    charts = {
        filename: title
        for filename, title in CHARTS.items()
        if store.exists(Layout.adapter(name, version, filename))
    }
    return page(
        request,
        "adapter.html",
        name=name,
        version=version,
        manifest=manifest,
        sets=evaluation_sets(evaluation),
        charts=charts,
        promoted=alias.get("version") == version,
        serving=serving,
        refused_reason=reason,
    )


@router.get("/adapters/{name}/{version}/charts/{filename}")
def adapter_chart(
    name: str, version: str, filename: str, visitor: VisitorDep, store: StoreDep
) -> Response:
    require(visitor, KeyScope.extract, "an adapter's charts")
    _checked(store, name, version)
    key = Layout.adapter(name, version, filename)
    if filename not in CHARTS or not store.exists(key):
        raise PageError(404, "Not found", f"No chart {filename} for {name}@{version}.")
    return Response(store.read_bytes(key), media_type="image/png")


@router.post("/adapters/{name}/{version}/promote")
def promote(
    name: str,
    version: str,
    visitor: VisitorDep,
    store: StoreDep,
    reason: Annotated[str, Form(max_length=200)] = "",
) -> RedirectResponse:
    """Point `name` at `version`: serving follows (adapter.promoted). Rolling back is promoting
    the version the alias pointed at before."""
    require(visitor, KeyScope.admin, "promoting an adapter")
    _checked(store, name, version)
    try:
        registry.promote(store, name, version, reason=reason or "promoted in the console")
    except TiquError as exc:
        raise PageError(exc.status_code, "Not promoted", str(exc)) from exc
    return RedirectResponse(f"{CONSOLE_PATH}/adapters", status_code=303)
