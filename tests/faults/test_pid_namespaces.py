"""A live publish seen from another PID namespace of the same host (two containers with host
networking, a sidecar, a job runner's own namespace): the pids there name other processes, so a
pid that is not running there says nothing. Found from outside: diagnose called a live S3 publish
ORPHANED from there, and recover --apply took its lease and removed its staging; on Postgres it
terminated the live publish's session. The diagnosis must say RUNNING, recover must touch nothing,
and the publish must end published (``_lease.pid_scope``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.helpers import cli_env, start_cli

from .sinks import DATASET, DATE, SINKS, FaultySink, faulty_sink
from .test_signals import wait_for_pause

pytestmark = [pytest.mark.faults, pytest.mark.integration]

UNSHARE = shutil.which("unshare")


def _unshare_works() -> bool:
    if UNSHARE is None:
        return False
    probe = subprocess.run([UNSHARE, "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.fixture(params=SINKS)
def sink(request: pytest.FixtureRequest, tmp_path: Any) -> FaultySink:
    if not _unshare_works():
        pytest.skip("unshare --pid is not permitted here (needs root or user namespaces)")
    return faulty_sink(request, tmp_path)


def _elsewhere(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``atomic-publish ARGS`` in a new PID namespace of this host (its hostname unchanged)."""
    assert UNSHARE is not None
    command = [UNSHARE, "--pid", "--fork", "--mount-proc", sys.executable, "-m", "atomic_publish", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_live_publish_seen_from_another_pid_namespace_is_running(sink, tmp_path, small_inputs):
    cfg = sink.config(tmp_path / "direct")
    env = cli_env(cfg, **sink.env)
    run = ("--dataset", DATASET, "--run-date", DATE)
    proc = start_cli("publish", *run, str(small_inputs[0]), env={**env, "PUBLISH_PAUSE_AT": "after_stage:10"})
    try:
        wait_for_pause(proc, "after_stage")
        seen = _elsewhere(env, "diagnose", *run, "--json")
        assert json.loads(seen.stdout)["state"] == "RUNNING", seen.stdout + seen.stderr
        recovered = _elsewhere(env, "recover", *run, "--apply")
        assert recovered.returncode == 13, recovered.stdout + recovered.stderr
    finally:
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert sink.diagnose(cfg)["state"] == "DONE"
