"""The contracts every sink implements. A sink joins the project by passing the contract suite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import pyarrow as pa

    from ._types import Receipt, Run, Staged
    from .taxonomy import CleanReport, Diagnosis

ProgressCallback = Callable[[int, int], None]
"""Called with (rows, bytes) staged so far; the CLI turns it into a progress bar on a terminal."""


@dataclass(frozen=True)
class Capabilities:
    """What a sink can do, declared once (on its SinkDefinition and its publisher), never probed.

    - ``max_parts``: how many parts of one run separate workers may stage for one commit (None: any
      number; 1: the run is staged in one piece, and a driver given more parts refuses at once);
    - ``stages_files``: the publisher has ``stage_files(run, files, *, progress, part, token)``, which
      stages input files as they are (it may still decline with None: see InputFiles);
    - ``run_lock_writes``: taking the run lock writes at the destination (a lease); when it does not
      (Kafka: fencing is the lock), publish() checks a run's state under the lock only;
    - ``assembles_parts``: the publisher has ``assemble(run, staged) -> Staged``, which turns several
      parts into one staging before the commit (the file sink: one file per run). It runs before
      the commit's critical section, so a signal still stops the attempt there; it raises only
      CommitRejected (nothing is published by it);
    - ``staging_outlives_process``: what ``stage`` wrote can still be committed after the process
      that staged it died (False for Kafka: the broker aborts a dead producer's transaction). A group
      of sinks rolls such a sink forward by staging it again from the run's data;
    - ``reads_back``: the publisher has ``read_published(run) -> pyarrow.RecordBatchReader``, which
      reads a published run back (raises FileNotFoundError when it is not published): a group
      rolling forward stages another sink again from it;
    - ``checks_schema``: the publisher has ``check_schema(schema)``, which refuses a schema the sink
      can never take from the schema alone (no request, nothing written); ``publish`` calls it
      before the run's lock, so such an input changes nothing at the destination.
    """

    max_parts: int | None = 1
    stages_files: bool = False
    run_lock_writes: bool = True
    assembles_parts: bool = False
    staging_outlives_process: bool = True
    reads_back: bool = False
    checks_schema: bool = False


@runtime_checkable
class Publisher(Protocol):
    """Publishes one run all-or-nothing: stage (nothing visible), commit (the one atomic step).

    The rules every sink follows (the contract suite checks them):

    - ``stage`` writes where no reader looks, under names that carry the run, the attempt, the
      part and the token; on any error it removes what it wrote, and it never takes the run lock
      (workers stage parts while the driver holds it);
    - ``commit`` makes every given part visible in one atomic step, or none. It raises
      ``CommitRejected`` only with proof that the commit did not land (an answer saying so, or a
      request never sent) and ``LostRace`` only when the destination shows another attempt
      published the run; anything else it raises is treated as an unknown outcome (nothing is
      removed; the diagnosis settles it from the destination);
    - ``discard`` removes this attempt's staging found by its names (not only the parts given:
      a worker killed mid-part leaves one the driver never heard of), never anything published,
      never another attempt's; it is idempotent.
    """

    sink_name: str
    capabilities: Capabilities

    def run_lock(self, run: Run) -> AbstractContextManager[None]:
        """Hold the run's lock for this attempt; while held, a diagnosis says RUNNING.

        Raises RunInProgress when another live attempt holds it.
        """
        ...

    def stage(
        self,
        run: Run,
        batches: pa.RecordBatchReader,
        *,
        progress: ProgressCallback | None = None,
        part: int = 0,
        token: str = "",
    ) -> Staged:
        """Write the records (part ``part`` of the run, staged under ``token``) where no reader can
        see them, durably. On error, remove what it wrote."""
        ...

    def commit(self, run: Run, staged: Sequence[Staged]) -> Receipt:
        """The single atomic step. Raises CommitRejected (safe to discard) or
        CommitOutcomeUnknown (never clean: a diagnosis settles it)."""
        ...

    def discard(self, run: Run, staged: Sequence[Staged]) -> None:
        """Remove this attempt's own staging. Idempotent; never touches another attempt's."""
        ...


@runtime_checkable
class StagesFiles(Protocol):
    """The hook of a publisher whose ``Capabilities.stages_files`` is True."""

    def stage_files(
        self, run: Run, files: Any, *, progress: ProgressCallback | None = None, part: int = 0, token: str = ""
    ) -> Staged | None:
        """Stage input files (an ``InputFiles``) as they are, or return None to be given batches."""
        ...


@runtime_checkable
class AssemblesParts(Protocol):
    """The hook of a publisher whose ``Capabilities.assembles_parts`` is True."""

    def assemble(self, run: Run, staged: Sequence[Staged]) -> Staged:
        """Turn several parts into one staging before the commit; raises only CommitRejected."""
        ...


@runtime_checkable
class ReadsBack(Protocol):
    """The hook of a publisher whose ``Capabilities.reads_back`` is True."""

    def read_published(self, run: Run) -> pa.RecordBatchReader:
        """The published run, read back; FileNotFoundError when it is not published."""
        ...


@runtime_checkable
class ChecksSchema(Protocol):
    """The hook of a publisher whose ``Capabilities.checks_schema`` is True."""

    def check_schema(self, schema: pa.Schema) -> None:
        """Raise InputError (SchemaMismatch) for a schema this sink can never take, naming the
        column; from the schema and the sink's options alone: no request, nothing written."""
        ...


