"""The documentation's examples run as they are: every ```python block of the README and docs/ is
executed in a fresh empty directory by a fresh interpreter, and the README's first command
(`bash scripts/demo`) ends in DONE. Illustrative signatures are fenced as ```text, not python."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def _blocks() -> list[object]:
    found = []
    for page in PAGES:
        for number, match in enumerate(BLOCK.finditer(page.read_text()), start=1):
            found.append(pytest.param(match.group(1), id=f"{page.relative_to(REPO)}#{number}"))
    return found


def test_the_docs_have_runnable_examples():
    assert _blocks(), "no ```python block found in the README or docs/"


@pytest.mark.parametrize("code", _blocks())
def test_every_python_block_runs_as_written(code, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATOMIC_PUBLISH_", "PUBLISH_"))}
    env["RAY_worker_niceness"] = "0"  # Ray's workers at nice 15 crawl beside the other test workers (tests/ray)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_the_readme_demo_command_ends_in_done(tmp_path):
    """The README's first command, as written (it writes into demo/ of the clone)."""
    assert "bash scripts/demo" in (REPO / "README.md").read_text()
    proc = subprocess.run(["bash", "scripts/demo"], cwd=REPO, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "DONE" in proc.stdout


def test_the_readme_states_the_bounds_the_code_has():
    from atomic_publish.publishers._protocol import SinkOptions

    readme = (REPO / "README.md").read_text().replace("\n", " ")
    for name, field in SinkOptions.model_fields.items():
        if name.endswith("_seconds"):
            assert f"`{name} = {field.default:g}`" in readme, (
                f"README does not state {name}'s default {field.default:g}"
            )


def test_the_names_table_matches_the_code():
    """Every example of the names table (docs/configuration.md), accepted or refused, by the validator of its row."""
    from atomic_publish.publishers import _names

    validators = {
        ("every sink", "dataset"): _names.dataset,
        ("S3", "bucket"): _names.s3_bucket,
        ("S3", "prefix"): _names.s3_prefix,
        ("Kafka", "topic, ledger_topic"): _names.kafka_topic,
        ("Postgres", "table, ledger_table, column"): _names.pg_table,
        ("Postgres", "schema, staging_schema"): _names.pg_schema,
        ("Iceberg", "namespace, table"): _names.iceberg_table,
    }
    page = (REPO / "docs" / "configuration.md").read_text()
    section = page[page.index("## Names\n") :]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| destination"))
    rows = []
    for line in lines[start + 2 :]:  # after the header and the |---| line, up to the table's end
        if not line.startswith("|"):
            break
        rows.append(line)
    seen = set()
    for row in rows:
        destination, fields, _rule, accepted, refused = (cell.strip() for cell in row.strip("|").split(" | "))
        validate = validators[(destination, fields)]
        seen.add((destination, fields))
        for example in re.findall(r"`([^`]+)`", accepted):
            validate(example)
        examples = re.findall(r"`([^`]+)`", refused)
        assert examples, row
        for example in examples:
            with pytest.raises(ValueError):
                validate(example)
    assert seen == set(validators), f"rows missing from docs/configuration.md: {set(validators) - seen}"
