"""Configuration: a ``publish.toml`` names sinks and their options; the environment overrides it.

    [defaults]
    sink = "file"

    [sinks.file]            # the sink's name, used with --sink
    type = "file"           # which implementation (defaults to the name)
    root = "data/out"

Every value can be overridden from the environment with ``ATOMIC_PUBLISH_`` and ``__`` between
levels, e.g. ``ATOMIC_PUBLISH_SINKS__FILE__ROOT=/mnt/out`` (``environment_overrides``). Secrets
(passwords, keys, tokens) are refused in the file: they come only from the environment, or from each
library's own native mechanism (libpq variables and service files, AWS profiles, librdkafka properties).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import registry
from ._errors import ConfigError, SinkUnavailable
from ._names import show
from ._protocol import SinkDefinition
from ._secrets import is_secret_key, redact, secret_in_value

ENV_PREFIX = "ATOMIC_PUBLISH_"
CONFIG_ENV = "ATOMIC_PUBLISH_CONFIG"
DEFAULT_CONFIG_NAME = "publish.toml"


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sink: str = "file"


class PipelineSettings(BaseModel):
    """Options of the refunds pipeline (``[pipeline]``)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = "refunds_settled"
    schedule_time: str = Field(default="06:00", pattern=r"^\d{2}:\d{2}$")
    timezone: str = "Asia/Kolkata"
    retries: int = Field(default=3, ge=1, le=10)
    backoff_seconds: float = Field(default=1.0, ge=0)
    memory_budget_mb: int | None = Field(default=None, gt=0)

    @field_validator("schedule_time")
    @classmethod
    def _a_time_of_day(cls, value: str) -> str:
        hour, minute = (int(p) for p in value.split(":"))
        if hour > 23 or minute > 59:
            raise ValueError("is not a time of day (HH:MM, 00:00 to 23:59)")
        return value

    @field_validator("timezone")
    @classmethod
    def _a_known_timezone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not a timezone of the IANA database (e.g. Asia/Kolkata, UTC)") from None
        return value


class GroupSettings(BaseModel):
    """A group of sinks one run is published to (``[groups.<name>]``): each sink atomic, one decision
    for the run, recorded in the journal before the first commit (see docs/groups.md)."""

    model_config = ConfigDict(extra="forbid")
    sinks: list[str] = Field(min_length=2, description="the sinks, in the order they are committed")
    journal: str | None = Field(
        default=None, min_length=1, description="a directory where the group's decisions are recorded"
    )
    journal_sink: str | None = Field(
        default=None,
        min_length=1,
        description="or: an S3 sink whose bucket holds the group's journal (under <prefix>/_journal/)",
    )
    durable_input: bool = Field(
        default=False,
        description="the input files stay where they are until the run is complete: a roll-forward may re-read them",
    )


@dataclass(frozen=True)
class GroupConfig:
    name: str
    members: tuple[tuple[str, SinkDefinition, Any], ...]  # (sink name, definition, options), in commit order
    journal: Any  # a FileJournal or an S3Journal: read, record, lock, holder, describe
    durable_input: bool = False

    def publisher(self, sink: str) -> Any:
        """A publisher of member ``sink`` (built from its validated options)."""
        definition, options = self._member(sink)
        return definition.make_publisher(options)

    def diagnostic(self, sink: str) -> Any:
        """A diagnostic of member ``sink``."""
        definition, options = self._member(sink)
        return definition.make_diagnostic(options)

    def _member(self, sink: str) -> tuple[SinkDefinition, Any]:
        return next((definition, options) for name, definition, options in self.members if name == sink)


class Settings(BaseModel):
    """The whole configuration: the file's values with the environment's over them (``load_config``)."""

    model_config = ConfigDict(extra="forbid")

    defaults: Defaults = Defaults()
    sinks: dict[str, dict[str, Any]] = {}
    groups: dict[str, GroupSettings] = {}
    pipeline: PipelineSettings = PipelineSettings()


