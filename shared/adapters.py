"""The adapter registry in the object store: immutable versions, one promoted alias per name.

    adapters/<name>/<version>/adapter_model.safetensors, adapter_config.json   (peft format)
    adapters/<name>/<version>/manifest.json     base model, data, hyperparameters, metrics,
                                                sha256 of each adapter file, probe answer
    adapters/<name>/<version>/eval.json, report.md, *.png
    adapters/<name>/<version>/promoted.json     the version was promoted once (when first)
    adapters/<name>/alias.json                  the promoted version

A version number (v1, v2, ...) is claimed by an exclusive create of its `claim.json`, so two
trainings never share one (a retried training finds its own claim again); its weights are written
once, and `manifest.json` last: a version without a manifest is an unfinished registration that
nothing lists or serves. The manifest records the sha256 of every adapter file under its name
(`files`) and one digest of them all (`adapter_sha256`): serving refuses a version whose files,
weights or `adapter_config.json` alike, differ in any byte. Training writes here; serving reads
the alias, verifies and lints what it loads, and follows `adapter.promoted` events.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from shared.anchors import TARGET_FORMS, TargetForm
from shared.errors import ConflictError, InvalidInputError, NotFoundError
from shared.normalize import normalize_value
from shared.queue import publish_event
from shared.schema import ExtractionSchema
from shared.store import Layout, Store

log = logging.getLogger(__name__)

ADAPTER_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")
VERSION = re.compile(r"^v([1-9]\d*)$")
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
MANIFEST_FILE = "manifest.json"
CLAIM_FILE = "claim.json"
PROMOTED_FILE = "promoted.json"
# What vLLM loads: all of an adapter, hashed whole, downloaded alone into its serving folder.
ADAPTER_FILES = (WEIGHTS_FILE, CONFIG_FILE)
EVAL_FILE = "eval.json"
# The extraction schema the adapter was trained on: serving prompts and constrains with it.
SCHEMA_FILE = "schema.json"
REPORT_FILE = "report.md"
# A complaint with known values. Training records in the manifest (`probe`) the values its adapter
# extracts right from it; serving loads a version only if the engine's answer repeats them.
PROBE_COMPLAINT = (
    "我叫王小明，电话13800138000，邮箱wxm@example.com，住北京市朝阳区建国路1号。"
    "快递丢了，请尽快处理。"
)
PROBE_VALUES = {
    "name": "王小明",
    "phone": "13800138000",
    "email": "wxm@example.com",
    "address": "北京市朝阳区建国路1号",
}
# Weights a servable LoRA adapter must not carry: vLLM loads low-rank deltas of linear layers
# only, never replaced embeddings or LM heads.
FORBIDDEN_WEIGHTS = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_out")


def check_name(name: str) -> str:
    if not ADAPTER_NAME.match(name):
        raise InvalidInputError(
            f"adapter name {name!r} must be lowercase letters, digits, '-' or '_' "
            "(at most 63, starting with a letter or digit)",
            param="name",
        )
    return name


def parse_ref(reference: str) -> tuple[str, str | None]:
    """`name`, `name@v3`, `name:v3` or `name/v3` as (name, version or None for the promoted one)."""
    name, _, version = reference.replace("/", ":").replace("@", ":").partition(":")
    check_name(name)
    if version and not VERSION.match(version):
        raise InvalidInputError(f"adapter version {version!r} must look like v1", param="version")
    return name, version or None


def names(store: Store) -> list[str]:
    return [n for n in store.children("adapters") if ADAPTER_NAME.match(n)]


def versions(store: Store, name: str) -> list[str]:
    """Registered versions of `name`, oldest first."""
    found = [
        v for v in _claimed(store, name) if store.exists(Layout.adapter(name, v, MANIFEST_FILE))
    ]
    return sorted(found, key=version_number)


def load_manifest(store: Store, name: str, version: str) -> dict[str, Any] | None:
    key = Layout.adapter(name, version, MANIFEST_FILE)
    return store.read_json(key) if store.exists(key) else None


def read_alias(store: Store, name: str) -> dict[str, Any] | None:
    key = Layout.adapter_alias(name)
    return store.read_json(key) if store.exists(key) else None


def resolve(store: Store, reference: str) -> dict[str, Any]:
    """The manifest of `name[:version]`; without a version, of the promoted one."""
    name, version = parse_ref(reference)
    if version is None:
        alias = read_alias(store, name)
        if alias is None:
            known = versions(store, name)
            hint = f"; versions: {', '.join(known)}" if known else ""
            raise NotFoundError(f"adapter {name} has no promoted version{hint}", param="adapter")
        version = alias["version"]
    manifest = load_manifest(store, name, version)
    if manifest is None:
        raise NotFoundError(f"adapter {name}:{version} not found", param="adapter")
    return manifest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(folder: Path) -> dict[str, str]:
    """The sha256 of every file under `folder`, by its path relative to it."""
    return {
        path.relative_to(folder).as_posix(): file_sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def files_digest(files: Mapping[str, str]) -> str:
    """One sha256 over file names and their hashes: a changed, added, removed or renamed file
    changes it."""
    listing = "".join(f"{name}\t{sha256}\n" for name, sha256 in sorted(files.items()))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def integrity_problems(folder: Path, manifest: Mapping[str, Any]) -> list[str]:
    """How the adapter in `folder` differs from the files its manifest recorded (empty: every
    file identical, none missing and none added)."""
    recorded: Mapping[str, str] = manifest.get("files") or {}
    actual = files_sha256(folder)
    problems = [
        f"{name} hash {actual[name][:12]} does not match its manifest ({str(sha256)[:12]})"
        for name, sha256 in sorted(recorded.items())
        if name in actual and actual[name] != sha256
    ]
    problems += [f"{name} is missing" for name in sorted(set(recorded) - set(actual))]
    problems += [f"{name} is not in its manifest" for name in sorted(set(actual) - set(recorded))]
    return problems


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names of a safetensors file, read from its header alone."""
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    return [key for key in header if key != "__metadata__"]


