"""The extraction schema: default fields, validation messages, user-supplied schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.schema import DEFAULT_SCHEMA, ExtractionSchema, SchemaFileError, get_schema


def test_default_fields_are_nullable_strings() -> None:
    schema = ExtractionSchema(DEFAULT_SCHEMA)
    assert schema.field_names == ("name", "phone", "email", "address", "question")
    assert schema.errors(schema.empty()) == []
    assert schema.errors({**schema.empty(), "phone": "13800138000"}) == []


def test_grounding_rules_per_field() -> None:
    schema = ExtractionSchema(DEFAULT_SCHEMA)
    rules = {f.name: (f.grounding, f.normalize) for f in schema.fields}
    assert rules["phone"] == ("exact", "phone")
    assert rules["email"] == ("exact", "email")
    assert rules["question"] == ("coverage", "text")


def test_errors_name_the_field() -> None:
    schema = ExtractionSchema(DEFAULT_SCHEMA)
    errors = schema.errors({**schema.empty(), "phone": 138, "extra": "x"})
    assert any(e.startswith("phone:") for e in errors)
    assert any("extra" in e for e in errors)
    assert schema.errors({"name": "张三"})  # missing required fields


def test_decoding_schema_drops_tiqu_keywords() -> None:
    decoding = ExtractionSchema(DEFAULT_SCHEMA).decoding_schema()
    assert "x-tiqu-grounding" not in json.dumps(decoding)
    assert decoding["properties"]["email"]["type"] == ["string", "null"]


def test_version_changes_with_content() -> None:
    other = json.loads(json.dumps(DEFAULT_SCHEMA))
    other["properties"]["name"]["description"] = "changed"
    assert ExtractionSchema(DEFAULT_SCHEMA).version != ExtractionSchema(other).version


def test_user_schema_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import get_settings

    path = tmp_path / "order.json"
    path.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {"order_id": {"type": ["string", "null"]}},
                "required": ["order_id"],
            }
        )
    )
    monkeypatch.setenv("TIQU_SCHEMA_PATH", str(path))
    get_settings.cache_clear()
    assert get_schema().field_names == ("order_id",)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid UTF-8 JSON"),
        ('{"type": "array"}', "object with `properties`"),
        ('{"type": "object", "properties": {}}', "no properties"),
        ('{"type": 5, "properties": {}}', "not a valid JSON Schema"),
    ],
)
def test_bad_user_schema_is_explained(tmp_path: Path, content: str, message: str) -> None:
    from shared.schema import load_schema_file

    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SchemaFileError, match=message):
        load_schema_file(path)


def test_missing_schema_file(tmp_path: Path) -> None:
    from shared.schema import load_schema_file

    with pytest.raises(SchemaFileError, match="does not exist"):
        load_schema_file(tmp_path / "nope.json")
