"""Hostile names through the project's real configuration path, property-tested.

Every value goes where an operator would put it: a ``publish.toml`` read by
``atomic_publish.load_config(path).sink(name)`` (or ``atomic_publish.Run.new`` for a dataset). For each
field class, at least 200 generated hostile values must be refused with ``ConfigError`` /
``InputError`` whose message has one line per error, names the field and never contains a planted
secret, and validation must create nothing on disk (the file sink's root, the Iceberg warehouse and
its SQLite catalog all point into a scratch tree that is walked after every example). The positive
property checks the other side: every value of the documented accepted form
(``publishers/_names.py``) is accepted, so an over-strict rule is caught too.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atomic_publish as publishers
from atomic_publish import ConfigError, InputError, load_config

HOSTILE = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Planted in PGPASSWORD for the whole module; lowercase letters and digits, so it fits inside a
# value of every name class (a bucket, a topic, an identifier, a dataset).
SECRET = "q7hxsecretv4lu3z"
RUN_DATE = "2026-04-24"
DEFAULT_LEDGER = "atomic-publish-ledger"
S3_PREFIX_MAX_BYTES = 1024 - (
    1 + 100 + len("/_attempts/2026-04-24/20260424T060000Z-abcdef/part-00000.parquet.uploading")
)
RESERVED = ["_staging", "_locks", "_attempts", "_leases", "_atomic_publish", "_MANIFEST.json", "_ap_stg_x"]

# C0, DEL, C1 (NUL, newline, tab, U+0085), line/paragraph separators, format and private-use
# characters: the common rule refuses all of them in every name.
CONTROL = [
    "\n", "\r", "\t", "\x00", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f",
    "\u2028", "\u2029", "\u200b", "\u202e", "\ufeff", "\ue000",
]  # fmt: skip
# Only the C0/C1 controls and the line separators: what a path (the file sink's root) must not hold.
PATH_CONTROL = ["\n", "\r", "\t", "\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]
PADDING = [" ", "  ", "\u00a0", "\u3000", "\u2003"]
NFD_PIECES = ["e\u0301", "A\u030a", "u\u0308", "n\u0303", "c\u0327", "o\u0302"]


# -- TOML ------------------------------------------------------------------------------------------


def toml_str(value: str) -> str:
    """A TOML basic string holding exactly ``value`` (every non-printable-ASCII character escaped)."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04X}")
        else:
            out.append(f"\\U{code:08X}")
    out.append('"')
    return "".join(out)


# -- the scratch tree: validation must leave it exactly as it was ------------------------------------


@pytest.fixture(scope="module", autouse=True)
def scratch() -> Iterator[Path]:
    """A module-wide scratch tree as the working directory (so a relative default such as
    ./data/iceberg would land in it too), with a secret planted in PGPASSWORD."""
    base = Path(tempfile.mkdtemp(prefix="hostile-names-"))
    (base / "cwd").mkdir()
    (base / "a" / "b" / "c").mkdir(parents=True)
    old_cwd = os.getcwd()
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("ATOMIC_PUBLISH_"):
                mp.delenv(name)
        mp.setenv("PGPASSWORD", SECRET)
        os.chdir(base / "cwd")
        try:
            yield base
        finally:
            os.chdir(old_cwd)
    shutil.rmtree(base, ignore_errors=True)


def _scratch_base() -> Path:
    return Path(os.getcwd()).parent


class Example:
    """One example's directory (three levels deep, so a '../../..' in a value stays inside the
    scratch tree), checked afterwards: nothing but its publish.toml may exist anywhere in the tree."""

    def __init__(self) -> None:
        self.base = _scratch_base()
        self.dir = Path(tempfile.mkdtemp(prefix="ex-", dir=self.base / "a" / "b" / "c"))
        self.config = self.dir / "publish.toml"

    def created(self) -> list[str]:
        allowed = {
            self.base / "cwd",
            self.base / "a",
            self.base / "a" / "b",
            self.base / "a" / "b" / "c",
            self.dir,
            self.config,
        }
        found = []
        for root, dirs, files in os.walk(self.base):
            for name in dirs + files:
                path = Path(root) / name
                if path not in allowed:
                    found.append(str(path))
        return found

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the field classes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldClass:
    id: str
    sink: str  # the [sinks.<sink>] table, or "" for the dataset (Run.new)
    loc: str  # what the error line must name
    toml: Callable[[Path, str], str]  # the config text with the field set to the value
    read_back: Callable[[Any], Any]  # the accepted value, from the validated options


