"""The public surface: every public name resolves, the sixth sink uses nothing private, a sink named by
its import path is found (or refused with a clear message)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import atomic_publish
from atomic_publish import ConfigError, SinkUnavailable, load_config
from atomic_publish.publishers import registry

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sqlite_sink"
PUBLIC = {"atomic_publish", "atomic_publish.sdk", "atomic_publish.testing"}


@pytest.mark.parametrize("module", sorted(PUBLIC - {"atomic_publish.testing"}))
def test_every_public_name_resolves(module):
    mod = importlib.import_module(module)
    assert mod.__all__ == sorted(mod.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
    with pytest.raises(AttributeError):
        mod.no_such_name  # noqa: B018


@pytest.mark.parametrize("path", sorted(EXAMPLE.glob("*.py")), ids=lambda p: p.name)
def test_the_sqlite_sink_uses_only_the_public_sdk(path):
    used = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("atomic_publish"):
            used.add(node.module)
        elif isinstance(node, ast.Import):
            used.update(a.name for a in node.names if a.name.startswith("atomic_publish"))
    assert used <= PUBLIC, sorted(used - PUBLIC)


def test_the_sqlite_sink_is_small():
    assert len((EXAMPLE / "sqlite_sink.py").read_text().splitlines()) < 400


def test_a_sink_named_by_its_import_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    (tmp_path / "w.db").touch()
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.db]\ntype = "sqlite_sink:SINK"\npath = "{tmp_path / "w.db"}"\n')
    definition, options = load_config(cfg).sink("db")
    assert definition.name == "sqlite" and options.path == str(tmp_path / "w.db")


@pytest.mark.parametrize(
    "kind, says",
    [("no_such_module_here:SINK", "could not be imported"), ("json:SINK", "has no 'SINK'"), ("json:dumps", "SinkDef")],
)
def test_a_bad_import_path_is_a_clear_error(tmp_path, kind, says):
    with pytest.raises(SinkUnavailable, match=says):
        registry.load(kind)
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.db]\ntype = "{kind}"\n')
    with pytest.raises(ConfigError, match=rf"publish.toml:2: sinks.db.type: .*{says}"):
        load_config(cfg).check_every_sink()


def test_the_public_api_imports_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, atomic_publish.sdk; print([m for m in ('pyarrow', 'pydantic') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert atomic_publish.__name__ == "atomic_publish"
