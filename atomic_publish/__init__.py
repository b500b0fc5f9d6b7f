"""atomic-publish: publish a batch job's output all-or-nothing, and name what a crash left behind.

The public API is this module's ``__all__`` (writing a sink: ``atomic_publish.sdk``; everything
else lives in private modules and may change)::

    from atomic_publish import diagnose, publish, recover
    result = publish(table, dataset="refunds_settled", run_date="2026-04-24", sink="file")
    diagnose(dataset="refunds_settled", run_date="2026-04-24", sink="file").state   # State.DONE
"""

import logging as _logging
from typing import TYPE_CHECKING

from ._lazy import exports

if TYPE_CHECKING:  # imported on first use (PEP 562): `atomic-publish --help` needs none of them
    from ._api import diagnose, recover, sweep
    from ._groups import (
        GroupRecovery,
        GroupResult,
        GroupSweepReport,
        diagnose_group,
        publish_group,
        recover_group,
        refuse_if_rolling_forward,
        sweep_group,
    )
    from .diagnostics.recovery import RecoveryOutcome, RecoveryPlan, SweepReport
    from .publishers._arrow import InputFiles, open_input, open_inputs
    from .publishers._errors import (
        EXIT_CODES,
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
        MemoryBudgetExceeded,
        RecoveryNeeded,
        RollForwardNeeded,
        RunInProgress,
        RunRefused,
        SchemaMismatch,
        SinkUnavailable,
        Terminated,
        TransientError,
        UnsafeLayout,
    )
    from .publishers._protocol import Capabilities, Diagnostic, Publisher, SinkDefinition, SinkOptions
    from .publishers._publish import PublishResult, RunJob, begin_run, publish, publish_run, stage_part
    from .publishers._types import Receipt, Run, Staged
    from .publishers.config import LoadedConfig, load_config
    from .publishers.taxonomy import Diagnosis, GroupDiagnosis, State

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
    "ConfigRejected",
    "DataRejected",
    "DestinationUnavailable",
    "Diagnosis",
    "Diagnostic",
    "Fenced",
    "GroupDiagnosis",
    "GroupRecovery",
    "GroupResult",
    "GroupSweepReport",
    "InputError",
    "InputFiles",
    "LoadedConfig",
    "LostRace",
    "MemoryBudgetExceeded",
    "PublishResult",
    "Publisher",
    "Receipt",
    "RecoveryNeeded",
    "RecoveryOutcome",
    "RecoveryPlan",
    "RollForwardNeeded",
    "Run",
    "RunInProgress",
    "RunJob",
    "RunRefused",
    "SchemaMismatch",
    "SinkDefinition",
    "SinkOptions",
    "SinkUnavailable",
    "Staged",
    "State",
    "SweepReport",
    "Terminated",
    "TransientError",
    "UnsafeLayout",
    "begin_run",
    "diagnose",
    "diagnose_group",
    "load_config",
    "open_input",
    "open_inputs",
    "publish",
    "publish_group",
    "publish_run",
    "recover",
    "recover_group",
    "refuse_if_rolling_forward",
    "stage_part",
    "sweep",
    "sweep_group",
]
__getattr__ = exports(__name__, __all__)

# A library logs, the application decides where to: without this, Python's last-resort handler
# would print warnings to stderr in applications that configure no logging.
_logging.getLogger("atomic_publish").addHandler(_logging.NullHandler())
