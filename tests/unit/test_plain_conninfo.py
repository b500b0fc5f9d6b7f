"""A Postgres sink that a command does not use is validated without importing psycopg (0.11 s of
every publish to another sink of the same publish.toml): its conninfo is read by
``parse_plain_conninfo``, which must read it exactly as libpq does, or decline (None) and leave it
to psycopg. Checked against the libpq that psycopg links, on strings built to be hard."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from atomic_publish import ConfigError, load_config
from atomic_publish.publishers.layouts.postgres import PLAIN_CONNINFO_KEYWORDS, parse_plain_conninfo

_SPACE = st.sampled_from([" ", "  ", "\t", "\n", "\r", "\v", "\f", ""])
_KEY = st.sampled_from([*sorted(PLAIN_CONNINFO_KEYWORDS), "requiressl", "foo", "", "Host", "host=", "po rt"])
_VALUE_CHARS = st.sampled_from([*"ab1 '\\=\t\n-_.:/@,?&%\"", "é", "\x00", "\u00a0"])
_VALUE = st.text(_VALUE_CHARS, max_size=8)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@st.composite
def _conninfos(draw):  # type: ignore[no-untyped-def]
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        value = draw(_VALUE)
        shown = draw(st.sampled_from([value, _quote(value), value.replace(" ", "\\ ")]))
        parts.append(draw(_SPACE) + draw(_KEY) + draw(_SPACE) + "=" + draw(_SPACE) + shown + draw(_SPACE))
    text = "".join(parts)
    if draw(st.booleans()):  # cut anywhere: unterminated quotes, a missing "=", a dangling escape
        text = text[: draw(st.integers(0, len(text)))]
    return text


def _psycopg(text: str) -> dict[str, str] | None:
    try:
        return dict(conninfo_to_dict(text))
    except (psycopg.Error, UnicodeEncodeError):
        return None


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(_conninfos(), st.lists(_VALUE_CHARS | st.sampled_from(["host", "port", "="]), max_size=30).map("".join))
)
def test_read_as_libpq_reads_it_or_declined(text):  # type: ignore[no-untyped-def]
    ours = parse_plain_conninfo(text)
    if ours is not None:
        assert ours == _psycopg(text), text


def test_the_usual_strings_are_read_without_psycopg():
    """The fast path is taken for what publish.toml files hold (else it would save nothing)."""
    for text in [
        "",
        "host=127.0.0.1 port=5432 dbname=postgres user=postgres",
        "host=db.internal dbname='my warehouse' user=app sslmode=verify-full sslrootcert=/etc/ssl/ca.pem",
        "service=reporting application_name=nightly connect_timeout=10",
        "host=a,b port=5432,5433 target_session_attrs=read-write",
    ]:
        assert parse_plain_conninfo(text) == _psycopg(text), text
    assert parse_plain_conninfo("postgresql://app@db/warehouse") is None  # a URI: psycopg decides


def test_every_keyword_taken_is_one_the_linked_libpq_knows():
    known = {opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults()}
    assert known >= PLAIN_CONNINFO_KEYWORDS, sorted(PLAIN_CONNINFO_KEYWORDS - known)


_CONFIG = textwrap.dedent(
    """\
    [sinks.file]
    type = "file"
    root = "{root}"

    [sinks.pg]
    type = "postgres"
    conninfo = "{conninfo}"
    key_columns = ["id"]
    """
)


def test_a_publish_to_another_sink_does_not_import_psycopg(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(_CONFIG.format(root=tmp_path / "out", conninfo="host=db port=5432 dbname=w user=app"))
    code = (
        "import sys; from atomic_publish import load_config; c = load_config(sys.argv[1]); "
        "c.check_every_sink(); c.sink('file'); print('psycopg' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("conninfo", "expected"),
    [
        ("host=db user=app password=s3cr3t-pw", "password"),
        ("host=db password = 's3cr3t-pw' user=app", "password"),
        ("postgresql://app:s3cr3t-pw@db/w", "password"),
        ("host=db port=54x32", "conninfo port='54x32' is not a valid port"),
        ("host=db port='5432", "conninfo is not a valid libpq connection string or URI"),
        ("host=db bogus=1", "conninfo is not a valid libpq connection string or URI"),
    ],
)
def test_a_sink_not_in_use_is_still_checked(tmp_path, conninfo, expected):
    """A typo in a sink nobody selected today is still a typo: the same refusals as when it is used."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(_CONFIG.format(root=tmp_path / "out", conninfo=conninfo))
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(cfg).check_every_sink()
    assert "s3cr3t-pw" not in str(info.value)
