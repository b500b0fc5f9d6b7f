"""What the contract suite needs to know about each sink. A sink joins the project by adding a
harness here and passing every test in test_contract.py against its real destination."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from diagnostics.taxonomy import State
from publishers import LoadedConfig, Run, load_config
from publishers._fs import read_json, sha256_file

DATASET = "refunds_settled"


@dataclass(frozen=True)
class SinkHarness:
    name: str
    # Writes a publish.toml for a fresh, empty destination under the given directory.
    make_config: Callable[[Path], Path]
    # The state a diagnosis must report right after a SIGKILL at each crash point.
    expected_after_crash: dict[str, State]
    # The published content, canonical enough to compare byte for byte with a clean run's.
    published_bytes: Callable[[LoadedConfig, Run], bytes]
    # What a reader that follows the sink's published evidence sees: None (nothing) or the content.
    # It must never return anything but None or the complete, clean content.
    gated_read: Callable[[LoadedConfig, Run], bytes | None]
    # Readers that ignore the evidence (list the output location directly); None if not applicable.
    ungated_read: Callable[[LoadedConfig, Run], bytes | None] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


# -- file ---------------------------------------------------------------------------------------


def _file_config(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    cfg = base / "publish.toml"
    cfg.write_text(f'[defaults]\nsink = "out"\n\n[sinks.out]\ntype = "file"\nroot = "{base / "out"}"\n')
    return cfg


def _file_paths(config: LoadedConfig, run: Run) -> tuple[Path, Path]:
    definition, options = config.sink()
    publisher = definition.make_publisher(options)
    return publisher.layout.final(run), publisher.layout.marker(run)


def _file_published(config: LoadedConfig, run: Run) -> bytes:
    final, _ = _file_paths(config, run)
    return final.read_bytes()


def _file_gated(config: LoadedConfig, run: Run) -> bytes | None:
    final, marker = _file_paths(config, run)
    try:
        manifest = read_json(marker)
    except FileNotFoundError:
        return None
    data = final.read_bytes()
    digest, _ = sha256_file(final)
    assert digest == manifest["sha256"], "a reader gating on the manifest read data that does not match it"
    return data


def _file_ungated(config: LoadedConfig, run: Run) -> bytes | None:
    final, _ = _file_paths(config, run)
    try:
        return final.read_bytes()
    except FileNotFoundError:
        return None


FILE = SinkHarness(
    name="file",
    make_config=_file_config,
    expected_after_crash={
        "after_extract": State.NOTHING_IN_FLIGHT,
        "mid_transform": State.NOTHING_IN_FLIGHT,
        "after_lock": State.NOTHING_IN_FLIGHT,
        "mid_stage": State.ORPHANED,
        "after_stage": State.ORPHANED,
        "after_data_rename": State.ORPHANED,
        "after_commit": State.PUBLISHED_WITH_ORPHANS,
        "after_cleanup": State.DONE,
    },
    published_bytes=_file_published,
    gated_read=_file_gated,
    ungated_read=_file_ungated,
)

HARNESSES = [FILE]


def loaded(cfg: Path) -> LoadedConfig:
    return load_config(cfg)
