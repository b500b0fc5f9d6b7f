"""The operator-facing commands, run as separate processes exactly as a scheduler or a person would."""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import cli_env, cli_imports, refunds_run_args, run_cli, tree, write_config

DATE = "2026-04-24"
RUN = ("--dataset", "refunds_settled", "--run-date", DATE)


@pytest.fixture
def dest(tmp_path):
    """A configured, existing (empty) destination root."""
    root = tmp_path / "out"
    root.mkdir()
    return root, write_config(tmp_path / "publish.toml", root)


def _pipeline(cfg, inputs, *extra, env_extra=None):
    return run_cli(*refunds_run_args(inputs, *extra, run_date=DATE), env=cli_env(cfg, **(env_extra or {})))


def test_publish_json_goes_to_stdout_and_logs_to_stderr(dest, small_inputs):
    root, cfg = dest
    result = run_cli("publish", *RUN, "--json", str(small_inputs[0]), config=cfg)
    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["published"] is True and doc["receipt"]["rows"] == 10_000
    assert "staging run" in result.stderr
    assert (root / "refunds_settled" / f"{DATE}.csv.success").exists()


def test_publish_several_inputs_as_one_run(dest, tmp_path):
    root, cfg = dest
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("id,amount\n1,10\n2,20\n")
    b.write_text("id,amount\n3,30\n")
    result = run_cli("publish", *RUN, str(a), str(b), config=cfg)
    assert result.code == 0, result.stderr
    assert (root / "refunds_settled" / f"{DATE}.csv").read_text().splitlines()[1:] == ["1,10", "2,20", "3,30"]


def test_column_types_keep_csv_values_as_written_across_files(tmp_path):
    """A CLI user had no way to keep "007" (a CSV column of digits was guessed as integers, in
    every file): --column NAME=TYPE reads it as that type; the other columns are still guessed."""
    import pyarrow.parquet as pq

    root = tmp_path / "out"
    root.mkdir()
    cfg = write_config(tmp_path / "publish.toml", root, fmt="parquet")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("id,amount,paid_at\n007,10.5,2026-04-24 10:00:00\n010,2,2026-04-24 11:00:00\n")
    b.write_text("id,amount,paid_at\n0099,30,2026-04-24 12:00:00\n")
    result = run_cli(
        "publish",
        *RUN,
        "--column",
        "id=string",
        "--column",
        "paid_at=timestamp[us, tz=UTC]",
        str(a),
        str(b),
        config=cfg,
    )
    assert result.code == 0, result.stderr
    table = pq.read_table(root / "refunds_settled" / f"{DATE}.parquet")
    assert table.column("id").to_pylist() == ["007", "010", "0099"]
    assert str(table.schema.field("amount").type) == "double"  # guessed, as without --column
    assert str(table.schema.field("paid_at").type) == "timestamp[us, tz=UTC]"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("id", "'id' is not NAME=TYPE"),
        ("id=strin", "'strin' is not an Arrow type"),
        ("nope=string", "column(s) 'nope' not in the input (its columns: id, amount)"),
        ("amount=decimal128(40, 2)", "precision"),
        ("amount=timestamp[us, tz=Mars/Olympus]", "'Mars/Olympus' is not a time zone"),
        ("amount=int64", "column 'amount' does not fit type int64"),
    ],
)
def test_a_bad_column_type_exits_2_in_one_line_and_changes_nothing(tmp_path, spec, expected):
    root = tmp_path / "out"
    cfg = write_config(tmp_path / "publish.toml", root)
    data = tmp_path / "in.csv"
    data.write_text("id,amount\n1,10.5\n")
    result = run_cli("publish", *RUN, "--column", spec, str(data), config=cfg)
    assert result.code == 2, result.stderr
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not root.exists()


