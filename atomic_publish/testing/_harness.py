"""What the contract suite knows about a sink (its harness) and how it runs the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import LoadedConfig, Run, load_config
from ..sdk import State

DATASET = "refunds_settled"
DATE = "2026-04-24"


@dataclass(frozen=True)
class SinkHarness:
    """A sink under the contract suite, against a fresh, empty, real destination per test.

    ``published_bytes`` and ``gated_read`` are the suite's independent readers: write them with the
    destination's own client, not with the sink's code, so a bug in the sink cannot hide itself.
    """

    name: str
    # Writes a publish.toml (whose default sink is the one under test) for a fresh, empty
    # destination under the given directory, and returns its path.
    make_config: Callable[[Path], Path]
    # The state a diagnosis must report right after a SIGKILL at each crash point the sink passes.
    expected_after_crash: dict[str, State]
    # The published content, canonical enough to compare byte for byte with a clean run's.
    published_bytes: Callable[[LoadedConfig, Run], bytes]
    # What a reader that follows the sink's published evidence sees: None (nothing) or the content.
    # It must never return anything but None or the complete, clean content.
    gated_read: Callable[[LoadedConfig, Run], bytes | None]
    # Readers that ignore the evidence (list the output location directly); None if not applicable.
    ungated_read: Callable[[LoadedConfig, Run], bytes | None] | None = None
    # Environment of every process the suite starts (PYTHONPATH for a sink that is not installed,
    # credentials that must not be in the config file).
    extra_env: dict[str, str] = field(default_factory=dict)
    # The job the suite runs, from the (refunds, merchants) inputs plus extra CLI arguments;
    # None: the refunds pipeline (`refunds run`), which passes every crash point.
    command: Callable[..., tuple[str, ...]] | None = None
    # The published content whatever the number of parts it was staged in (e.g. rows sorted when
    # each part is its own object with its own header); None: as it is.
    canonical: Callable[[bytes], bytes] | None = None

    def job(self, inputs: tuple[Path, Path], *extra: str) -> tuple[str, ...]:
        return (self.command or refunds_job)(inputs, *extra)

    def env(self, config: Path, **extra: str) -> dict[str, str]:
        return cli_env(config, **self.extra_env, **extra)

    def same(self, data: bytes) -> bytes:
        return self.canonical(data) if self.canonical is not None else data


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def refunds_job(inputs: tuple[Path, Path], *extra: str, run_date: str = DATE) -> tuple[str, ...]:
    """``refunds run`` of the refunds pipeline over (refunds, merchants) inputs, plus ``extra`` options."""
    refunds, merchants = inputs
    return ("refunds", "run", "--run-date", run_date, "--refunds", str(refunds), "--merchants", str(merchants), *extra)


def cli_env(config: Path | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without any ATOMIC_PUBLISH_/PUBLISH_ setting, plus ``config``
    (ATOMIC_PUBLISH_CONFIG) and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATOMIC_PUBLISH_", "PUBLISH_"))}
    if config is not None:
        env["ATOMIC_PUBLISH_CONFIG"] = str(config)
    env.update(extra)
    return env


def run_cli(
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> CliResult:
    """Run ``atomic-publish ARGS`` as a separate process, as an operator or scheduler would."""
    proc = subprocess.run(
        [sys.executable, "-m", "atomic_publish", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(config),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def start_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "atomic_publish", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )


def loaded(cfg: Path) -> LoadedConfig:
    return load_config(cfg)
