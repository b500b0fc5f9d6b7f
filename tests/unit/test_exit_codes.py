"""Every row of the exit-code table, produced by a real CLI process (the file sink, or a Postgres
address nothing listens on), and the table in the README and in --help is the one the code uses."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap

import pytest

from atomic_publish import EXIT_CODES
from tests.faults.test_signals import wait_for_pause
from tests.helpers import REPO, Result, cli_env, run_cli, start_cli, write_config

DATE = "2026-04-24"
RUN = ("--dataset", "refunds_settled", "--run-date", DATE)


@pytest.fixture
def dest(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    return root, write_config(tmp_path / "publish.toml", root)


def _published(cfg, inputs):  # type: ignore[no-untyped-def]
    assert run_cli("publish", *RUN, str(inputs[0]), config=cfg).code == 0


def _crash_at(cfg, inputs, point):  # type: ignore[no-untyped-def]
    crashed = run_cli("publish", *RUN, str(inputs[0]), env=cli_env(cfg, PUBLISH_CRASH_AT=point))
    assert crashed.code == -signal.SIGKILL


def code_0(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    return run_cli("publish", *RUN, str(inputs[0]), config=cfg)


_BROKEN = textwrap.dedent(
    """
    import sys
    import atomic_publish.publishers.file as sink

    def broken(self, run, batches, **kwargs):
        raise RuntimeError("injected bug")

    sink.FilePublisher.stage = broken
    from atomic_publish.cli import main

    sys.argv = ["atomic-publish", *sys.argv[1:]]
    main()
    """
)


def code_1(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    """An unexpected error (a bug, injected into the real process): one line, a traceback only with -v."""

    def run(*args: str) -> Result:
        proc = subprocess.run(
            [sys.executable, "-c", _BROKEN, *args],
            capture_output=True,
            text=True,
            env=cli_env(cfg),
            cwd=REPO,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    loud = run("-v", "publish", *RUN, str(inputs[0]))
    assert loud.code == 1 and "Traceback" in loud.stderr
    quiet = run("publish", *RUN, str(inputs[0]))
    assert "unexpected RuntimeError: injected bug" in quiet.stderr and "-v" in quiet.stderr
    return quiet


def code_2(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = run_cli("publish", *RUN, str(empty), config=cfg)
    assert "empty" in result.stderr
    return result


def code_3(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    _published(cfg, inputs)
    return run_cli("publish", *RUN, str(inputs[0]), config=cfg)


def code_4(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    """Below the lock (a lock that is lost: its file is removed, so a second attempt locks a new
    inode): the first attempt, held after taking its lock, stages and finds the second one's run
    published at its commit."""
    first = start_cli("publish", *RUN, str(inputs[0]), env=cli_env(cfg, PUBLISH_PAUSE_AT="after_lock:3"))
    wait_for_pause(first, "after_lock")
    (root / "_locks" / "refunds_settled" / f"{DATE}.lock").unlink()
    _published(cfg, inputs)
    _, stderr = first.communicate(timeout=60)
    assert "already published" in stderr
    assert run_cli("diagnose", *RUN, config=cfg).code == 0  # the loser removed its own staging
    return Result(first.returncode, "", stderr)


def code_5(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    from tests.services._process import free_port

    port = free_port()  # nothing listens there
    cfg = tmp_path / "pg.toml"
    cfg.write_text(
        f'[sinks.pg]\ntype = "postgres"\nconninfo = "host=127.0.0.1 port={port} user=u dbname=d"\n'
        'key_columns = ["refund_id"]\ntimeout_seconds = 2\n'
    )
    result = run_cli("publish", "--sink", "pg", *RUN, str(inputs[0]), config=cfg)
    assert f"127.0.0.1:{port}" in result.stderr and result.stderr.count("\n") == 1
    diagnosed = run_cli("diagnose", "--sink", "pg", *RUN, config=cfg)
    assert diagnosed.code == 14 and "could not read the destination" in diagnosed.stdout
    return result


def code_10(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    return run_cli("diagnose", *RUN, config=cfg)


def code_11(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    _crash_at(cfg, inputs, "after_stage")
    return run_cli("diagnose", *RUN, config=cfg)


def code_12(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    _crash_at(cfg, inputs, "after_commit")
    return run_cli("diagnose", *RUN, config=cfg)


def code_13(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    held = start_cli("publish", *RUN, str(inputs[0]), env=cli_env(cfg, PUBLISH_PAUSE_AT="after_lock:3"))
    wait_for_pause(held, "after_lock")
    result = run_cli("diagnose", *RUN, config=cfg)
    held.communicate(timeout=60)
    return result


def code_14(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    _published(cfg, inputs)
    (root / "refunds_settled" / f"{DATE}.csv").write_text("tampered\n")
    return run_cli("diagnose", *RUN, config=cfg)


def code_15(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
    """A group of two file sinks, killed between their commits: decided, committed in one."""
    (tmp_path / "journal").mkdir()
    group_cfg = tmp_path / "group.toml"
    group_cfg.write_text(
        f'[sinks.a]\ntype = "file"\nroot = "{tmp_path / "a"}"\n\n[sinks.b]\ntype = "file"\nroot = "{tmp_path / "b"}"\n'
        f'\n[groups.both]\nsinks = ["a", "b"]\njournal = "{tmp_path / "journal"}"\n'
    )
    crashed = run_cli(
        "publish", "--group", "both", *RUN, str(inputs[0]), env=cli_env(group_cfg, PUBLISH_CRASH_AT="group_committed_1")
    )
    assert crashed.code == -9, crashed.stderr
    refused = run_cli("publish", "--group", "both", *RUN, str(inputs[0]), config=group_cfg)
    assert refused.code == 15 and "recover --group" in refused.stderr
    return run_cli("diagnose", "--group", "both", *RUN, config=group_cfg)


def _signal(signum: int):  # type: ignore[no-untyped-def]
    def scenario(root, cfg, inputs, tmp_path):  # type: ignore[no-untyped-def]
        proc = start_cli("publish", *RUN, str(inputs[0]), env=cli_env(cfg, PUBLISH_PAUSE_AT="after_stage:30"))
        wait_for_pause(proc, "after_stage")
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
        assert run_cli("diagnose", *RUN, config=cfg).code == 10  # it removed its own staging
        return Result(proc.returncode, "", stderr)

    return scenario


SCENARIOS = {
    0: code_0,
    1: code_1,
    2: code_2,
    3: code_3,
    4: code_4,
    5: code_5,
    10: code_10,
    11: code_11,
    12: code_12,
    13: code_13,
    14: code_14,
    15: code_15,
    130: _signal(signal.SIGINT),
    143: _signal(signal.SIGTERM),
}


@pytest.mark.parametrize("code", sorted(EXIT_CODES))
def test_every_row_of_the_exit_table_happens(code, dest, small_inputs, tmp_path):
    root, cfg = dest
    result = SCENARIOS[code](root, cfg, small_inputs, tmp_path)
    assert result.code == code, (result.code, result.stderr)
    assert code == 1 or "Traceback" not in result.stderr


def test_the_table_is_the_one_in_the_docs_and_in_help():
    page = (REPO / "docs" / "operations.md").read_text()
    table = page[page.index("| exit | meaning |") :].split("\n\n", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert documented == set(EXIT_CODES), (documented, set(EXIT_CODES))
    help_text = run_cli("--help").stdout
    for code in EXIT_CODES:
        assert re.search(rf"^\s+{code}\s+\S", help_text, re.M), code
    assert set(SCENARIOS) == set(EXIT_CODES)
