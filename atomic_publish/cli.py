"""The command line: a thin layer over the library. Exit codes are the contract with schedulers;
the table is ``atomic_publish.EXIT_CODES`` and ``atomic-publish --help`` prints it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click

from .sdk import (
    EXIT_CODES,
    EXIT_ERROR,
    AtomicPublishError,
    InputError,
    Run,
    Terminated,
    exit_code_for,
    first_line,
    parse_run_date,
    pending_signal,
    received_signal,
    terminate_on_signals,
    validate_dataset,
)

if TYPE_CHECKING:
    from . import LoadedConfig, PublishResult
    from .sdk import CleanReport, Diagnosis

# pyarrow, pydantic, the sinks and the diagnostics are imported by the commands that use them, not
# here: `atomic-publish --help` (and a typo's usage error) starts in a fraction of the time.


def load_config(config_path: str | None) -> LoadedConfig:
    from . import load_config as load

    return load(config_path)


def _load_config_for(config_path: str | None, sink: str | None, group: str | None) -> LoadedConfig:
    """The configuration of a command that uses ``sink`` (or ``group``'s sinks), loaded before the
    command's first pyarrow import, so that pyarrow can come without NumPy and pandas (_lean_arrow)."""
    config = load_config(config_path)
    _lean_arrow(config, sink, group)
    return config


log = logging.getLogger("atomic_publish.cli")
_verbose = {"on": False}

EXIT_TABLE = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
CONFIG_LOOKUP = (
    "The configuration is --config FILE, else $ATOMIC_PUBLISH_CONFIG, else ./publish.toml if it exists, "
    "else the embedded default (the file sink under ./data/out); ATOMIC_PUBLISH_<PATH> variables override "
    "any value (e.g. ATOMIC_PUBLISH_SINKS__FILE__ROOT=/mnt/out)."
)


# -- helpers ------------------------------------------------------------------------------------


def _setup_logging(verbose: bool, quiet: bool) -> None:
    _verbose["on"] = verbose
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("atomic_publish")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _RedactingFormatter(logging.Formatter):
    """Log lines (and the tracebacks -v adds) with every secret hidden (publishers._secrets)."""

    def format(self, record: logging.LogRecord) -> str:
        from .sdk import redact

        return redact(super().format(record))


def _fail(message: str, code: int, exc: BaseException | None = None) -> NoReturn:
    """One line on stderr, the documented exit code; with --json, the same as a document on stdout
    (so an orchestrator reading stdout always gets one)."""
    for line in message.splitlines() or [""]:
        if line.strip():
            click.echo(f"error: {line.strip()}", err=True)
    if _wants_json():
        from .sdk import RunRefused

        diagnosis = exc.diagnosis if isinstance(exc, RunRefused) else None
        doc = {
            "error": message,
            "error_type": type(exc).__name__ if exc is not None else "Interrupted",
            "exit_code": code,
            "diagnosis": diagnosis.to_dict() if diagnosis is not None else None,
        }
        _emit_json(doc)
        _close_stdout()
    sys.exit(code)


def run_guarded(action: Callable[[], int]) -> NoReturn:
    """Run a command's action: SIGTERM/SIGINT before a commit end it with 143/130 (the library
    removes its own staging); errors become one line on stderr and the documented exit code (a
    traceback only with -v); a closed stdout (``| head``) does not change the exit code."""
    try:
        with terminate_on_signals():
            code = action()
    except AtomicPublishError as exc:
        log.debug("failed", exc_info=True)
        _stopped_by_a_signal(exc, exit_code_for(exc))
        _fail(_one_line(exc), exit_code_for(exc), exc)
    except BrokenPipeError:
        sys.stderr.close()  # nothing more can be said; keep the code the command had
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except click.UsageError:
        raise  # a usage error found by the action (--sink with --group): exit 2, as click's own
    except Exception as exc:
        _stopped_by_a_signal(exc, EXIT_ERROR)
        if _verbose["on"]:
            import traceback

            from .sdk import redact

            sys.stderr.write(redact(traceback.format_exc()))
        _fail(f"unexpected {type(exc).__name__}: {_one_line(exc)} (run with -v for the traceback)", EXIT_ERROR, exc)
    _close_stdout()
    sys.exit(code)


# What a signal's stop can turn into when its exception is caught and wrapped on the way up (a
# driver's callback, an import cut in half): a failure that says nothing about the destination.
_WRAPPED_STOP = (EXIT_ERROR, 2, 5)  # a bug, bad input, "the destination failed before the commit point"


def _stopped_by_a_signal(exc: BaseException, code: int) -> None:
    """SIGTERM/SIGINT arrived before the commit point and the command failed with something else:
    the stop is what happened (exit 143/130, as documented), with the failure it caused named. A
    code that tells the destination's state (already published, a verdict, an unknown outcome)
    is kept."""
    signum = received_signal()
    if not signum or isinstance(exc, Terminated) or code not in _WRAPPED_STOP:
        return
    import signal

    what = f"received {signal.Signals(signum).name}; stopped before the commit point ({_one_line(exc)})"
    _fail(what, 128 + signum, exc)


def _wants_json() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("as_json"))