def environment_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The configuration the environment sets, as nested tables to lay over the file's.

    A variable ``ATOMIC_PUBLISH_<SECTION>__<KEY>__...`` (any case; the keys are read in lower case)
    sets that key of a section (``defaults``, ``sinks``, ``groups``, ``pipeline``); other variables
    with the prefix (``ATOMIC_PUBLISH_CONFIG``, a harness's own) are not configuration. A value is
    the string itself, converted by its field's type (``"5"`` for an integer, ``"true"`` for a
    flag), except a JSON array or object (``["refund_id"]`` for a list of key columns), which is
    decoded; a secret's value is never decoded. An empty key (``A____B``), two variables that set
    the same key, or a value that starts like JSON and is not, are refused with the variables' names,
    never their values."""
    found: list[tuple[list[str], str, str]] = []
    for name, value in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if path[0] not in Settings.model_fields:
            if len(path) > 1:  # the nested form: meant as configuration, under a section that is none
                _warn_not_a_section(name, path[0])
            continue
        if "" in path:
            raise ConfigError(f"environment variable {name}: an empty key (two '__' in a row, or one at the end)")
        if is_secret_key(path[-1]) and (len(path) < 4 or path[0] != "sinks"):
            # A sink's own options hold no secret (only its client properties, Kafka's properties and
            # Iceberg's catalog, take one); say where it goes instead of "Extra inputs are not permitted".
            raise ConfigError(
                f"environment variable {name}: {'.'.join(path)} looks like a secret, and no option of the "
                f"configuration takes one. {_WHERE_SECRETS_GO}"
            )
        found.append((path, name, value))
    result: dict[str, Any] = {}
    setters: dict[tuple[str, ...], str] = {}
    for path, name, value in sorted(found, key=lambda item: (len(item[0]), item[1])):
        node = result
        for depth, key in enumerate(path[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                # Set by a variable of this path, or inside a JSON table that a shorter one set.
                setter = next(setters[p] for n in range(depth + 1, 0, -1) if (p := tuple(path[:n])) in setters)
                raise ConfigError(
                    f"environment variables {setter} and {name}: the first sets "
                    f"{'.'.join(path[: depth + 1])} to a value, the second a key inside it"
                )
            node = child
        here = tuple(path)
        if here in setters:
            raise ConfigError(f"environment variables {setters[here]} and {name} both set {'.'.join(path)}")
        setters[here] = name
        node[path[-1]] = _environment_value(name, value, path[-1])
    return result


_warned: set[str] = set()


def _warn_not_a_section(name: str, section: str) -> None:
    """Say once that ``name`` sets nothing (found from outside: ATOMIC_PUBLISH_SINK__FILE__ROOT was
    silently ignored, and the publish went to the configured root)."""
    if name in _warned:
        return
    _warned.add(name)
    import difflib
    import logging

    close = difflib.get_close_matches(section, list(Settings.model_fields), n=1)
    hint = f" (did you mean {ENV_PREFIX}{close[0].upper()}__{name.split('__', 1)[1]}?)" if close else ""
    logging.getLogger("atomic_publish.config").warning(
        "environment variable %s sets nothing: %r is not a section (%s)%s",
        name,
        section,
        ", ".join(Settings.model_fields),
        hint,
    )


def _environment_value(name: str, value: str, key: str) -> Any:
    if is_secret_key(key) or not value.lstrip().startswith(("[", "{")):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:  # the value itself may hold a secret: never echoed
        raise ConfigError(
            f"environment variable {name}: starts like JSON but is not JSON ({exc.msg}, column {exc.colno})"
        ) from None


def _overlay(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s values in place of its own, table by table."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = _overlay(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


@dataclass(frozen=True)
class LoadedConfig:
    settings: Settings
    path: Path | None
    text: str

    def sink(self, name: str | None = None, *, in_use: bool = True) -> tuple[SinkDefinition, Any]:
        """Resolve sink ``name`` (or the default) to its definition and validated options. With
        ``in_use=False`` (a sink the command does not use), checks that need the sink's client
        library are left to when it is used (validation context ``without_client_library``)."""
        name = name or self.settings.defaults.sink
        raw = self.settings.sinks.get(name)
        if raw is None:
            if registry.is_known(name):
                # A sink type named directly uses its defaults: `--sink file` and `--sink iceberg`
                # (SQLite catalog, local warehouse) work with no config file at all.
                raw = {"type": name}
            else:
                where = str(self.path) if self.path else "the configuration (no publish.toml found)"
                known = ", ".join(sorted(self.settings.sinks)) or "none"
                if not self.settings.sinks:  # found from outside: "none", although two need no configuration
                    known += " (with none, --sink file and --sink iceberg work as they are)"
                raise ConfigError(f"no sink named {name!r} in {where}; configured sinks: {known}")
        sink_type = str(raw.get("type", name))
        definition = registry.load(sink_type)
        try:
            # A sink named by its import path validates under its own name (its model's ``type``).
            kind = definition.name if registry.is_import_path(sink_type) else sink_type
            context = None if in_use else {"without_client_library": True}
            options = definition.config_model.model_validate({**raw, "type": kind}, context=context)
        except ValidationError as exc:
            raise self._explain(exc, ("sinks", name), options=_option_names(definition.config_model)) from None
        return definition, options

    def group(self, name: str) -> GroupConfig:
        """Resolve group ``name`` to its sinks (definitions and validated options, in commit order)
        and its journal."""
        settings = self.settings.groups.get(name)
        if settings is None:
            where = str(self.path) if self.path else "the configuration (no publish.toml found)"
            known = ", ".join(sorted(self.settings.groups)) or "none"
            raise ConfigError(f"no group named {name!r} in {where}; configured groups: {known}")
        twice = sorted({s for s in settings.sinks if settings.sinks.count(s) > 1})
        if twice:
            raise ConfigError(f"{self._source_of(('groups', name, 'sinks'))}: groups.{name}.sinks names {twice} twice")
        members = tuple((sink, *self.sink(sink)) for sink in settings.sinks)
        # Two sinks of one group at one destination would hold one run lock twice: the group's own
        # publish found itself RUNNING, forever (found from outside). The same type and the same
        # place for a run: what a diagnosis looks at (a file root, a table, a prefix, a topic).
        from ._types import Run

        probe, seen = Run.new("a_dataset", "2000-01-01"), dict[tuple[str, str], str]()
        for sink, definition, options in members:
            locate = getattr(definition.make_diagnostic(options), "destination", None)  # optional in the SDK
            if locate is None:
                continue
            place = (definition.name, str(locate(probe)))
            if place in seen:
                raise ConfigError(
                    f"{self._source_of(('groups', name, 'sinks'))}: groups.{name}.sinks: {seen[place]} and {sink} "
                    f"are the same destination ({definition.name} at {place[1]}); a group publishes a run to "
                    "each of its sinks once"
                )
            seen[place] = sink
        return GroupConfig(name, members, self.journal(name), settings.durable_input)

    def journal(self, group: str) -> Any:
        """Group ``group``'s journal: a FileJournal (its directory relative to this file, not the cwd)
        or, with ``journal_sink``, an S3Journal in that S3 sink's bucket. Exactly one is named."""
        from ._journal import FileJournal

        settings = self.settings.groups[group]
        if (settings.journal is None) == (settings.journal_sink is None):
            raise ConfigError(
                f"{self._source_of(('groups', group))}: groups.{group}: name the journal once: journal = "
                f"<a directory> or journal_sink = <an S3 sink>"
            )
        if settings.journal_sink is not None:
            definition, options = self.sink(settings.journal_sink)
            if definition.name != "s3":
                raise ConfigError(
                    f"{self._source_of(('groups', group, 'journal_sink'))}: groups.{group}.journal_sink = "
                    f"{settings.journal_sink!r} is a {definition.name} sink; a journal needs an S3 sink"
                )
            from .layouts.s3 import S3Journal

            return S3Journal(options, group)
        root = Path(str(settings.journal))
        if not root.is_absolute() and self.path is not None:
            root = self.path.parent / root
        return FileJournal(root, group)

    def check_every_sink(self, *, deep: bool = False) -> None:
        """Validate every configured sink now, not only the one a command uses: a typo in a sink
        nobody selected today is still a typo. All problems are reported at once. A sink whose extra
        is not installed is checked when it is used (its options need that library), and so are the
        checks that need a client library (an Iceberg catalog's merge with pyiceberg's own
        configuration and its SQLAlchemy URL: 0.15 s of imports a publish to another sink would pay),
        unless ``deep`` (``atomic-publish sinks``)."""
        problems: list[str] = []
        for name, raw in self.settings.sinks.items():
            sink_type = str(raw.get("type", name))
            if not registry.is_import_path(sink_type) and not registry.is_known(sink_type):
                problems.append(
                    f"{self._source_of(('sinks', name, 'type'))}: sinks.{name}.type = {sink_type!r}: unknown sink "
                    f"type; known types: {', '.join(registry.available())}"
                )
                continue
            try:
                self.sink(name, in_use=deep)
            except SinkUnavailable as exc:
                if registry.is_import_path(sink_type):  # named by the user, not an extra to install
                    problems.append(f"{self._source_of(('sinks', name, 'type'))}: sinks.{name}.type: {exc}")
                continue
            except ConfigError as exc:
                problems.extend(str(exc).splitlines())
        for group, settings in self.settings.groups.items():
            unknown = [s for s in settings.sinks if s not in self.settings.sinks and not registry.is_known(s)]
            if unknown:
                configured = ", ".join(sorted(self.settings.sinks)) or "none"
                problems.append(
                    f"{self._source_of(('groups', group, 'sinks'))}: groups.{group}.sinks: no sink named "
                    f"{', '.join(map(repr, unknown))}; configured sinks: {configured}"
                )
            twice = sorted({s for s in settings.sinks if settings.sinks.count(s) > 1})
            if twice:
                problems.append(
                    f"{self._source_of(('groups', group, 'sinks'))}: groups.{group}.sinks names {twice} twice"
                )
            try:
                self.journal(group)
            except ConfigError as exc:
                problems.extend(line for line in str(exc).splitlines() if line not in problems)
        default = self.settings.defaults.sink
        if default not in self.settings.sinks and not registry.is_known(default):
            # Found from outside: `sinks` said all was well, and every command without --sink failed.
            configured = ", ".join(sorted(self.settings.sinks)) or "none"
            problems.append(
                f"{self._source_of(('defaults', 'sink'))}: defaults.sink = {default!r}: no sink of that name; "
                f"configured sinks: {configured}"
            )
        if problems:
            raise ConfigError("\n".join(problems))

    def _explain(self, exc: ValidationError, prefix: tuple[str, ...], *, options: tuple[str, ...] = ()) -> ConfigError:
        """One line per error: where (file:line or environment variable), the field, the value (never
        a whole table, never a connection string, secrets hidden), and what is wrong. ``options``:
        the table's own keys, for a key it does not have (found from outside: "Extra inputs are not
        permitted", with no hint)."""
        lines = []
        for err in exc.errors():
            loc = prefix + tuple(str(p) for p in err["loc"])
            field = ".".join(loc)
            message = _message(err)
            if err.get("type") == "extra_forbidden" and len(err["loc"]) == 1 and options:
                import difflib

                close = difflib.get_close_matches(str(err["loc"][0]), options, n=1)
                message = "not an option of this sink" + (f" (did you mean {close[0]!r}?)" if close else "")
            source = self._source_of(loc)
            if err.get("type") in ("tuple_type", "list_type") and isinstance(err.get("input"), str):
                # Found from outside: KEY_COLUMNS='refund_id' said only "Input should be a valid tuple".
                message += ' (a list is written ["a", "b"]' + (
                    ", a JSON array in an environment variable)" if source.startswith("environment") else ")"
                )
            lines.append(f"{source}: {field}{_shown(loc, err)}: {message}")
        return ConfigError("\n".join(lines))

    def _source_of(self, loc: tuple[str, ...]) -> str:
        """Where a value (or the table it is missing from) comes from: file:line, the environment
        variable that set it, the environment variables that define the table, or the defaults."""
        names = {k.upper(): k for k in os.environ if k.upper().startswith(ENV_PREFIX)}

        def variable(parts: tuple[str, ...]) -> str:
            return ENV_PREFIX + "__".join(p.upper() for p in parts)

        if (exact := names.get(variable(loc))) is not None:
            return f"environment variable {exact}"
        inside = sorted(n for u, n in names.items() if u.startswith(variable(loc) + "__"))
        if inside:  # variables that set keys inside this value (which then is no longer a scalar)
            return "environment variable" + ("s " if len(inside) > 1 else " ") + ", ".join(inside)
        for depth in range(len(loc) - 1, 0, -1):  # a JSON table set by an enclosing key's variable
            table = names.get(variable(loc[:depth]))
            if table is not None and _holds(os.environ[table], loc[depth:]):
                return f"environment variable {table}"
        if self.path:
            # A missing key has no line of its own: the line of the table it belongs in.
            line = _line_of(self.text, loc) or (_line_of(self.text, loc[:-1]) if len(loc) > 1 else None)
            if line:
                return f"{self.path}:{line}"
        for depth in range(len(loc) - 1, 0, -1):
            defining = sorted(n for u, n in names.items() if u.startswith(variable(loc[:depth]) + "__"))
            if defining:
                return "environment variable" + ("s " if len(defining) > 1 else " ") + ", ".join(defining)
        return str(self.path) if self.path else "no publish.toml found"


