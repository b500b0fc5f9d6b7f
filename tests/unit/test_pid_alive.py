"""A dead process is dead even before its parent reaps it: a zombie holds nothing and will never
commit, so a lease or a holder it owned is not a live attempt's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from atomic_publish.publishers._lease import pid_alive
from tests.faults.test_signals import wait_for_pause
from tests.helpers import cli_env, run_cli, start_cli


def _until_a_zombie(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z":
            return
        time.sleep(0.02)
    raise AssertionError(f"{pid} did not become a zombie")


def test_a_zombie_is_not_alive():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        _until_a_zombie(proc.pid)  # dead, but not reaped (no wait yet): kill(pid, 0) still succeeds
        os.kill(proc.pid, 0)
        assert not pid_alive(proc.pid)
        assert os.waitpid(proc.pid, os.WNOHANG)[0] == proc.pid  # it was a zombie until now
    finally:
        proc.kill()
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-1) and not pid_alive("12")


def test_a_killed_publisher_not_yet_reaped_is_orphaned_not_running(tmp_path, small_inputs):
    """The Iceberg sink's lease names its holder's pid: a publisher SIGKILLed after staging, whose
    parent has not waited for it, left an ORPHANED attempt (it was RUNNING until reaped)."""
    cfg = tmp_path / "publish.toml"
    warehouse = (tmp_path / "wh").as_uri()
    cfg.write_text(
        '[sinks.lake]\ntype = "iceberg"\nnamespace = "reports"\n'
        f'catalog = {{ type = "sql", uri = "sqlite:///{tmp_path}/catalog.db", warehouse = "{warehouse}" }}\n'
    )
    args = ("--sink", "lake", "--dataset", "refunds_settled", "--run-date", "2026-04-24")
    proc = start_cli("publish", *args, str(small_inputs[0]), env=cli_env(cfg, PUBLISH_PAUSE_AT="after_stage:60"))
    try:
        wait_for_pause(proc, "after_stage")
        os.kill(proc.pid, signal.SIGKILL)
        _until_a_zombie(proc.pid)  # dead, not reaped: proc.wait() comes after the diagnosis
        doc = run_cli("diagnose", *args, "--json", env=cli_env(cfg)).json()
        assert doc["state"] == "ORPHANED", doc
    finally:
        proc.kill()
        proc.communicate(timeout=30)
