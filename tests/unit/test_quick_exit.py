"""The programs end without Python's teardown (atomic_publish.cli._exit_quickly), but only after
what an exit does for correctness: non-daemon threads joined, atexit callbacks run (a logging
file handler flushed), the exit code and a ``sys.exit("message")`` kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROGRAM = textwrap.dedent(
    """
    import atexit, logging, sys, threading, time
    from pathlib import Path
    from atomic_publish.cli import _exit_quickly

    out = Path(sys.argv[1])
    exit_with = sys.argv[2]

    class TornDown:
        def __del__(self):
            (out / "teardown").write_text("ran")

    KEPT = TornDown()  # a module global: only the interpreter's teardown deletes it

    def late_writer():
        time.sleep(0.3)
        (out / "thread").write_text("finished")

    def program():
        handler = logging.FileHandler(out / "log.txt", delay=False)
        handler.setLevel(logging.INFO)
        logging.getLogger("q").addHandler(handler)
        logging.getLogger("q").setLevel(logging.INFO)
        logging.getLogger("q").info("logged")
        atexit.register(lambda: (out / "atexit").write_text("ran"))
        threading.Thread(target=late_writer).start()
        print("printed", end="")  # no newline: stays in stdout's buffer until flushed
        sys.exit(int(exit_with) if exit_with.isdigit() else exit_with)

    _exit_quickly(program)
    """
)


@pytest.mark.parametrize(("exit_with", "code"), [("0", 0), ("3", 3), ("went wrong", 1)])
def test_the_quick_exit_keeps_what_an_exit_does(tmp_path: Path, exit_with: str, code: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path), exit_with], capture_output=True, text=True, check=False
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "printed"
    assert proc.stderr == ("went wrong\n" if code == 1 else "")
    assert (tmp_path / "thread").read_text() == "finished"  # the non-daemon thread was joined
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "log.txt").read_text() == "logged\n"
    assert not (tmp_path / "teardown").exists()  # and the teardown did not run: the time it saves


def test_the_console_scripts_and_python_m_exit_quickly() -> None:
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.module == "atomic_publish.cli"}
    assert scripts == {"atomic-publish": "atomic_publish.cli:run", "publish": "atomic_publish.cli:publish_run"}
    main = Path(__file__).resolve().parents[2] / "atomic_publish" / "__main__.py"
    assert "run()" in main.read_text()