def _option_names(model: Any) -> tuple[str, ...]:
    """The keys a sink's table takes (its fields, and their aliases)."""
    names = []
    for name, field in model.model_fields.items():
        names.append(name)
        if isinstance(field.alias, str):
            names.append(field.alias)
    return tuple(names)


def _holds(value: str, path: tuple[str, ...]) -> bool:
    """Whether a variable's JSON table has a value at ``path`` (keys read in lower case)."""
    try:
        node: Any = json.loads(value)
    except ValueError:
        return False
    for key in path:
        if not isinstance(node, dict):
            return False
        node = {str(k).lower(): v for k, v in node.items()}.get(key.lower(), _MISSING)
        if node is _MISSING:
            return False
    return True


_MISSING = object()

# Fields whose values may carry credentials or are connection strings: never echoed in errors.
_NEVER_ECHOED = {"conninfo", "uri", "endpoint_url", "bootstrap_servers", "properties", "catalog", "work_location"}


def _shown(loc: tuple[str, ...], err: Any) -> str:
    """`` = <value>`` for a scalar value that is safe to show, else nothing."""
    value = err.get("input")
    if err.get("type") == "missing" or not isinstance(value, str | int | float | bool) or value is None:
        return ""
    if any(is_secret_key(part) or part in _NEVER_ECHOED for part in loc):
        return ""
    return " = " + show(redact(value)) if isinstance(value, str) else " = " + show(value)