@pytest.mark.parametrize(
    ("spec", "rows", "expected"),
    [
        # Found from outside: guessed as floats, then cast, these published as ...456.75 and 12.35.
        ("amount=decimal128(20, 2)", "1,1234567890123456.78\n2,12.345\n", "in.csv:3: column 'amount': value '12.345'"),
        ("amount=decimal128(20, 2)", "1,5\n2,123456789012345678901.5\n", "in.csv:3: column 'amount': value"),
        # Guessed as integers, then cast, 10 and -1 published as true.
        ("amount=bool", "1,0\n2,10\n3,-1\n", "in.csv:3: column 'amount': value '10' is not a valid bool"),
    ],
)
def test_a_value_the_declared_type_would_change_exits_2(tmp_path, spec, rows, expected):
    root = tmp_path / "out"
    cfg = write_config(tmp_path / "publish.toml", root)
    data = tmp_path / "in.csv"
    data.write_text("id,amount\n" + rows)
    result = run_cli("publish", *RUN, "--column", spec, str(data), config=cfg)
    assert result.code == 2, result.stderr
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not root.exists()


def test_decimal_and_bool_columns_are_published_exactly_as_written(tmp_path):
    import decimal

    import pyarrow.parquet as pq

    root = tmp_path / "out"
    root.mkdir()
    cfg = write_config(tmp_path / "publish.toml", root, fmt="parquet")
    data = tmp_path / "in.csv"
    data.write_text("amount,paid\n1234567890123456.78,true\n12.3,0\n,1\n-0.01,\n")
    result = run_cli(
        "publish", *RUN, "--column", "amount=decimal128(20, 2)", "--column", "paid=bool", str(data), config=cfg
    )
    assert result.code == 0, result.stderr
    table = pq.read_table(root / "refunds_settled" / f"{DATE}.parquet")
    assert table.column("amount").to_pylist() == [
        decimal.Decimal("1234567890123456.78"),
        decimal.Decimal("12.30"),
        None,
        decimal.Decimal("-0.01"),
    ]
    assert table.column("paid").to_pylist() == [True, False, True, None]


def test_publish_console_script_is_the_same_command(dest, small_inputs):
    _root, cfg = dest
    script = shutil.which("publish", path=os.path.dirname(sys.executable))
    assert script, "the `publish` console script is installed beside the interpreter"
    proc = subprocess.run(
        [script, "--sink", "local", *RUN, "--json", str(small_inputs[0])],
        capture_output=True,
        text=True,
        env=cli_env(cfg),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["receipt"]["rows"] == 10_000


def test_republish_exit_codes_and_if_absent(dest, small_inputs):
    root, cfg = dest
    assert _pipeline(cfg, small_inputs).code == 0
    before = tree(root)
    again = _pipeline(cfg, small_inputs)
    assert again.code == 3 and "already published" in again.stderr and "DONE" in again.stderr
    noop = _pipeline(cfg, small_inputs, "--if-absent", "--json")
    assert noop.code == 0 and noop.json()["skipped_already_published"] is True
    assert tree(root) == before


@pytest.mark.parametrize(
    "args, expected",
    [
        (("--dataset", "..", "--run-date", DATE), "'..'"),
        (("--dataset", "/abs", "--run-date", DATE), "path separator"),
        (("--dataset", "a/b", "--run-date", DATE), "path separator"),
        (("--dataset", "ok", "--run-date", "2026-02-30"), "not a valid date"),
        (("--dataset", "ok", "--run-date", "tomorrow"), "YYYY-MM-DD"),
    ],
)
def test_bad_arguments_exit_2_and_change_nothing(dest, small_inputs, args, expected):
    root, cfg = dest
    assert _pipeline(cfg, small_inputs).code == 0
    before = tree(root)
    result = run_cli("publish", *args, str(small_inputs[0]), config=cfg)
    assert result.code == 2 and expected in result.stderr
    assert tree(root) == before


@pytest.mark.parametrize(
    "content, expected",
    [
        ("id,amount\n1,10\n2\n", ":3: malformed row"),
        ("", "empty"),
        ("id,amount\n", "no rows"),
    ],
)
def test_bad_input_files_exit_2_name_the_problem_and_change_nothing(dest, tmp_path, content, expected):
    root, cfg = dest
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    result = run_cli("publish", *RUN, str(bad), config=cfg)
    assert result.code == 2 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    d = run_cli("diagnose", *RUN, "--json", config=cfg)
    assert d.json()["state"] == "NOTHING_IN_FLIGHT"
    assert not (root / "refunds_settled").exists() or not any((root / "refunds_settled").iterdir())


@pytest.mark.parametrize("sink", ["file", "iceberg"])
def test_an_input_without_rows_creates_nothing_at_a_new_destination(tmp_path, sink):
    """Found from outside: a header-only CSV was refused (exit 2) only after the run's lock was
    taken, so a first publish left the file sink's root and ``_locks/``, or an Iceberg catalog
    database and warehouse. open_inputs now reads the first rows and refuses before any of it."""
    first = tmp_path / "a.csv"
    first.write_text("id,amount\n")
    second = tmp_path / "b.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": pa.array([], pa.int64()), "amount": pa.array([], pa.int64())}), second)
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli("publish", "--sink", sink, *RUN, str(first), str(second), cwd=work, env=cli_env(None))
    assert result.code == 2 and "no rows" in result.stderr and str(first) in result.stderr, result.stderr
    assert list(work.iterdir()) == []


