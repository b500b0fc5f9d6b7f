"""One exception tree for the whole project.

    AtomicPublishError
    ├── ConfigError              bad config file or environment (names file, line, field, value)
    ├── InputError               bad input records (names file, line, column)
    │   └── SchemaMismatch       data does not fit the target schema
    ├── SinkUnavailable          unknown sink name, or its extra is not installed (install hint)
    ├── MemoryBudgetExceeded     a load would not fit the memory budget; refused before it starts
    ├── UnsafeLayout             a destination setting that would let cleanup reach published data
    ├── RunRefused               the destination's state forbids starting this run (carries the diagnosis)
    │   ├── AlreadyPublished     the run_id is published: never a second copy
    │   ├── RunInProgress        a live attempt holds the run lock
    │   └── RecoveryNeeded       orphans or contradictory evidence: diagnose/recover first
    ├── CommitError
    │   ├── CommitRejected       the destination provably refused: safe to discard staging
    │   │   └── LostRace         another attempt of the same run published first
    │   └── CommitOutcomeUnknown cannot know if the commit landed: never clean, diagnose settles it
    ├── TransientError           worth a bounded retry (network blips, timeouts)
    └── Terminated               SIGTERM arrived; the attempt removed its own staging

The library raises these and never calls ``sys.exit``; the CLI maps them to exit codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diagnostics.taxonomy import Diagnosis


class AtomicPublishError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(AtomicPublishError):
    """The configuration (file or environment) is invalid."""


class InputError(AtomicPublishError):
    """The input records are malformed; nothing was written to the destination."""


class SchemaMismatch(InputError):
    """The records do not match the target schema."""


class SinkUnavailable(AtomicPublishError):
    """The sink is unknown, or its optional dependencies are not installed."""


class MemoryBudgetExceeded(AtomicPublishError):
    """A step would not fit the memory budget; refused before anything started."""


class UnsafeLayout(AtomicPublishError):
    """A destination setting would let cleanup or publication reach outside its own area."""


class RunRefused(AtomicPublishError):
    """The destination's current state forbids starting this run."""

    def __init__(self, message: str, diagnosis: Diagnosis | None = None) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis


class AlreadyPublished(RunRefused):
    """The run_id is already published; publishing again would make a second copy."""


class RunInProgress(RunRefused):
    """A live attempt of the same run holds its lock."""


class RecoveryNeeded(RunRefused):
    """Orphans or contradictory evidence are present: run diagnose/recover first."""


class CommitError(AtomicPublishError):
    """The single atomic commit step failed."""


class CommitRejected(CommitError):
    """The destination provably refused the commit; the attempt's staging is safe to discard."""


class LostRace(CommitRejected):
    """Another attempt of the same run published first."""


class CommitOutcomeUnknown(CommitError):
    """The commit may or may not have landed. Never clean up after this: diagnose settles it."""


class TransientError(AtomicPublishError):
    """A failure worth a bounded retry (3 attempts, exponential backoff)."""


class Terminated(AtomicPublishError):
    """The process was asked to stop (SIGTERM); the attempt cleaned its own staging."""
