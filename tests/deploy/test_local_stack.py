"""`make up` / `make down` (honcho and the Procfile) and `make tools`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy.deploy_support import (
    DEPLOY,
    PROMETHEUS,
    ROOT,
    command_option,
    load_script,
    parse_cli,
    tiqu_argv,
)
from tests.support import free_port

PROCFILE = load_script(DEPLOY / "local" / "procfile.py")
PROCESSES = PROCFILE.parse((ROOT / "Procfile").read_text(encoding="utf-8"))


# -- the Procfile ----------------------------------------------------------------------------


def test_procfile_runs_every_role() -> None:
    roles = {name: tiqu_argv(command) for name, command in PROCESSES.items()}
    assert roles["ingest-api"][:2] == ["api", "ingest"]
    assert roles["gateway"][:2] == ["api", "serve"]
    assert roles["engine"][:2] == ["serve", "engine"]
    workers = {argv[1] for argv in roles.values() if argv and argv[0] == "worker"}
    assert workers == {"ingest", "distill", "train", "batch"}
    assert {"prometheus", "redis-exporter"} <= set(PROCESSES)


def test_procfile_commands_parse() -> None:
    for name, command in PROCESSES.items():
        argv = tiqu_argv(command)
        if argv is not None:
            parse_cli(argv)
            assert command.split()[0] in ("env", ".venv/bin/tiqu"), name


def test_parse_cli_rejects_what_the_cli_rejects() -> None:
    for wrong in (["worker", "bogus"], ["api", "ingest", "--prot", "1"], ["serve", "engin"]):
        with pytest.raises(Exception, match=r"bogus|--prot|engin"):
            parse_cli(wrong)


def test_procfile_ports_are_the_local_scrape_targets() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.local.yml").read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]
    }
    for name, command in PROCESSES.items():
        argv = tiqu_argv(command)
        if argv and argv[0] == "api":
            port = command_option(argv, "--port")
        elif argv and argv[0] == "worker":
            port = command.split("TIQU_WORKER_METRICS_PORT=")[1].split()[0]
        else:
            continue
        assert targets[name] == f"127.0.0.1:{port}", name
    assert "127.0.0.1:9090" in PROCESSES["prometheus"]
    assert "prometheus.local.yml" in PROCESSES["prometheus"]
    assert targets["redis"].split(":")[1] in PROCESSES["redis-exporter"]


def installed(*present: str):
    return lambda program: f"/usr/bin/{program}" if program in present else None


def test_plan_leaves_out_programs_that_are_not_installed() -> None:
    chosen, notes = PROCFILE.plan(
        PROCESSES,
        redis_url="redis://127.0.0.1:6379/0",
        redis_answers=True,
        redis_dir="var/redis",
        which=installed("redis-server"),
    )
    assert "prometheus" not in chosen and "redis-exporter" not in chosen
    assert "redis" not in chosen, "a Redis that answers is used, not started"
    assert "gateway" in chosen and "engine" in chosen
    assert any("prometheus: left out" in note for note in notes)
    with_prometheus, _ = PROCFILE.plan(
        PROCESSES,
        redis_url="redis://127.0.0.1:6379/0",
        redis_answers=True,
        redis_dir="var/redis",
        which=installed("prometheus"),
    )
    assert "prometheus" in with_prometheus


def test_plan_starts_redis_when_none_answers() -> None:
    chosen, _ = PROCFILE.plan(
        {},
        redis_url="redis://localhost:6390/2",
        redis_answers=False,
        redis_dir="var/redis",
        which=installed("redis-server"),
    )
    command = chosen["redis"]
    assert "--port 6390" in command and "--dir var/redis" in command
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    with pytest.raises(SystemExit, match="not local"):
        PROCFILE.plan(
            {}, redis_url="redis://redis.example:6379/0", redis_answers=False, redis_dir="x"
        )
    with pytest.raises(SystemExit, match="redis-server is not installed"):
        PROCFILE.plan(
            {}, redis_url="redis://127.0.0.1:6379/0", redis_answers=False, redis_dir="x",
            which=installed(),
        )  # fmt: skip


def test_rendered_procfile_logs_each_process() -> None:
    text = PROCFILE.render({"a": "sleep 1", "b": "env X=1 sleep 2"}, "var/log")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "a: exec sleep 1 >>var/log/a.log 2>&1",
        "b: exec env X=1 sleep 2 >>var/log/b.log 2>&1",
    ]


# -- make up / make down ---------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] != "Z"


@pytest.mark.integration
def test_make_up_and_down(tmp_path: Path, redis_url: str) -> None:
    """`make up` starts the Procfile's processes in the background with their logs; `make down`
    stops every one of them."""
    port = free_port()
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        f"web: {ROOT}/.venv/bin/python -m http.server {port} --bind 127.0.0.1\n"
        "sleeper: env NAME=value sleep 600\n"
        "missing: a-program-that-is-not-installed --flag\n"
    )
    env = {
        **os.environ,
        "PROCFILE": str(procfile),
        "RUN_DIR": str(tmp_path / "run"),
        "LOG_DIR": str(tmp_path / "log"),
        "TIQU_REDIS_URL": redis_url,
    }
    # -o: never reinstall the virtualenv from inside a test.
    make = ["make", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed"]
    up = subprocess.run([*make, "up"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "missing: left out" in up.stdout
        pid = int((tmp_path / "run" / "honcho.pid").read_text())
        assert alive(pid)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, (tmp_path / "log" / "honcho.log").read_text()
                time.sleep(0.2)
        log = (tmp_path / "log" / "honcho.log").read_text()
        children = [int(p) for p in re.findall(r"started \(pid=(\d+)\)", log)]
        assert len(children) == 2 and all(alive(child) for child in children)
        for name in ("web", "sleeper"):
            assert (tmp_path / "log" / f"{name}.log").exists(), name
        again = subprocess.run([*make, "up"], env=env, capture_output=True, text=True, timeout=60)
        assert "already running" in again.stdout
        ps = subprocess.run([*make, "ps"], env=env, capture_output=True, text=True, timeout=60)
        assert "web" in ps.stdout and "sleeper" in ps.stdout
    finally:
        down = subprocess.run([*make, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped" in down.stdout
    assert not (tmp_path / "run" / "honcho.pid").exists()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in [pid, *children]):
        assert time.monotonic() < deadline, "processes left running after make down"
        time.sleep(0.1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
    again = subprocess.run([*make, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "not running" in again.stdout


# -- make tools ------------------------------------------------------------------------------


def test_tools_never_fails_the_build_without_apt(tmp_path: Path) -> None:
    """Where promtool is missing and apt-get is not available, `make tools` says why and goes on."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("bash", "dirname", "mkdir", "id", "head", "env"):
        found = shutil.which(program)
        assert found
        (bin_dir / program).symlink_to(found)
    result = subprocess.run(
        [
            "bash",
            str(DEPLOY / "local" / "ensure_debian_tool.sh"),
            "promtool",
            "prometheus",
            "tests/deploy skips the promtool checks",
        ],
        env={"PATH": str(bin_dir), "TOOLS_LOG": str(tmp_path / "tools.log")},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0
    assert "promtool not installed: apt-get is not available" in result.stderr