def _one_line(exc: BaseException) -> str:
    """The error's message for stderr: a ConfigError's one line per problem; any other error's one
    line, a control character in it (a line break or an escape in a file's name) shown as ``\\xNN``
    (found in review: an input named with a line break split the error in two)."""
    from .sdk import ConfigError, redact

    if isinstance(exc, ConfigError):
        return redact(str(exc).strip())
    text = str(exc).strip() if isinstance(exc, AtomicPublishError) else first_line(exc)
    return redact(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _close_stdout() -> None:
    """Flush stdout now, so a reader that went away (``diagnose --json | head -c0``) does not turn
    the command's exit code into a BrokenPipe error at interpreter exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _to_devnull(sys.stdout.fileno())


def _to_devnull(fd: int) -> None:
    """Point ``fd`` (stdout, whose reader left) at /dev/null: nothing is left to flush at exit."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)


def _emit_json(doc: dict[str, Any]) -> None:
    _echo(json.dumps(doc, indent=2, default=str))


def _echo(text: str) -> None:
    """Print to stdout; a reader that went away is not an error of the command."""
    try:
        click.echo(text)
    except BrokenPipeError:
        _close_stdout()


def _console() -> Any:
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(file=sys.stdout, soft_wrap=False)
    # To a file or a pipe (cron, a scheduler's log): no line is wrapped and no key, path or checksum
    # is folded, whatever its length (found from outside: cut at 160 columns, they were copied broken).
    return Console(file=sys.stdout, width=100_000, soft_wrap=True)


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
    units = [u for _, u in parts]
    # Each unit once, largest first: "1h1h" (found from outside: taken as 2h) is a typo, not an age.
    in_order = units == sorted(set(units), key="dhms".index)
    if not parts or "".join(n + u for n, u in parts) != cleaned or not in_order:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m, 24h or 2d")
    unit_seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return dt.timedelta(seconds=sum(int(n) * unit_seconds[u] for n, u in parts))
    except OverflowError:
        raise click.BadParameter(f"{text!r} is longer than any age an attempt can have") from None


def _print_diagnosis(d: Diagnosis) -> None:
    try:
        _print_diagnosis_table(d)
    except BrokenPipeError:
        _close_stdout()


def _print_diagnosis_table(d: Diagnosis) -> None:
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


class Progress:
    """Progress on stderr, only when stderr is a terminal (never in logs or pipes): rows and stored
    bytes so far, their rate, and, when the input's row count is known (Parquet footers), a bar with
    the percentage and the time remaining. While it is shown, log lines are printed above it (they
    never overwrite it)."""

    def __init__(
        self,
        label: str,
        total_rows: int | None = None,
        total_bytes: int | None = None,
        bytes_read: Callable[[], int] | None = None,
    ) -> None:
        self.enabled = sys.stderr.isatty()
        self.label = label
        # Rows when the input's row count is known (Parquet footers); else the bytes of CSV input read.
        self._bytes_read = bytes_read if not total_rows and total_bytes else None
        self.total = total_rows or (total_bytes if self._bytes_read else None)
        self._progress: Any = None
        self._task: Any = None
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            console = Console(stderr=True)
            columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
            if self.total:
                columns += [BarColumn(), TaskProgressColumn(), TextColumn("left"), TimeRemainingColumn()]
            columns += [TextColumn("elapsed"), TimeElapsedColumn()]
            self._progress = Progress(*columns, console=console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total)
            # Log lines go through the live display (printed above the bar, not over it).
            for handler in logging.getLogger("atomic_publish").handlers:
                if isinstance(handler, logging.StreamHandler):
                    self._handlers.append((handler, handler.stream))
                    handler.setStream(_ConsoleStream(console))
        return self

    def __call__(self, rows: int, nbytes: int) -> None:
        if self._progress is not None:
            done = self._bytes_read() if self._bytes_read is not None else rows
            self._progress.update(
                self._task, completed=done, description=f"{self.label}: {rows:,} rows, {_human_size(nbytes)}"
            )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        for handler, stream in self._handlers:
            handler.setStream(stream)


class _ConsoleStream:
    """A text stream that prints through a rich console (which keeps its live display below)."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def write(self, text: str) -> int:
        if text.strip():
            self.console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass


def _resolve(config: str | LoadedConfig | None, sink: str | None) -> tuple[LoadedConfig, Any, Any]:
    """The configuration (read once per command: an Iceberg sink's validation reads pyiceberg's own
    configuration too), the sink's publisher and its diagnostic."""
    if config is None or isinstance(config, str):
        config = load_config(config)
    definition, options = config.sink(sink)
    return config, definition.make_publisher(options), definition.make_diagnostic(options)


def _warn_of_a_signal_in_the_commit() -> None:
    if pending_signal():
        import signal

        name = signal.Signals(pending_signal()).name
        click.echo(f"warning: {name} arrived during the commit; the commit finished: the run is published", err=True)


def report_publish(result: PublishResult, as_json: bool) -> int:
    if result.receipt is not None:
        _warn_of_a_signal_in_the_commit()
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

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="ATOMIC_PUBLISH_CONFIG",
    help="TOML config file (default: $ATOMIC_PUBLISH_CONFIG, else ./publish.toml if present, else the "
    "embedded default).",
)
sink_option = click.option("--sink", help="Sink name from the config (default: [defaults].sink, else 'file').")
group_option = click.option(
    "--group", help="A group of sinks from the config ([groups.NAME]): the run in every one (see docs/groups.md)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON document on stdout.")


