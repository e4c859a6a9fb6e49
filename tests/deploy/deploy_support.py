"""What the deployment tests share: the files, the settings' names, the CLI, metric names."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import SecretStr

from services.serve.engine import EngineCommand, engine_command
from shared.models import ResolvedModel
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"


# -- files -----------------------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: also its `!reset` and `!override` merge tags."""


def _tagged(loader: ComposeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return Tagged(tag_suffix, value)


class Tagged:
    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value

    def __repr__(self) -> str:
        return f"!{self.tag} {self.value!r}"


ComposeLoader.add_multi_constructor("!", _tagged)


def load_compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    return yaml.load((ROOT / name).read_text(encoding="utf-8"), Loader=ComposeLoader)


def merge_compose(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge of an override file into a base file (maps merge, `!reset` removes)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Tagged) and value.tag == "reset":
            merged.pop(key, None)
        elif isinstance(value, Tagged) and value.tag == "override":
            merged[key] = value.value
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_compose(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def read_env_file(path: Path, *, commented: bool = False) -> dict[str, str]:
    """NAME=VALUE lines of a .env-style file (also `# NAME=VALUE` ones when `commented`)."""
    pattern = r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$" if commented else r"^()([A-Z][A-Z0-9_]*)=(.*)$"
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(pattern, line)
        if match:
            value = match.group(3)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            found[match.group(2)] = value
    return found


def load_script(path: Path) -> ModuleType:
    """A deploy/ script as a module (deploy/ is not a package)."""
    name = "deploy_" + "_".join(path.relative_to(DEPLOY).with_suffix("").parts)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- compose interpolation -------------------------------------------------------------------

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolations(text: str) -> Iterator[tuple[str, str | None, str | None]]:
    """(variable, operator, default-or-message) of every `${...}` (not `$${...}`)."""
    for match in INTERPOLATION.finditer(text.replace("$$", "")):
        yield match.group(1), match.group(2), match.group(3)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution with `env` as the .env file."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if operator in (":-", "-") and (value is None or (operator == ":-" and value == "")):
            return argument or ""
        if operator in (":?", "?") and not value:
            raise KeyError(f"{name}: {argument}")
        return value or ""

    parts = text.split("$$")
    return "$".join(INTERPOLATION.sub(substitute, part) for part in parts)


# -- settings --------------------------------------------------------------------------------


def env_name(field: str) -> str:
    return f"TIQU_{field.upper()}"


SETTING_NAMES = {env_name(name) for name in Settings.model_fields}
SECRET_NAMES = {
    env_name(name)
    for name, field in Settings.model_fields.items()
    if "SecretStr" in str(field.annotation) or field.annotation is SecretStr
}


def default_of(variable: str) -> Any:
    return Settings.model_fields[variable.removeprefix("TIQU_").lower()].default


def same_value(variable: str, text: str) -> bool:
    """Whether `text`, as an environment value, means the setting's default."""
    parsed = Settings.model_validate({variable.removeprefix("TIQU_").lower(): text})
    return getattr(parsed, variable.removeprefix("TIQU_").lower()) == getattr(
        Settings.model_construct(), variable.removeprefix("TIQU_").lower()
    )


def tiqu_names(text: str) -> set[str]:
    return set(re.findall(r"\bTIQU_[A-Z0-9_]+\b", text))


# -- the CLI ---------------------------------------------------------------------------------


def parse_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse `tiqu ARGV` as the real CLI would, without running it.

    Returns the command's name and its parameters; raises the CLI's usage error for an unknown
    command, service, option or value.
    """
    import typer.main

    from shared.cli import app

    command: Any = typer.main.get_command(app)
    parent: Any = None
    name = "tiqu"
    args = list(argv)
    while hasattr(command, "resolve_command"):  # a group: find the subcommand
        context = command.make_context(name, args, parent=parent)
        protected = getattr(context, "_protected_args", None) or getattr(
            context, "protected_args", None
        )
        remaining = [*(protected or []), *context.args]
        found, sub, args = command.resolve_command(context, remaining)
        assert found is not None and sub is not None
        parent, name, command = context, found, sub
    context = command.make_context(name, args, parent=parent)
    return name, context.params


def command_option(argv: list[str], option: str) -> str | None:
    if option in argv:
        return argv[argv.index(option) + 1]
    return None


def gpu_engine_command(settings: Settings, argv: list[str]) -> EngineCommand:
    """What `tiqu serve engine` runs on a GPU node for the model folder that `argv` serves."""
    model = ResolvedModel(
        path=Path(command_option(argv, "--model") or ""),
        model_id="gemma-3-270m",
        weights_sha256="",
        chat_template_sha256="",
        eos_token="<end_of_turn>",
        eos_token_id=106,
    )
    return engine_command(settings, model, python="python3", hardware="gpu")


def tiqu_argv(command: str) -> list[str] | None:
    """The arguments after `tiqu` in a Procfile command line, or None if it runs something else."""
    words = shlex.split(command)
    while words and (words[0] == "env" or "=" in words[0]):
        words = words[1:]
    if words and Path(words[0]).name == "tiqu":
        return words[1:]
    return None


# -- metrics ---------------------------------------------------------------------------------

VLLM_METRICS = {
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:generation_tokens_total",
}
EXPORTER_METRICS = {"redis_key_size", "up"}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "le",
}


@cache
def defined_tiqu_metrics() -> frozenset[str]:
    """Every series name tiqu's code exposes, from its prometheus_client definitions."""
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(tiqu_[a-z0-9_]+)\"", re.S)
    names: set[str] = set()
    sources = [*ROOT.joinpath("shared").rglob("*.py"), *ROOT.joinpath("services").rglob("*.py")]
    for source in sources:
        for kind, name in pattern.findall(source.read_text(encoding="utf-8")):
            if kind == "Counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind in ("Histogram", "Summary"):
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
            else:
                names.add(name)
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, labels and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?(ms|[smhdwy])?(?![\w:])", " ", text)  # numbers, 1d
    names = set()
    for match in re.finditer(r"(?<![\w:])[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?", text):
        word = match.group(0).strip()
        if word.endswith("(") or match.group(0).rstrip().endswith("("):
            continue  # a function call
        if word in PROMQL_WORDS:
            continue
        names.add(word)
    return names