def _message(err: Any) -> str:
    text = str(err.get("msg", "invalid"))
    text = text.removeprefix("Value error, ")
    return redact(text.splitlines()[0] if text else "invalid")


def find_config(explicit: str | Path | None) -> Path | None:
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    candidate = Path.cwd() / DEFAULT_CONFIG_NAME
    return candidate if candidate.is_file() else None


def load_config(path: str | Path | None = None) -> LoadedConfig:
    """Read the config file (explicit, $ATOMIC_PUBLISH_CONFIG, or ./publish.toml) and the environment."""
    config_path = find_config(path)
    text = ""
    data: dict[str, Any] = {}
    if config_path is not None:
        try:
            raw = config_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{config_path}: cannot read the configuration file: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            byte = raw[exc.start]
            raise ConfigError(f"{config_path}:{line}: not UTF-8 text (byte {byte:#04x}); save it as UTF-8") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{config_path}: not a usable TOML file: its values are nested too deeply") from None
        _refuse_secrets(data, config_path, text, ())
    try:
        settings = Settings.model_validate(_overlay(data, environment_overrides(os.environ)))
    except ValidationError as exc:
        # Every problem at once: the file's own errors, and those of each sink that can be read.
        problems = str(LoadedConfig(Settings.model_construct(), config_path, text)._explain(exc, ()))
        sinks = data.get("sinks")
        if isinstance(sinks, dict) and all(isinstance(v, dict) for v in sinks.values()):
            try:
                LoadedConfig(Settings.model_construct(sinks=sinks), config_path, text).check_every_sink()
            except ConfigError as more:
                problems += "\n" + str(more)
        raise ConfigError(problems) from None
    loaded = LoadedConfig(settings, config_path, text)
    loaded.check_every_sink()
    return loaded


