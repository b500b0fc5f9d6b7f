"""Peak RSS of a command-line run, measured the way the benchmarks report it.

As a script, it runs a Python module as __main__ and writes its peak RSS (VmHWM, in KiB) to
$PEAK_RSS_FILE at exit. VmHWM belongs to the process's own address space after exec, so unlike
ru_maxrss it does not inherit the high-water mark of a large parent that forked it.
``cli_peak_rss`` runs ``atomic-publish`` that way and returns the numbers.
"""

from __future__ import annotations

import atexit
import functools
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def byte_compile() -> None:
    """Compile the package and the benchmarks once, as installing a wheel does: with
    PYTHONDONTWRITEBYTECODE set, an editable install would compile our modules from source in every
    measured process (40-60 ms each)."""
    packages = ("atomic_publish", "publishers", "diagnostics", "pipelines", "bench")
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *packages],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def cli_peak_rss(args: list[str], env: dict[str, str], work: Path) -> tuple[float, float]:
    """Run ``atomic-publish -q ARGS`` with ``env``; return (peak RSS in MB, wall seconds)."""
    byte_compile()
    peak_file = work / "peak_rss.kib"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "atomic_publish", "-q", *args],
        env={**env, "PEAK_RSS_FILE": str(peak_file)},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"`atomic-publish {' '.join(args)}` failed with exit code {proc.returncode}")
    return round(int(peak_file.read_text()) / 1024, 1), round(seconds, 2)


def _record() -> None:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                with open(os.environ["PEAK_RSS_FILE"], "w") as out:
                    out.write(line.split()[1])


if __name__ == "__main__":
    atexit.register(_record)
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
