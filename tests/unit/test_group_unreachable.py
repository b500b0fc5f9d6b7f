"""A group publish whose sink's server is down. Found from outside: exit 14 ("UNKNOWN: could not
read the destination; stop, settle it by hand"), where one sink's publish says exit 5 (unreachable:
this attempt did not publish; re-run when it is back). Nothing is written to the other sinks."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import cli_env, run_cli


def _group_with_a_bucket_down(tmp_path: Path) -> dict[str, str]:
    """A group of a file sink and an S3 sink whose endpoint does not answer; the CLI's environment."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[sinks.local]\ntype = "file"\nroot = "{tmp_path / "out"}"\n'
        '[sinks.bucket]\ntype = "s3"\nbucket = "down-bucket"\nprefix = "p"\nendpoint_url = "http://127.0.0.1:9"\n'
        'region = "us-east-1"\naddressing_style = "path"\ntimeout_seconds = 2\ndiagnose_timeout_seconds = 3\n'
        f'[groups.both]\nsinks = ["local", "bucket"]\njournal = "{tmp_path / "journal"}"\n'
    )
    (tmp_path / "journal").mkdir()
    return cli_env(cfg, AWS_ACCESS_KEY_ID="test-key-id", AWS_SECRET_ACCESS_KEY="test-secret-key")


def test_a_group_publish_with_a_sink_down_is_exit_5_and_writes_nothing(tmp_path):
    env = _group_with_a_bucket_down(tmp_path)
    data = tmp_path / "in.csv"
    data.write_text("id,v\n1,2\n")
    result = run_cli("publish", "--group", "both", "--dataset", "d", "--run-date", "2026-01-01", str(data), env=env)
    assert result.code == 5, result.stderr
    assert "bucket: s3://down-bucket/p/d" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
    assert not [p for p in (tmp_path / "journal").rglob("*") if "decision" in p.name or "complete" in p.name]


def test_a_destination_that_cannot_be_read_is_diagnosed_again_not_settled_by_hand(tmp_path):
    """Found from outside: a server that was down got UNKNOWN with "stop: read the evidence, settle
    it by hand" (operations.md: diagnose again once it is back)."""
    env = _group_with_a_bucket_down(tmp_path)
    (tmp_path / "out").mkdir()
    for target in (("--sink", "bucket"), ("--group", "both")):
        result = run_cli("diagnose", *target, "--dataset", "d", "--run-date", "2026-01-01", "--json", env=env)
        doc = result.json()
        assert result.code == 14 and doc["state"] == "UNKNOWN", result.stdout + result.stderr
        assert doc["safe_action"].startswith("wait: the destination could not be read"), doc
        assert "diagnose again once it answers" in doc["safe_action"], doc
        text = run_cli("diagnose", *target, "--dataset", "d", "--run-date", "2026-01-01", env=env)
        assert "settle it by hand" not in text.stdout and "diagnose again once it answers" in text.stdout, text.stdout
