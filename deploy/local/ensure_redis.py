"""Make sure Redis answers on TIQU_REDIS_URL; start a local redis-server when it does not.

Used by `make test` and `make demo` so they work on a machine where nobody started Redis.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from urllib.parse import urlparse

import redis

from shared.settings import get_settings


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def main() -> int:
    url = get_settings().redis_url
    if answers(url):
        return 0
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"Redis at {url} does not answer, and it is not local: start it.", file=sys.stderr)
        return 1
    server = shutil.which("redis-server")
    if server is None:
        print(
            f"Redis at {url} does not answer and redis-server is not installed "
            "(Debian: apt-get install redis-server).",
            file=sys.stderr,
        )
        return 1
    subprocess.run(
        [
            server,
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    for _ in range(50):
        if answers(url):
            print(f"started redis-server on port {port}")
            return 0
        time.sleep(0.1)
    print(f"redis-server started but {url} does not answer", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
