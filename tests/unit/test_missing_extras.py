"""A sink whose extra is not installed: one line with the `pip install 'atomic-publish[x]'` hint and
exit 2, never an ImportError. Proved twice: in this interpreter with the extra's modules hidden
(``sys.modules[name] = None`` is how Python itself marks a module as not importable), and in a real
virtualenv that has the package without any extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO

EXTRAS = {
    "postgres": ("psycopg", 'conninfo = "host=127.0.0.1 dbname=d"\nkey_columns = ["id"]\n'),
    "iceberg": ("pyiceberg", ""),
    "s3": ("boto3", 'bucket = "b-bucket"\nprefix = "p"\n'),
    "kafka": ("confluent_kafka", 'bootstrap_servers = "127.0.0.1:1"\n'),
}


def _config(tmp_path: Path, sink: str) -> Path:
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.x]\ntype = "{sink}"\n{EXTRAS[sink][1]}')
    return cfg


@pytest.mark.parametrize("sink", list(EXTRAS))
def test_a_hidden_extra_gives_the_install_hint_and_exit_2(sink, tmp_path, small_inputs):
    module, _ = EXTRAS[sink]
    program = textwrap.dedent(
        f"""
        import sys
        sys.modules[{module!r}] = None  # not installed, as far as this interpreter knows
        from atomic_publish.cli import main
        sys.argv = ["atomic-publish", *sys.argv[1:]]
        main()
        """
    )
    env = {**os.environ, "ATOMIC_PUBLISH_CONFIG": str(_config(tmp_path, sink))}
    for args in (
        ("publish", "--sink", "x", "--dataset", "d", "--run-date", "2026-04-24", str(small_inputs[0])),
        ("diagnose", "--sink", "x", "--dataset", "d", "--run-date", "2026-04-24"),
    ):
        proc = subprocess.run(
            [sys.executable, "-c", program, *args], capture_output=True, text=True, env=env, cwd=tmp_path, check=False
        )
        assert proc.returncode == 2, proc.stderr
        assert f"pip install 'atomic-publish[{sink}]'" in proc.stderr and "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["publish.toml"]  # nothing created


@pytest.mark.slow
def test_a_virtualenv_without_extras(tmp_path_factory, small_inputs):
    """The package installed alone (its base dependencies, no extra) in a fresh virtualenv."""
    venv = tmp_path_factory.mktemp("no-extras") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    installed = subprocess.run([*pip, str(REPO)], capture_output=True, text=True, check=False)
    if installed.returncode != 0:
        pytest.fail(f"pip could not install the package into a fresh venv:\n{installed.stderr[-2000:]}")
    cli = str(venv / "bin" / "atomic-publish")
    for sink in EXTRAS:
        work = tmp_path_factory.mktemp(f"no-{sink}")
        env = {**os.environ, "ATOMIC_PUBLISH_CONFIG": str(_config(work, sink))}
        proc = subprocess.run(
            [
                cli,
                "publish",
                "--sink",
                "x",
                "--dataset",
                "d",
                "--run-date",
                "2026-04-24",
                "--json",
                str(small_inputs[0]),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert f"pip install 'atomic-publish[{sink}]'" in proc.stderr and "Traceback" not in proc.stderr
        assert json.loads(proc.stdout)["exit_code"] == 2
    # The file sink needs no extra at all.
    out = tmp_path_factory.mktemp("no-extras-file")
    proc = subprocess.run(
        [cli, "publish", "--dataset", "d", "--run-date", "2026-04-24", str(small_inputs[0])],
        capture_output=True,
        text=True,
        env={**os.environ, "ATOMIC_PUBLISH_SINKS__FILE__ROOT": str(out)},
        cwd=out,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
