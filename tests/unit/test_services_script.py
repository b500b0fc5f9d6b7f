"""`bash scripts/services up|status|down` (docs/try-every-sink.md), run as a user runs it: the servers
outlive `up`, the publish.toml it prints publishes through the real CLI, and `down` leaves no process
and no data behind. Postgres and moto's server only (about 10 s); the page itself was run by hand
with every server."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.helpers import REPO, cli_env, refunds_run_args, run_cli
from tests.services import daemon
from tests.services._process import _group_members

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = REPO / "scripts" / "services"


def services(state: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != daemon.ENV_DIR}
    env[daemon.ENV_DIR] = str(state)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def printed_file(stdout: str, path: Path) -> str:
    """The copy of ``path`` that `up` printed: the lines after its "# ---- <path>" header, up to the next."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# ---- {path}"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# ---- ")), len(lines))
    return "\n".join(lines[start + 1 : end]) + "\n"


def exports(env_sh: str) -> dict[str, str]:
    found = {}
    for line in env_sh.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            found[name] = shlex.split(value)[0]
    return found


def gone(record: dict) -> bool:
    return not daemon.alive(record) and not _group_members(int(record["pid"]))


def test_up_publish_down(tmp_path, small_inputs):
    state = tmp_path / "state"
    up = services(state, "up", "--only", "postgres,s3", "--s3", "moto")
    try:
        assert up.returncode == 0, up.stderr
        for line in ("postgres: starting", "postgres: ready in", "s3: starting moto's server", "s3 (moto): ready in"):
            assert f"services: {line}" in up.stderr
        records = daemon.State(state).services
        assert sorted(records) == ["postgres", "s3"]
        # Detached: `up` has exited, its servers run on, each in a session of its own.
        for record in records.values():
            assert daemon.alive(record), record
            assert os.getsid(record["pid"]) == record["pid"]
            assert os.getppid() != record["pid"]

        status = services(state, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "postgres             running (pid" in status.stdout
        assert "s3 (moto)            running (pid" in status.stdout
        assert "kafka                not started" in status.stdout

        config_path, env_path = state / "publish.toml", state / "env.sh"
        assert printed_file(up.stdout, config_path) == config_path.read_text()
        assert printed_file(up.stdout, env_path) == env_path.read_text()
        config = tomllib.loads(config_path.read_text())
        assert sorted(config["sinks"]) == ["file", "iceberg_sqlite", "postgres", "s3"]
        secrets = exports(env_path.read_text())
        assert sorted(secrets) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"]
        assert secrets["PGPASSWORD"] == records["postgres"]["credentials"]["password"]
        assert secrets["PGPASSWORD"] not in config_path.read_text()
        assert oct(env_path.stat().st_mode & 0o777) == "0o600"

        # The printed configuration publishes through the real CLI, credentials from env.sh only.
        env = cli_env(config_path, **secrets)
        for sink in ("postgres", "s3"):
            published = run_cli(*refunds_run_args(small_inputs, "--sink", sink), env=env)
            assert published.code == 0, published.stderr
            diagnosed = run_cli(
                "diagnose", "--sink", sink, "--dataset", "refunds_settled", "--run-date", "2026-04-24", env=env
            )
            assert diagnosed.code == 0, diagnosed.stdout + diagnosed.stderr
            assert "DONE" in diagnosed.stdout

        again = services(state, "up", "--only", "postgres,s3", "--s3", "moto")
        assert again.returncode == 0, again.stderr
        assert "postgres: already running" in again.stderr and "s3 (moto): already running" in again.stderr
        assert printed_file(again.stdout, config_path) == config_path.read_text()
        assert daemon.State(state).services == records
    finally:
        down = services(state, "down")
    assert down.returncode == 0, down.stderr
    for record in records.values():
        assert gone(record), record
        for directory in record["data_dirs"]:
            assert not Path(directory).exists()
    assert not (state / "state.json").exists() and not (state / "env.sh").exists()

    status = services(state, "status")
    assert status.returncode == 3
    assert "postgres             not started" in status.stdout
    assert services(state, "down").returncode == 0  # idempotent


def test_a_dead_server_is_reported_and_replaced(tmp_path):
    state = tmp_path / "state"
    up = services(state, "up", "--only", "s3", "--s3", "moto")
    try:
        assert up.returncode == 0, up.stderr
        first = daemon.State(state).services["s3"]
        os.killpg(first["pid"], signal.SIGKILL)  # a crash, not a `down`
        deadline = time.monotonic() + 5
        while daemon.alive(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        status = services(state, "status")
        assert status.returncode == 3
        assert "s3 (moto)            dead (was pid" in status.stdout

        again = services(state, "up", "--only", "s3", "--s3", "moto")
        assert again.returncode == 0, again.stderr
        assert "found dead" in again.stderr
        second = daemon.State(state).services["s3"]
        assert second["pid"] != first["pid"] and daemon.alive(second)
        assert services(state, "status").returncode == 0
    finally:
        down = services(state, "down")
    assert down.returncode == 0, down.stderr
    assert gone(first) and gone(second)


def test_usage_and_an_empty_state(tmp_path):
    state = tmp_path / "state"
    bad = services(state, "up", "--only", "postgres,mysql")
    assert bad.returncode == 2
    assert "unknown server 'mysql'" in bad.stderr
    status = services(state, "status")
    assert status.returncode == 3
    assert status.stdout.count("not started") == len(daemon.SERVERS)
    assert services(state, "down").returncode == 0


def test_a_directory_of_other_files_is_not_used(tmp_path):
    """`up` replaces kafka/, s3/, ... in the state directory: never in one that holds other files."""
    (tmp_path / "kafka").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    refused = services(tmp_path, "up", "--only", "s3", "--s3", "moto")
    assert refused.returncode == 1
    assert "not a state directory of scripts/services" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kafka", "notes.txt"]