def _dataset(value: str) -> str:
    try:
        return validate_dataset(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None


def run_date_value(value: str) -> dt.date:
    try:
        return parse_run_date(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None


_TIMESTAMP_TZ = re.compile(r"timestamp\[(s|ms|us|ns),\s*tz=([^\]\s]+)\]")
_DECIMAL = re.compile(r"decimal(128|256)?\(\s*(\d+)\s*,\s*(-?\d+)\s*\)")


def _column_types(ctx: click.Context, param: click.Parameter, specs: tuple[str, ...]) -> dict[str, Any]:
    """``--column NAME=TYPE`` options as {name: Arrow type}; a bad one is a usage error naming it."""
    if not specs:
        return {}  # pyarrow is imported when a command needs it, after the sinks are known (_LeanArrow)
    import pyarrow as pa

    types: dict[str, Any] = {}
    for spec in specs:
        name, eq, text = spec.partition("=")
        text = text.strip()
        if not eq or not name:
            raise click.BadParameter(f"{spec!r} is not NAME=TYPE (for example refund_id=string)")
        if name in types:
            raise click.BadParameter(f"column {name!r} is given twice")
        if m := _TIMESTAMP_TZ.fullmatch(text):
            if not re.fullmatch(r"[+-]\d\d:\d\d", m.group(2)):  # Arrow takes a fixed offset or a zone name
                import zoneinfo

                try:
                    zoneinfo.ZoneInfo(m.group(2))
                except (ValueError, zoneinfo.ZoneInfoNotFoundError):
                    raise click.BadParameter(f"{spec!r}: {m.group(2)!r} is not a time zone") from None
            types[name] = pa.timestamp(m.group(1), tz=m.group(2))
        elif m := _DECIMAL.fullmatch(text):
            make = pa.decimal256 if m.group(1) == "256" else pa.decimal128
            try:
                types[name] = make(int(m.group(2)), int(m.group(3)))
            except (ValueError, pa.ArrowInvalid) as exc:
                raise click.BadParameter(f"{spec!r}: {exc}") from None
        else:
            try:
                types[name] = pa.type_for_alias(text)
            except ValueError:
                raise click.BadParameter(
                    f"{spec!r}: {text!r} is not an Arrow type (string, int64, int32, float64, bool, date32, "
                    "timestamp[us], timestamp[us, tz=UTC], decimal128(P, S), ...)"
                ) from None
    return types


def _with_column_types(records: Any, types: dict[str, Any]) -> Any:
    """The run's schema: the input's columns (guessed from a CSV file, a Parquet file's own), with
    the types ``--column`` gives; None when it gives none."""
    import pyarrow as pa

    if not types:
        return None
    guessed = records.reader().schema
    unknown = [name for name in types if name not in guessed.names]
    if unknown:
        raise click.BadParameter(
            f"column(s) {', '.join(map(repr, unknown))} not in the input (its columns: {', '.join(guessed.names)})",
            param_hint="'--column'",
        )
    return pa.schema([f.with_type(types.get(f.name, f.type)) for f in guessed], metadata=guessed.metadata)


def _run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--run-date", required=True, callback=lambda c, p, v: run_date_value(v), help="YYYY-MM-DD")(f)
    f = click.option("--dataset", required=True, callback=lambda c, p, v: _dataset(v), help="Dataset name.")(f)
    return f


class _Commands(click.Group):
    """The CLI's commands. A pipeline's commands are imported when asked for, by their import path:
    the pipelines build on this module, so it never imports them."""

    pipelines = {"refunds": "atomic_publish.pipelines.cli:refunds"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.pipelines})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.pipelines and cmd_name not in self.commands:
            import importlib

            module, _, attribute = self.pipelines[cmd_name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            command.epilog = EXIT_TABLE
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]}, epilog=f"{CONFIG_LOOKUP}\n\n{EXIT_TABLE}"
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr (and tracebacks of unexpected errors).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.version_option(package_name="atomic-publish")
def cli(verbose: bool, quiet: bool) -> None:
    """Publish a batch job's output all-or-nothing, and diagnose what a crash left behind."""
    _setup_logging(verbose, quiet)


