"""The holder of a run (the process an engine's driver commits through) keeps its socket in a
private ``ap-held-*`` directory; when it is killed it cannot remove it, so the driver does once it
finds the holder gone."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from atomic_publish.publishers._errors import CommitAborted
from atomic_publish.publishers._held import hold_run
from tests.helpers import cli_env


def _holder_pids() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"atomic_publish.publishers._held" in cmdline and parent == os.getpid():
            found.append(int(proc.name))
    return found


def test_the_driver_removes_a_killed_holders_directory(tmp_path, monkeypatch):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.lake]\ntype = "file"\nroot = "{tmp_path / "dest"}"\n')
    for key, value in cli_env(cfg).items():
        monkeypatch.setenv(key, value)
    held = hold_run(dataset="items", run_date="2026-04-24", sink="lake", config=str(cfg))
    workdir = Path(held.address).parent
    assert workdir.name.startswith("ap-held-") and workdir.exists()
    (pid,) = _holder_pids()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with pytest.raises(CommitAborted, match="is gone"):
        held.commit([])
    assert not workdir.exists()