def _file(d: Path, v: str) -> str:
    return f'[sinks.f]\ntype = "file"\nroot = {toml_str(v)}\n'


def _s3(key: str) -> Callable[[Path, str], str]:
    def text(d: Path, v: str) -> str:
        fields = {"bucket": '"bkt"', "prefix": '"p"'}
        fields[key] = toml_str(v)
        return '[sinks.s]\ntype = "s3"\n' + "".join(f"{k} = {x}\n" for k, x in fields.items())

    return text


def _kafka(key: str) -> Callable[[Path, str], str]:
    def text(d: Path, v: str) -> str:
        return f'[sinks.k]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\n{key} = {toml_str(v)}\n'

    return text


def _pg(key: str) -> Callable[[Path, str], str]:
    def text(d: Path, v: str) -> str:
        head = '[sinks.p]\ntype = "postgres"\nconninfo = "host=127.0.0.1 dbname=x"\n'
        if key == "key_columns":
            return head + f"key_columns = [{toml_str(v)}]\n"
        return head + f'key_columns = ["id"]\n{key} = {toml_str(v)}\n'

    return text


def _iceberg(key: str) -> Callable[[Path, str], str]:
    def text(d: Path, v: str) -> str:
        return (
            f'[sinks.i]\ntype = "iceberg"\n{key} = {toml_str(v)}\n'
            f'[sinks.i.catalog]\ntype = "sql"\nuri = "sqlite:///{d}/catalog/catalog.db"\nwarehouse = "{d}/warehouse"\n'
        )

    return text


FIELDS: dict[str, FieldClass] = {
    f.id: f
    for f in [
        FieldClass("dataset", "", "dataset", lambda d, v: "", lambda o: o),
        FieldClass("file.root", "f", "sinks.f.root", _file, lambda o: o.root),
        FieldClass("s3.bucket", "s", "sinks.s.bucket", _s3("bucket"), lambda o: o.bucket),
        FieldClass("s3.prefix", "s", "sinks.s.prefix", _s3("prefix"), lambda o: o.prefix),
        FieldClass("kafka.topic", "k", "sinks.k.topic", _kafka("topic"), lambda o: o.topic),
        FieldClass("kafka.ledger_topic", "k", "sinks.k.ledger_topic", _kafka("ledger_topic"), lambda o: o.ledger_topic),
        FieldClass("postgres.schema", "p", "sinks.p.schema", _pg("schema"), lambda o: o.schema_name),
        FieldClass("postgres.table", "p", "sinks.p.table", _pg("table"), lambda o: o.table),
        FieldClass("postgres.ledger_table", "p", "sinks.p.ledger_table", _pg("ledger_table"), lambda o: o.ledger_table),
        FieldClass(
            "postgres.staging_schema", "p", "sinks.p.staging_schema", _pg("staging_schema"), lambda o: o.staging_schema
        ),
        FieldClass("postgres.key_column", "p", "sinks.p.key_columns", _pg("key_columns"), lambda o: o.key_columns[0]),
        FieldClass("iceberg.namespace", "i", "sinks.i.namespace", _iceberg("namespace"), lambda o: o.namespace),
        FieldClass("iceberg.table", "i", "sinks.i.table", _iceberg("table"), lambda o: o.table),
    ]
}
NAME_FIELDS = [f for f in FIELDS if f != "file.root"]


def validate(field: FieldClass, ex: Example, value: str) -> Any:
    """The real path: Run.new for a dataset, else publish.toml -> load_config(path).sink(name)."""
    if field.id == "dataset":
        return publishers.Run.new(value, RUN_DATE).dataset
    ex.config.write_text(field.toml(ex.dir, value), encoding="utf-8")
    _, options = load_config(ex.config).sink(field.sink)
    return field.read_back(options)