def _publish_command(f: Callable[..., Any]) -> Callable[..., Any]:
    @config_option
    @sink_option
    @group_option
    @_run_options
    @click.option("--if-absent", is_flag=True, help="Exit 0 without changes if the run is already published.")
    @click.option(
        "--column",
        "columns",
        multiple=True,
        metavar="NAME=TYPE",
        callback=_column_types,
        help="Read column NAME as TYPE, an Arrow type (string keeps a CSV value as written: 007 stays 007; "
        "int64, float64, bool, date32, timestamp[us, tz=UTC], decimal128(12, 2), ...). Repeat for more "
        "columns; the others are guessed from a CSV file's first block, or as a Parquet file has them.",
    )
    @json_option
    @click.argument("inputs", nargs=-1, required=True)
    def publish_cmd(
        config_path: str | None,
        sink: str | None,
        group: str | None,
        dataset: str,
        run_date: dt.date,
        if_absent: bool,
        columns: dict[str, Any],
        as_json: bool,
        inputs: tuple[str, ...],
    ) -> NoReturn:
        """Publish INPUT files (CSV or Parquet) as one run, all or nothing."""

        def action() -> int:
            if group is not None:
                return _publish_group(config_path, sink, group, dataset, run_date, inputs, if_absent, columns, as_json)
            config = _load_config_for(config_path, sink, None)
            from . import refuse_if_rolling_forward

            refuse_if_rolling_forward(config, sink, Run.new(dataset, run_date))
            _, publisher, diagnostic = _resolve(config, sink)
            from . import open_inputs, publish

            records = open_inputs(inputs)
            schema = _with_column_types(records, columns)
            with Progress(
                f"staging {dataset}/{run_date}",
                total_rows=records.rows,
                total_bytes=records.size,
                bytes_read=records.bytes_read,
            ) as progress:
                result = publish(
                    publisher,
                    diagnostic,
                    Run.new(dataset, run_date),
                    records,
                    if_absent=if_absent,
                    schema=schema,
                    progress=progress,
                )
            return report_publish(result, as_json)

        run_guarded(action)

    return f(publish_cmd)


cli.command("publish")(_publish_command(lambda f: f))


@cli.command()
@config_option
@sink_option
@group_option
@_run_options
@click.option("--no-verify", is_flag=True, help="Check sizes only; skip re-reading published data for its checksum.")
@json_option
def diagnose(
    config_path: str | None,
    sink: str | None,
    group: str | None,
    dataset: str,
    run_date: dt.date,
    no_verify: bool,
    as_json: bool,
) -> NoReturn:
    """Name the state of a run (read-only). The exit code is the state's."""

    def action() -> int:
        if group is not None:
            _only_one(sink, group)
            config = _load_config_for(config_path, None, group)
            from . import diagnose_group

            g = diagnose_group(dataset=dataset, run_date=run_date, group=group, config=config)
            _emit_json(g.to_dict()) if as_json else _print_group(g)
            return g.exit_code
        config = _load_config_for(config_path, sink, None)
        definition, options = config.sink(sink)
        if no_verify and hasattr(options, "verify_checksum"):
            options = options.model_copy(update={"verify_checksum": False})
        from .diagnostics import as_groups_leave_it

        d = as_groups_leave_it(config, sink, definition.make_diagnostic(options).diagnose(Run.new(dataset, run_date)))
        _emit_json(d.to_dict()) if as_json else _print_diagnosis(d)
        return d.exit_code

    run_guarded(action)


