"""Write `.env.example` from the settings class (`make docs`); tests/deploy keeps them identical.

Every setting is listed with its description and its default. A setting without a default
(`None`) is written commented out, as an empty value would not mean "unset". The variables that
only docker-compose.yml reads (MinIO and Grafana administrators) follow the settings.
"""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: `python deploy/local/env_example.py`
    sys.path.insert(0, str(ROOT))

from shared.settings import Settings  # noqa: E402

ENV_EXAMPLE = ROOT / ".env.example"
WIDTH = 100

HEADER = """\
# tiqu configuration: copy to `.env` and edit. Generated from shared/settings.py by `make docs`;
# do not edit by hand (tests/deploy fails when this file is stale).
#
# Every tiqu process reads `.env` from its working folder, and docker-compose.yml passes it to
# every tiqu container (the compose file then sets the addresses of Redis, MinIO, vLLM and the
# gateway itself). Each line shows the default: delete the lines you do not change, or leave them.
# Values marked [secret] are credentials: keep `.env` out of version control (it is ignored).
"""

# Read by docker-compose.yml only: (variable, value written here, description).
COMPOSE_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("MINIO_ROOT_USER", "tiqu-admin", "MinIO administrator user."),
    (
        "MINIO_ROOT_PASSWORD",
        "",
        "MinIO administrator password, at least 8 characters; required by docker compose. [secret]",
    ),
    (
        "GRAFANA_ADMIN_PASSWORD",
        "",
        "Password of Grafana's `admin` user; required by docker compose. [secret]",
    ),
)
COMPOSE_NOTE = """\
# docker compose also requires TIQU_S3_ACCESS_KEY and TIQU_S3_SECRET_KEY above: the `createbuckets`
# container creates that MinIO user for the services, with read-write access to the bucket.
"""


def sections() -> dict[str, str]:
    """Field name -> the `# Heading` comment above its group in shared/settings.py."""
    found: dict[str, str] = {}
    heading = ""
    for line in inspect.getsource(Settings).splitlines():
        comment = re.match(r"^    # (.+)$", line)
        if comment:
            heading = comment.group(1).strip()
            continue
        field = re.match(r"^    ([a-z][a-z0-9_]*): ", line)
        if field and field.group(1) in Settings.model_fields:
            found[field.group(1)] = heading
    return found


def env_value(default: Any) -> str | None:
    """How `.env` spells a default; None for "unset" (no default)."""
    if default is None:
        return None
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    if isinstance(default, bool):
        return "true" if default else "false"
    text = str(default)
    if re.search(r"[\s#'\"$\\`]", text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def comment(text: str) -> str:
    return textwrap.fill(text, width=WIDTH, initial_indent="# ", subsequent_indent="# ")


def render() -> str:
    """The full text of `.env.example`."""
    headings = sections()
    parts = [HEADER]
    current = None
    for name, field in Settings.model_fields.items():
        heading = headings.get(name, "")
        if heading != current:
            parts.append(f"\n# ===== {heading} =====\n" if heading else "\n")
            current = heading
        description = field.description or ""
        if field.annotation is SecretStr or "SecretStr" in str(field.annotation):
            description += " [secret]"
        value = env_value(field.default)
        variable = f"TIQU_{name.upper()}"
        line = f"# {variable}=" if value is None else f"{variable}={value}"
        parts.append(f"\n{comment(description)}\n{line}\n")
    parts.append("\n# ===== docker compose only =====\n")
    parts.append(COMPOSE_NOTE)
    for variable, value, description in COMPOSE_VARIABLES:
        parts.append(f"\n{comment(description)}\n{variable}={value}\n")
    return "".join(parts)


def main() -> None:
    ENV_EXAMPLE.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
