"""Ray Data: a ``Datasink`` that publishes a Dataset as one run, all or nothing.

    from atomic_publish.publishers.ray_data import AtomicPublishDatasink
    ds.write_datasink(AtomicPublishDatasink(sink="warehouse", dataset="refunds", run_date="2026-05-16"))

Arguments: ``sink`` (a sink of publish.toml, or a sink type), ``dataset``, ``run_date``; ``config``
(the publish.toml path; default: the usual lookup in the driver), ``if_absent`` (True: a published
run is left as it is and the write succeeds). Everything is validated when the datasink is made, in
the driver, before Ray runs anything.

The shape is Spark's (publishers/spark.py): ``on_write_start`` (the driver) starts the holder of a
new attempt of the run (publishers/_held.py: it takes the run's lock, refuses a published or running
run, and lives as long as the driver process); each write task stages its blocks as part
``task_idx`` of the attempt under a fresh token (Ray retries a failed task with the same index and
exposes no attempt number, so the token is drawn per try: two tries never share a name);
``on_write_complete`` sends the parts of the successful tasks to the holder, which commits them
once and then removes the attempt's other stagings; ``on_write_failed`` makes it remove all of them
(Ray passes only the error, so cleanup goes by the attempt's names, never by results). See
docs/ray.md.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import sys
from collections.abc import Iterable
from typing import Any

from ray.data import Datasink

from ._errors import CommitRejected, InputError
from ._held import HeldRun, hold_run, refuse_single_part_sinks
from ._types import Staged, new_part_token, parse_run_date, validate_dataset

log = logging.getLogger("atomic_publish.ray")


class AtomicPublishDatasink(Datasink):
    """Publish a Ray Dataset as run ``dataset``/``run_date`` of ``sink``, all or nothing."""

    def __init__(
        self, *, sink: str, dataset: str, run_date: str, config: str | None = None, if_absent: bool = False
    ) -> None:
        from ._publish import resolve_config

        self.dataset = validate_dataset(dataset)
        self.run_date = parse_run_date(run_date).isoformat()
        self.config = os.path.abspath(config) if config is not None else None
        self.sink = sink
        self.if_absent = bool(if_absent)
        definition, self.sink_options = resolve_config(self.config).sink(sink)
        refuse_single_part_sinks(definition, "Ray")
        self.sink_type = definition.name
        self.held: HeldRun | None = None
        self.committing = False

    def get_name(self) -> str:
        return f"AtomicPublish({self.sink}:{self.dataset}/{self.run_date})"

    # -- the driver ---------------------------------------------------------------------------------

    def on_write_start(self, schema: Any = None) -> None:
        self.held, self.committing = None, False
        self.held = hold_run(
            dataset=self.dataset,
            run_date=self.run_date,
            sink=self.sink,
            config=self.config,
            if_absent=self.if_absent,
            watch_pid=os.getpid(),  # Ray's driver is this process: the holder lives as long as it does
        )
        if self.held.skipped is not None:
            log.info("%s/%s is already published: nothing to do (if_absent)", self.dataset, self.run_date)

    def on_write_complete(self, write_result: Any) -> None:
        if self.held is None:  # Ray starts a write at its first block: an empty Dataset never started one
            raise InputError(f"the Dataset of {self.dataset}/{self.run_date} has no rows; nothing to publish")
        held = self.held
        if held.skipped is not None:
            return
        returns = write_result.write_returns
        parts = [Staged.from_json(r) for r in returns if r]
        if not parts:
            held.abort()
            raise InputError(f"the Dataset of {held.run.run_id} has no rows; nothing to publish")
        self.committing = True  # from here, a failure is the commit's: settled by the holder, not by an abort
        result = held.commit(parts)
        receipt = result.get("receipt") or {}
        log.info(
            "published %s in %d part(s): %s rows at %s",
            held.run.run_id,
            len(parts),
            receipt.get("rows"),
            receipt.get("location"),
        )

    def on_write_failed(self, error: Exception) -> None:
        if self.held is None:  # refused before any task: nothing was staged
            return
        if self.committing:
            # Ray calls this when on_write_complete raised too. The holder already did what the commit's
            # outcome allows (a proven refusal removed the staging; an unknown outcome removed nothing).
            log.error("the commit of %s failed (%s): run `atomic-publish diagnose`", self.held.run.run_id, error)
            return
        self.held.abort()
        log.warning(
            "the write of %s failed (%s): attempt %s not published", self.held.run.run_id, error, self.held.run.attempt
        )

    def abort(self) -> None:
        """Give up a write Ray never finished. Ray calls neither callback when the driver is
        interrupted (Ctrl-C raises KeyboardInterrupt, which is not an Exception), so in a driver that
        lives on (a notebook) the holder would hold the run until the process ends: call this."""
        if self.held is not None and not self.committing:
            self.held.abort()

    # -- the tasks ----------------------------------------------------------------------------------

    def write(self, blocks: Iterable[Any], ctx: Any) -> str | None:
        forget_interrupted_imports()
        import pyarrow as pa

        from . import registry
        from ._publish import stage_part

        held = self._held()
        if held.skipped is not None:
            for _ in blocks:  # the run is published already (if_absent): nothing is written
                pass
            return None
        batches = (
            batch
            for block in blocks
            for batch in (
                block if isinstance(block, pa.Table) else pa.Table.from_pandas(block, preserve_index=False)
            ).to_batches()
            if batch.num_rows
        )
        first = next(batches, None)
        if first is None:
            return None  # a task with no rows stages nothing
        reader = pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], batches))
        publisher = registry.load(self.sink_type).make_publisher(self.sink_options)
        part = int(ctx.task_idx)
        staged = stage_part(publisher, held.run, reader, part=part, token=new_part_token())
        log.info(
            "staged part %s of %s: %s rows (task %s on %s)",
            part,
            held.run.run_id,
            staged.rows,
            part,
            socket.gethostname(),
        )
        return staged.to_json()

    def _held(self) -> HeldRun:
        if self.held is None:
            raise CommitRejected(
                "the datasink reached a write task before on_write_start held the run: this Ray version "
                "serializes a datasink before starting it (atomic-publish[ray] needs ray[data] >= 2.60)"
            )
        return self.held


def forget_interrupted_imports() -> list[str]:
    """Drop from ``sys.modules`` the submodules a cancelled import left behind, so that the next
    import of their package runs from the start; return their names.

    Ray reuses a worker process for later tasks, and cancels a task (when another task of the write
    failed) by raising KeyboardInterrupt in it, also in the middle of an import. Python then removes
    the package that was being imported but keeps the submodules it had finished, and the next
    import of the package does not attach them again: seen in CI as "module 'boto3' has no attribute
    'utils'" in the next write's task on the same worker. A submodule whose package is not imported
    exists only after such a failure (an import puts the package into ``sys.modules`` first)."""
    orphans = [
        name
        for name, module in list(sys.modules.items())
        if (spec := getattr(module, "__spec__", None)) is not None
        and spec.parent
        and spec.parent != name
        and spec.parent not in sys.modules
    ]
    for name in orphans:
        sys.modules.pop(name, None)
    return orphans