@cli.command()
@config_option
@sink_option
@group_option
@_run_options
@click.option("--apply", "apply_", is_flag=True, help="Carry out the plan (default: print it only).")
@json_option
def recover(
    config_path: str | None,
    sink: str | None,
    group: str | None,
    dataset: str,
    run_date: dt.date,
    apply_: bool,
    as_json: bool,
) -> NoReturn:
    """Print the recovery plan for a run; with --apply, clean exactly the orphans it names.

    Exits with the code of the state the run is in at the end (10 means: re-run now).
    """

    def action() -> int:
        if group is not None:
            return _recover_group(config_path, sink, group, dataset, run_date, apply_, as_json)
        config = _load_config_for(config_path, sink, None)
        from . import diagnostics as recovery
        from . import refuse_if_rolling_forward

        refuse_if_rolling_forward(config, sink, Run.new(dataset, run_date))  # a plan only its group carries out
        _, _, diagnostic = _resolve(config, sink)
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

    run_guarded(action)


def _only_one(sink: str | None, group: str | None) -> None:
    if sink is not None and group is not None:
        raise click.UsageError("--sink and --group: give one (a group names its sinks in the config)")


def _publish_group(
    config_path: str | None,
    sink: str | None,
    group: str,
    dataset: str,
    run_date: dt.date,
    inputs: tuple[str, ...],
    if_absent: bool,
    columns: dict[str, Any],
    as_json: bool,
) -> int:
    _only_one(sink, group)
    config = _load_config_for(config_path, None, group)
    from . import open_inputs, publish_group

    records = open_inputs(inputs)
    result = publish_group(
        records,
        dataset=dataset,
        run_date=run_date,
        group=group,
        config=config,
        if_absent=if_absent,
        schema=_with_column_types(records, columns),
    )
    if not result.skipped:
        _warn_of_a_signal_in_the_commit()  # found from outside: a group said nothing of it
    if as_json:
        _emit_json(result.to_dict())
    elif result.skipped:
        click.echo(f"run {result.run.run_id} is already published to group {group}: nothing to do")
    else:
        for name, receipt in result.receipts.items():
            click.echo(f"published {receipt.run_id} to {name}: {receipt.rows:,} rows at {receipt.location}")
        click.echo(f"group {group}: complete (attempt {result.run.attempt})")
    return 0


def _print_group(g: Any) -> None:
    click.echo(f"run      {g.run_id}   group {g.group}")
    click.echo(f"state    {g.state.value} (exit {g.exit_code}): {g.state.meaning}")
    click.echo(f"why      {g.reason}")
    click.echo(f"action   {g.safe_action}")
    for name in g.order:
        d = g.sinks[name]
        click.echo(f"  {name:16} {d.state.value:24} {d.reason}")


def _recover_group(
    config_path: str | None, sink: str | None, group: str, dataset: str, run_date: dt.date, apply_: bool, as_json: bool
) -> int:
    _only_one(sink, group)
    config = _load_config_for(config_path, None, group)
    from . import recover_group

    outcome = recover_group(dataset=dataset, run_date=run_date, group=group, config=config, apply=apply_)
    if as_json:
        _emit_json(outcome.to_dict())
    else:
        _print_group(outcome.before)
        click.echo("plan:" if apply_ else "plan (dry run; add --apply to carry it out):")
        for step in outcome.steps:
            click.echo(f"  - {step}")
        if outcome.after is not None:
            click.echo(f"now      {outcome.after.state.value}: {outcome.after.safe_action}")
    return (outcome.after or outcome.before).exit_code


def _sweep_group(
    config_path: str | None, sink: str | None, group: str, dataset: str, age: dt.timedelta, apply_: bool, as_json: bool
) -> int:
    from . import sweep_group

    _only_one(sink, group)
    report = sweep_group(dataset=dataset, older_than=age, group=group, config=load_config(config_path), apply=apply_)
    return _report_sweep(report, f"{dataset} in group {group}", apply_, as_json)


