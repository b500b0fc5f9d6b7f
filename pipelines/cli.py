"""``atomic-publish refunds ...``: generate sample inputs, run the pipeline, or both (demo)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import NoReturn

import click

from atomic_publish.cli import (
    Progress,
    config_option,
    json_option,
    load_config,
    report_publish,
    run_date_value,
    run_guarded,
    sink_option,
)


@click.group()
def refunds() -> None:
    """The example refunds pipeline: refunds + merchants -> the settled refunds report."""


@refunds.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory for the CSVs.")
@click.option("--rows", default=50_000, show_default=True, type=click.IntRange(min=0), help="Refund rows.")
@click.option("--merchants", default=2_000, show_default=True, type=click.IntRange(min=1), help="Merchant rows.")
@click.option("--seed", default=20260424, show_default=True, type=int, help="Same seed, same bytes.")
def generate(out_dir: str, rows: int, merchants: int, seed: int) -> NoReturn:
    """Write deterministic refunds.csv and merchants.csv into --out."""

    def action() -> int:
        from atomic_publish import InputError

        from .generate import generate_inputs

        try:
            refunds_path, merchants_path = generate_inputs(out_dir, rows=rows, merchants=merchants, seed=seed)
        except OSError as exc:  # found in review: exit 1, "unexpected FileNotFoundError"
            where = f" ({exc.filename})" if exc.filename and str(exc.filename) != out_dir else ""
            raise InputError(
                f"--out {out_dir}: cannot write the sample inputs there{where}: {exc.strerror or exc}"
            ) from None
        click.echo(f"wrote {refunds_path} ({refunds_path.stat().st_size:,} bytes) and {merchants_path}")
        return 0

    run_guarded(action)


@refunds.command("run")
@config_option
@sink_option
@click.option("--run-date", required=True, callback=lambda c, p, v: run_date_value(v), help="YYYY-MM-DD")
@click.option("--refunds", "refunds_path", required=True, type=click.Path(dir_okay=False), help="refunds.csv")
@click.option("--merchants", "merchants_path", required=True, type=click.Path(dir_okay=False), help="merchants.csv")
@click.option("--if-absent", is_flag=True, help="Exit 0 without changes if the run is already published.")
@json_option
def run_command(
    config_path: str | None,
    sink: str | None,
    run_date: dt.date,
    refunds_path: str,
    merchants_path: str,
    if_absent: bool,
    as_json: bool,
) -> NoReturn:
    """Run the pipeline for --run-date and publish through the configured sink."""

    def action() -> int:
        from .runner import run_refunds

        config = load_config(config_path)
        with Progress(f"refunds {run_date}") as progress:
            result = run_refunds(
                config, run_date, refunds_path, merchants_path, sink=sink, if_absent=if_absent, progress=progress
            )
        return report_publish(result, as_json)

    run_guarded(action)


@refunds.command()
@config_option
@sink_option
@click.option("--dir", "work_dir", default="demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--rows", default=50_000, show_default=True, type=click.IntRange(min=1))
@click.option("--run-date", default="2026-04-24", show_default=True, callback=lambda c, p, v: run_date_value(v))
@json_option
def demo(
    config_path: str | None, sink: str | None, work_dir: str, rows: int, run_date: dt.date, as_json: bool
) -> NoReturn:
    """Generate inputs into --dir/in and publish the run (file sink: into --dir/out unless configured)."""

    def action() -> int:
        import os

        from .generate import generate_inputs
        from .runner import run_refunds

        base = Path(work_dir)
        refunds_path, merchants_path = generate_inputs(base / "in", rows=rows)
        os.environ.setdefault("ATOMIC_PUBLISH_SINKS__FILE__ROOT", str(base / "out"))
        config = load_config(config_path)
        result = run_refunds(config, run_date, refunds_path, merchants_path, sink=sink, if_absent=True)
        return report_publish(result, as_json)

    run_guarded(action)
