"""Wait until a URL answers 200 (a service's /readyz), with a spinner; exit 1 on timeout."""

from __future__ import annotations

import argparse
import sys
import time

import httpx
from rich.console import Console


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    console = Console(stderr=True)
    deadline = time.monotonic() + args.timeout
    last = "no answer yet"
    with console.status(f"waiting for {args.url}") as status:
        while time.monotonic() < deadline:
            try:
                response = httpx.get(args.url, timeout=2)
                if response.status_code == 200:
                    return 0
                last = response.text[:300]
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            left = deadline - time.monotonic()
            status.update(f"waiting for {args.url} ({left:.0f} s left): {last}")
            time.sleep(1)
    console.print(f"[red]{args.url} not ready after {args.timeout:.0f} s:[/] {last}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