def _report_sweep(report: Any, what: str, apply_: bool, as_json: bool) -> int:
    if as_json:
        _emit_json(report.to_dict())
    else:
        if not report.runs:
            click.echo(f"no leftovers for {what}")
        for d, _, note in report.runs:
            click.echo(f"{d.run_id:40} {d.state.value:24} {note}")
        if apply_:
            click.echo(f"freed {_human_size(report.bytes_freed)}")
    # A run sweep never touches because it needs an operator makes a scheduled sweep fail, so that
    # someone reads it (found from outside: it exited 0 and the UNKNOWN run went unseen): 14 for an
    # UNKNOWN run, else 15 for a group's run to roll forward. RUNNING runs and young orphans are 0.
    states = {d.state.value for d, _, _ in report.runs}
    if "UNKNOWN" in states:
        return 14
    return 15 if "ROLL_FORWARD" in states or report.held_by_groups else 0


@cli.command()
@config_option
@sink_option
@group_option
@click.option("--dataset", required=True, callback=lambda c, p, v: _dataset(v), help="Dataset name.")
@click.option(
    "--older-than",
    required=True,
    callback=lambda c, p, v: parse_duration(v),
    help="Only orphans of attempts older than this (90s, 30m, 24h, 2d).",
)
@click.option("--apply", "apply_", is_flag=True, help="Remove them (default: list only).")
@json_option
def sweep(
    config_path: str | None,
    sink: str | None,
    group: str | None,
    dataset: str,
    older_than: dt.timedelta,
    apply_: bool,
    as_json: bool,
) -> NoReturn:
    """The daily orphan-cleaner: every run date of DATASET, orphans older than --older-than."""
    age = older_than

    def action() -> int:
        from . import sweep as sweep_runs

        if group is not None:
            return _sweep_group(config_path, sink, group, dataset, age, apply_, as_json)
        report = sweep_runs(dataset=dataset, older_than=age, sink=sink, config=load_config(config_path), apply=apply_)
        return _report_sweep(report, dataset, apply_, as_json)

    run_guarded(action)


@cli.command("sinks")
@config_option
@json_option
def list_sinks(config_path: str | None, as_json: bool) -> NoReturn:
    """List sink types and the sinks the configuration names, each checked in full."""

    def action() -> int:
        config = load_config(config_path)
        config.check_every_sink(deep=True)  # also what needs each sink's client library
        configured = {name: raw.get("type", name) for name, raw in config.settings.sinks.items()}
        from .sdk import available

        types = available()
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

    run_guarded(action)


for _command in cli.commands.values():
    _command.epilog = EXIT_TABLE  # every --help lists the exit codes


def main() -> None:
    _set_up_process()
    _run_click(cli, "atomic-publish")


def run() -> NoReturn:
    """The ``atomic-publish`` program (console script, ``python -m atomic_publish``): ``main()``,
    then a quick exit. ``main()`` itself ends with ``sys.exit`` like any click program."""
    _exit_quickly(main)


def publish_run() -> NoReturn:
    """The ``publish`` program: ``publish_main()``, then a quick exit."""
    _exit_quickly(publish_main)


def _exit_quickly(program: Callable[[], None]) -> NoReturn:
    """Run ``program``, then end the process without Python's teardown of every object of every
    imported module, which is all that is left to do and took 0.26 s of CPU after a 1,000-row S3
    publish (boto3's service models, pyarrow, pydantic; the whole command took 1.0-1.2 s). mypy ends
    the same way. What an exit does for correctness is done first, in the interpreter's order:
    non-daemon threads are joined, the atexit callbacks run (logging's flush, Ray's and Spark's
    shutdown), stdout and stderr are flushed. Nothing the guarantees rely on waits for the teardown:
    every file the sinks write is fsynced and closed before the command returns. On an interpreter
    without CPython's ``threading._shutdown`` and ``atexit._run_exitfuncs``: the usual exit."""
    import atexit
    import threading

    try:
        program()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    join_threads = getattr(threading, "_shutdown", None)
    run_atexit = getattr(atexit, "_run_exitfuncs", None)
    if join_threads is None or run_atexit is None:
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)  # what sys.exit("message") does
        code = 1
    join_threads()
    run_atexit()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _prefer_jemalloc() -> None:
    """The CLI's Arrow memory pool is jemalloc (on Linux, where pyarrow's wheels have it) unless the
    user chose one (``ARROW_DEFAULT_MEMORY_POOL``): with the default, mimalloc, a publish's peak RSS
    is 25-30% higher for the same Arrow memory (measured: a 1M-row Parquet publish, 254 MB with
    mimalloc, 192 MB with jemalloc, same time; docs/performance.md). Set before pyarrow is imported;
    child processes (Spark's and Ray's workers started from here) inherit it.

    jemalloc gets one arena and no muzzy pages (``JE_ARROW_MALLOC_CONF=narenas:1,muzzy_decay_ms:0``
    unless the user set that variable). One arena: the Parquet and CSV writers encode on threads, and
    with an arena per thread the pages one thread freed were not reused by the others (10M-row
    Parquet publish: 254-272 MB peak, 204 MB with one arena, the same time). No muzzy pages
    (purged pages go straight back, not through jemalloc's second, "muzzy" stage): measured, the
    Iceberg 10M-row publish peaked at 191-194 MB against 196-200 MB, 4.67 s against 4.90 s (5
    alternating rounds), the file sink's Parquet and CSV unchanged in time and memory. Why it helps
    is not established: the process shows no ``LazyFree`` pages either way (docs/performance.md)."""
    if sys.platform == "linux" and "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
        os.environ.setdefault("JE_ARROW_MALLOC_CONF", "narenas:1,muzzy_decay_ms:0")


