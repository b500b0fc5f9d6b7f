"""A sink in two groups. Found from outside: with one group's run decided and not complete (its
roll-forward commits the staging it keeps), the other group's ``recover --apply`` and ``sweep
--apply`` took that staging for its own rolled-back leftovers and removed it; the decided run could
then not be rolled forward (exit 14). Each group now leaves alone what another group holds, as a
sink's own recover already did (exit 15, naming the group that holds the run)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import cli_env, run_cli

RUN = ("--dataset", "d", "--run-date", "2026-01-01")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "_locks" not in p.parts)


def test_one_group_never_cleans_what_another_group_decided(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[sinks.a]\ntype = "file"\nroot = "{tmp_path / "a"}"\n'
        f'[sinks.b]\ntype = "file"\nroot = "{tmp_path / "b"}"\nformat = "parquet"\n'
        f'[groups.one]\nsinks = ["a", "b"]\njournal = "{tmp_path / "j1"}"\n'
        f'[groups.two]\nsinks = ["a", "b"]\njournal = "{tmp_path / "j2"}"\n'
    )
    (tmp_path / "j1").mkdir()
    (tmp_path / "j2").mkdir()
    data = tmp_path / "in.csv"
    data.write_text("id,v\n1,2\n3,4\n")
    env = cli_env(cfg)
    crashed = run_cli("publish", "--group", "two", *RUN, str(data), env=cli_env(cfg, PUBLISH_CRASH_AT="group_decided"))
    assert crashed.code == -9, crashed.stderr
    staged = _files(tmp_path / "a") + _files(tmp_path / "b")
    assert staged, "the decided run keeps its staging"

    # Every command says the same (found in review: diagnose said ORPHANED, "clean the orphans", and
    # the dry run planned the cleaning that --apply then refused).
    for args in (("diagnose", "--sink", "a"), ("diagnose", "--group", "one"), ("diagnose", "--group", "two")):
        seen = run_cli(*args, *RUN, "--json", env=env)
        assert seen.code == 15 and seen.json()["state"] == "ROLL_FORWARD", (args, seen.stdout)
        assert "group two" in seen.json()["reason"] or args[-1] == "two", seen.json()["reason"]
    assert run_cli("diagnose", "--sink", "a", *RUN, "--json", env=env).json()["orphans"] == []
    for args in (("recover", "--sink", "b"), ("recover", "--group", "one")):
        dry = run_cli(*args, *RUN, env=env)
        assert dry.code == 15 and "belongs to group two" in dry.stderr, (args, dry.stdout + dry.stderr)

    recovered = run_cli("recover", "--group", "one", *RUN, "--apply", env=env)
    assert recovered.code == 15 and "belongs to group two" in recovered.stderr, recovered.stderr
    swept = run_cli("sweep", "--group", "one", "--dataset", "d", "--older-than", "0s", "--apply", env=env)
    assert swept.code == 15 and "left alone: sink a belongs to group two" in swept.stdout, swept.stdout + swept.stderr
    assert _files(tmp_path / "a") + _files(tmp_path / "b") == staged  # nothing of it removed

    rolled = run_cli("recover", "--group", "two", *RUN, "--apply", "--json", env=env)
    assert rolled.code == 0 and rolled.json()["after"]["state"] == "DONE", rolled.stdout + rolled.stderr
    assert (tmp_path / "a" / "d" / "2026-01-01.csv").read_text().splitlines()[1:] == ["1,2", "3,4"]


def test_a_group_of_two_sinks_at_one_destination_is_refused_as_configuration(tmp_path):
    """Found from outside: two file sinks with one root in a group; the group's publish found its
    own run lock held (RUNNING, exit 13) and diagnose said re-run, forever."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[sinks.a]\ntype = "file"\nroot = "{tmp_path / "same"}"\n'
        f'[sinks.b]\ntype = "file"\nroot = "{tmp_path / "same"}"\nformat = "parquet"\n'
        f'[groups.g]\nsinks = ["a", "b"]\njournal = "{tmp_path / "j"}"\n'
    )
    (tmp_path / "j").mkdir()
    data = tmp_path / "in.csv"
    data.write_text("id,v\n1,2\n")
    result = run_cli("publish", "--group", "g", *RUN, str(data), env=cli_env(cfg))
    assert result.code == 2, result.stderr
    assert "a and b are the same destination" in result.stderr and f"{cfg}:9" in result.stderr, result.stderr
    assert not (tmp_path / "same").exists()


def test_a_sweep_of_a_member_sink_during_its_group_s_publish_exits_0(tmp_path):
    """Found from outside (a regression of counting every run a group holds): a member sink's sweep
    while its group's publish was simply running exited 15, "roll forward", a false alarm for
    every scheduled sweep that overlaps a group publish. RUNNING is 0; only a decided run is 15."""
    import time

    from tests.helpers import start_cli

    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[sinks.a]\ntype = "file"\nroot = "{tmp_path / "a"}"\n'
        f'[sinks.b]\ntype = "file"\nroot = "{tmp_path / "b"}"\nformat = "parquet"\n'
        f'[groups.g]\nsinks = ["a", "b"]\njournal = "{tmp_path / "j"}"\n'
    )
    (tmp_path / "j").mkdir()
    data = tmp_path / "in.csv"
    data.write_text("id,v\n1,2\n")
    proc = start_cli("publish", "--group", "g", *RUN, str(data), env=cli_env(cfg, PUBLISH_PAUSE_AT="group_staged:8"))
    try:
        deadline = time.monotonic() + 30
        while "paused at group_staged" not in (line := proc.stderr.readline() if proc.stderr else ""):
            assert line and time.monotonic() < deadline, "the group publish never paused"
        swept = run_cli("sweep", "--sink", "a", "--dataset", "d", "--older-than", "0s", env=cli_env(cfg))
        assert swept.code == 0, swept.stdout + swept.stderr
        assert "being published or recovered" in swept.stdout, swept.stdout
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0