_WHERE_SECRETS_GO = "Use the client library's own mechanism (PGPASSWORD or ~/.pgpass, AWS profiles, .pyiceberg.yaml)."


def _refuse_secrets(node: dict[str, Any], path: Path, text: str, loc: tuple[str, ...]) -> None:
    """Secrets are never read from the file: a key that names one, or a value that carries one (a
    password inside a URL or a conninfo, credentials in a broker list), is refused with the place
    to put it instead. The value is never echoed."""
    for key, value in node.items():
        here = (*loc, str(key))
        where = f"{path}:{_line_of(text, here) or '?'}: {'.'.join(here)}"
        if isinstance(value, dict):
            _refuse_secrets(value, path, text, here)
            continue
        if is_secret_key(str(key)):
            env_name = ENV_PREFIX + "__".join(p.upper() for p in here)
            # Only a sink's table of client properties (Kafka's properties, Iceberg's catalog) takes
            # a secret from the environment; a sink's own keys have none to take.
            if len(here) < 4 or here[0] != "sinks":
                instead = "Use"
            elif re.fullmatch(r"[A-Z0-9_]+", env_name):
                instead = f"Set {env_name} in the environment, or use"
            elif re.fullmatch(r"[A-Z0-9_.]+", env_name):
                instead = (
                    f"Set {env_name} in the environment (a name with a dot: `env`, systemd or your scheduler "
                    "set it; bash's export cannot), or use"
                )
            else:
                instead = "Use"
            raise ConfigError(
                f"{where} looks like a secret; secrets are never read from the config file. {instead} the "
                f"{_WHERE_SECRETS_GO.removeprefix('Use the ')}"
            )
        if not _carries_addresses(here):
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            reason = secret_in_value(str(key), item) if isinstance(item, str) else None
            if reason:
                raise ConfigError(
                    f"{where}: {reason}; secrets are never read from the config file: give the credential "
                    "through the client's own mechanism (PGPASSWORD or ~/.pgpass, AWS credentials, the "
                    "environment) and keep only the address here"
                )


