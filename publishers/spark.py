"""Apache Spark: a Python data source that publishes a DataFrame as one run, all or nothing.

    df.write.format("atomic_publish").option("sink", "warehouse").option("dataset", "refunds") \\
        .option("run_date", "2026-05-16").mode("append").save()

Options: ``sink`` (a sink of publish.toml, or a sink type), ``dataset``, ``run_date`` (required);
``config`` (the publish.toml path; default: the usual lookup on the driver), ``if_absent``
("true": a published run is left as it is, the job succeeds). The package registers the source
(``pyspark_atomic_publish``, found by Spark 4's data source lookup); ``register(spark)`` does it by hand.

Shape (Spark's DataSourceWriter, Hadoop's output committers): the driver's planner starts a holder
of a new attempt of the run (``publishers._held``: it takes the run's lock, refuses a published or
running run, and lives as long as the driver's JVM); each task stages its partition as part
``partitionId`` of the attempt under a token from its Spark task attempt id, so every staging is
named by run, attempt, partition and task attempt; the job's ``commit`` sends the parts of the
successful tasks to the holder, which commits them once and then removes the attempt's other
stagings (retried, speculated, killed tasks); ``abort`` makes it remove all of them. See docs/spark.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceArrowWriter, WriterCommitMessage

from ._errors import CommitRejected, ConfigError, InputError
from ._held import HeldRun, hold_run, refuse_single_part_sinks
from ._types import Staged, parse_run_date, validate_dataset

log = logging.getLogger("atomic_publish.spark")

NAME = "atomic_publish"
_OPTIONS = {"sink", "dataset", "run_date", "config", "if_absent"}


def register(spark: Any) -> None:
    """Register the data source with a session (Spark 4 also finds it by itself)."""
    spark.dataSource.register(AtomicPublishDataSource)


@dataclasses.dataclass(frozen=True)
class PartMessage(WriterCommitMessage):
    """What a task tells the driver: its part as staged (None for an empty partition)."""

    part: int
    staged: str | None
    task: str


def part_token(task_attempt_id: int) -> str:
    """The token of a task's staging: its Spark task attempt id (unique within the application),
    4 hex digits (the low 16 bits: a staged name stays short enough for every sink). Two attempts of
    one partition get different tokens unless 65,536 tasks ran between them; a name already taken is
    refused by the sink, the task fails and is retried under a new id."""
    return f"{task_attempt_id & 0xFFFF:04x}"


class AtomicPublishDataSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return NAME

    def writer(self, schema: Any, overwrite: bool) -> _Writer:
        options = {k.lower(): v for k, v in self.options.items()}
        unknown = sorted(set(options) - _OPTIONS)
        if "path" in unknown:
            raise ConfigError(
                "atomic_publish takes no path (.save(path)): the destination is the sink's, in publish.toml"
            )
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} for atomic_publish; known: {sorted(_OPTIONS)}")
        missing = sorted({"sink", "dataset", "run_date"} - set(options))
        if missing:
            raise ConfigError(f"atomic_publish needs the option(s) {missing} (.option(name, value))")
        if overwrite:
            raise ConfigError(
                "atomic_publish publishes a run once and never overwrites one: use .mode('append') (a published run "
                "is refused, or left as it is with .option('if_absent', 'true'))"
            )
        if_absent = _flag(options.get("if_absent", "false"), "if_absent")
        dataset = validate_dataset(options["dataset"])
        run_date = parse_run_date(options["run_date"]).isoformat()
        config = options.get("config")
        if config is not None:
            config = os.path.abspath(config)

        from ._publish import resolve_config

        definition, sink_options = resolve_config(config).sink(options["sink"])
        refuse_single_part_sinks(definition, "Spark")
        held = hold_run(dataset=dataset, run_date=run_date, sink=options["sink"], config=config, if_absent=if_absent)
        if held.skipped is not None:
            log.info("%s/%s is already published: nothing to do (if_absent)", dataset, run_date)
        return _Writer(held, definition.name, sink_options)


def _flag(value: str, name: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ConfigError(f"option {name} = {value!r}: use true or false")


class _Writer(DataSourceArrowWriter):
    """Pickled by Spark to every task and to the job's commit: it carries the held run, the sink's
    type and its options (validated on the driver); each process builds its own publisher."""

    def __init__(self, held: HeldRun, sink_type: str, sink_options: Any) -> None:
        self.held = held
        self.sink_type = sink_type
        self.sink_options = sink_options

    def _publisher(self) -> Any:
        from . import registry

        return registry.load(self.sink_type).make_publisher(self.sink_options)

    def write(self, iterator: Iterator[Any]) -> PartMessage:
        import pyarrow as pa
        from pyspark import TaskContext

        from ._publish import stage_part

        ctx = TaskContext.get()
        if ctx is None:
            raise RuntimeError("write() runs in a Spark task")
        part = ctx.partitionId()
        task = (
            f"stage {ctx.stageId()} task attempt {ctx.taskAttemptId()} "
            f"(attempt {ctx.attemptNumber()} of partition {part}) on {socket.gethostname()}"
        )
        if self.held.skipped is not None:
            for _ in iterator:  # the run is published already (if_absent): nothing is written
                pass
            return PartMessage(part, None, task)
        batches = (batch for batch in iterator if batch.num_rows)
        first = next(batches, None)
        if first is None:
            return PartMessage(part, None, task)  # an empty partition stages nothing
        reader = pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], batches))
        staged = stage_part(self._publisher(), self.held.run, reader, part=part, token=part_token(ctx.taskAttemptId()))
        log.info("staged part %s of %s: %s rows (%s)", part, self.held.run.run_id, staged.rows, task)
        return PartMessage(part, staged.to_json(), task)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        if self.held.skipped is not None:
            return
        if any(m is None for m in messages):  # Spark commits only when every task succeeded
            self.held.abort()
            raise CommitRejected(f"a task of {self.held.run.run_id} reported nothing: the run was not published")
        parts = [Staged.from_json(m.staged) for m in messages if isinstance(m, PartMessage) and m.staged is not None]
        if not parts:
            self.held.abort()
            raise InputError(f"the DataFrame of {self.held.run.run_id} has no rows; nothing to publish")
        result = self.held.commit(parts)
        receipt = result.get("receipt") or {}
        log.info(
            "published %s in %d part(s): %s rows at %s",
            self.held.run.run_id,
            len(parts),
            receipt.get("rows"),
            receipt.get("location"),
        )

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        self.held.abort()
        log.warning("the job of %s failed: attempt %s not published", self.held.run.run_id, self.held.run.attempt)
