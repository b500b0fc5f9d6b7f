"""docs/try-every-sink.md, run as written: every ```bash block of the page, in order, in one shell
from the root of the clone, each command's exit code checked against the one the page writes after it
(`# 0`, `# 3`, `# 137: killed`, ...). Two things differ from a reader's session, both to leave the
reader's own machine alone: the servers' state directory is a temporary one (the page's
`~/.cache/atomic-publish/services` is rewritten to it) and the working directory is `demo/sinks-<id>`
instead of `demo/sinks` (removed afterwards). Every server starts for real: PostgreSQL, Kafka, MinIO
(moto's server when MinIO is not built) and the Iceberg REST catalog."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = REPO / "docs" / "try-every-sink.md"
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
EXPECTED = re.compile(r"^(?P<command>.*?\S)\s+#\s*(?P<code>\d+)\b")


def _script(state: str, workdir: str) -> tuple[str, int]:
    """The page's bash blocks as one script that stops at the first command whose exit code is not
    the one the page gives; and how many commands are checked."""
    lines = ["set +e"]
    checked = 0
    for block in BLOCK.findall(PAGE.read_text()):
        for raw in block.splitlines():
            line = raw.replace("~/.cache/atomic-publish/services", state).replace("demo/sinks", workdir)
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = EXPECTED.match(line)
            if match is None:
                command = re.split(r"\s+#\s", line, maxsplit=1)[0]  # the page's comment, not part of it
                lines.append(f'{command} || {{ echo "DOC-FAILED (exit $?): "{command!r}; exit 1; }}')
                continue
            checked += 1
            command, code = match.group("command"), match.group("code")
            lines += [
                f"echo '$ {command}' >&2",
                command,
                f'rc=$?; [ "$rc" = {code} ] || '
                f'{{ echo "DOC-FAILED (exit $rc, the page says {code}): "{command!r}; exit 1; }}',
            ]
    return "\n".join(lines) + "\n", checked


def test_the_walkthrough_runs_as_written(tmp_path):
    state = tmp_path / "state"
    workdir = f"demo/sinks-{uuid.uuid4().hex[:8]}"
    script, checked = _script(str(state), workdir)
    assert checked >= 20, f"only {checked} commands with an exit code found on {PAGE.name}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATOMIC_PUBLISH_", "PUBLISH_", "AWS_", "PG"))}
    env["ATOMIC_PUBLISH_SERVICES_DIR"] = str(state)
    try:
        proc = subprocess.run(
            ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
        )
    finally:
        subprocess.run(["bash", "scripts/services", "down"], cwd=REPO, env=env, capture_output=True, check=False)
        shutil.rmtree(REPO / workdir, ignore_errors=True)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "DOC-FAILED" not in proc.stdout
