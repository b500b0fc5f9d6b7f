"""Full and read-only disks under the file sink's root and the Iceberg sink's local warehouse: a real
tmpfs of a few MiB, mounted for the test (root only). The publish ends with exit 5 and a one-line
error naming the path, nothing is visible, nothing is left behind, and once space (or write access)
is back, following diagnose's advice publishes the run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract import readers
from tests.helpers import cli_env, run_cli

from . import outcomes

pytestmark = [pytest.mark.faults]

DATASET, DATE = "refunds_settled", "2026-04-24"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, remountable (bigger, read-only) by the test; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def file_config(tmp_path: Path, root: Path) -> Path:
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[defaults]\nsink = "out"\n[sinks.out]\ntype = "file"\nroot = "{root}"\n')
    return cfg


def iceberg_config(tmp_path: Path, warehouse: Path) -> Path:
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[defaults]\nsink = "lake"\n[sinks.lake]\ntype = "iceberg"\nnamespace = "reports"\n'
        f'[sinks.lake.catalog]\ntype = "sql"\nuri = "sqlite:///{tmp_path}/catalog.db"\n'
        f'warehouse = "{warehouse.as_uri()}"\n'
    )
    return cfg


def publish(cfg: Path, inputs: Path) -> object:
    return run_cli("publish", "--dataset", DATASET, "--run-date", DATE, str(inputs), env=cli_env(cfg))


def state(cfg: Path) -> str:
    doc = run_cli("diagnose", "--dataset", DATASET, "--run-date", DATE, "--json", env=cli_env(cfg)).json()
    return str(doc["state"])


@pytest.mark.parametrize("sink", ["file", "iceberg"])
def test_a_full_disk_fails_cleanly_and_the_run_publishes_once_there_is_room(sink, tmpfs, tmp_path, medium_inputs):
    inputs = medium_inputs[0]  # ~20 MB of CSV: far more than the 1 MiB disk
    root = tmpfs / "out"
    root.mkdir()
    cfg = file_config(tmp_path, root) if sink == "file" else iceberg_config(tmp_path, root)
    result = publish(cfg, inputs)
    assert result.code == 5, result.stderr
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    left = state(cfg)
    assert left == "NOTHING_IN_FLIGHT"
    # Nothing left behind: no staging, no data file, no lease temp file (the lock file stays by design).
    assert [f for f in files_under(root) if not f.startswith("_locks/")] == []
    remount(tmpfs, "size=256m")
    assert publish(cfg, inputs).code == 0
    assert state(cfg) == "DONE"
    if sink == "file":
        assert readers.file_gated(root, DATASET, DATE) == inputs.read_bytes()
    outcomes.record("disk", sink, "full (1 MiB tmpfs), then room made", exit_code=5, took=None, state=left, then="DONE")


@pytest.mark.parametrize("sink", ["file", "iceberg"])
def test_a_read_only_destination_fails_cleanly_and_changes_nothing(sink, tmpfs, tmp_path, small_inputs):
    inputs = small_inputs[0]
    remount(tmpfs, "size=64m")
    root = tmpfs / "out"
    root.mkdir()
    cfg = file_config(tmp_path, root) if sink == "file" else iceberg_config(tmp_path, root)
    if sink == "iceberg":  # the catalog exists (on the writable disk); only the warehouse is read-only
        assert publish(cfg, inputs).code == 0
        run_cli("publish", "--dataset", "other", "--run-date", DATE, str(inputs), env=cli_env(cfg))
    before = files_under(root)
    remount(tmpfs, "ro")
    result = run_cli("publish", "--dataset", "third", "--run-date", DATE, str(inputs), env=cli_env(cfg))
    assert result.code == 5, result.stderr
    assert "Read-only file system" in result.stderr and "Traceback" not in result.stderr
    assert files_under(root) == before
    remount(tmpfs, "rw")
    doc = run_cli("diagnose", "--dataset", "third", "--run-date", DATE, "--json", env=cli_env(cfg)).json()
    assert doc["state"] == "NOTHING_IN_FLIGHT", doc
    assert run_cli("publish", "--dataset", "third", "--run-date", DATE, str(inputs), env=cli_env(cfg)).code == 0
    outcomes.record("disk", sink, "read-only, then writable", exit_code=5, took=None, state=doc["state"], then="DONE")


def test_a_disk_full_before_the_publish_starts_is_exit_5(tmpfs, tmp_path, small_inputs):
    """Found from outside: the run lock's holder details are written first, and on a disk with no
    room left that write ended the publish with exit 1 ("unexpected OSError")."""
    root = tmpfs / "out"
    root.mkdir()
    with open(tmpfs / "filler", "wb") as fh, pytest.raises(OSError, match="No space left"):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    cfg = file_config(tmp_path, root)
    result = publish(cfg, small_inputs[0])
    assert result.code == 5, result.stderr
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert [f for f in files_under(root) if not f.startswith("_locks/")] == []
    (tmpfs / "filler").unlink()
    remount(tmpfs, "size=64m")
    assert publish(cfg, small_inputs[0]).code == 0
    assert readers.file_gated(root, DATASET, DATE) == small_inputs[0].read_bytes()


def test_a_disk_that_fills_at_any_step_ends_published_or_cleanly_not(tmpfs, tmp_path):
    """The disk is left with 1, 2, ... free pages, so that it fills at each step of the publish in
    turn (the staging, the pending manifest, the marker). Found from outside: filled at the marker,
    the publish exited 14 and left the data at its final name. Every publish ends published (0,
    DONE, the input exactly) or not published (5, nothing left behind, NOTHING_IN_FLIGHT)."""
    import shutil

    inputs = tmp_path / "in.csv"
    inputs.write_text("id,v\n" + "".join(f"{i},{i * 7919 % 1000003}\n" for i in range(1500)))  # ~16 KiB
    codes, at_the_marker = [], 0
    for free_pages in range(1, 13):
        for child in tmpfs.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        root = tmpfs / "out"
        root.mkdir()
        stat = os.statvfs(tmpfs)
        with open(tmpfs / "filler", "wb") as fh:
            fh.write(b"\0" * (stat.f_bavail * stat.f_frsize - free_pages * 4096))
        cfg = file_config(tmp_path, root)
        result = publish(cfg, inputs)
        codes.append(result.code)
        assert result.code in (0, 5) and "Traceback" not in result.stderr, (free_pages, result.stderr)
        if result.code == 5:
            at_the_marker += "could not write the manifest" in result.stderr
            assert [f for f in files_under(root) if not f.startswith("_locks/")] == [], free_pages
            assert state(cfg) == "NOTHING_IN_FLIGHT"
        else:
            assert state(cfg) == "DONE"
            published = readers.file_gated(root, DATASET, DATE)
            assert published is not None and published.replace(b'"', b"") == inputs.read_bytes()
    assert 0 in codes and 5 in codes and at_the_marker, codes  # the sweep crossed every step