def check_hooks(publisher: Publisher) -> None:
    """A publisher has the hook of every capability it declares (checked before anything is written)."""
    from ._errors import SinkUnavailable

    declared = publisher.capabilities
    hooks = (
        ("stages_files", StagesFiles),
        ("assembles_parts", AssemblesParts),
        ("reads_back", ReadsBack),
        ("checks_schema", ChecksSchema),
    )
    for flag, hook in hooks:
        if getattr(declared, flag) and not isinstance(publisher, hook):
            raise SinkUnavailable(
                f"the {publisher.sink_name} sink declares {flag} but its publisher has no {hook.__name__} hook"
            )


@runtime_checkable
class Diagnostic(Protocol):
    """Reads the destination and names the state a run is in. ``diagnose`` is read-only."""

    sink_name: str

    def diagnose(self, run: Run) -> Diagnosis: ...

    def clean(self, diagnosis: Diagnosis, *, older_than: dt.timedelta | None = None) -> CleanReport:
        """Remove exactly the orphans the diagnosis names (optionally only those older than
        ``older_than``), after checking each is still what was diagnosed. Refuses RUNNING and
        UNKNOWN; does nothing for DONE and NOTHING_IN_FLIGHT."""
        ...

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        """Run dates of ``dataset`` that have anything a sweep may need to look at."""
        ...


@dataclass(frozen=True)
class SinkDefinition:
    """How the registry builds a sink: its validated config model and two factories.

    Third-party sinks expose one of these and register it under the entry-point group
    ``atomic_publish.sinks``.
    """

    name: str
    config_model: type[BaseModel]
    make_publisher: Callable[[Any], Publisher]
    make_diagnostic: Callable[[Any], Diagnostic]
    description: str = ""
    capabilities: Capabilities = Capabilities()


# The option of the sinks that refuse a run whose schema differs from the dataset's last one (their
# drift check: publishers._arrow.refuse_schema_drift).
ALLOW_SCHEMA_CHANGE = (
    "publish records whose columns or types differ from the dataset's last published run (the same "
    "values in another representation are no difference: large or view strings, a dictionary and its values)"
)


class SinkOptions(BaseModel):
    """Options every sink has: the bounds on waiting for its destination. Sink configs derive from
    this (and add their own fields); every wait of publish, diagnose and recover is bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True, populate_by_name=True)

    timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="bound on each request to the destination (connect, read, lock wait)",
    )
    commit_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        allow_inf_nan=False,
        description="how long publish waits to learn its commit's outcome; past it, it exits 14 (outcome unknown)",
    )
    diagnose_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description="diagnose answers UNKNOWN (with the reason) rather than wait longer",
    )

    def __repr_args__(self) -> Any:
        """A sink's options as printed (repr, logs, a debugger): a secret given through the environment
        (``sasl.password`` in Kafka's properties, a password in a URL) is shown as ``***``."""
        from ._secrets import is_secret_key, redact

        for name, value in super().__repr_args__():
            if isinstance(value, dict):
                value = {k: "***" if is_secret_key(str(k)) else v for k, v in value.items()}
            elif isinstance(value, str):
                value = redact(value, environment=False)
            yield name, value
