"""The README's configuration table is the settings class, word for word."""

from __future__ import annotations

from pathlib import Path

from shared.cli import settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_table_matches_settings() -> None:
    assert settings_markdown() in README.read_text(encoding="utf-8"), (
        "README configuration table is out of date: run `make docs`"
    )


def test_every_setting_has_a_description() -> None:
    from shared.settings import Settings

    missing = [name for name, f in Settings.model_fields.items() if not f.description]
    assert missing == []
