"""One run to a group of sinks, against the real servers: file + Postgres + Kafka, and S3 + Iceberg.

At every step between the sinks' commits the publish is SIGKILLed; ``diagnose --group`` must name
the group's state (rolled back before the decision, ROLL_FORWARD after it); ``recover --group
--apply`` then re-running (rolled back) or nothing (rolled forward) must end in DONE with every
sink holding exactly what a clean group publish holds, read by each sink's independent reader.
Plus: a complete group re-run is refused and changes nothing; two racing group publishes give one
copy per sink.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from atomic_publish import Run
from atomic_publish.testing import DATASET, DATE, SinkHarness, loaded
from tests.contract import readers
from tests.contract.harness import FILE, iceberg_harness, kafka_harness, postgres_harness, s3_harness
from tests.helpers import cli_env, refunds_run_args, run_cli, start_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The group's order is the commit order, and whether its input is durable (Kafka, whose staging
# dies with its process, is staged again from it); the crash points between its steps. The groups
# with an S3 sink keep their journal in its bucket (journal_sink); the others in a directory.
GROUPS = {
    "warehouse-events": (("file", "postgres", "kafka"), True),
    "lake": (("s3", "iceberg"), False),
    # Kafka staged again from the run a Parquet file sink, a Parquet S3 sink or an Iceberg table
    # published (the input not durable).
    "files-events": (("file-parquet", "kafka"), False),
    "s3-events": (("s3-parquet", "kafka"), False),
    "iceberg-events": (("iceberg", "kafka"), False),
}
BEFORE_DECISION = ("group_staged",)
AFTER_DECISION = ("group_decided", "group_committed_1", "group_before_complete")
# Inside a sink's own commit, after the decision: the file sink's data renamed, its marker not yet
# written (the only sink whose commit has two steps). The roll-forward finishes that commit.
IN_COMMIT = ("after_data_rename",)


class Group:
    """A group's publish.toml (every sink on a fresh destination) and each sink's own reader."""

    def __init__(self, name: str, harnesses: list[SinkHarness], base: Path, durable: bool = False) -> None:
        self.name, self.harnesses = name, harnesses
        self.singles: dict[str, Path] = {}
        tables = []
        env: dict[str, str] = {}
        for h in harnesses:
            single = h.make_config(base / h.name)
            self.singles[h.name] = single
            text = single.read_text()
            sink = re.search(r'^sink = "([^"]+)"', text, re.M).group(1)  # type: ignore[union-attr]
            tables.append((sink, text[text.index("[sinks.") :]))
            env.update(h.extra_env)
        sinks = ", ".join(f'"{s}"' for s, _ in tables)
        in_s3 = [sink for (sink, _), h in zip(tables, harnesses, strict=True) if h.name.startswith("s3")]
        journal = f'journal_sink = "{in_s3[0]}"' if in_s3 else f'journal = "{base / "journal"}"'
        self.config = base / "publish.toml"
        self.config.write_text(
            "".join(t + "\n" for _, t in tables)
            + f"\n[groups.{name}]\nsinks = [{sinks}]\n{journal}\n"
            + ("durable_input = true\n" if durable else "")
        )
        (base / "journal").mkdir()  # a journal's directory exists: a missing one is an error
        self.env = cli_env(self.config, **env)

    def publish(self, data: Path, *extra: str, **env: str) -> Any:
        return run_cli(
            "publish",
            "--group",
            self.name,
            "--dataset",
            DATASET,
            "--run-date",
            DATE,
            str(data),
            *extra,
            env={**self.env, **env},
        )

    def diagnose(self) -> dict[str, Any]:
        result = run_cli(
            "diagnose", "--group", self.name, "--dataset", DATASET, "--run-date", DATE, "--json", env=self.env
        )
        doc: dict[str, Any] = result.json()
        assert result.code == doc["exit_code"], result.stderr
        return doc

    def recover(self) -> Any:
        return run_cli(
            "recover", "--group", self.name, "--dataset", DATASET, "--run-date", DATE, "--apply", "--json", env=self.env
        )

    def contents(self) -> dict[str, bytes | None]:
        run = Run.new(DATASET, DATE)
        return {h.name: h.gated_read(loaded(self.singles[h.name]), run) for h in self.harnesses}


def _parquet_file() -> SinkHarness:
    def make_config(base: Path) -> Path:
        cfg = FILE.make_config(base)
        cfg.write_text(cfg.read_text() + 'format = "parquet"\n')
        return cfg

    def gated(config: Any, run: Run) -> bytes | None:
        options = config.sink()[1]
        return readers.file_gated(Path(options.root), run.dataset, run.run_date.isoformat(), "parquet")

    return dataclasses.replace(FILE, name="file-parquet", make_config=make_config, gated_read=gated)


def _parquet_s3(request: Any) -> SinkHarness:
    harness = s3_harness(request.getfixturevalue("s3_service"))

    def make_config(base: Path) -> Path:
        cfg = harness.make_config(base)
        cfg.write_text(cfg.read_text() + 'format = "parquet"\n')
        return cfg

    return dataclasses.replace(harness, name="s3-parquet", make_config=make_config)


_FACTORIES = {
    "file": lambda request: FILE,
    "file-parquet": lambda request: _parquet_file(),
    "s3-parquet": _parquet_s3,
    "postgres": lambda request: postgres_harness(request.getfixturevalue("postgres_service")),
    "kafka": lambda request: kafka_harness(request.getfixturevalue("kafka_service")),
    "s3": lambda request: s3_harness(request.getfixturevalue("s3_service")),
    "iceberg": lambda request: iceberg_harness(),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory, small_inputs) -> Path:
    """The run's data: the refunds pipeline's output (it has the `_run_id` column the Postgres
    sink replaces by), as published by the file sink."""
    cfg = FILE.make_config(tmp_path_factory.mktemp("group-input"))
    assert run_cli(*refunds_run_args(small_inputs), env=cli_env(cfg)).code == 0
    return Path(loaded(cfg).sink()[1].root) / DATASET / f"{DATE}.csv"


@pytest.fixture
def make_group(request, tmp_path):
    def make(name: str, base: Path | None = None) -> Group:
        sinks, durable = GROUPS[name]
        return Group(name, [_FACTORIES[s](request) for s in sinks], base or tmp_path / name, durable)

    return make


@pytest.fixture(scope="module")
def clean(tmp_path_factory, request, data) -> dict[str, dict[str, bytes | None]]:
    """What a clean group publish leaves in each sink: what every recovered run must equal."""
    found: dict[str, dict[str, bytes | None]] = {}
    for name, (sinks, durable) in GROUPS.items():
        group = Group(name, [_FACTORIES[s](request) for s in sinks], tmp_path_factory.mktemp(f"clean-{name}"), durable)
        published = group.publish(data)
        assert published.code == 0, published.stderr
        found[name] = group.contents()
        assert all(found[name].values()), found[name]
    return found


# Every step of every group, except the read-back groups (there for Kafka staged again from a
# Parquet file, a Parquet S3 run or an Iceberg snapshot): the steps after which Kafka is not committed yet.
CRASHES = [
    *[("warehouse-events", p) for p in ("after_lock", *BEFORE_DECISION, *AFTER_DECISION, "group_committed_2")],
    *[("lake", p) for p in ("after_lock", *BEFORE_DECISION, *AFTER_DECISION)],
    *[("files-events", p) for p in ("group_decided", "after_data_rename", "group_committed_1")],
    ("s3-events", "group_committed_1"),
    ("iceberg-events", "group_committed_1"),
]


@pytest.mark.parametrize(("name", "point"), CRASHES, ids=[f"{n}-{p}" for n, p in CRASHES])
def test_a_crash_at_every_step_ends_in_one_copy_per_sink(name, point, make_group, data, clean):
    group = make_group(name)
    crashed = group.publish(data, PUBLISH_CRASH_AT=point)
    assert crashed.code == -9, crashed.stderr
    doc = group.diagnose()
    decided = point in (*AFTER_DECISION, *IN_COMMIT, "group_committed_2")
    if decided:
        assert doc["state"] == "ROLL_FORWARD" and doc["exit_code"] == 15, doc["reason"]
        assert set(doc["committed"]) < set(doc["order"]) or point == "group_before_complete", doc
    else:
        assert doc["state"] in ("ORPHANED", "NOTHING_IN_FLIGHT"), doc["reason"]
        assert doc["decided_by"] is None
    # Nothing of an undecided run is visible anywhere; a decided run is visible where it is committed.
    seen = group.contents()
    for sink in doc["order"]:
        assert seen[_harness_name(group, sink)] in (None, clean[name][_harness_name(group, sink)])

    if decided:
        # Each sink not committed yet is shown as the roll-forward sees it, its decided staging as
        # evidence (found from outside: ORPHANED, "dead attempt(s)", and in diagnose --sink every
        # piece of evidence twice).
        attempt = doc["decided_by"]
        for sink in doc["order"]:
            if sink not in doc["committed"]:
                shown = doc["sinks"][sink]
                assert shown["state"] == "ROLL_FORWARD", shown
                assert not [o for o in shown["orphans"] if o["attempt"] == attempt], shown
            alone = run_cli(
                "diagnose", "--sink", sink, "--dataset", DATASET, "--run-date", DATE, "--json", env=group.env
            ).json()
            keys = [json.dumps(a, sort_keys=True) for a in alone["evidence"]]
            assert len(keys) == len(set(keys)), alone["evidence"]
        # One sink's own recover would remove the staging the roll-forward commits: refused.
        pending = [s for s in doc["order"] if s not in doc["committed"]] or doc["order"]
        alone = run_cli(
            "recover", "--sink", pending[0], "--dataset", DATASET, "--run-date", DATE, "--apply", env=group.env
        )
        assert alone.code == 15 and f"recover --group {name}" in alone.stderr, alone.stderr

    recovered = group.recover()
    after = recovered.json()["after"]
    if decided:
        assert after["state"] == "DONE", after["reason"]
    else:
        assert after["state"] == "NOTHING_IN_FLIGHT", after["reason"]
        assert group.publish(data).code == 0
    final = group.diagnose()
    assert final["state"] == "DONE", final["reason"]
    assert group.contents() == clean[name]


def _harness_name(group: Group, sink: str) -> str:
    """The harness of a sink named in the group's config (out -> file, pg -> postgres, ...)."""
    for h in group.harnesses:
        if f"[sinks.{sink}]" in group.singles[h.name].read_text():
            return h.name
    raise AssertionError(sink)


