"""Print where the promoted adapter's evaluation report is (for `make demo`'s last lines)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared import adapters  # noqa: E402
from shared.settings import get_settings  # noqa: E402
from shared.store import Layout, Store  # noqa: E402

store = Store.from_settings()
name = get_settings().adapter_name
alias = adapters.read_alias(store, name)
if alias is None:
    print(f"(adapter {name} has no promoted version)")
else:
    print(store.uri(Layout.adapter(name, alias["version"], adapters.REPORT_FILE)))