def test_pipeline_missing_column_names_it(dest, tmp_path, small_inputs):
    _root, cfg = dest
    refunds = tmp_path / "refunds.csv"
    refunds.write_text("refund_id,payment_id,merchant_id\nR1,P1,M0000001\n")
    result = _pipeline(cfg, (refunds, small_inputs[1]))
    assert result.code == 2 and "'amount_paise'" in result.stderr


def test_malformed_config_exits_2_with_file_and_line(tmp_path, small_inputs):
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.local]\ntype = "file"\nformat = csv\n')
    result = run_cli("publish", *RUN, str(small_inputs[0]), config=cfg)
    assert result.code == 2 and str(cfg) in result.stderr and "line 3" in result.stderr


def test_missing_extra_exits_2_with_install_hint(tmp_path, small_inputs):
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.warehouse]\ntype = "warehouse-9000"\n')
    result = run_cli("publish", "--sink", "warehouse", *RUN, str(small_inputs[0]), config=cfg)
    assert result.code == 2 and "warehouse-9000" in result.stderr


def test_diagnose_is_read_only_and_exit_code_is_the_state(dest, small_inputs):
    root, cfg = dest
    crashed = _pipeline(cfg, small_inputs, env_extra={"PUBLISH_CRASH_AT": "after_stage"})
    assert crashed.code == -9
    before = tree(root)
    human = run_cli("diagnose", *RUN, config=cfg)
    assert human.code == 11
    assert "ORPHANED" in human.stdout and "staging-data" in human.stdout and "pending-manifest" in human.stdout
    doc = run_cli("diagnose", *RUN, "--json", config=cfg).json()
    assert doc["state"] == "ORPHANED" and doc["exit_code"] == 11
    assert {o["kind"] for o in doc["orphans"]} == {"staging-data", "pending-manifest"}
    assert all(o["attempt"] and o["size_bytes"] > 0 and o["age_seconds"] >= 0 for o in doc["orphans"])
    assert tree(root) == before


def test_recover_prints_a_plan_applies_it_and_a_second_apply_changes_nothing(dest, small_inputs):
    root, cfg = dest
    assert _pipeline(cfg, small_inputs, env_extra={"PUBLISH_CRASH_AT": "after_data_rename"}).code == -9
    before = tree(root)
    plan = run_cli("recover", *RUN, config=cfg)
    assert plan.code == 11 and "unmarked-output" in plan.stdout and "dry run" in plan.stdout
    assert tree(root) == before
    applied = run_cli("recover", *RUN, "--apply", "--json", config=cfg)
    assert applied.code == 10, applied.stderr
    doc = applied.json()
    assert {a["kind"] for a in doc["report"]["removed"]} == {"unmarked-output", "pending-manifest"}
    assert doc["after"]["state"] == "NOTHING_IN_FLIGHT"
    after_first = tree(root)
    second = run_cli("recover", *RUN, "--apply", "--json", config=cfg)
    assert second.code == 10 and second.json()["report"] is None
    assert tree(root) == after_first


def test_recover_never_touches_published_data(dest, small_inputs):
    root, cfg = dest
    assert _pipeline(cfg, small_inputs, env_extra={"PUBLISH_CRASH_AT": "after_commit"}).code == -9
    published = root / "refunds_settled" / f"{DATE}.csv"
    data = published.read_bytes()
    result = run_cli("recover", *RUN, "--apply", "--json", config=cfg)
    assert result.code == 0
    assert result.json()["plan"]["diagnosis"]["state"] == "PUBLISHED_WITH_ORPHANS"
    assert published.read_bytes() == data


