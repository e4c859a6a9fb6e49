"""Rewrite the README configuration table from the settings class (`make docs`)."""

from __future__ import annotations

import re
from pathlib import Path

from shared.cli import settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def main() -> None:
    text = README.read_text(encoding="utf-8")
    block = f"{START}\n{settings_markdown()}\n{END}"
    updated = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    README.write_text(updated, encoding="utf-8")


if __name__ == "__main__":
    main()
