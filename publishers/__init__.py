"""atomic-publish: publish a batch job's output all-or-nothing, and name what a crash left behind.

Public API (everything else lives in private modules and may change)::

    from publishers import Run, publish, load_config
    config = load_config()                       # publish.toml + environment
    definition, options = config.sink("file")
    publisher = definition.make_publisher(options)
    diagnostic = definition.make_diagnostic(options)
    publish(publisher, diagnostic, Run.new("refunds_settled", "2026-04-24"), arrow_records)
"""

import logging as _logging

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
from ._protocol import Diagnostic, Publisher, SinkDefinition, SinkOptions
from ._publish import PublishResult, publish
from ._types import Receipt, Run, Staged
from .config import LoadedConfig, load_config

# A library logs, the application decides where to: without this, Python's last-resort handler
# would print warnings to stderr in applications that configure no logging.
_logging.getLogger("atomic_publish").addHandler(_logging.NullHandler())

__all__ = [
    "EXIT_CODES",
    "AlreadyPublished",
    "AtomicPublishError",
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
    "RunRefused",
    "SchemaMismatch",
    "SinkDefinition",
    "SinkOptions",
    "SinkUnavailable",
    "Staged",
    "Terminated",
    "TransientError",
    "UnsafeLayout",
    "load_config",
    "open_input",
    "open_inputs",
    "publish",
]
