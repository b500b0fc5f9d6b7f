"""Sink names to implementations: a small registry with lazy imports and install hints.

A sink's module is imported only when that sink is used, so ``publish --sink file`` works without
boto3, psycopg, confluent-kafka or pyiceberg installed, and asking for a sink whose extra is missing
says exactly what to install. Third-party sinks register a ``SinkDefinition`` under the entry-point
group ``atomic_publish.sinks``, or a configuration names one by its import path
(``type = "my_sink:SINK"``: the module must be importable, e.g. on PYTHONPATH).
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points

from ._errors import SinkUnavailable
from ._protocol import SinkDefinition

ENTRY_POINT_GROUP = "atomic_publish.sinks"

# name -> ("module:attribute", extra that provides its dependencies, or None)
_BUILTIN: dict[str, tuple[str, str | None]] = {
    "file": ("atomic_publish.sinks.file:SINK", None),
    "postgres": ("atomic_publish.sinks.postgres:SINK", "postgres"),
    "iceberg": ("atomic_publish.sinks.iceberg:SINK", "iceberg"),
    "s3": ("atomic_publish.sinks.s3:SINK", "s3"),
    "kafka": ("atomic_publish.sinks.kafka:SINK", "kafka"),
}
# The modules each extra brings; a sink module imports them lazily, so they are checked when the
# sink is asked for: a missing one is an install hint (exit 2), never an ImportError mid-publish.
_EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "postgres": ("psycopg", "adbc_driver_postgresql"),
    "iceberg": ("pyiceberg", "sqlalchemy"),
    "s3": ("boto3", "botocore"),
    "kafka": ("confluent_kafka",),
}

_loaded: dict[str, SinkDefinition] = {}


def register(definition: SinkDefinition, *, replace: bool = False) -> None:
    """Register a sink in-process (entry points are the way for installed packages)."""
    if definition.name in _loaded and not replace:
        raise ValueError(f"a sink named {definition.name!r} is already registered")
    _loaded[definition.name] = definition


def available() -> list[str]:
    """Every sink name that can be asked for (whether or not its extra is installed)."""
    names = set(_BUILTIN) | set(_loaded)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def is_known(name: str) -> bool:
    """``name in available()``, without reading every installed distribution's entry points for a
    built-in or registered name (that scan took ~11 ms of every command in a 200-package environment)."""
    return name in _BUILTIN or name in _loaded or name in available()


def is_import_path(name: str) -> bool:
    """``module:attribute`` (a sink that is not installed, named where it lives), not a type name."""
    module, sep, attribute = name.partition(":")
    return bool(sep) and all(part.isidentifier() for part in [*module.split("."), attribute])


def load(name: str) -> SinkDefinition:
    """Return the definition of sink type ``name`` (a registered name, or ``module:attribute``),
    importing its module now."""
    if name in _loaded:
        return _loaded[name]
    if is_import_path(name):
        module_name, _, attribute = name.partition(":")
        try:
            definition = getattr(importlib.import_module(module_name), attribute)
        except ImportError as exc:
            raise SinkUnavailable(f"sink {name!r}: the module {module_name!r} could not be imported: {exc}") from exc
        except AttributeError:
            raise SinkUnavailable(f"sink {name!r}: the module {module_name!r} has no {attribute!r}") from None
    elif name in _BUILTIN:
        target, extra = _BUILTIN[name]
        definition = _import(target, name, extra)
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not matches:
            raise SinkUnavailable(f"unknown sink type {name!r}; known types: {', '.join(available())}")
        try:
            definition = matches[0].load()
        except ImportError as exc:
            raise SinkUnavailable(
                f"sink {name!r} (entry point {matches[0].value}) could not be imported: {exc}"
            ) from exc
    if not isinstance(definition, SinkDefinition):
        raise SinkUnavailable(f"sink {name!r} does not point at a SinkDefinition (got {type(definition).__name__})")
    _loaded[name] = definition
    return definition


def _import(target: str, name: str, extra: str | None) -> SinkDefinition:
    module_name, _, attribute = target.partition(":")
    for required in _EXTRA_MODULES.get(extra or "", ()):
        if importlib.util.find_spec(required) is None:
            raise SinkUnavailable(
                f"sink {name!r} needs the module {required!r}, which is not installed; install it with: "
                f"pip install 'atomic-publish[{extra}]'"
            )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        hint = f"; install it with: pip install 'atomic-publish[{extra}]'" if extra else ""
        raise SinkUnavailable(f"sink {name!r} needs the module {missing!r}, which is not installed{hint}") from exc
    definition: SinkDefinition = getattr(module, attribute)
    return definition
