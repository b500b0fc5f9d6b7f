import sys
import textwrap

import pytest

from atomic_publish import SinkUnavailable
from atomic_publish.publishers import registry
from atomic_publish.publishers._protocol import SinkDefinition


def test_file_sink_is_builtin_and_sinks_import_lazily():
    import subprocess

    code = "import atomic_publish, sys; print('atomic_publish.publishers.file' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # importing the package does not import any sink
    assert registry.load("file").name == "file"


def test_missing_extra_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(registry._BUILTIN, "fancy", ("nonexistent_driver_pkg.sink:SINK", "fancy"))
    monkeypatch.delitem(registry._loaded, "fancy", raising=False)
    with pytest.raises(SinkUnavailable) as info:
        registry.load("fancy")
    assert "nonexistent_driver_pkg" in str(info.value)
    assert "pip install 'atomic-publish[fancy]'" in str(info.value)


def test_third_party_sink_registers_through_an_entry_point(tmp_path, monkeypatch):
    # A real installed-distribution layout (dist-info with entry_points.txt) on sys.path: this is
    # exactly what `pip install my-sink` leaves behind.
    pkg = tmp_path / "my_sink_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            from atomic_publish.publishers._protocol import SinkDefinition
            from atomic_publish.publishers.file import FileSinkConfig, FilePublisher
            SINK = SinkDefinition("mysink", FileSinkConfig, FilePublisher, lambda c: None, "test sink")
            """
        )
    )
    dist = tmp_path / "my_sink-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-sink\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[atomic_publish.sinks]\nmysink = my_sink_pkg:SINK\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", {k: v for k, v in registry._loaded.items() if k != "mysink"})
    assert "mysink" in registry.available()
    assert registry.is_known("mysink") and not registry.is_known("mysink2")
    definition = registry.load("mysink")
    assert isinstance(definition, SinkDefinition) and definition.description == "test sink"


def test_a_built_in_sink_is_known_without_reading_every_distribution_s_entry_points(monkeypatch):
    """Every command resolves its sink's type: for a built-in one, the scan of every installed
    distribution's entry points (~11 ms in the test environment) is not needed."""

    def no_scan(**_: object) -> None:
        raise AssertionError("entry points scanned")

    monkeypatch.setattr(registry, "entry_points", no_scan)
    assert all(registry.is_known(name) for name in ("file", "postgres", "iceberg", "s3", "kafka"))
    with pytest.raises(AssertionError, match="entry points scanned"):
        registry.is_known("not-built-in")
