"""Who may judge an attempt dead by its pid (``_lease.pid_scope``): only a process of the same host,
boot and PID namespace. Found from outside: a diagnose and recover in another PID namespace of the
same host (two containers with host networking, a sidecar) called a live S3 publish ORPHANED, took
its lease and removed its staging; on Postgres, a host whose name starts another's (worker-1 and
worker-10) terminated a live publish's session."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from atomic_publish.publishers._lease import Lease, gone_here, local_conditional, pid_scope
from atomic_publish.publishers._types import Run
from atomic_publish.publishers.layouts.postgres import application_name, client_is_gone, parse_application_name


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lease_doc(pid: int, **extra: object) -> dict[str, object]:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    return {
        "attempt": "20260101T000000Z-aaaaaa",
        "pid": pid,
        "host": socket.gethostname(),
        "started_at": "2026-01-01T00:00:00+00:00",
        "expires_at": expires.isoformat(timespec="seconds"),
        **extra,
    }


@pytest.fixture
def lease(tmp_path):
    return Lease(
        Run.new("d", "2026-04-24"), 60, str(tmp_path), local_conditional(tmp_path / "lease.json"), lambda: None
    )


def test_a_dead_pid_of_this_scope_frees_the_lease_at_once(lease):
    assert lease._live(_lease_doc(_dead_pid(), pid_scope=pid_scope())) is None
    assert lease._live(_lease_doc(os.getpid(), pid_scope=pid_scope())) is not None  # alive here


def test_a_dead_pid_of_another_scope_or_of_none_waits_for_the_clock(lease):
    """The same hostname is not enough: another PID namespace numbers its own processes."""
    dead = _dead_pid()
    assert lease._live(_lease_doc(dead, pid_scope="0123456789ab")) is not None
    assert lease._live(_lease_doc(dead)) is not None  # a lease written before pid scopes
    expired = _lease_doc(dead, pid_scope="0123456789ab", expires_at="2000-01-01T00:00:00+00:00")
    assert lease._live(expired) is None


def test_the_lease_document_names_its_scope(lease):
    assert json.loads(lease._document())["pid_scope"] == pid_scope()
    assert gone_here(pid_scope(), _dead_pid()) and not gone_here(pid_scope(), os.getpid())


@pytest.mark.parametrize("role", ["", "diagnose ", "recover "])
def test_an_application_name_keeps_its_scope_within_63_bytes(role):
    name = application_name("20261206T053427Z-55c2f1", role)
    assert len(name.encode()) <= 63
    attempt, pid, _host, scope = parse_application_name(name)
    assert (attempt, pid, scope) == ("20261206T053427Z-55c2f1", os.getpid(), pid_scope()[:6])


def test_a_session_is_a_zombie_only_in_its_own_scope():
    dead, host = _dead_pid(), socket.gethostname()
    attempt = "20261206T053427Z-55c2f1"
    assert client_is_gone(f"atomic-publish {attempt} {dead}#{pid_scope()[:6]}@{host}")
    assert not client_is_gone(f"atomic-publish {attempt} {os.getpid()}#{pid_scope()[:6]}@{host}")
    # Another PID namespace of this host (same hostname, another scope): not provably gone.
    assert not client_is_gone(f"atomic-publish {attempt} {dead}#000000@{host}")
    # A host whose name this one's starts with (worker-1 seen from worker-10), written before
    # scopes: a prefix of the hostname is no evidence.
    assert not client_is_gone(f"atomic-publish {attempt} {dead}@{host[:-1]}")
    assert not client_is_gone(f"atomic-publish {attempt} {dead}@{host}")


UNSHARE = shutil.which("unshare")


def _unshare_works() -> bool:
    if UNSHARE is None:
        return False
    probe = subprocess.run([UNSHARE, "--pid", "--fork", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="unshare --pid is not permitted here (needs root or user namespaces)")
def test_another_pid_namespace_of_this_host_is_another_scope():
    code = "from atomic_publish.publishers._lease import pid_scope; print(pid_scope())"
    same = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    other = subprocess.run(
        [UNSHARE, "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert same == pid_scope()
    assert other and other != pid_scope()


def test_a_lease_a_recover_holds_is_named_as_a_recover(tmp_path):
    """Found from outside: a recover that lost to another recover was told "attempt X holds its
    lease", X being the other recover, named like an attempt of the run."""
    from atomic_publish import RunInProgress

    access = local_conditional(tmp_path / "lease.json")
    recover = Lease(Run.new("d", "2026-04-24"), 60, str(tmp_path), access, lambda: None, purpose="recover")
    recover.acquire()
    try:
        assert json.loads((tmp_path / "lease.json").read_bytes())["purpose"] == "recover"
        other = Lease(Run.new("d", "2026-04-24"), 60, str(tmp_path), access, lambda: None)
        with pytest.raises(RunInProgress, match=f"RUNNING: a recover {recover.run.attempt} "):
            other.acquire()
    finally:
        recover.release()