def check_refusal(field: FieldClass, exc: Exception) -> None:
    """One line per error (here: exactly one error), naming the field, with no planted secret."""
    message = str(exc)
    lines = message.splitlines()
    if isinstance(exc, ConfigError) and lines and lines[0] == "invalid configuration:":
        lines = lines[1:]  # the header; one line per error follows
    assert len(lines) == 1, f"expected one line for one error, got {len(lines)}: {message!r}"
    assert field.loc in lines[0], f"the message does not name {field.loc!r}: {message!r}"
    assert SECRET not in message, f"the planted secret is in the message: {message!r}"
    bad = [ch for ch in lines[0] if unicodedata.category(ch) in ("Cc", "Zl", "Zp")]
    assert not bad, f"raw control/separator characters {bad!r} in the message line: {message!r}"


# -- strategies ---------------------------------------------------------------------------------------


def insert(base: st.SearchStrategy[str], piece: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``piece`` inserted into a value drawn from ``base`` at any position (also the ends)."""

    def put(t: tuple[str, str, int]) -> str:
        b, p, i = t
        i %= len(b) + 1
        return b[:i] + p + b[i:]

    return st.tuples(base, piece, st.integers(0, 10_000)).map(put)


def padded(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def pad(t: tuple[str, str, str]) -> str:
        b, p, where = t
        return {"lead": p + b, "trail": b + p, "both": p + b + p}[where]

    return st.tuples(base, st.sampled_from(PADDING), st.sampled_from(["lead", "trail", "both"])).map(pad)


def nfd(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return insert(base, st.sampled_from(NFD_PIECES)).filter(lambda v: not unicodedata.is_normalized("NFC", v))


def long_of(alphabet: str, limit: int, *, max_extra: int = 400) -> st.SearchStrategy[str]:
    """Longer than ``limit`` characters of ``alphabet`` (each valid on its own)."""
    return st.text(alphabet=alphabet, min_size=limit + 1, max_size=limit + max_extra)


def cased(names: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(names).flatmap(lambda n: st.sampled_from([n, n.upper(), n.lower(), n.title()]))


LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
ALNUM = LOWER + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
IPV4 = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")

# What each field class accepts, per its documented rule (publishers/_names.py).
_dataset_ok = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}", fullmatch=True).filter(lambda v: ".." not in v)
_bucket_ok = st.from_regex(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", fullmatch=True).filter(
    lambda v: (
        ".." not in v
        and not IPV4.fullmatch(v)
        and not v.startswith(BUCKET_PREFIXES)
        and not v.endswith(BUCKET_SUFFIXES)
    )
)
_printable = st.characters(categories=["L", "N", "P", "S", "Zs"])


# Shapes the config's secret heuristics refuse in any value (user:pw@host, key=value): tested once,
# deterministically, by test_documented_name_that_looks_like_a_host_entry_is_accepted.
def _looks_like_credentials(v: str) -> bool:
    return (":" in v and "@" in v) or "=" in v


def _is_reserved(name: str) -> bool:
    folded = name.casefold()
    return folded in {r.casefold() for r in RESERVED[:-1]} or folded.startswith("_ap_stg_")


_segment_ok = st.text(
    alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"], exclude_characters="/\\"), min_size=1, max_size=20
).filter(
    lambda s: s not in (".", "..") and s == s.strip() and unicodedata.is_normalized("NFC", s) and not _is_reserved(s)
)
_prefix_ok = (
    st.tuples(st.lists(_segment_ok, min_size=1, max_size=5), st.booleans())
    .map(lambda t: "/".join(t[0]) + ("/" if t[1] else ""))
    .filter(lambda v: not _looks_like_credentials(v))
)
_topic_ok = st.from_regex(r"[A-Za-z0-9._\-]{1,249}", fullmatch=True).filter(
    lambda v: v not in (".", "..") and not v.startswith("__") and v.replace(".", "_") != DEFAULT_LEDGER
)


def _pg_ok(extra: Callable[[str], bool]) -> st.SearchStrategy[str]:
    named = st.sampled_from(
        ["../../etc/passwd", "a/b", "C:\\x", "Robert'); DROP TABLE x;--", 'we"ird', "ß", "Ünïcödé", "名前", "a b"]
    )
    text = st.text(alphabet=_printable, min_size=1, max_size=63)
    return st.one_of(named, text).filter(
        lambda v: (
            1 <= len(v.encode()) <= 63
            and v == v.strip()
            and unicodedata.is_normalized("NFC", v)
            and not _looks_like_credentials(v)
            and extra(v)
        )
    )


def _not_pg_schema(v: str) -> bool:
    return not v.casefold().startswith("pg_") and v.casefold() != "information_schema"


def _not_staging_table(v: str) -> bool:
    return not v.casefold().startswith("_ap_stg_")


_iceberg_ok = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,127}", fullmatch=True)

ACCEPTED: dict[str, st.SearchStrategy[str]] = {
    "dataset": _dataset_ok,
    "s3.bucket": _bucket_ok,
    "s3.prefix": _prefix_ok,
    "kafka.topic": _topic_ok,
    "kafka.ledger_topic": _topic_ok,
    "postgres.schema": _pg_ok(_not_pg_schema),
    "postgres.table": _pg_ok(_not_staging_table),
    "postgres.ledger_table": _pg_ok(_not_staging_table),
    "postgres.staging_schema": _pg_ok(_not_pg_schema),
    "postgres.key_column": _pg_ok(lambda v: True),
    "iceberg.namespace": _iceberg_ok,
    "iceberg.table": _iceberg_ok,
}
# Short valid values to plant hostile pieces in.
_short = {
    "dataset": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,15}", fullmatch=True),
    "s3.bucket": st.from_regex(r"[a-z][a-z0-9\-]{1,12}[a-z0-9]", fullmatch=True),
    "s3.prefix": st.lists(st.from_regex(r"[a-z0-9][a-z0-9_\-]{0,8}", fullmatch=True), min_size=1, max_size=3).map(
        "/".join
    ),
    "kafka.topic": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,15}", fullmatch=True),
    "postgres": st.from_regex(r"[A-Za-z][A-Za-z0-9_ .\-]{0,15}[A-Za-z0-9]", fullmatch=True),
    "iceberg": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,15}", fullmatch=True),
}
_short["kafka.ledger_topic"] = _short["kafka.topic"]
for _f in ("schema", "table", "ledger_table", "staging_schema", "key_column"):
    _short[f"postgres.{_f}"] = _short["postgres"]
for _f in ("namespace", "table"):
    _short[f"iceberg.{_f}"] = _short["iceberg"]


def _common_hostile(field: str) -> list[st.SearchStrategy[str]]:
    """Hostile to every name field: control characters anywhere (also a trailing newline),
    whitespace padding, an NFD form, the empty string."""
    base = _short[field]
    return [
        insert(base, st.sampled_from(CONTROL)),
        base.map(lambda v: v + "\n"),
        padded(base),
        nfd(base),
        st.just(""),
    ]


def _prefix_traversal() -> st.SearchStrategy[str]:
    seg = st.from_regex(r"[a-z0-9][a-z0-9_\-]{0,8}", fullmatch=True)
    bad_segment = st.sampled_from(["..", ".", ""])

    def place(t: tuple[list[str], str, int]) -> str:
        segs, bad, i = t
        i %= len(segs) + 1
        return "/".join([*segs[:i], bad, *segs[i:]]) + ("/x" if bad == "" and i == len(segs) else "")

    return st.one_of(
        st.tuples(st.lists(seg, min_size=1, max_size=4), bad_segment, st.integers(0, 100)).map(place),
        seg.map(lambda v: "/" + v),
        insert(seg, st.just("\\")),
        st.sampled_from(["/", "..", "../..", "./x", "a/../../b"]),
    )


def _prefix_reserved() -> st.SearchStrategy[str]:
    seg = st.from_regex(r"[a-z0-9][a-z0-9_\-]{0,8}", fullmatch=True)

    def place(t: tuple[list[str], str, int]) -> str:
        segs, bad, i = t
        i %= len(segs) + 1
        return "/".join([*segs[:i], bad, *segs[i:]])

    return st.tuples(st.lists(seg, min_size=0, max_size=3), cased(RESERVED), st.integers(0, 100)).map(place)


def _padded_segment() -> st.SearchStrategy[str]:
    seg = st.from_regex(r"[a-z0-9][a-z0-9_\-]{0,8}", fullmatch=True)
    return st.tuples(seg, st.sampled_from(PADDING), seg).map(lambda t: f"{t[0]}/{t[1]}{t[2]}")


HOSTILE_EXTRA: dict[str, list[st.SearchStrategy[str]]] = {
    "dataset": [
        insert(_short["dataset"], st.sampled_from(["../", "/", "\\", ".."])),
        long_of(ALNUM, 100),
        cased(RESERVED),
        st.sampled_from(["..", ".", "-x", ".hidden", "a..b"]),
    ],
    "s3.bucket": [
        insert(_short["s3.bucket"], st.sampled_from(["/", "\\", "..", "../"])),
        long_of(LOWER, 63),
        st.tuples(*[st.integers(0, 999)] * 4).map(lambda t: ".".join(map(str, t))),
        st.tuples(st.sampled_from(BUCKET_PREFIXES), _short["s3.bucket"]).map("".join),
        st.tuples(_short["s3.bucket"], st.sampled_from(BUCKET_SUFFIXES)).map("".join),
        cased(RESERVED),
        st.sampled_from(["ab", "a", "MyBucket", "-abc", "abc-", "a_b_c"]),
    ],
    "s3.prefix": [
        _prefix_traversal(),
        _prefix_reserved(),
        _padded_segment(),
        st.integers(S3_PREFIX_MAX_BYTES + 1, S3_PREFIX_MAX_BYTES + 300).map(lambda n: "a" * n),
        st.integers(S3_PREFIX_MAX_BYTES // 2 + 1, S3_PREFIX_MAX_BYTES).map(lambda n: "\u00e9" * n),
    ],
    "kafka.topic": [
        insert(_short["kafka.topic"], st.sampled_from(["/", "\\", "../", " x"])),
        st.sampled_from([".", ".."]),
        long_of(ALNUM + "._-", 249),
        st.sampled_from(["__consumer_offsets", "__transaction_state", "__x"]),
        _short["kafka.topic"].map(lambda v: "__" + v),
    ],
    "postgres.schema": [
        long_of(ALNUM, 63),
        st.integers(32, 80).map(lambda n: "\u00e9" * n),  # 64+ UTF-8 bytes in 32+ characters
        cased(["pg_catalog", "pg_toast", "information_schema"]),
        _short["postgres"].map(lambda v: "pg_" + v),
    ],
    "postgres.table": [
        long_of(ALNUM, 63),
        st.integers(32, 80).map(lambda n: "\u00e9" * n),
        cased(["_ap_stg_x", "_ap_stg_"]),
        _short["postgres"].map(lambda v: "_ap_stg_" + v),
    ],
    "postgres.key_column": [
        long_of(ALNUM, 63),
        st.integers(22, 60).map(lambda n: "\u4e00" * n),  # 3 bytes each
    ],
    "iceberg.namespace": [
        insert(_short["iceberg"], st.sampled_from(["/", "\\", ".", "../"])),
        long_of(ALNUM, 128),
        cased(RESERVED),
        st.sampled_from(["../../../../esc", "a/b", "a.b", "..", "_atomic_publish"]),
    ],
}
HOSTILE_EXTRA["kafka.ledger_topic"] = HOSTILE_EXTRA["kafka.topic"]
HOSTILE_EXTRA["postgres.staging_schema"] = HOSTILE_EXTRA["postgres.schema"]
HOSTILE_EXTRA["postgres.ledger_table"] = HOSTILE_EXTRA["postgres.table"]
HOSTILE_EXTRA["iceberg.table"] = HOSTILE_EXTRA["iceberg.namespace"]


def hostile(field: str) -> st.SearchStrategy[str]:
    return st.one_of(*_common_hostile(field), *HOSTILE_EXTRA[field])


def with_secret(field: str) -> st.SearchStrategy[str]:
    """Hostile values that carry the planted secret (the secret itself fits every name class)."""
    around = st.from_regex(r"[a-z0-9]{0,6}", fullmatch=True)
    base = st.tuples(around, around).map(lambda t: t[0] + SECRET + t[1])
    return st.one_of(
        insert(base, st.sampled_from(CONTROL)),
        base.map(lambda v: v + "\n"),
        padded(base),
        nfd(base),
        base.map(lambda v: v * 60),  # too long for every class (S3 prefix: > 849 bytes); the first copy is shown
        base.map(lambda v: v.upper() + "\t"),
        # path traversal, where the field's rule refuses it (Postgres identifiers are quoted: allowed)
        *([] if field.startswith("postgres.") else [base.map(lambda v: "../" + v)]),
    )


# -- properties -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field_id", NAME_FIELDS)
@HOSTILE
@given(data=st.data())
def test_hostile_name_is_refused_in_one_line_naming_the_field(field_id: str, data: st.DataObject) -> None:
    field = FIELDS[field_id]
    value = data.draw(hostile(field_id), label="value")
    ex = Example()
    try:
        with pytest.raises((ConfigError, InputError)) as info:
            accepted = validate(field, ex, value)
            pytest.fail(f"{field.id} {value!r} was accepted (as {accepted!r})")
        check_refusal(field, info.value)
        assert not ex.created(), f"validation created {ex.created()}"
    finally:
        ex.close()


@pytest.mark.parametrize("field_id", NAME_FIELDS)
@HOSTILE
@given(data=st.data())
def test_refusal_never_echoes_a_planted_secret(field_id: str, data: st.DataObject) -> None:
    field = FIELDS[field_id]
    value = data.draw(with_secret(field_id), label="value")
    ex = Example()
    try:
        with pytest.raises((ConfigError, InputError)) as info:
            validate(field, ex, value)
        assert SECRET not in str(info.value), f"PGPASSWORD's value is in the message: {str(info.value)!r}"
        assert not ex.created()
    finally:
        ex.close()


@pytest.mark.parametrize("field_id", list(ACCEPTED))
@HOSTILE
@given(data=st.data())
def test_documented_form_is_accepted(field_id: str, data: st.DataObject) -> None:
    field = FIELDS[field_id]
    value = data.draw(ACCEPTED[field_id], label="value")
    ex = Example()
    try:
        try:
            accepted = validate(field, ex, value)
        except (ConfigError, InputError) as exc:
            pytest.fail(f"{field.id} {value!r} is of the documented accepted form but was refused: {exc}")
        expected = value.removesuffix("/") if field_id == "s3.prefix" else value
        assert accepted == expected
        assert not ex.created(), f"validation created {ex.created()}"
    finally:
        ex.close()


@pytest.mark.parametrize("field_id", ["s3.prefix", *[f for f in NAME_FIELDS if f.startswith("postgres.")]])
def test_documented_name_that_looks_like_a_host_entry_is_accepted(field_id: str) -> None:
    """Postgres identifiers are "any printable text" and S3 prefix segments any text but '/', '\\'
    and the reserved ones: a value shaped like user:password@host is still a valid name there.
    (The random positive properties leave such values out, so that they stay deterministic.)"""
    value = "u:p@h"
    ex = Example()
    try:
        try:
            accepted = validate(FIELDS[field_id], ex, value)
        except ConfigError as exc:
            pytest.fail(f"{field_id} {value!r} is of the documented accepted form but was refused: {exc}")
        assert accepted == value
    finally:
        ex.close()


def test_truncated_value_does_not_leak_a_prefix_of_the_secret() -> None:
    """A long refused value is cut to 80 characters before redaction: a secret that straddles the
    cut must not leave its first characters in the message."""
    ex = Example()
    try:
        for field_id in ("s3.bucket", "kafka.topic", "postgres.table", "iceberg.namespace"):
            value = "a" * 70 + SECRET + "\n"
            with pytest.raises(ConfigError) as info:
                validate(FIELDS[field_id], ex, value)
            message = str(info.value)
            windows = [SECRET[i : i + 6] for i in range(len(SECRET) - 5)]
            leaked = [w for w in windows if w in message]
            assert not leaked, f"{field_id}: part of the secret ({leaked[0]!r}...) is in {message!r}"
    finally:
        ex.close()


# -- the file sink's root: not a name; path traversal is allowed, but validation creates nothing -----


def _root_values() -> st.SearchStrategy[tuple[str, str, bool]]:
    """(head, tail, with_base): the root is head + <example dir>/root + tail (or head + tail)."""
    seg = st.from_regex(r"[a-z0-9][a-z0-9_\-]{0,8}", fullmatch=True)
    return st.one_of(
        st.tuples(st.just(""), st.sampled_from(PATH_CONTROL), st.just(True)),  # a trailing control
        st.tuples(
            st.just(""), seg.flatmap(lambda s: st.sampled_from(PATH_CONTROL).map(lambda c: f"/{s}{c}x")), st.just(True)
        ),
        st.tuples(st.sampled_from(PADDING), st.just(""), st.just(True)),
        st.tuples(st.just(""), st.sampled_from(PADDING), st.just(True)),
        st.tuples(
            st.just(""),
            st.sampled_from(["/..", "/../..", "/../../x", "/../../../esc", "\\..\\x", "/./.", "//x"]),
            st.just(True),
        ),
        st.tuples(st.just(""), long_of(LOWER, 255, max_extra=200).map(lambda s: "/" + s), st.just(True)),
        st.tuples(st.just(""), cased(RESERVED).map(lambda s: "/" + s), st.just(True)),
        st.tuples(st.just(""), st.just(""), st.just(False)),  # root = ""
    )


def _root(ex: Example, parts: tuple[str, str, bool]) -> str:
    head, tail, with_base = parts
    return head + (str(ex.dir / "root") if with_base else "") + tail


@HOSTILE
@given(parts=_root_values())
def test_file_root_is_never_created_by_validation(parts: tuple[str, str, bool]) -> None:
    field = FIELDS["file.root"]
    ex = Example()
    try:
        value = _root(ex, parts)
        try:
            validate(field, ex, value)
        except ConfigError as exc:
            check_refusal(field, exc)
        assert not ex.created(), f"validating root {value!r} created {ex.created()}"
    finally:
        ex.close()


ROOT_MISTAKES: dict[str, st.SearchStrategy[tuple[str, str, bool]]] = {
    "control": st.one_of(
        st.tuples(st.just(""), st.sampled_from(PATH_CONTROL), st.just(True)),
        st.tuples(st.just(""), st.sampled_from(PATH_CONTROL).map(lambda c: f"/sub{c}dir"), st.just(True)),
    ),
    "padding": st.one_of(
        st.tuples(st.sampled_from(PADDING), st.just(""), st.just(True)),
        st.tuples(st.just(""), st.sampled_from(PADDING), st.just(True)),
    ),
    "empty": st.just(("", "", False)),
}


@pytest.mark.parametrize("kind", list(ROOT_MISTAKES))
@HOSTILE
@given(data=st.data())
def test_file_root_with_control_characters_padding_or_empty_is_refused(kind: str, data: st.DataObject) -> None:
    """A root with a newline, NUL, U+0085, U+2028, ..., leading/trailing whitespace, or empty (which
    would mean the working directory) is a configuration mistake: refused in one line naming root."""
    field = FIELDS["file.root"]
    parts = data.draw(ROOT_MISTAKES[kind], label="parts")
    ex = Example()
    try:
        value = _root(ex, parts)
        with pytest.raises(ConfigError) as info:
            accepted = validate(field, ex, value)
            pytest.fail(f"root {value!r} was accepted (as {str(accepted)!r})")
        check_refusal(field, info.value)
        assert not ex.created()
    finally:
        ex.close()


@HOSTILE
@given(name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,30}", fullmatch=True))
def test_file_root_of_the_documented_form_is_accepted_and_not_created(name: str) -> None:
    ex = Example()
    try:
        value = str(ex.dir / "out" / name)
        assert str(validate(FIELDS["file.root"], ex, value)) == str(Path(value))
        assert not ex.created()
    finally:
        ex.close()
