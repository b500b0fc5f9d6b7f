"""The runner: one call that runs the refunds pipeline for a run date through the configured sink.

It adds to publish() what a scheduled job needs: a memory-budget check before anything starts,
bounded retries (3 attempts, exponential backoff) for transient errors only, a fresh attempt id per
try, and SIGTERM handling that removes the attempt's own staging before the process exits.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

from atomic_publish import LoadedConfig, PublishResult, TransientError, publish, refuse_if_rolling_forward
from atomic_publish.sdk import (
    ProgressCallback,
    Run,
    crash_point,
    parse_run_date,
    received_signal,
    terminate_on_signals,
    validate_dataset,
)

from .refunds import load_merchants, settled_refunds

log = logging.getLogger("atomic_publish.pipeline")


def is_transient(exc: BaseException) -> bool:
    """Only these are retried; everything else is structural and a retry would just fail again
    (fix the cause before re-running)."""
    return isinstance(exc, TransientError | ConnectionError | TimeoutError)


def run_refunds(
    config: LoadedConfig,
    run_date: str | dt.date,
    refunds_path: str | Path,
    merchants_path: str | Path,
    *,
    sink: str | None = None,
    if_absent: bool = False,
    progress: ProgressCallback | None = None,
    sleep: float | None = None,
) -> PublishResult:
    settings = config.settings.pipeline
    dataset = validate_dataset(settings.dataset)
    run_date = parse_run_date(run_date)
    refuse_if_rolling_forward(config, sink, Run.new(dataset, run_date))  # a group's run is the group's
    definition, options = config.sink(sink)
    publisher = definition.make_publisher(options)
    diagnostic = definition.make_diagnostic(options)
    backoff = settings.backoff_seconds if sleep is None else sleep

    with terminate_on_signals():
        for attempt_number in range(1, settings.retries + 1):
            run = Run.new(dataset, run_date)
            try:
                merchants = load_merchants(merchants_path, settings.memory_budget_mb)
                crash_point("after_extract")
                records = settled_refunds(
                    refunds_path,
                    merchants,
                    run_date,
                    schedule_time=settings.schedule_time,
                    timezone=settings.timezone,
                )
                return publish(publisher, diagnostic, run, records, if_absent=if_absent, progress=progress)
            except Exception as exc:
                # A stop (SIGTERM/SIGINT) is never retried, even one that came back as another error.
                if not is_transient(exc) or attempt_number == settings.retries or received_signal():
                    raise
                delay = backoff * 2 ** (attempt_number - 1)
                log.warning(
                    "attempt %s of %s failed with a transient error (%s); retrying in %.1fs",
                    attempt_number,
                    settings.retries,
                    exc,
                    delay,
                )
                time.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
