"""Credentials the server refuses (on MinIO: moto accepts any). Found from outside: exit 5,
"unreachable, re-run when it is back", which a scheduler retries for ever; a login the server
refused is the configuration's to fix: exit 2, one line, the secret never shown, nothing written."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import cli_env, run_cli

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("wrong", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_refused_credentials_are_exit_2_and_write_nothing(minio_service, tmp_path, wrong):
    prefix = f"cred/{uuid.uuid4().hex[:10]}"
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[sinks.s]\ntype = "s3"\nbucket = "{minio_service.bucket}"\nprefix = "{prefix}"\n'
        f'endpoint_url = "{minio_service.endpoint}"\nregion = "us-east-1"\naddressing_style = "path"\n'
    )
    data = tmp_path / "in.csv"
    data.write_text("id,v\n1,2\n")
    bad = "not-the-key-" + uuid.uuid4().hex
    env = cli_env(cfg, **{**minio_service.env(), wrong: bad})
    result = run_cli("publish", "--sink", "s", "--dataset", "d", "--run-date", "2026-04-24", str(data), env=env)
    assert result.code == 2, result.stderr
    assert "refused these credentials" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert bad not in result.stderr + result.stdout
    listed = minio_service.client().list_objects_v2(Bucket=minio_service.bucket, Prefix=prefix)
    assert listed.get("KeyCount", 0) == 0
