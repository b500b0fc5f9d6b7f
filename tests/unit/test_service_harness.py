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


def _path_with(tmp_path, tools):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return bin_dir


def test_fetch_iceberg_rest_without_a_jdk_says_what_to_install(tmp_path):
    # java and mvn, but no javac: the 127.0.0.1 launcher is compiled at fetch time.
    bin_dir = _path_with(tmp_path, ("bash", "sed", "dirname", "java", "mvn"))
    env = {**os.environ, "ATOMIC_PUBLISH_CACHE": str(tmp_path / "cache"), "PATH": str(bin_dir)}
    proc = subprocess.run(
        [str(bin_dir / "bash"), str(REPO / "scripts" / "fetch-iceberg-rest")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 1
    assert "javac not found" in proc.stderr and "openjdk-17-jdk-headless" in proc.stderr


def test_fetch_minio_without_go_says_what_to_install(tmp_path):
    bin_dir = _path_with(tmp_path, ("bash", "dirname"))
    env = {
        **os.environ,
        "ATOMIC_PUBLISH_CACHE": str(tmp_path / "cache"),
        "ATOMIC_PUBLISH_MINIO_VERSION": "v0.0.0-not-built",
        "PATH": str(bin_dir),
    }
    proc = subprocess.run(
        [str(bin_dir / "bash"), str(REPO / "scripts" / "fetch-minio")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 1
    assert "go not found" in proc.stderr and "golang" in proc.stderr


@pytest.mark.parametrize(
    "value, servers",
    [(None, ["moto", "minio"]), ("both", ["moto", "minio"]), ("minio", ["minio"]), (" MOTO ", ["moto"])],
)
def test_the_s3_servers_are_chosen_by_the_environment(monkeypatch, value, servers):
    from tests.services import s3

    if value is None:
        monkeypatch.delenv(s3.ENV_SERVER, raising=False)
    else:
        monkeypatch.setenv(s3.ENV_SERVER, value)
    assert s3.selected_servers() == servers


def test_an_unknown_s3_server_is_named(monkeypatch):
    from tests.services import s3

    monkeypatch.setenv(s3.ENV_SERVER, "localstack")
    with pytest.raises(ServiceError, match=r"'localstack': expected one of minio, moto, both"):
        s3.selected_servers()


def test_s3_credentials_come_from_the_environment(monkeypatch):
    from tests.services.s3 import S3Service, environment_credentials

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert environment_credentials() == {}  # boto3's default chain (profiles, SSO, ...) decides
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    assert environment_credentials() == {}  # a key without its secret is no credential
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    creds = environment_credentials()
    assert creds == {
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": "secret",
        "aws_session_token": "token",
    }
    service = S3Service("http://127.0.0.1:1", "b", "env", credentials=creds)
    assert service.env() == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_SESSION_TOKEN": "token",
    }


def test_only_a_local_s3_server_can_be_killed_and_started_again():
    from tests.services.s3 import S3Service

    given = S3Service("http://127.0.0.1:1", "b", "env")
    with pytest.raises(ServiceError, match="not started by the harness as a local process"):
        given.kill()
    with pytest.raises(ServiceError, match="cannot be killed or restarted"):
        given.start_again()
