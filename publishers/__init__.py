"""atomic-publish: publish a batch job's output all-or-nothing, and name what a crash left behind.

Public API (everything else lives in private modules and may change)::

    from publishers import diagnose, publish, recover
    result = publish(table, dataset="refunds_settled", run_date="2026-04-24", sink="file")
    diagnose(dataset="refunds_settled", run_date="2026-04-24", sink="file").state   # State.DONE
"""

import logging as _logging

from ._api import diagnose, recover
from ._arrow import InputFiles, open_input, open_inputs
from ._errors import (
    EXIT_CODES,
    AlreadyPublished,
    AtomicPublishError,
    CommitAborted,
    CommitError,
    CommitOutcomeUnknown,
    CommitRejected,
    ConfigError,
    DataRejected,
    DestinationUnavailable,
    Fenced,
    InputError,
    LostRace,
    MemoryBudgetExceeded,
    RecoveryNeeded,
    RunInProgress,
    RunRefused,
    SchemaMismatch,
    SinkUnavailable,
    Terminated,
    TransientError,
    UnsafeLayout,
)
from ._protocol import Capabilities, Diagnostic, Publisher, SinkDefinition, SinkOptions
from ._publish import PublishResult, RunJob, begin_run, publish, publish_run, stage_part
from ._types import Receipt, Run, Staged
from .config import LoadedConfig, load_config

# A library logs, the application decides where to: without this, Python's last-resort handler
# would print warnings to stderr in applications that configure no logging.
_logging.getLogger("atomic_publish").addHandler(_logging.NullHandler())

__all__ = [
    "EXIT_CODES",
    "AlreadyPublished",
    "AtomicPublishError",
    "Capabilities",
    "CommitAborted",
    "CommitError",
    "CommitOutcomeUnknown",
    "CommitRejected",
    "ConfigError",
    "DataRejected",
    "DestinationUnavailable",
    "Diagnostic",
    "Fenced",
    "InputError",
    "InputFiles",
    "LoadedConfig",
    "LostRace",
    "MemoryBudgetExceeded",
    "PublishResult",
    "Publisher",
    "Receipt",
    "RecoveryNeeded",
    "Run",
    "RunInProgress",
    "RunJob",
    "RunRefused",
    "SchemaMismatch",
    "SinkDefinition",
    "SinkOptions",
    "SinkUnavailable",
    "Staged",
    "Terminated",
    "TransientError",
    "UnsafeLayout",
    "begin_run",
    "diagnose",
    "load_config",
    "open_input",
    "open_inputs",
    "publish",
    "publish_run",
    "recover",
    "stage_part",
]