def lint(folder: Path, *, max_rank: int, trained_on_sha256: str, base_sha256: str) -> list[str]:
    """Every reason the adapter in `folder` could not be served on this base (empty: servable)."""
    missing = [f for f in ADAPTER_FILES if not (folder / f).is_file()]
    if missing:
        return [f"missing {', '.join(missing)}"]
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft type {config.get('peft_type')!r} is not LORA")
    ranks = [int(config.get("r") or 0), *map(int, (config.get("rank_pattern") or {}).values())]
    if max(ranks) > max_rank:
        problems.append(f"rank {max(ranks)} is above the serving limit {max_rank}")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']} cannot be served")
    keys = safetensors_keys(folder / WEIGHTS_FILE)
    forbidden = sorted({p for key in keys for p in key.split(".") if p in FORBIDDEN_WEIGHTS})
    if forbidden:
        problems.append(f"carries {', '.join(forbidden)} weights (embedding or LM head)")
    if trained_on_sha256 != base_sha256:
        problems.append(
            f"trained on base weights {trained_on_sha256[:12]}, the base model here is "
            f"{base_sha256[:12]}"
        )
    return problems


def require_lint(folder: Path, *, max_rank: int, trained_on_sha256: str, base_sha256: str) -> None:
    problems = lint(
        folder, max_rank=max_rank, trained_on_sha256=trained_on_sha256, base_sha256=base_sha256
    )
    if problems:
        raise InvalidInputError(
            "adapter fails lint: " + "; ".join(problems), param="adapter", code="lint_failed"
        )


def claim_version(store: Store, name: str, train_run_id: str) -> str:
    """The version number for the adapter of one training: claimed once, found again on retry."""
    check_name(name)
    for version in _claimed(store, name):
        key = Layout.adapter(name, version, CLAIM_FILE)
        # A folder without its claim yet is another training's claim in progress.
        if store.exists(key) and store.read_json(key).get("train_run_id") == train_run_id:
            return version
    number = max((version_number(v) for v in _claimed(store, name)), default=0) + 1
    data = json.dumps(
        {"train_run_id": train_run_id, "claimed_at": datetime.now(UTC).isoformat()}
    ).encode("utf-8")
    while not store.create(Layout.adapter(name, f"v{number}", CLAIM_FILE), data):
        number += 1
    return f"v{number}"


def find_by_train_run(store: Store, name: str, train_run_id: str) -> dict[str, Any] | None:
    """The registered version a training produced, if it got that far."""
    for version in versions(store, name):
        manifest = load_manifest(store, name, version) or {}
        if manifest.get("train_run_id") == train_run_id:
            return manifest
    return None


def register(
    store: Store,
    name: str,
    version: str,
    folder: Path,
    manifest: dict[str, Any],
    extra_files: Mapping[str, bytes],
) -> dict[str, Any]:
    """Store the adapter in `folder` as `name:version` (claimed before); returns its manifest.

    The manifest goes last, making the version visible. A registered version is never
    overwritten: the same adapter files again return it, other files are refused.
    """
    files = {filename: file_sha256(folder / filename) for filename in ADAPTER_FILES}
    existing = load_manifest(store, name, version)
    if existing is not None:
        if existing.get("adapter_sha256") != files_digest(files):
            raise ConflictError(f"adapter {name}:{version} is registered with other files")
        return existing
    for filename in ADAPTER_FILES:
        store.write_bytes(Layout.adapter(name, version, filename), (folder / filename).read_bytes())
    write_files(store, name, version, extra_files)
    full = {
        **manifest,
        "name": name,
        "version": version,
        "weights_sha256": files[WEIGHTS_FILE],
        "files": files,
        "adapter_sha256": files_digest(files),
        "created_at": datetime.now(UTC).isoformat(),
    }
    store.write_json(Layout.adapter(name, version, MANIFEST_FILE), full)
    log.info("adapter registered", extra={"adapter": name, "version": version})
    return full