# Fields whose values are addresses or client settings (a URL, a conninfo, broker lists, a catalog's or
# a client's properties), where a credential could hide inside a value. Names never carry one.
_ADDRESS_FIELDS = {"conninfo", "uri", "endpoint_url", "bootstrap_servers", "work_location", "warehouse", "root"}


def _carries_addresses(loc: tuple[str, ...]) -> bool:
    return loc[-1] in _ADDRESS_FIELDS or any(part in ("catalog", "properties") for part in loc[:-1])


def _line_of(text: str, loc: tuple[str, ...]) -> int | None:
    """Best-effort line of ``loc`` (table path + key) in TOML text, for error messages: the key in
    its own table, else (a dotted key, an inline table) the first line in a table on its path that
    sets a key of that name."""
    if not loc:
        return None
    *tables, key = loc
    want, full = ".".join(tables), ".".join(loc)
    name = rf"""(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')"""
    exact, loose = re.compile(rf"^\s*{name}\s*="), re.compile(rf"(?:^|[\s{{,.]){name}\s*=")
    current, fallback = "", None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE_HEADER.match(line)
        if header:
            current = re.sub(r"\s*\.\s*", ".", header.group(1)).replace('"', "").replace("'", "")
            if current == full:
                return number
            continue
        if current == want and exact.match(line):
            return number
        on_path = not current or want == current or want.startswith(current + ".")
        if fallback is None and on_path and loose.search(line.split("#", 1)[0]):
            fallback = number
    return fallback


_TABLE_HEADER = re.compile(r"^\s*\[(?!\[)\s*([^\]]*?)\s*\]")
