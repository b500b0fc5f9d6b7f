"""Ray's own failure modes, injected into a real Ray Data write (tests only).

``FaultyDatasink`` is the project's datasink with ``fault``: a comma-separated list of
``<kind>:<task>``, acting on the first try of that write task only (Ray exposes no attempt number,
so the first try is the one that creates a flag file ``<flag_dir>/<kind>-<task>``; Ray retries it):

- ``fail_after_staging``: the task stages its whole part, then fails (its staging is left behind);
- ``kill_mid_write``: the worker process SIGKILLs itself after its first batch (a half-written staging);
- ``speculate``: the part is staged twice under two tokens (a duplicate try), only the second reported;
- ``fail_always``: the task fails on every try (the write fails: Ray calls on_write_failed);
- ``hang_after_staging``: every task stages its part, leaves ``<flag_dir>/staged-<task>`` and sleeps.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from atomic_publish.publishers._publish import stage_part
from atomic_publish.publishers._types import new_part_token
from atomic_publish.publishers.ray_data import AtomicPublishDatasink


def _faults(spec: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, task = item.partition(":")
        out[kind] = int(task) if task else None
    return out


class FaultyDatasink(AtomicPublishDatasink):
    def __init__(self, *, fault: str = "", flag_dir: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fault = fault
        self.flag_dir = flag_dir

    def _first_try(self, kind: str, task: int) -> bool:
        try:
            fd = os.open(Path(self.flag_dir) / f"{kind}-{task}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def write(self, blocks: Iterable[Any], ctx: Any) -> str | None:
        import pyarrow as pa

        from atomic_publish.publishers import registry

        task = int(ctx.task_idx)
        faults = _faults(self.fault)

        def here(kind: str) -> bool:
            return kind in faults and faults[kind] in (None, task)

        if here("fail_always"):
            raise RuntimeError(f"injected: task {task} always fails")
        if here("kill_mid_write") and self._first_try("kill_mid_write", task):

            def dying(items: Iterable[Any]) -> Iterator[Any]:
                for number, block in enumerate(items):
                    if number == 1:
                        os.kill(os.getpid(), signal.SIGKILL)
                    yield block

            # Blocks of at most 500 rows, so the part is half written when the worker dies.
            blocks = dying(
                itertools.chain.from_iterable(
                    (b if isinstance(b, pa.Table) else pa.Table.from_pandas(b)).to_batches(max_chunksize=500)
                    for b in blocks
                )
            )
            blocks = (pa.Table.from_batches([b]) for b in blocks)
        if here("speculate") and self._first_try("speculate", task):
            tables = [b if isinstance(b, pa.Table) else pa.Table.from_pandas(b) for b in blocks]
            whole = pa.concat_tables(tables)
            publisher = registry.load(self.sink_type).make_publisher(self.sink_options)
            stage_part(publisher, self._held().run, whole, part=task, token=new_part_token())
            blocks = tables
        staged = super().write(blocks, ctx)
        if here("fail_after_staging") and self._first_try("fail_after_staging", task):
            raise RuntimeError(f"injected: task {task} fails after staging its part")
        if here("hang_after_staging"):
            (Path(self.flag_dir) / f"staged-{task}").write_text(staged or "")
            time.sleep(600)
        return staged
