"""Configuration: a ``publish.toml`` names sinks and their options; the environment overrides it.

    [defaults]
    sink = "file"

    [sinks.file]            # the sink's name, used with --sink
    type = "file"           # which implementation (defaults to the name)
    root = "data/out"

Every value can be overridden from the environment with ``ATOMIC_PUBLISH_`` and ``__`` between
levels, e.g. ``ATOMIC_PUBLISH_SINKS__FILE__ROOT=/mnt/out``. Secrets (passwords, keys, tokens) are
refused in the file: they come only from the environment, or from each library's own native
mechanism (libpq variables and service files, AWS profiles, librdkafka properties).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from . import registry
from ._errors import ConfigError
from ._protocol import SinkDefinition

ENV_PREFIX = "ATOMIC_PUBLISH_"
CONFIG_ENV = "ATOMIC_PUBLISH_CONFIG"
DEFAULT_CONFIG_NAME = "publish.toml"

_SECRET_KEY = re.compile(r"(password|passwd|secret|token|access_key|private_key|credential|api_key)", re.I)


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    defaults: Defaults = Defaults()
    sinks: dict[str, dict[str, Any]] = {}
    pipeline: PipelineSettings = PipelineSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (which arrives as init values).
        return (env_settings, init_settings)


@dataclass(frozen=True)
class LoadedConfig:
    settings: Settings
    path: Path | None
    text: str

    def sink(self, name: str | None = None) -> tuple[SinkDefinition, Any]:
        """Resolve sink ``name`` (or the default) to its definition and validated options."""
        name = name or self.settings.defaults.sink
        raw = self.settings.sinks.get(name)
        if raw is None:
            if name in registry.available():
                # A sink type named directly uses its defaults: `--sink file` and `--sink iceberg`
                # (SQLite catalog, local warehouse) work with no config file at all.
                raw = {"type": name}
            else:
                where = str(self.path) if self.path else "the configuration (no publish.toml found)"
                known = ", ".join(sorted(self.settings.sinks)) or "none"
                raise ConfigError(f"no sink named {name!r} in {where}; configured sinks: {known}")
        sink_type = str(raw.get("type", name))
        definition = registry.load(sink_type)
        try:
            options = definition.config_model.model_validate({**raw, "type": sink_type})
        except ValidationError as exc:
            raise self._explain(exc, ("sinks", name)) from None
        return definition, options

    def _explain(self, exc: ValidationError, prefix: tuple[str, ...]) -> ConfigError:
        lines = []
        for err in exc.errors():
            loc = prefix + tuple(str(p) for p in err["loc"])
            field = ".".join(loc)
            env_name = ENV_PREFIX + "__".join(p.upper() for p in loc)
            if env_name in os.environ:
                source = f"environment variable {env_name}"
            elif self.path:
                line = _line_of(self.text, loc)
                source = f"{self.path}:{line}" if line else str(self.path)
            else:
                source = "defaults"
            hidden = _SECRET_KEY.search(field) or _SECRET_KEY.search(err["msg"]) or "password" in str(err.get("input"))
            value = "<hidden>" if hidden else repr(err.get("input"))
            lines.append(f"{source}: {field} = {value}: {err['msg']}")
        return ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


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
            text = config_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{config_path}: cannot read the configuration file: {exc.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
        _refuse_secrets(data, config_path, text, ())
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise LoadedConfig(Settings.model_construct(), config_path, text)._explain(exc, ()) from None
    return LoadedConfig(settings, config_path, text)


def _refuse_secrets(node: dict[str, Any], path: Path, text: str, loc: tuple[str, ...]) -> None:
    for key, value in node.items():
        here = (*loc, key)
        if isinstance(value, dict):
            _refuse_secrets(value, path, text, here)
        elif _SECRET_KEY.search(key):
            line = _line_of(text, here)
            env_name = ENV_PREFIX + "__".join(p.upper() for p in here)
            raise ConfigError(
                f"{path}:{line or '?'}: {'.'.join(here)} looks like a secret; secrets are never read "
                f"from the config file. Set {env_name} in the environment instead (or use the "
                "client library's own mechanism)."
            )


def _line_of(text: str, loc: tuple[str, ...]) -> int | None:
    """Best-effort line of ``loc`` (table path + key) in TOML text, for error messages."""
    if not loc:
        return None
    *tables, key = loc
    want = ".".join(tables)
    current = ""
    key_re = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            current = stripped.strip("[]").strip().replace('"', "")
            if current == ".".join(loc):
                return number
            continue
        if current == want and key_re.match(line):
            return number
    return None
