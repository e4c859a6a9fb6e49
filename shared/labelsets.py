"""Label sets: named, versioned sets of hand-labelled complaints that training uses beside a run.

    labelsets/<name>/<version>/labels.jsonl     the rows, in the distill record format
    labelsets/<name>/<version>/manifest.json    what the version added, when, its row count

A version is immutable. Accepting a label writes version N+1: version N's rows with the new one
added, or replacing the earlier label of the same source row (dataset, distill run, row id).
`labels.jsonl` is the version's claim: it is created whole and only if absent (`Store.create`),
so of two writers racing for one number, one wins and the other builds the next version on top
of the winner's rows; no accepted label is lost. The manifest is written after it and only
describes the version: a version exists as soon as its rows do.

Rows are distill records (messages from `shared.prompts`, `id`, `label`) plus their `source`, so
training reads them with the parser it reads distill runs with. A label is accepted only when it
passes the checks distillation applies to a teacher's label: every value of the schema's type
and grounded in the complaint text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from shared.adapters import ADAPTER_NAME, VERSION, version_number
from shared.errors import InvalidInputError, NotFoundError
from shared.normalize import first_ungrounded, trimmed
from shared.prompts import student_messages, student_target
from shared.schema import ExtractionSchema, get_schema
from shared.store import Layout, Store

# Named and versioned as adapters are: a name is a folder in the store, versions are v1, v2, …
LABELSET_NAME = ADAPTER_NAME
LABELS_FILE = "labels.jsonl"
MANIFEST_FILE = "manifest.json"
DEFAULT_NAME = "corrections"
# How much of a refused value a message quotes: enough to recognise it, not a whole complaint.
_QUOTED_CHARS = 40


@dataclass(frozen=True)
class Source:
    """Where a hand-labelled row comes from: a row of a distill run's dataset."""

    dataset_id: str
    run_id: str
    row_id: str


@dataclass(frozen=True)
class Saved:
    """The version holding an accepted label; `added` is False when it held it already."""

    name: str
    version: str
    rows: int
    added: bool

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"


def check_name(name: str) -> str:
    if not LABELSET_NAME.match(name):
        raise InvalidInputError(
            f"label set name {name!r} must be lowercase letters, digits, '-' or '_' "
            "(at most 63, starting with a letter or digit)",
            param="labels",
        )
    return name


def parse_ref(reference: str) -> tuple[str, str | None]:
    """`name` or `name@v3` as (name, version or None for the latest)."""
    name, _, version = reference.partition("@")
    check_name(name)
    if version and not VERSION.match(version):
        raise InvalidInputError(f"label set version {version!r} must look like v1", param="labels")
    return name, version or None


def names(store: Store) -> list[str]:
    return [n for n in store.children("labelsets") if LABELSET_NAME.match(n)]


def versions(store: Store, name: str) -> list[str]:
    """The versions of label set `name`, oldest first (a folder without rows is not one)."""
    found = [
        v
        for v in store.children(Layout.labelset_dir(name))
        if VERSION.match(v) and store.exists(Layout.labelset(name, v, LABELS_FILE))
    ]
    return sorted(found, key=version_number)


def pin(store: Store, reference: str) -> str:
    """`name@vN` for `reference`: the version it names, or the latest one; unknown ones are
    not found."""
    name, version = parse_ref(reference)
    known = versions(store, name)
    if not known:
        raise NotFoundError(f"label set {name} not found in {store.url}", param="labels")
    if version is None:
        version = known[-1]
    elif version not in known:
        raise NotFoundError(
            f"label set {name} has no version {version}; versions: {', '.join(known)}",
            param="labels",
        )
    return f"{name}@{version}"


def labels_key(reference: str) -> str:
    """The store key of a pinned version's rows (`name@vN`)."""
    name, version = parse_ref(reference)
    if version is None:
        raise InvalidInputError(f"label set {reference!r} names no version", param="labels")
    return Layout.labelset(name, version, LABELS_FILE)


def read_rows(store: Store, name: str, version: str) -> list[dict[str, Any]]:
    data = store.read_bytes(Layout.labelset(name, version, LABELS_FILE)).decode("utf-8")
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def read_manifest(store: Store, name: str, version: str) -> dict[str, Any] | None:
    key = Layout.labelset(name, version, MANIFEST_FILE)
    return store.read_json(key) if store.exists(key) else None


