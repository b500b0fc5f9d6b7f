"""The command line: a thin layer over the library. Exit codes are the contract with schedulers.

0   success (publish) / DONE (diagnose, recover)
1   unexpected error
2   usage error, bad input or bad configuration (nothing changed at the destination)
3   publish refused: the run is already published (use --if-absent to make it a no-op)
4   publish lost: the destination refused the commit (another attempt won); own staging removed
10-14  the state of the run: NOTHING_IN_FLIGHT 10, ORPHANED 11, PUBLISHED_WITH_ORPHANS 12,
       RUNNING 13, UNKNOWN 14 (also a commit whose outcome is unknown)
143 stopped by SIGTERM; the attempt removed its own staging
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from diagnostics import recovery
from diagnostics.taxonomy import CleanReport, Diagnosis, State

from . import registry
from ._arrow import open_inputs
from ._errors import (
    AlreadyPublished,
    AtomicPublishError,
    CommitOutcomeUnknown,
    CommitRejected,
    ConfigError,
    InputError,
    RunRefused,
    SinkUnavailable,
    Terminated,
    UnsafeLayout,
)
from ._publish import PublishResult, publish
from ._types import Run, parse_run_date, validate_dataset
from .config import LoadedConfig, load_config

EXIT_ERROR, EXIT_BAD_INPUT, EXIT_ALREADY_PUBLISHED, EXIT_COMMIT_REJECTED, EXIT_TERMINATED = 1, 2, 3, 4, 143

log = logging.getLogger("atomic_publish.cli")


# -- helpers ------------------------------------------------------------------------------------


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("atomic_publish")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, AlreadyPublished):
        return EXIT_ALREADY_PUBLISHED
    if isinstance(exc, RunRefused) and exc.diagnosis is not None:
        return exc.diagnosis.exit_code
    if isinstance(exc, RunRefused):
        return State.RUNNING.exit_code
    if isinstance(exc, CommitOutcomeUnknown):
        return State.UNKNOWN.exit_code
    if isinstance(exc, CommitRejected):
        return EXIT_COMMIT_REJECTED
    if isinstance(exc, InputError | ConfigError | SinkUnavailable | UnsafeLayout):
        return EXIT_BAD_INPUT
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED
    return EXIT_ERROR


def _run_guarded(action: Callable[[], int]) -> NoReturn:
    try:
        code = action()
    except AtomicPublishError as exc:
        _fail(str(exc), _exit_code_for(exc))
    except OSError as exc:
        _fail(f"{exc.__class__.__name__}: {exc}", EXIT_ERROR)
    sys.exit(code)


def _emit_json(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


def _console() -> Any:
    from rich.console import Console

    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, soft_wrap=False)


def _human_size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:,.1f} {unit}"
    return f"{n} B"  # pragma: no cover


def _human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


_DURATION = re.compile(r"(\d+)([smhd])")


def parse_duration(text: str) -> dt.timedelta:
    """Parse ``90s``, ``30m``, ``24h``, ``2d`` or combinations like ``1h30m``."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m, 24h or 2d")
    unit_seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return dt.timedelta(seconds=sum(int(n) * unit_seconds[u] for n, u in parts))


def _print_diagnosis(d: Diagnosis) -> None:
    from rich.table import Table

    console = _console()
    color = {"DONE": "green", "NOTHING_IN_FLIGHT": "cyan", "RUNNING": "yellow", "UNKNOWN": "bold red"}.get(
        d.state.value, "magenta"
    )
    console.print(f"run      {d.run_id}   sink {d.sink}   destination {d.destination}", highlight=False)
    console.print(f"state    [{color}]{d.state.value}[/] (exit {d.exit_code}): {d.state.meaning}", highlight=False)
    console.print(f"why      {d.reason}", highlight=False)
    console.print(f"action   {d.safe_action}", highlight=False)
    if d.holder:
        h = d.holder
        console.print(f"holder   attempt {h.attempt}, pid {h.pid} on {h.host}, since {h.started_at}", highlight=False)
    if d.evidence:
        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("", "kind", "location", "size", "age", "attempt", "rows"):
            table.add_column(column, overflow="fold")
        orphan_ids = {(a.kind, a.location) for a in d.orphans}
        for a in d.evidence:
            mark = "orphan" if (a.kind, a.location) in orphan_ids else ""
            table.add_row(
                mark,
                a.kind,
                a.location,
                _human_size(a.size_bytes),
                _human_age(a.age_seconds(d.diagnosed_at)),
                a.attempt or "-",
                "-" if a.rows is None else f"{a.rows:,}",
            )
        console.print(table)