def test_recover_refuses_unknown(dest, small_inputs):
    root, cfg = dest
    assert _pipeline(cfg, small_inputs).code == 0
    (root / "refunds_settled" / f"{DATE}.csv").write_text("tampered\n")
    before = tree(root)
    result = run_cli("recover", *RUN, "--apply", config=cfg)
    assert result.code == 14 and "UNKNOWN" in result.stderr + result.stdout
    assert tree(root) == before


def test_sweep_removes_only_old_orphans_across_run_dates(dest, small_inputs):
    root, cfg = dest
    for date in ("2026-04-20", "2026-04-21"):
        r = run_cli(*refunds_run_args(small_inputs, run_date=date), env=cli_env(cfg, PUBLISH_CRASH_AT="after_stage"))
        assert r.code == -9
    old = (dt.datetime.now() - dt.timedelta(days=2)).timestamp()
    for path in (root / "_staging" / "refunds_settled").glob("2026-04-20.*"):
        os.utime(path, (old, old))
    listing = run_cli("sweep", "--dataset", "refunds_settled", "--older-than", "24h", "--json", config=cfg)
    assert listing.code == 0 and len(listing.json()["runs"]) == 2
    swept = run_cli("sweep", "--dataset", "refunds_settled", "--older-than", "24h", "--apply", "--json", config=cfg)
    assert swept.code == 0
    remaining = sorted(p.name.split(".")[0] for p in (root / "_staging" / "refunds_settled").iterdir())
    assert remaining == ["2026-04-21", "2026-04-21"]
    bad = run_cli("sweep", "--dataset", "refunds_settled", "--older-than", "a while", config=cfg)
    assert bad.code == 2 and "duration" in bad.stderr


def test_sweep_fails_when_it_leaves_a_run_that_needs_an_operator(dest, small_inputs):
    """Found from outside: sweep exited 0 though it left an UNKNOWN run alone, so a scheduled sweep
    never alerted. It still removes the other runs' old orphans, and never touches the UNKNOWN one."""
    root, cfg = dest
    for date in ("2026-04-20", "2026-04-22"):
        r = run_cli(*refunds_run_args(small_inputs, run_date=date), env=cli_env(cfg, PUBLISH_CRASH_AT="after_stage"))
        assert r.code == -9
    (root / "refunds_settled").mkdir(exist_ok=True)
    (root / "refunds_settled" / "2026-04-22.csv").write_text("id\n1\n")  # data no evidence explains
    old = (dt.datetime.now() - dt.timedelta(days=2)).timestamp()
    for path in (root / "_staging" / "refunds_settled").iterdir():
        os.utime(path, (old, old))
    swept = run_cli("sweep", "--dataset", "refunds_settled", "--older-than", "24h", "--apply", "--json", config=cfg)
    assert swept.code == 14, swept.stdout + swept.stderr
    states = {r["run_id"]: r["state"] for r in (entry["diagnosis"] for entry in swept.json()["runs"])}
    assert states == {"refunds_settled/2026-04-20": "ORPHANED", "refunds_settled/2026-04-22": "UNKNOWN"}, states
    remaining = sorted(p.name.split(".")[0] for p in (root / "_staging" / "refunds_settled").iterdir())
    assert remaining == ["2026-04-22"] * len(remaining) and remaining, remaining


