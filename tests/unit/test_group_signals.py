"""A SIGTERM that reaches a group publish after its decision: the group commits every sink (the
decision stands) and exits 0, and says so, as one sink's publish does (found from outside: the
group said nothing of the signal)."""

from __future__ import annotations

import signal

from tests.faults.test_signals import wait_for_pause
from tests.helpers import cli_env, start_cli


def test_a_sigterm_after_a_group_s_decision_is_reported_and_the_run_completes(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[sinks.a]\ntype = "file"\nroot = "{tmp_path / "a"}"\n'
        f'[sinks.b]\ntype = "file"\nroot = "{tmp_path / "b"}"\nformat = "parquet"\n'
        f'[groups.g]\nsinks = ["a", "b"]\njournal = "{tmp_path / "journal"}"\n'
    )
    (tmp_path / "journal").mkdir()
    data = tmp_path / "in.csv"
    data.write_text("id,v\n1,2\n3,4\n")
    proc = start_cli(
        "publish", "--group", "g", "--dataset", "d", "--run-date", "2026-01-01", str(data),
        env=cli_env(cfg, PUBLISH_PAUSE_AT="group_decided:2"),
    )  # fmt: skip
    wait_for_pause(proc, "group_decided")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "warning: SIGTERM arrived during the commit; the commit finished" in stderr, stderr
    assert (tmp_path / "a" / "d" / "2026-01-01.csv.success").exists()
    assert (tmp_path / "b" / "d" / "2026-01-01.parquet.success").exists()
