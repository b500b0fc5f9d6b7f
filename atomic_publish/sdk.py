"""The public SDK: what a sink, an engine integration or a pipeline builds on.

A sink is a ``Publisher`` (stage, then commit in one atomic step) and a ``Diagnostic`` (gather the
destination's evidence; ``decide`` turns it into the verdict, the same way for every sink), declared
by a ``SinkDefinition`` with its ``Capabilities`` and registered under the entry-point group
``atomic_publish.sinks`` (or with ``register``). Every rule a sink must follow is in the docstrings of
``Publisher``, ``Diagnostic``, ``SinkDiagnostic`` and ``Evidence``; the contract suite that checks
them ships as a pytest plugin (``atomic_publish.testing``). ``docs/writing-a-sink.md`` walks through
a whole sink (``examples/sqlite_sink``).

Everything here is stable; modules whose name starts with ``_`` are not.
"""

from typing import TYPE_CHECKING

from ._lazy import exports

if TYPE_CHECKING:  # imported on first use (PEP 562): `atomic-publish --help` needs none of them
    from .diagnostics.engine import Gone, SinkDiagnostic
    from .publishers._crash import crash_point
    from .publishers._errors import (
        EXIT_CODES,
        EXIT_ERROR,
        AlreadyPublished,
        AtomicPublishError,
        CommitAborted,
        CommitError,
        CommitOutcomeUnknown,
        CommitRejected,
        ConfigError,
        ConfigRejected,
        DataRejected,
        DestinationUnavailable,
        Fenced,
        InputError,
        LostRace,
        RecoveryNeeded,
        RunInProgress,
        RunRefused,
        SchemaMismatch,
        SinkUnavailable,
        Terminated,
        TransientError,
        UnsafeLayout,
        exit_code_for,
        first_line,
    )
    from .publishers._lock import hold_flock, probe_flock
    from .publishers._protocol import (
        AssemblesParts,
        Capabilities,
        Diagnostic,
        ProgressCallback,
        Publisher,
        ReadsBack,
        SinkDefinition,
        SinkOptions,
        StagesFiles,
    )
    from .publishers._secrets import redact
    from .publishers._signals import critical_section, pending_signal, received_signal, terminate_on_signals
    from .publishers._types import (
        AttemptInfo,
        Receipt,
        Run,
        Staged,
        check_parts,
        combine_checksums,
        new_part_token,
        parse_run_date,
        part_suffix,
        validate_dataset,
    )
    from .publishers.registry import available, load, register
    from .publishers.taxonomy import Artifact, CleanReport, Diagnosis, Evidence, LockHolder, State, decide

__all__ = [
    "EXIT_CODES",
    "EXIT_ERROR",
    "AlreadyPublished",
    "Artifact",
    "AssemblesParts",
    "AtomicPublishError",
    "AttemptInfo",
    "Capabilities",
    "CleanReport",
    "CommitAborted",
    "CommitError",
    "CommitOutcomeUnknown",
    "CommitRejected",
    "ConfigError",
    "ConfigRejected",
    "DataRejected",
    "DestinationUnavailable",
    "Diagnosis",
    "Diagnostic",
    "Evidence",
    "Fenced",
    "Gone",
    "InputError",
    "LockHolder",
    "LostRace",
    "ProgressCallback",
    "Publisher",
    "ReadsBack",
    "Receipt",
    "RecoveryNeeded",
    "Run",
    "RunInProgress",
    "RunRefused",
    "SchemaMismatch",
    "SinkDefinition",
    "SinkDiagnostic",
    "SinkOptions",
    "SinkUnavailable",
    "Staged",
    "StagesFiles",
    "State",
    "Terminated",
    "TransientError",
    "UnsafeLayout",
    "available",
    "check_parts",
    "combine_checksums",
    "crash_point",
    "critical_section",
    "decide",
    "exit_code_for",
    "first_line",
    "hold_flock",
    "load",
    "new_part_token",
    "parse_run_date",
    "part_suffix",
    "pending_signal",
    "probe_flock",
    "received_signal",
    "redact",
    "register",
    "terminate_on_signals",
    "validate_dataset",
]
__getattr__ = exports(__name__, __all__)
