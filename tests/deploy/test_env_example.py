""".env.example is the settings class: every setting, its description and default, generated."""

from __future__ import annotations

import pytest

from shared.settings import Settings
from tests.deploy.deploy_support import (
    DEPLOY,
    ROOT,
    SECRET_NAMES,
    SETTING_NAMES,
    env_name,
    load_script,
    read_env_file,
)

ENV_EXAMPLE = ROOT / ".env.example"


@pytest.fixture(scope="module")
def generator():
    return load_script(DEPLOY / "local" / "env_example.py")


def test_env_example_is_up_to_date(generator) -> None:
    assert ENV_EXAMPLE.read_text(encoding="utf-8") == generator.render(), (
        ".env.example is stale: run `make docs`"
    )


def test_every_setting_is_listed_with_its_description(generator) -> None:
    text = generator.render()
    listed = read_env_file(ENV_EXAMPLE, commented=True)
    missing = SETTING_NAMES - set(listed)
    assert not missing, f"settings missing from .env.example: {sorted(missing)}"
    for name, field in Settings.model_fields.items():
        first_words = " ".join((field.description or "").split()[:4])
        block = text.split(f"{env_name(name)}=")[0].rsplit("\n\n", 1)[-1]
        assert first_words in " ".join(block.replace("#", " ").split()), name


def test_values_written_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read back as the environment, .env.example configures exactly the defaults."""
    for name in list(SETTING_NAMES):
        monkeypatch.delenv(name, raising=False)
    for name, value in read_env_file(ENV_EXAMPLE).items():
        if name.startswith("TIQU_"):
            monkeypatch.setenv(name, value)
    from_file = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in list(SETTING_NAMES):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_file == defaults


def test_settings_without_default_are_commented_out() -> None:
    active = read_env_file(ENV_EXAMPLE)
    for name, field in Settings.model_fields.items():
        assert (env_name(name) in active) == (field.default is not None), name


def test_secrets_are_marked(generator) -> None:
    text = generator.render()
    for name in SECRET_NAMES:
        block = text.split(f"{name}=")[0].rsplit("\n\n", 1)[-1]
        assert "[secret]" in block, name


def test_compose_variables_follow_the_settings() -> None:
    listed = read_env_file(ENV_EXAMPLE)
    for variable in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert variable in listed
    assert listed["MINIO_ROOT_PASSWORD"] == "" and listed["GRAFANA_ADMIN_PASSWORD"] == "", (
        "no default passwords: compose must refuse to start until they are set"
    )
