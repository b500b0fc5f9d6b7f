"""[groups.NAME] in publish.toml: every problem named with file and line, the journal resolved
against the configuration file, and a missing journal directory never read as "not decided"."""

from __future__ import annotations

import pytest

from atomic_publish import ConfigError, DestinationUnavailable, Run, load_config
from atomic_publish.publishers._journal import FileJournal

SINKS = '[sinks.a]\ntype = "file"\nroot = "a"\n\n[sinks.b]\ntype = "file"\nroot = "b"\n'


def test_a_group_naming_an_unknown_sink_is_refused_with_its_line(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(SINKS + '\n[groups.g]\nsinks = ["a", "nope"]\njournal = "j"\n')
    with pytest.raises(ConfigError, match=r"publish.toml:\d+: groups.g.sinks: no sink named 'nope'"):
        load_config(cfg).check_every_sink()


@pytest.mark.parametrize(
    ("group", "says"),
    [('sinks = ["a"]\njournal = "j"', "at least 2"), ('sinks = ["a", "a"]\njournal = "j"', r"names \['a'\] twice")],
)
def test_a_group_of_fewer_than_two_sinks_or_one_twice_is_refused(tmp_path, group, says):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(SINKS + f"\n[groups.g]\n{group}\n")
    with pytest.raises(ConfigError, match=says):
        load_config(cfg).group("g")


def test_the_journal_is_relative_to_the_configuration_file(tmp_path, monkeypatch):
    cfg = tmp_path / "conf" / "publish.toml"
    cfg.parent.mkdir()
    cfg.write_text(SINKS + '\n[groups.g]\nsinks = ["a", "b"]\njournal = "journal"\n')
    monkeypatch.chdir(tmp_path)  # anywhere else
    assert load_config(cfg).group("g").journal.root == tmp_path / "conf" / "journal"


def test_a_missing_journal_directory_is_an_error_not_an_empty_journal(tmp_path):
    journal = FileJournal(tmp_path / "not-mounted", "g")
    run = Run.new("d", "2026-04-24")
    with pytest.raises(DestinationUnavailable, match="does not exist"):
        journal.read(run, "decision")
    with pytest.raises(DestinationUnavailable, match="does not exist"):
        journal.record(run, "decision", {"attempt": run.attempt})
    assert not (tmp_path / "not-mounted").exists()


def test_a_record_is_written_once(tmp_path):
    journal = FileJournal(tmp_path, "g")
    run = Run.new("d", "2026-04-24")
    assert journal.record(run, "decision", {"attempt": "first"})
    assert not journal.record(run, "decision", {"attempt": "second"})
    assert journal.read(run, "decision") == {"attempt": "first"}
    assert sorted(p.name for p in journal.path(run, "decision").parent.iterdir()) == ["2026-04-24.decision.json"]


def test_sweep_cleans_what_a_group_rolls_back_and_never_what_it_rolls_forward(tmp_path, small_inputs):
    """A group of two file sinks: day 1 killed before the decision (rolled back: its orphans are the
    sweep's), day 2 killed after it (its staging is what recover --group commits: left alone, by
    the group's sweep and by each sink's own)."""
    from tests.helpers import cli_env, run_cli

    (tmp_path / "journal").mkdir()
    cfg = tmp_path / "publish.toml"
    cfg.write_text(SINKS + 'format = "parquet"\n\n[groups.g]\nsinks = ["a", "b"]\njournal = "journal"\n')
    for day, point in (("2026-04-24", "group_staged"), ("2026-04-25", "group_decided")):
        args = ("publish", "--group", "g", "--dataset", "d", "--run-date", day, str(small_inputs[0]))
        assert run_cli(*args, env=cli_env(cfg, PUBLISH_CRASH_AT=point), cwd=tmp_path).code == -9

    def cli(*args: str):  # type: ignore[no-untyped-def]
        return run_cli(*args, config=cfg, cwd=tmp_path)

    sweep = ("sweep", "--dataset", "d", "--older-than", "0s", "--apply", "--json")
    doc = cli(*sweep, "--group", "g").json()
    states = {r["diagnosis"]["run_date"]: (r["diagnosis"]["state"], r["note"]) for r in doc["runs"]}
    assert states["2026-04-24"][0] == "ORPHANED" and states["2026-04-24"][1].startswith("removed")
    assert states["2026-04-25"] == ("ROLL_FORWARD", "left alone: ROLL_FORWARD")
    for alone in ("a", "b"):
        swept = cli(*sweep, "--sink", alone)
        notes = [r["note"] for r in swept.json()["runs"]]
        assert len(notes) == 1 and notes[0].startswith("left alone: sink"), notes
        # The run its group must roll forward fails a scheduled sweep, as with --group (found from
        # outside: 0 with --sink, 15 with --group).
        assert swept.code == 15, swept.stderr
    day = ("--group", "g", "--dataset", "d", "--run-date")
    assert cli("diagnose", *day, "2026-04-24", "--json").json()["state"] == "NOTHING_IN_FLIGHT"
    assert cli("recover", *day, "2026-04-25", "--apply").code == 0  # rolled forward: nothing was lost


@pytest.mark.parametrize(
    ("journal", "says"),
    [
        ("", r"groups.g: name the journal once"),
        ('journal = "j"\njournal_sink = "a"', r"groups.g: name the journal once"),
        ('journal_sink = "a"', r"groups.g.journal_sink = 'a' is a file sink; a journal needs an S3 sink"),
    ],
    ids=["none", "both", "not-s3"],
)
def test_a_group_names_its_journal_once_and_an_s3_journal_only_by_an_s3_sink(tmp_path, journal, says):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(SINKS + f'\n[groups.g]\nsinks = ["a", "b"]\n{journal}\n')
    with pytest.raises(ConfigError, match=r"publish.toml:\d+: " + says):
        load_config(cfg).check_every_sink()
    with pytest.raises(ConfigError, match=says):
        load_config(cfg).group("g")


def test_another_name_for_a_sink_of_a_group_cannot_clean_what_the_group_commits(tmp_path, small_inputs):
    """[sinks.alias] is sink b again (same type, same root) under a name the group does not list:
    its recover, publish and sweep of a decided run are refused like b's own, and the group then
    rolls forward with nothing lost."""
    from tests.helpers import cli_env, run_cli

    (tmp_path / "journal").mkdir()
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        SINKS + 'format = "parquet"\n\n[sinks.alias]\ntype = "file"\nroot = "b"\nformat = "parquet"\n\n'
        '[groups.g]\nsinks = ["a", "b"]\njournal = "journal"\n'
    )
    day = ("--dataset", "d", "--run-date", "2026-04-24")
    args = ("publish", "--group", "g", *day, str(small_inputs[0]))
    assert run_cli(*args, env=cli_env(cfg, PUBLISH_CRASH_AT="group_decided"), cwd=tmp_path).code == -9
    staged = sorted(p.relative_to(tmp_path) for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert staged, "the decided staging of b"

    def cli(*args: str):  # type: ignore[no-untyped-def]
        return run_cli(*args, config=cfg, cwd=tmp_path)

    refused = cli("recover", "--sink", "alias", *day, "--apply")
    assert refused.code == 15 and "belongs to group g" in refused.stderr, refused.stderr
    assert cli("publish", "--sink", "alias", *day, str(small_inputs[0])).code == 15
    notes = [
        r["note"]
        for r in cli("sweep", "--sink", "alias", "--dataset", "d", "--older-than", "0s", "--apply", "--json").json()[
            "runs"
        ]
    ]
    assert len(notes) == 1 and notes[0].startswith("left alone: sink"), notes
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "b").rglob("*") if p.is_file()) == staged
    assert cli("recover", "--group", "g", *day, "--apply").code == 0
    assert cli("diagnose", "--group", "g", *day, "--json").json()["state"] == "DONE"
