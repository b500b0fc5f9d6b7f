"""One exception tree for the whole project, and the one table of exit codes the CLI uses.

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
    │   ├── CommitRejected       the destination provably refused: this attempt did not publish
    │   │   ├── LostRace         the destination shows that another attempt published the run
    │   │   ├── DataRejected     the destination refused the data itself (also an InputError)
    │   │   ├── ConfigRejected   the role lacks a privilege the commit needs (also a ConfigError)
    │   │   ├── CommitAborted    cut off before the commit point (also a TransientError: retried)
    │   │   └── Fenced           a newer attempt or an operator's recover fenced this attempt
    │   └── CommitOutcomeUnknown cannot know if the commit landed: never clean, diagnose settles it
    ├── TransientError           worth a bounded retry (network blips, timeouts)
    │   └── DestinationUnavailable  the destination could not be reached or failed (names host:port)
    └── Terminated               SIGTERM/SIGINT arrived before the commit; own staging removed

The library raises these and never calls ``sys.exit``; the CLI maps them to exit codes with
``exit_code_for`` (the table is EXIT_CODES, printed by ``--help`` and in the README).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .taxonomy import Diagnosis, GroupDiagnosis


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

    def __init__(self, message: str, diagnosis: Diagnosis | GroupDiagnosis | None = None) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis


class AlreadyPublished(RunRefused):
    """The run_id is already published; publishing again would make a second copy."""


class RunInProgress(RunRefused):
    """A live attempt of the same run holds its lock."""


class RecoveryNeeded(RunRefused):
    """Orphans or contradictory evidence are present: run diagnose/recover first."""


class TransientError(AtomicPublishError):
    """A failure worth a bounded retry (3 attempts, exponential backoff)."""


class DestinationUnavailable(TransientError):
    """The destination could not be reached, timed out or failed before the commit point; the
    message names it (host:port, bucket, catalog). This attempt did not publish."""


class CommitError(AtomicPublishError):
    """The single atomic commit step failed."""


class CommitRejected(CommitError):
    """The destination provably refused the commit: this attempt did not publish, and its staging
    is safe to discard. A sink raises it only with proof (an answer that says so, or a commit
    request that was never sent); anything else out of ``commit`` is an unknown outcome."""


class LostRace(CommitRejected):
    """The destination shows that another attempt of the same run published it."""


class DataRejected(CommitRejected, InputError):
    """The destination refused the data itself (duplicate keys, a null in a key column, ...)."""


class ConfigRejected(CommitRejected, ConfigError):
    """The destination refused the commit for the configuration's sake (the role lacks a privilege):
    nothing was published, and a re-run fails the same way until the configuration changes."""


class CommitAborted(CommitRejected, TransientError):
    """The commit was cut off before its commit point (a broken connection, a timeout, a conflict
    with a concurrent writer): proven not to have landed, and worth a bounded retry."""


class Fenced(CommitRejected):
    """A newer attempt of the run, or an operator's ``recover``, fenced this attempt: its commit
    can no longer land."""


class CommitOutcomeUnknown(CommitError):
    """The commit may or may not have landed. Never clean up after this: diagnose settles it."""


class RollForwardNeeded(CommitError):
    """A group's decision to commit the run is recorded, and a sink's commit did not complete: the
    run rolls forward (``recover --group G --apply`` commits the rest), never back."""


class Terminated(AtomicPublishError):
    """SIGTERM or SIGINT arrived before the commit point; the attempt removed its own staging."""

    def __init__(self, message: str, signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.signum = signum


# -- exit codes ---------------------------------------------------------------------------------

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_ALREADY_PUBLISHED = 3
EXIT_LOST_RACE = 4
EXIT_UNAVAILABLE = 5
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143

# code -> meaning; 10-15 are the states of the taxonomy (publishers.taxonomy.State).
EXIT_CODES: dict[int, str] = {
    0: "published / DONE / nothing to do (also when a signal arrived during the commit and the commit landed: "
    "a warning says so)",
    1: "unexpected error (a bug: run again with -v for the traceback, and report it)",
    2: "usage error, bad input, bad configuration, missing sink extra; nothing changed at the destination",
    3: "publish refused: the run is already published (--if-absent makes this 0)",
    4: "publish lost the race: the destination shows another attempt published the run; this attempt's staging "
    "was removed",
    5: "the destination was unreachable, timed out or failed before the commit point: this attempt did not "
    "publish; diagnose, then re-run when it is back",
    10: "NOTHING_IN_FLIGHT: not published, nothing left behind; re-run",
    11: "ORPHANED: not published, dead attempts left staging; recover --apply, then re-run",
    12: "PUBLISHED_WITH_ORPHANS: published, plus leftovers; recover --apply; never re-run",
    13: "RUNNING: a live attempt holds the run (or recover could not fence a commit still in flight); touch "
    "nothing, try again later",
    14: "UNKNOWN: contradictory or unreadable evidence, or a commit whose outcome is unknown; stop and read the "
    "evidence",
    15: "ROLL_FORWARD (a group of sinks): the decision to commit is recorded, some sinks are not committed yet; "
    "recover --group G --apply; never re-run",
    130: (
        "stopped by SIGINT (Ctrl-C) before the commit point; a publish removed its own staging "
        "(recover and sweep stop between two removals)"
    ),
    143: (
        "stopped by SIGTERM before the commit point; a publish removed its own staging "
        "(recover and sweep stop between two removals)"
    ),
}


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error raised by the library (EXIT_CODES)."""
    from .taxonomy import State

    if isinstance(exc, AlreadyPublished):
        return EXIT_ALREADY_PUBLISHED
    if isinstance(exc, RunInProgress):
        return State.RUNNING.exit_code  # whatever the diagnosis said before: a live attempt (or commit) holds it
    if isinstance(exc, RunRefused):
        return exc.diagnosis.exit_code if exc.diagnosis is not None else State.RUNNING.exit_code
    if isinstance(exc, CommitOutcomeUnknown):
        return State.UNKNOWN.exit_code
    if isinstance(exc, RollForwardNeeded):
        return State.ROLL_FORWARD.exit_code
    if isinstance(exc, LostRace):
        return EXIT_LOST_RACE
    if isinstance(exc, InputError | ConfigError | SinkUnavailable | UnsafeLayout | MemoryBudgetExceeded):
        return EXIT_BAD_INPUT
    if isinstance(exc, Fenced):
        return State.RUNNING.exit_code
    if isinstance(exc, CommitRejected | TransientError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    return EXIT_ERROR


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
