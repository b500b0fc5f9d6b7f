"""atomic-publish: publish a batch job's output all-or-nothing, and name what a crash left behind.

Public API (everything else lives in private modules and may change)::

    from publishers import diagnose, publish, recover
    result = publish(table, dataset="refunds_settled", run_date="2026-04-24", sink="file")
    diagnose(dataset="refunds_settled", run_date="2026-04-24", sink="file").state   # State.DONE
"""

import importlib as _importlib
import logging as _logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below are imported on first use (PEP 562): `--help` needs none of them
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

_ERRORS = (
    "EXIT_CODES AlreadyPublished AtomicPublishError CommitAborted CommitError CommitOutcomeUnknown CommitRejected "
    "ConfigError DataRejected DestinationUnavailable Fenced InputError LostRace MemoryBudgetExceeded RecoveryNeeded "
    "RunInProgress RunRefused SchemaMismatch SinkUnavailable Terminated TransientError UnsafeLayout"
)
# Where each public name lives: importing pyarrow, pydantic and the diagnostics costs ~0.2 s, which
# a command that only prints its help (or a program that only needs an exception class) never pays.
_WHERE = {
    **dict.fromkeys(_ERRORS.split(), "._errors"),
    **dict.fromkeys(["diagnose", "recover"], "._api"),
    **dict.fromkeys(["InputFiles", "open_input", "open_inputs"], "._arrow"),
    **dict.fromkeys(["Capabilities", "Diagnostic", "Publisher", "SinkDefinition", "SinkOptions"], "._protocol"),
    **dict.fromkeys(["PublishResult", "RunJob", "begin_run", "publish", "publish_run", "stage_part"], "._publish"),
    **dict.fromkeys(["Receipt", "Run", "Staged"], "._types"),
    **dict.fromkeys(["LoadedConfig", "load_config"], ".config"),
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(where, __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
