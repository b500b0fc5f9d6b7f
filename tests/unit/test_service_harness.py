"""The harness's own errors: what a developer sees when something a service needs is missing."""

import os
import shutil
import subprocess

import pytest

from tests.helpers import REPO
from tests.services._process import ServiceError, ServiceProcess
from tests.services.kafka import java_binary


def test_java_that_is_not_17_or_newer_is_named(monkeypatch):
    monkeypatch.setenv("JAVA", "/bin/true")
    with pytest.raises(ServiceError, match="not Java >= 17"):
        java_binary()


def test_missing_java_says_what_to_install(monkeypatch):
    monkeypatch.delenv("JAVA", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServiceError, match=r"Java not found.*openjdk"):
        java_binary()


def test_fetch_kafka_without_maven_says_what_to_install(tmp_path):
    # A PATH holding the tools the script uses, and java, but not mvn.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "dirname", "ls", "mkdir", "rm", "touch", "tail", "java"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    env = {**os.environ, "ATOMIC_PUBLISH_CACHE": str(tmp_path / "cache"), "PATH": str(bin_dir)}
    proc = subprocess.run(
        [str(bin_dir / "bash"), str(REPO / "scripts" / "fetch-kafka")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 1
    assert "mvn not found" in proc.stderr and "apt-get install maven" in proc.stderr


def test_a_service_that_dies_while_starting_reports_its_log(tmp_path):
    process = ServiceProcess(
        "broken", ["bash", "-c", "echo 'FATAL: could not bind 127.0.0.1:5432'; exit 3"], tmp_path / "broken.log"
    ).start()
    with pytest.raises(ServiceError) as info:
        process.wait_ready(lambda: False, 10, "test service")
    assert "exited while starting" in str(info.value) and "could not bind" in str(info.value)