def _set_up_process() -> None:
    """What both programs (``atomic-publish``, ``publish``) set for their own process first."""
    _fewer_collections()
    _prefer_jemalloc()
    _skip_pydantic_plugins()


def _fewer_collections() -> None:
    """Python's cycle collector runs after every 700 container objects that are made and not yet
    freed: a command's start-up (pydantic, boto3, pyarrow and psycopg imported, botocore's service
    models parsed: hundreds of thousands of objects that all stay) set it off 114-188 times, 40-54 ms
    of a 1,000-row S3 publish and 15-25 ms of a Postgres one (measured with gc.callbacks). The CLI
    lets 200,000 accumulate instead, as mypy does: reference counting still frees at once whatever
    is not in a cycle (a batch, a buffer), so only cyclic garbage waits longer. The CLI only: a
    program that imports the library keeps the interpreter's settings."""
    import gc

    gc.set_threshold(200_000, 30, 30)


def _skip_pydantic_plugins() -> None:
    """pydantic looks for plugins (an entry-point scan of every installed distribution, and the
    import of importlib.metadata) when the first model class is made; the commands' models are
    the configuration's, which no plugin has a use for: a 1,000-row S3 publish took 0.671 s with
    the scan, 0.637 s without (15 alternating rounds, medians). Unless the user set
    ``PYDANTIC_DISABLE_PLUGINS`` (to anything, "" included): the CLI only, a program that imports
    the library keeps its plugins."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def _lean_arrow(config: LoadedConfig, sink: str | None, group: str | None) -> None:
    """Before a command's first use of pyarrow: pyarrow without NumPy and pandas when the sinks the
    command uses are all built-in ones (see _LeanArrow)."""
    settings = config.settings
    if group is not None:  # (an unknown group: nothing to install, the command refuses it)
        names = list(settings.groups[group].sinks) if group in settings.groups else []
    else:
        names = [sink or settings.defaults.sink]
    types = {str(settings.sinks.get(name, {}).get("type", name)) for name in names}
    if types and types <= _LeanArrow.SINKS:
        _LeanArrow.install()


class _LeanArrow:  # a meta path finder (importlib.abc's import would cost --help 10 ms)
    """pyarrow without NumPy and pandas, for a command whose sinks are all built-in ones.

    pyarrow imports NumPy when it can (``pyarrow.lib`` and ``pyarrow._compute``: ``try: import
    numpy``), and its C++ conversion of Python values imports pandas, to know pandas' null values (at
    ``pyarrow.dataset``'s import, which pyiceberg makes): 0.08-0.09 s of every command that reads or
    writes Arrow data, 0.25-0.3 s and ~45 MB more for Iceberg (a publish's fixed cost is bounded at
    0.25 s). A command whose sinks are built-in holds no NumPy array and no pandas object: it reads
    files, and nothing it runs (our code, pyiceberg, psycopg, ADBC, boto3, confluent-kafka) hands
    either to pyarrow or asks pyarrow for one. So, installed by such a command once its configuration
    is loaded, this finder has ``pyarrow.lib`` and ``pyarrow._compute`` executed as if NumPy were not
    installed (pyarrow then takes its NumPy-free path, which it supports; NumPy stays importable
    afterwards) and refuses pandas to the end of the process (pyarrow would try it again at every
    conversion). Not installed when pyarrow, NumPy or pandas is already imported, nor for another
    package's sink (it may pass NumPy arrays or DataFrames): that process gets pyarrow as usual.
    Measured in docs/performance.md."""

    SINKS = frozenset({"file", "s3", "postgres", "kafka", "iceberg"})  # the built-in sink types
    _WITHOUT_NUMPY = ("pyarrow.lib", "pyarrow._compute")

    def __init__(self) -> None:
        self.importing = 0  # > 0 while one of _WITHOUT_NUMPY executes

    @classmethod
    def install(cls) -> None:
        if not {"pyarrow", "numpy", "pandas"} & sys.modules.keys() and not any(
            isinstance(f, cls) for f in sys.meta_path
        ):
            sys.meta_path.insert(0, cls())

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        top = fullname.partition(".")[0]
        if top == "pandas" or (top == "numpy" and self.importing):
            raise ModuleNotFoundError(f"{top} is not loaded by an atomic-publish command (cli._LeanArrow)", name=top)
        if fullname not in self._WITHOUT_NUMPY or "numpy" in sys.modules:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None  # not an ordinary install: the rest of the import system finds it, as usual
        spec.loader = cast(Any, _WithoutNumpy(spec.loader, self))
        return spec


class _WithoutNumpy:  # a loader
    """Executes one module with NumPy refused, under its own loader (``__loader__``, ``__spec__``)."""

    def __init__(self, loader: Any, finder: _LeanArrow) -> None:
        self.loader = loader
        self.finder = finder

    def create_module(self, spec: Any) -> Any:
        with self._numpy_refused():  # an extension module may run its body here (single-phase init)
            return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        with self._numpy_refused():
            self.loader.exec_module(module)

    @contextlib.contextmanager
    def _numpy_refused(self) -> Iterator[None]:
        self.finder.importing += 1
        try:
            yield
        finally:
            self.finder.importing -= 1


class _ReaderMayLeave:
    """The CLI's stdout. When its reader goes away (``| head``), the rest of the output is dropped and
    the command goes on: the exit code stays the command's own (a publish that published exits 0),
    whichever printer (click, rich) hit the closed pipe."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return int(self._stream.write(text))
            except OSError as exc:
                self._leave(exc)
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except OSError as exc:
                self._leave(exc)

    def _leave(self, exc: OSError) -> None:
        """A reader that left (a broken pipe) is said nothing of; stdout that cannot be written (a
        full disk, found from outside: exit 1 and a traceback after a publish that published) gets
        one warning on stderr. Either way the exit code stays the command's."""
        self._gone = True
        if not isinstance(exc, BrokenPipeError):
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"warning: could not write the output to stdout: {exc.strerror or exc}\n")
        with contextlib.suppress(OSError, ValueError):
            _to_devnull(self._stream.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _run_click(command: click.Command, name: str) -> None:
    """Run a click command; a usage error (a bad option value, a missing argument) becomes one
    ``error:`` line with exit 2 (and the JSON document with --json), redacted like every error."""
    if not isinstance(sys.stdout, _ReaderMayLeave):
        sys.stdout = cast(Any, _ReaderMayLeave(sys.stdout))
    try:
        command.main(prog_name=name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        _fail("interrupted", 130)
    except click.UsageError as exc:
        from .sdk import redact

        hint = f" (see {name} --help)"
        if isinstance(exc, click.NoSuchOption) and exc.ctx is not None and exc.ctx.parent is None:
            # An option of the commands given before the command (found from outside: `atomic-publish
            # --config f publish ...` said only "No such option").
            commands = getattr(exc.ctx.command, "commands", {}).values()
            if any(exc.option_name in p.opts for c in commands for p in c.params):
                hint = f" ({exc.option_name} goes after the command: {name} COMMAND {exc.option_name} ...)"
        message = redact(exc.format_message().replace("\n", " ").strip())
        if "--json" in sys.argv:
            _emit_json({"error": message, "error_type": "UsageError", "exit_code": 2, "diagnosis": None})
            _close_stdout()
        click.echo(f"error: {message}{hint}", err=True)
        sys.exit(2)
    sys.exit(0)


def publish_main() -> None:
    """The ``publish`` console script: the same as ``atomic-publish publish``."""
    _set_up_process()  # (jemalloc was missing here: the `publish` program ran on mimalloc's larger peak)
    _setup_logging(verbose=False, quiet=False)
    command = _publish_command(
        lambda f: click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_TABLE)(f)
    )
    _run_click(cast(click.Command, command), "publish")
