"""The refunds pipeline: a small batch job (extract, transform, load) done right."""

from .generate import generate_inputs
from .refunds import OUTPUT_SCHEMA, run_id_value, settled_refunds
from .runner import run_refunds

__all__ = ["OUTPUT_SCHEMA", "generate_inputs", "run_id_value", "run_refunds", "settled_refunds"]