def _print_clean(report: CleanReport) -> None:
    for a in report.removed:
        click.echo(f"removed  {a.kind} {a.location} ({_human_size(a.size_bytes)}, attempt {a.attempt})")
    for a, why in report.skipped:
        click.echo(f"kept     {a.kind} {a.location}: {why}")
    click.echo(f"freed    {_human_size(report.bytes_freed)}")


class _Progress:
    """A progress bar on stderr, only when stderr is a terminal (never in logs or pipes)."""

    def __init__(self, label: str) -> None:
        self.enabled = sys.stderr.isatty()
        self.label = label
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=Console(stderr=True)
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label)
        return self

    def __call__(self, rows: int, nbytes: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self.label}: {rows:,} rows, {_human_size(nbytes)}")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _resolve(config_path: str | None, sink: str | None) -> tuple[LoadedConfig, Any, Any]:
    config = load_config(config_path)
    definition, options = config.sink(sink)
    return config, definition.make_publisher(options), definition.make_diagnostic(options)


def _report_publish(result: PublishResult, as_json: bool) -> int:
    if as_json:
        _emit_json(result.to_dict())
    elif result.skipped:
        click.echo(f"{result.run.run_id} is already published ({result.diagnosis.state.value}); nothing done")
    elif result.receipt:
        r = result.receipt
        click.echo(
            f"published {r.run_id}: {r.rows:,} rows, {_human_size(r.bytes)} at {r.location} (attempt {r.attempt})"
        )
    return 0


# -- commands -----------------------------------------------------------------------------------

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="ATOMIC_PUBLISH_CONFIG",
    help="TOML config file (default: ./publish.toml if present).",
)
_sink_option = click.option("--sink", help="Sink name from the config (default: [defaults].sink, else 'file').")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON document on stdout.")


