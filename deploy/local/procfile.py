"""`make up`: write the Procfile honcho runs on this machine, from the repository's Procfile.

- `redis` is added when no Redis answers on TIQU_REDIS_URL (a local one: AOF persistence in
  var/redis, `maxmemory-policy noeviction`, as in docker-compose.yml), so that `make down` stops
  it again; a Redis that already answers is left alone.
- A process whose program is not installed (prometheus, prometheus-redis-exporter) is left out,
  with a note.
- Each command's output goes to LOG_DIR/<name>.log.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: `python deploy/local/procfile.py`
    sys.path.insert(0, str(ROOT))

LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")  # honcho's own Procfile syntax
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse(text: str) -> dict[str, str]:
    """Process name -> command, in file order; comments and blank lines are skipped."""
    processes: dict[str, str] = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            processes[match.group(1)] = match.group(2).strip()
    return processes


def answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def program(command: str) -> str:
    """The program a command runs (after any leading `env NAME=VALUE ...`)."""
    words = shlex.split(command)
    if words and words[0] == "env":
        words = [w for w in words[1:] if "=" not in w] or [""]
    return words[0] if words else ""


def redis_command(url: str, data_dir: str) -> str:
    parsed = urlparse(url)
    port = parsed.port or 6379
    return (
        f"redis-server --bind 127.0.0.1 --port {port} --dir {data_dir} --appendonly yes "
        "--appendfsync everysec --maxmemory-policy noeviction --save ''"
    )


def plan(
    processes: dict[str, str],
    *,
    redis_url: str,
    redis_answers: bool,
    redis_dir: str,
    which: Callable[[str], str | None] = shutil.which,
) -> tuple[dict[str, str], list[str]]:
    """The processes to run here, and a note for each change made to the list.

    Raises:
        SystemExit: Redis does not answer and cannot be started here.
    """
    chosen: dict[str, str] = {}
    notes: list[str] = []
    if not redis_answers:
        host = urlparse(redis_url).hostname or "127.0.0.1"
        if host not in LOCAL_HOSTS:
            raise SystemExit(f"Redis at {redis_url} does not answer, and it is not local: start it")
        if which("redis-server") is None:
            raise SystemExit(
                f"Redis at {redis_url} does not answer and redis-server is not installed "
                "(Debian: apt-get install redis-server)"
            )
        chosen["redis"] = redis_command(redis_url, redis_dir)
        notes.append(f"redis: none answers on {redis_url}; starting one (data in {redis_dir})")
    else:
        notes.append(f"redis: using the one answering on {redis_url}")
    for name, command in processes.items():
        binary = program(command)
        if "/" not in binary and which(binary) is None:
            notes.append(f"{name}: left out, `{binary}` is not installed")
            continue
        chosen[name] = command
    return chosen, notes


def render(processes: dict[str, str], log_dir: str) -> str:
    lines = ["# Written by deploy/local/procfile.py for `make up`; edit the repository's Procfile."]
    for name, command in processes.items():
        log = shlex.quote(f"{log_dir}/{name}.log")
        lines.append(f"{name}: exec {command} >>{log} 2>&1")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procfile", default="Procfile")
    parser.add_argument("--out", default="var/run/Procfile")
    parser.add_argument("--log-dir", default="var/log")
    parser.add_argument("--redis-dir", default="var/redis")
    args = parser.parse_args(argv)

    from shared.settings import get_settings

    url = get_settings().redis_url
    processes = parse(Path(args.procfile).read_text(encoding="utf-8"))
    chosen, notes = plan(
        processes, redis_url=url, redis_answers=answers(url), redis_dir=args.redis_dir
    )
    for directory in (Path(args.out).parent, Path(args.log_dir), Path(args.redis_dir)):
        directory.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(chosen, args.log_dir), encoding="utf-8")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
