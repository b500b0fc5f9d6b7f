"""The refunds pipeline: a small batch job (extract, transform, load) done right."""

if __name__ != "atomic_publish.pipelines":  # the same files under two names would be two modules
    raise ImportError(f"import atomic_publish.pipelines, not {__name__} (the repository's top-level folder)")

import importlib as _importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported on first use (PEP 562): the CLI's --help needs none of them
    from .generate import generate_inputs
    from .refunds import OUTPUT_SCHEMA, load_merchants, run_id_value, settled_refunds
    from .runner import run_refunds

_WHERE = {
    "generate_inputs": ".generate",
    "OUTPUT_SCHEMA": ".refunds",
    "load_merchants": ".refunds",
    "run_id_value": ".refunds",
    "settled_refunds": ".refunds",
    "run_refunds": ".runner",
}

__all__ = ["OUTPUT_SCHEMA", "generate_inputs", "load_merchants", "run_id_value", "run_refunds", "settled_refunds"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value