def label_refusal(label: Mapping[str, Any], text: str, schema: ExtractionSchema) -> str | None:
    """Why distillation would refuse `label` for `text` (naming the field), or None when it
    passes: each value of its field's type and pattern, and grounded in the text."""
    for spec in schema.fields:
        value = label.get(spec.name)
        if not schema.value_fits(spec.name, value):
            return (
                f"{spec.name} {_quoted(value)} is not a valid {spec.name}: the schema's type "
                "or pattern for it refuses this value"
            )
    ungrounded = first_ungrounded(schema, label, text)
    if ungrounded is None:
        return None
    spec = next(s for s in schema.fields if s.name == ungrounded)
    value = _quoted(label[ungrounded])
    if spec.grounding == "coverage":
        return (
            f"{ungrounded} {value} is not mostly made of the complaint's own words: "
            "copy it from the text"
        )
    return f"{ungrounded} {value} does not occur in the complaint text: copy it as written there"


def record(
    text: str, label: Mapping[str, Any], source: Source, schema: ExtractionSchema
) -> dict[str, Any]:
    """A label set row: the distill record of `text` with `label`, and where it comes from."""
    full = {name: label.get(name) for name in schema.field_names}
    return {
        "messages": [
            *student_messages(text, schema),
            {"role": "assistant", "content": student_target(full, schema)},
        ],
        "id": source.row_id,
        "label": full,
        "source": asdict(source),
    }


def source_of(row: Mapping[str, Any]) -> Source:
    return Source(**row["source"])


def accept(
    store: Store,
    name: str,
    text: str,
    values: Mapping[str, Any],
    source: Source,
    schema: ExtractionSchema | None = None,
) -> Saved:
    """Add the label `values` of `text` to label set `name` as its next version.

    Values are trimmed (an empty string is null) and checked as distillation checks a teacher's
    label; a refused label raises InvalidInputError naming the field and why, and writes nothing.
    When the latest version holds this very row already, it is returned as it is.
    """
    check_name(name)
    schema = schema or get_schema()
    label = {field: trimmed(values).get(field) for field in schema.field_names}
    refusal = label_refusal(label, text, schema)
    if refusal is not None:
        raise InvalidInputError(refusal, param="label", code="label_refused")
    row = record(text, label, source, schema)
    known = versions(store, name)
    number = version_number(known[-1]) if known else 0
    while True:
        rows = read_rows(store, name, f"v{number}") if number else []
        if row in rows:
            return Saved(name, f"v{number}", len(rows), added=False)
        kept = [r for r in rows if source_of(r) != source]
        merged = [*kept, row]
        version = f"v{number + 1}"
        if store.create(Layout.labelset(name, version, LABELS_FILE), _jsonl(merged)):
            break
        # Another writer took this number: build on its version instead.
        number += 1
    manifest = {
        "name": name,
        "version": version,
        "parent": f"v{number}" if number else None,
        "rows": len(merged),
        "added": asdict(source),
        "replaced": len(kept) < len(rows),
        "schema_version": schema.version,
        "created_at": datetime.now(UTC).isoformat(),
    }
    store.write_json(Layout.labelset(name, version, MANIFEST_FILE), manifest)
    return Saved(name, version, len(merged), added=True)


def accepted_rows(store: Store, dataset_id: str, run_id: str) -> dict[str, tuple[str, dict]]:
    """Rows of one distill run held by the latest version of any label set: row id →
    (`name@vN`, the accepted label)."""
    found: dict[str, tuple[str, dict]] = {}
    for name in names(store):
        known = versions(store, name)
        if not known:
            continue
        for row in read_rows(store, name, known[-1]):
            source = source_of(row)
            if source.dataset_id == dataset_id and source.run_id == run_id:
                found[source.row_id] = (f"{name}@{known[-1]}", row["label"])
    return found


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    lines = (json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)
    return "".join(lines).encode("utf-8")


def _quoted(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > _QUOTED_CHARS:
        text = text[:_QUOTED_CHARS] + "…"
    return f"“{text}”"
