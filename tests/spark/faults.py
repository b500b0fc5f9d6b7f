"""The engine's own failure modes, injected into a real Spark job (tests only).

``FaultyDataSource`` is the project's data source with one more option, ``fault``: a comma-separated
list of ``<kind>:<partition>``, acting on the first attempt of that partition only (Spark retries it):

- ``fail_after_staging``: the task stages its whole part, then fails (its staging is left behind);
- ``kill_mid_write``: the Python worker SIGKILLs itself after its first batch (a half-written staging);
- ``speculate``: the partition is staged twice under two tokens, as a speculative attempt would, and
  only the second is reported (Spark's commit coordinator lets one attempt report);
- ``fail_always``: the task fails on every attempt (the job fails: Spark calls abort);
- ``hang_after_staging``: every task stages its part, leaves a flag file ``<flag_dir>/staged-<part>``
  and sleeps (the driver is killed meanwhile).

Spark pickles these classes by reference, so its Python workers import this module (the repository
is on their path through the editable install).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atomic_publish.publishers._publish import stage_part
from atomic_publish.publishers.spark import AtomicPublishDataSource, PartMessage, _Writer, part_token


def _faults(spec: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, part = item.partition(":")
        out[kind] = int(part) if part else None
    return out


class FaultyDataSource(AtomicPublishDataSource):
    @classmethod
    def name(cls) -> str:
        return "atomic_publish_faulty"

    def writer(self, schema: Any, overwrite: bool) -> FaultyWriter:
        options = dict(self.options)
        fault = options.pop("fault", "")
        flag_dir = options.pop("flag_dir", "")
        self.options = options
        base = super().writer(schema, overwrite)
        return FaultyWriter(base.held, base.sink_type, base.sink_options, fault, flag_dir)


class FaultyWriter(_Writer):
    def __init__(self, held: Any, sink_type: str, sink_options: Any, fault: str, flag_dir: str) -> None:
        super().__init__(held, sink_type, sink_options)
        self.fault = fault
        self.flag_dir = flag_dir

    def write(self, iterator: Iterator[Any]) -> PartMessage:
        import pyarrow as pa
        from pyspark import TaskContext

        ctx = TaskContext.get()
        part, first_attempt = ctx.partitionId(), ctx.attemptNumber() == 0
        faults = _faults(self.fault)

        def here(kind: str) -> bool:
            return kind in faults and faults[kind] in (None, part)

        if here("fail_always"):
            raise RuntimeError(f"injected: partition {part} always fails")
        if here("kill_mid_write") and first_attempt:

            def dying(batches: Iterator[Any]) -> Iterator[Any]:
                for number, batch in enumerate(batches):
                    if number == 1:
                        os.kill(os.getpid(), signal.SIGKILL)
                    yield batch

            iterator = dying(iterator)
        if here("speculate") and first_attempt:
            batches = [b for b in iterator if b.num_rows]
            reader = pa.RecordBatchReader.from_batches(batches[0].schema, iter(batches))
            twin = part_token(ctx.taskAttemptId() ^ 0x8000)  # another attempt's token
            stage_part(self._publisher(), self.held.run, reader, part=part, token=twin)
            iterator = iter(batches)
        message = super().write(iterator)
        if here("fail_after_staging") and first_attempt:
            raise RuntimeError(f"injected: partition {part} fails after staging its part")
        if here("hang_after_staging"):
            (Path(self.flag_dir) / f"staged-{part}").write_text(message.staged or "")
            time.sleep(600)
        return message