@pytest.mark.parametrize("name", ["warehouse-events", "lake"])
def test_a_complete_group_rerun_is_refused_and_changes_nothing(name, make_group, data, clean):
    group = make_group(name)
    assert group.publish(data).code == 0
    before = group.diagnose()
    refused = group.publish(data)
    assert refused.code == 3 and "already published" in refused.stderr
    assert group.publish(data, "--if-absent").code == 0
    after = group.diagnose()
    assert after["state"] == "DONE" and after["decided_by"] == before["decided_by"]
    assert group.contents() == clean[name]


@pytest.mark.parametrize("name", ["warehouse-events", "lake"])
def test_two_racing_group_publishes_give_one_copy_per_sink(name, make_group, data, clean):
    group = make_group(name)
    env = {**group.env, "PUBLISH_PAUSE_AT": "group_staged:2"}
    args = ("publish", "--group", name, "--dataset", DATASET, "--run-date", DATE, str(data))
    procs = [start_cli(*args, env=env) for _ in range(2)]
    codes = sorted(p.wait(timeout=180) for p in procs)
    stderrs = [p.stderr.read() for p in procs if p.stderr]
    # The loser met a lock (13), came after the winner (3), or lost the decision (4). Never two copies.
    assert codes[0] == 0 and codes[1] in (3, 4, 13), (codes, stderrs)
    doc = group.diagnose()
    assert doc["state"] == "DONE", doc["reason"]
    assert group.contents() == clean[name]