def test_readme_demo_command_runs_from_a_clean_directory(tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli(
        "refunds", "demo", "--dir", str(tmp_path / "demo"), "--rows", "5000", "--json", cwd=tmp_path, env=cli_env()
    )
    assert result.code == 0, result.stderr
    assert result.json()["published"] is True
    assert (tmp_path / "demo" / "out" / "refunds_settled" / "2026-04-24.csv.success").exists()
    # It wrote only under --dir: nothing beside it in the directory it ran from.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "demo"])


def test_progress_is_never_drawn_when_stderr_is_not_a_terminal(dest, tmp_path, small_inputs):
    """Logs and pipes get plain lines: no progress bar, no spinner, no terminal escape codes (the bar
    itself, with its percentage and time remaining for Parquet input, was checked in tmux)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    _, cfg = dest
    parquet = tmp_path / "refunds.parquet"
    pq.write_table(pacsv.read_csv(small_inputs[0]), parquet)
    result = run_cli("publish", *RUN, str(parquet), config=cfg)
    assert result.code == 0, result.stderr
    assert "\x1b[" not in result.stderr + result.stdout
    assert "━" not in result.stderr and "%" not in result.stderr
    assert [line.split(" ", 2)[1] for line in result.stderr.splitlines()] == ["INFO", "INFO"]


def test_help_imports_nothing_heavy():
    """`atomic-publish --help` (and a usage error) must not pay for pyarrow, pydantic, numpy or a
    sink: they are imported by the commands that use them (the start-up time is in bench/)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from atomic_publish.cli import cli\n"
        "try:\n"
        "    cli.main(['--help'], standalone_mode=False)\n"
        "    cli.main(['publish', '--help'], standalone_mode=False)\n"
        "finally:\n"
        "    heavy = ('pyarrow', 'pydantic', 'numpy', 'atomic_publish.diagnostics.recovery',\n"
        "             'atomic_publish.publishers.file', 'atomic_publish.pipelines.refunds')\n"
        "    print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr


def test_diagnose_on_the_file_sink_imports_no_pyarrow(tmp_path):
    """diagnose reads the disk: the file sink's diagnosis of a run with a published output and an
    orphan (a dead attempt's staging, its checksum verified) needs neither pyarrow nor numpy, and no
    command imports pydantic-settings (the environment is read by ``environment_overrides``)."""
    cfg = write_config(tmp_path / "publish.toml", tmp_path / "out")
    data = tmp_path / "in.csv"
    data.write_text("id,amount\n1,2\n")
    args = ("--dataset", "refunds", "--run-date", "2026-05-16")
    assert run_cli("publish", *args, str(data), env=cli_env(cfg)).code == 0
    orphan = tmp_path / "out" / "_staging" / "refunds" / "2026-05-16.20260516T000000Z-abcdef.csv"
    orphan.write_text("id,amount\n")
    code, out, err, imported = cli_imports(
        "diagnose", *args, env=cli_env(cfg), watch=("pyarrow", "numpy", "pydantic_settings")
    )
    assert "PUBLISHED_WITH_ORPHANS" in out, out + err
    assert (code, imported) == (12, []), err


def test_an_unused_iceberg_sink_costs_no_imports_and_is_still_checked_in_full_when_listed_or_used(tmp_path):
    """A publish.toml with an Iceberg sink next to the one a command uses: the command does not
    import pyiceberg, SQLAlchemy or pyarrow to check the unused sink's catalog (0.15 s, most of a
    diagnosis); ``atomic-publish sinks`` and a command that uses that sink still refuse its bad
    catalog URL, naming it."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[defaults]\nsink = "f"\n[sinks.f]\ntype = "file"\nroot = "{tmp_path / "out"}"\n'
        '[sinks.lake]\ntype = "iceberg"\n[sinks.lake.catalog]\ntype = "sql"\nuri = "no url at all"\n'
        f'warehouse = "{tmp_path / "wh"}"\n'
    )
    args = ["--dataset", "refunds", "--run-date", "2026-05-16"]
    (tmp_path / "out").mkdir()
    code, out, err, imported = cli_imports(
        "diagnose", *args, env=cli_env(cfg), watch=("pyarrow", "pyiceberg", "sqlalchemy")
    )
    assert "NOTHING_IN_FLIGHT" in out, out + err
    assert (code, imported) == (10, []), err
    for command in (["sinks"], ["diagnose", "--sink", "lake", *args]):
        result = run_cli(*command, env=cli_env(cfg))
        assert result.code == 2, (command, result.code, result.stderr)
        assert "catalog.uri = 'no url at all' is not a database URL" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_publish_to_the_file_sink_imports_no_pandas(tmp_path, fmt):
    """pandas costs 0.3 s and 40 MB at start-up; nothing on the publish path needs it (it came in
    once through ``Schema.empty_table()``, for the CSV header)."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.f]\ntype = "file"\nroot = "{tmp_path / "out"}"\nformat = "{fmt}"\n')
    data = tmp_path / "in.csv"
    data.write_text("id,amount\n1,2\n3,4\n")
    code, out, err, imported = cli_imports(
        "-q",
        "publish",
        "--sink",
        "f",
        "--dataset",
        "refunds",
        "--run-date",
        "2026-05-16",
        str(data),
        env=cli_env(cfg),
        watch=("pandas",),
    )
    assert (code, imported) == (0, []), out + err


@pytest.mark.parametrize(
    ("args", "config_text", "expected"),
    [
        (  # found from outside: "Invalid value:" did not name the option
            ("sweep", "--dataset", "kk", "--older-than", "1x"),
            "",
            "error: Invalid value for '--older-than': '1x' is not a duration like 90s, 30m, 24h or 2d",
        ),
        (  # found from outside: said only "No such option '--config'"
            ("--config", "x.toml", "diagnose", "--dataset", "kk", "--run-date", "2026-01-01"),
            "",
            "(--config goes after the command: atomic-publish COMMAND --config ...)",
        ),
        (  # found from outside: "configured sinks: none", although two need no configuration
            ("diagnose", "--dataset", "kk", "--run-date", "2026-01-01", "--sink", "nosuch"),
            None,
            "configured sinks: none (with none, --sink file and --sink iceberg work as they are)",
        ),
        (
            ("sweep", "--dataset", "kk", "--older-than=99999999999d"),
            "",
            "error: Invalid value for '--older-than': '99999999999d' is longer than any age an attempt can have",
        ),
        (
            ("diagnose", "--dataset", "kk", "--run-date", "2026-01-01", "--sink", "file", "--group", "g"),
            "",
            "error: --sink and --group: give one (a group names its sinks in the config)",
        ),
        (
            ("sinks",),
            '[pipeline]\nschedule_time = "25:99"\n',
            "pipeline.schedule_time = '25:99': is not a time of day (HH:MM, 00:00 to 23:59)",
        ),
        (
            ("sinks",),
            '[pipeline]\ntimezone = "Mars/Olympus"\n',
            "pipeline.timezone = 'Mars/Olympus': is not a timezone of the IANA database",
        ),
    ],
    ids=[
        "bad-duration",
        "option-before-command",
        "no-config-unknown-sink",
        "huge-age",
        "sink-and-group",
        "hour-25",
        "unknown-timezone",
    ],
)
def test_bad_input_found_from_outside_is_one_line_and_exit_2(tmp_path, args, config_text, expected):
    """Each was a traceback or 'unexpected ...' with exit 1 (or, for the timezone, a message naming
    no file, line or field), or named too little. ``config_text`` None: no configuration at all."""
    if config_text is None:
        result = run_cli(*args, env=cli_env(None), cwd=tmp_path)
    else:
        cfg = tmp_path / "publish.toml"
        cfg.write_text(config_text + f'[sinks.file]\ntype = "file"\nroot = "{tmp_path / "out"}"\n')
        result = run_cli(*args, config=cfg)
    assert result.code == 2, result.stderr
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["1h1h", "30m2h", "1d1d"])
def test_a_duration_with_a_unit_twice_or_out_of_order_is_refused(text):
    """Found from outside: "1h1h" was taken (as 2h)."""
    import click

    from atomic_publish.cli import parse_duration

    with pytest.raises(click.BadParameter, match="is not a duration"):
        parse_duration(text)
    assert parse_duration("1d2h30m15s").total_seconds() == 86400 + 7200 + 1800 + 15


def test_diagnose_into_a_pipe_never_cuts_a_path(tmp_path):
    """Found from outside: to a file or pipe (cron, a scheduler's log) the output was wrapped at 160
    columns, and staging paths, keys and checksums were split over lines."""
    root = tmp_path / "out"
    root.mkdir()
    cfg = write_config(tmp_path / "publish.toml", root)
    data = tmp_path / "in.csv"
    data.write_text("id,v\n1,2\n")
    dataset = "d" + "x" * 99
    run = ("--dataset", dataset, "--run-date", DATE)
    crashed = run_cli("publish", *run, str(data), env=cli_env(cfg, PUBLISH_CRASH_AT="after_stage"))
    assert crashed.code == -9, crashed.stderr
    result = run_cli("diagnose", *run, config=cfg)
    assert result.code == 11, result.stdout + result.stderr
    staged = [p for p in (root / "_staging").rglob("*") if p.is_file()]
    assert staged and all(len(str(p)) > 160 for p in staged)
    lines = result.stdout.splitlines()
    for path in staged:
        assert any(str(path) in line for line in lines), result.stdout