def _dataset(value: str) -> str:
    try:
        return validate_dataset(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None


def _date(value: str) -> dt.date:
    try:
        return parse_run_date(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None


def _run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--run-date", required=True, callback=lambda c, p, v: _date(v), help="YYYY-MM-DD")(f)
    f = click.option("--dataset", required=True, callback=lambda c, p, v: _dataset(v), help="Dataset name.")(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.version_option(package_name="atomic-publish")
def cli(verbose: bool, quiet: bool) -> None:
    """Publish a batch job's output all-or-nothing, and diagnose what a crash left behind."""
    _setup_logging(verbose, quiet)


def _publish_command(f: Callable[..., Any]) -> Callable[..., Any]:
    @_config_option
    @_sink_option
    @_run_options
    @click.option("--if-absent", is_flag=True, help="Exit 0 without changes if the run is already published.")
    @_json_option
    @click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
    def publish_cmd(
        config_path: str | None,
        sink: str | None,
        dataset: str,
        run_date: dt.date,
        if_absent: bool,
        as_json: bool,
        inputs: tuple[str, ...],
    ) -> NoReturn:
        """Publish INPUT files (CSV or Parquet) as one run, all or nothing."""

        def action() -> int:
            _, publisher, diagnostic = _resolve(config_path, sink)
            records = open_inputs(inputs)
            with _Progress(f"staging {dataset}/{run_date}") as progress:
                result = publish(
                    publisher, diagnostic, Run.new(dataset, run_date), records, if_absent=if_absent, progress=progress
                )
            return _report_publish(result, as_json)

        _run_guarded(action)

    return f(publish_cmd)


cli.command("publish")(_publish_command(lambda f: f))


@cli.command()
@_config_option
@_sink_option
@_run_options
@click.option("--no-verify", is_flag=True, help="Check sizes only; skip re-reading published data for its checksum.")
@_json_option
def diagnose(
    config_path: str | None, sink: str | None, dataset: str, run_date: dt.date, no_verify: bool, as_json: bool
) -> NoReturn:
    """Name the state of a run (read-only). The exit code is the state's."""

    def action() -> int:
        config = load_config(config_path)
        definition, options = config.sink(sink)
        if no_verify and hasattr(options, "verify_checksum"):
            options = options.model_copy(update={"verify_checksum": False})
        d = definition.make_diagnostic(options).diagnose(Run.new(dataset, run_date))
        _emit_json(d.to_dict()) if as_json else _print_diagnosis(d)
        return d.exit_code

    _run_guarded(action)


@cli.command()
@_config_option
@_sink_option
@_run_options
@click.option("--apply", "apply_", is_flag=True, help="Carry out the plan (default: print it only).")
@_json_option
def recover(
    config_path: str | None, sink: str | None, dataset: str, run_date: dt.date, apply_: bool, as_json: bool
) -> NoReturn:
    """Print the recovery plan for a run; with --apply, clean exactly the orphans it names.

    Exits with the code of the state the run is in at the end (10 means: re-run now).
    """

    def action() -> int:
        _, _, diagnostic = _resolve(config_path, sink)
        plan = recovery.plan_recovery(diagnostic, Run.new(dataset, run_date))
        if not apply_:
            if as_json:
                _emit_json({**plan.to_dict(), "applied": False})
            else:
                _print_diagnosis(plan.diagnosis)
                click.echo("plan (dry run; add --apply to carry it out):")
                for step in plan.steps:
                    click.echo(f"  - {step}")
            return plan.diagnosis.exit_code
        if not as_json:
            _print_diagnosis(plan.diagnosis)
            click.echo("plan:")
            for step in plan.steps:
                click.echo(f"  - {step}")
        outcome = recovery.apply_recovery(diagnostic, plan)
        if as_json:
            _emit_json({**outcome.to_dict(), "applied": True})
        else:
            if outcome.report:
                _print_clean(outcome.report)
            click.echo(f"now      {outcome.after.state.value}: {outcome.after.safe_action}")
        return outcome.after.exit_code

    _run_guarded(action)


@cli.command()
@_config_option
@_sink_option
@click.option("--dataset", required=True, callback=lambda c, p, v: _dataset(v), help="Dataset name.")
@click.option("--older-than", required=True, help="Only orphans of attempts older than this (90s, 30m, 24h, 2d).")
@click.option("--apply", "apply_", is_flag=True, help="Remove them (default: list only).")
@_json_option
def sweep(
    config_path: str | None, sink: str | None, dataset: str, older_than: str, apply_: bool, as_json: bool
) -> NoReturn:
    """The daily orphan-cleaner: every run date of DATASET, orphans older than --older-than."""
    age = parse_duration(older_than)

    def action() -> int:
        _, _, diagnostic = _resolve(config_path, sink)
        report = recovery.sweep(diagnostic, dataset, age, apply=apply_)
        if as_json:
            _emit_json(report.to_dict())
        else:
            if not report.runs:
                click.echo(f"no leftovers for {dataset}")
            for d, _, note in report.runs:
                click.echo(f"{d.run_id:40} {d.state.value:24} {note}")
            if apply_:
                click.echo(f"freed {_human_size(report.bytes_freed)}")
        return 0

    _run_guarded(action)


@cli.command("sinks")
@_config_option
@_json_option
def list_sinks(config_path: str | None, as_json: bool) -> NoReturn:
    """List sink types and the sinks the configuration names."""

    def action() -> int:
        config = load_config(config_path)
        configured = {name: raw.get("type", name) for name, raw in config.settings.sinks.items()}
        types = registry.available()
        doc = {
            "types": types,
            "configured": configured,
            "config_file": str(config.path) if config.path else None,
        }
        if as_json:
            _emit_json(doc)
        else:
            click.echo(f"config: {doc['config_file'] or '(none; embedded default: file)'}")
            click.echo("types:  " + ", ".join(types))
            for name, kind in configured.items():
                click.echo(f"sink {name}: type {kind}")
        return 0

    _run_guarded(action)


def _register_pipeline_commands() -> None:
    from pipelines.cli import refunds

    cli.add_command(refunds)


_register_pipeline_commands()


def main() -> None:
    cli(prog_name="atomic-publish")


def publish_main() -> None:
    """The ``publish`` console script: the same as ``atomic-publish publish``."""
    _setup_logging(verbose=False, quiet=False)
    command = _publish_command(lambda f: click.command(context_settings={"help_option_names": ["-h", "--help"]})(f))
    command(prog_name="publish")