def test_a_group_that_could_not_roll_kafka_forward_is_refused_before_anything_is_written(request, tmp_path, data):
    """A CSV file cannot give back the run's exact values, and the input is not durable: a crash past
    the decision would leave Kafka with no source to be staged again from, so the publish is refused
    up front (exit 2), and no sink and no journal holds anything."""
    group = Group("csv-events", [FILE, _FACTORIES["kafka"](request)], tmp_path / "g")
    refused = group.publish(data)
    assert refused.code == 2 and "could not be staged again" in refused.stderr, refused.stderr
    assert group.contents() == {"file": None, "kafka": None}
    assert not list((tmp_path / "g" / "journal").rglob("*.json"))
    assert group.diagnose()["state"] == "NOTHING_IN_FLIGHT"


def test_kafka_is_never_rolled_forward_from_input_that_changed_since_the_decision(request, tmp_path, data):
    """Durable input files hashed at the decision, changed before the roll-forward: recover stops
    (exit 14) and commits nothing to Kafka, rather than publish different data."""
    own = tmp_path / "input.csv"
    own.write_bytes(data.read_bytes())
    group = Group("csv-events", [FILE, _FACTORIES["kafka"](request)], tmp_path / "g", durable=True)
    assert group.publish(own, PUBLISH_CRASH_AT="group_decided").code == -9
    own.write_bytes(data.read_bytes().replace(b"\n", b"\r\n", 1))  # the same rows, other bytes
    stuck = group.recover()
    assert stuck.code == 14 and "changed since the decision" in stuck.stderr, stuck.stderr
    doc = group.diagnose()
    assert doc["state"] == "ROLL_FORWARD" and doc["committed"] == ["out"], doc["reason"]
    assert group.contents()["kafka"] is None


def test_a_roll_forward_from_durable_csv_input_reads_it_as_the_decided_types(request, tmp_path):
    """``--column refund_id=string`` (``schema=``) keeps "007" in every sink; Kafka, staged again from
    the durable CSV after a crash past the decision, must read that column as text too: guessed as
    integers and cast, it would give "7", a checksum that is not the decided one, and a roll-forward
    stuck at exit 14."""
    own = tmp_path / "input.csv"
    own.write_text("refund_id,amount_paise\n007,120\n0010,56\n")
    # A CSV file sink cannot give the run back exactly: Kafka is staged again from the input files.
    group = Group("csv-events", [FILE, _FACTORIES["kafka"](request)], tmp_path / "g", durable=True)
    crashed = group.publish(own, "--column", "refund_id=string", PUBLISH_CRASH_AT="group_decided")
    assert crashed.code == -9, crashed.stderr
    assert group.diagnose()["state"] == "ROLL_FORWARD"
    recovered = group.recover()
    assert recovered.code == 0, recovered.stderr
    assert group.diagnose()["state"] == "DONE"
    contents = group.contents()
    assert contents["file"] is not None and contents["file"].splitlines()[1:] == [b'"007",120', b'"0010",56']
    assert b"007" in contents["kafka"] and b"0010" in contents["kafka"]