def write_files(store: Store, name: str, version: str, files: Mapping[str, bytes]) -> None:
    """Add or refresh evaluation outputs of a version; its weights and manifest stay as they are."""
    for filename, data in files.items():
        if (
            filename in (*ADAPTER_FILES, MANIFEST_FILE, CLAIM_FILE, PROMOTED_FILE)
            or "/" in filename
        ):
            raise ValueError(f"{filename} is not an evaluation output")
        store.write_bytes(Layout.adapter(name, version, filename), data)


def probe_matches(fields: Mapping[str, Any], schema: ExtractionSchema) -> dict[str, str]:
    """The fields of an answer to `PROBE_COMPLAINT` that hold its known value (compared after
    the field's normalization, as evaluation compares)."""
    matched = {}
    for spec in schema.fields:
        value, known = fields.get(spec.name), PROBE_VALUES.get(spec.name)
        if not isinstance(value, str) or known is None:
            continue
        if normalize_value(value, spec.normalize) == normalize_value(known, spec.normalize):
            matched[spec.name] = value
    return matched


def target_form(manifest: Mapping[str, Any]) -> TargetForm:
    """How a version writes free-text fields (`shared.anchors`); `copy` for versions trained
    before the form was recorded."""
    form = (manifest.get("hyperparameters") or {}).get("target_form", "copy")
    return form if form in TARGET_FORMS else "copy"


def load_schema(store: Store, name: str, version: str) -> ExtractionSchema | None:
    """The schema `name:version` was trained on (None for adapters registered without one)."""
    key = Layout.adapter(name, version, SCHEMA_FILE)
    return ExtractionSchema(store.read_json(key)) if store.exists(key) else None


def schema_file(schema: ExtractionSchema) -> dict[str, bytes]:
    """The registry file recording `schema` beside an adapter's weights."""
    return {SCHEMA_FILE: json.dumps(schema.json_schema, ensure_ascii=False).encode("utf-8")}


def download(store: Store, name: str, version: str, dest: Path) -> Path:
    """The adapter files of `name:version` in `dest`, ready for peft or vLLM (unverified: see
    `integrity_problems`)."""
    dest.mkdir(parents=True, exist_ok=True)
    for filename in ADAPTER_FILES:
        (dest / filename).write_bytes(store.read_bytes(Layout.adapter(name, version, filename)))
    return dest


def promote(store: Store, name: str, version: str, *, reason: str) -> dict[str, Any]:
    """Point the `name` alias at `version`, mark the version as promoted once, and announce it
    (`adapter.promoted`)."""
    if load_manifest(store, name, version) is None:
        raise NotFoundError(f"adapter {name}:{version} not found", param="version")
    first = json.dumps({"promoted_at": datetime.now(UTC).isoformat(), "reason": reason})
    store.create(Layout.adapter(name, version, PROMOTED_FILE), first.encode("utf-8"))
    previous = read_alias(store, name)
    alias = {
        "name": name,
        "version": version,
        "previous_version": previous["version"] if previous else None,
        "reason": reason,
        "promoted_at": datetime.now(UTC).isoformat(),
    }
    store.write_json(Layout.adapter_alias(name), alias)
    event = {k: alias[k] for k in ("name", "version", "previous_version", "reason")}
    try:
        publish_event("adapter.promoted", event)
    except redis.RedisError as exc:
        # The alias in the store is the truth; subscribers that missed the event read it.
        log.warning("promotion event not published", extra={"error_class": type(exc).__name__})
    return alias


def was_promoted(store: Store, name: str, version: str) -> bool:
    """Whether `name:version` has been promoted (the alias may have moved on since)."""
    return store.exists(Layout.adapter(name, version, PROMOTED_FILE))


def regressions(
    new: Mapping[str, float | None], current: Mapping[str, float | None], margin: float
) -> list[str]:
    """Fields whose score `new` falls more than `margin` below `current` (empty: as good)."""
    return [
        name
        for name, before in current.items()
        if before is not None and (new.get(name) or 0.0) < before - margin
    ]


def _claimed(store: Store, name: str) -> list[str]:
    return [v for v in store.children(Layout.adapter_dir(name)) if VERSION.match(v)]


def version_number(version: str) -> int:
    """3 for `v3`: versions sort by number, not as text (`v10` after `v9`)."""
    match = VERSION.match(version)
    assert match is not None
    return int(match.group(1))
