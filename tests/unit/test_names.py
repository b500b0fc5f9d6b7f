"""atomic_publish.publishers._names: every accepted name obeys its documented rule, re-checked here by hand."""

from __future__ import annotations

import os
import re
import string
import unicodedata
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomic_publish.publishers import _names

# 300 generated values per property; no example database written into the checkout.
HOSTILE = settings(max_examples=300, deadline=None, database=None)

ALNUM = set(string.ascii_letters + string.digits)
LOWER_ALNUM = set(string.ascii_lowercase + string.digits)
RESERVED = {"_staging", "_locks", "_attempts", "_leases", "_atomic_publish", "_manifest.json"}

# Fragments a hostile configuration or caller could put in a name.
FRAGMENTS = [
    "a", "Z", "0", "9", "x", "_", ".", "-", "/", "\\", "..", "../", "./", "//", "~",
    "\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\x9f", " ", "\u00a0", "\u200b", "\u202e", "\u2028",
    "\ufeff", "\ud800", "\U000e0001", "\ue000", "é", "e\u0301", "\u0430", "\uff53", "ß", "İ", "Å", "A\u030a",
    "_staging", "_atomic_publish", "_MANIFEST.json", "_ap_stg_", "pg_", "PG_", "__", "xn--", "sthree-",
    "-s3alias", "--ol-s3", ".mrap", "192.168.5.4", "%2e%2e", "%2F", "$", "'", '"', ";", "@", ":", "?", "#",
    "information_schema", "pg_catalog", "a" * 70, "b" * 130, "\u00e9" * 40,
]  # fmt: skip
hostile = st.one_of(
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=14).map("".join),
    st.text(max_size=300),
    st.from_regex(r"[a-z0-9][a-z0-9.\-_]{0,70}[a-z0-9]\n?", fullmatch=True),
    st.sampled_from(FRAGMENTS),
)


def is_control(ch: str) -> bool:
    return ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F


def check_common(value: str) -> None:
    assert isinstance(value, str) and value
    assert not any(is_control(ch) for ch in value)
    assert not value.endswith("\n") and value == value.strip()
    assert unicodedata.normalize("NFC", value) == value


def refused(func: Callable[[str], str], value: str, field: str) -> bool:
    try:
        func(value)
    except ValueError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message
        assert message.startswith(field)
        assert len(message) < 600
        return True
    return False


def rule_dataset(v: str) -> bool:
    return 1 <= len(v) <= 100 and v[0] in ALNUM and all(c in ALNUM or c in "_.-" for c in v) and ".." not in v


def rule_bucket(v: str) -> bool:
    parts = v.split(".")
    looks_ip = len(parts) == 4 and all(p and len(p) <= 3 and all(c in string.digits for c in p) for p in parts)
    return (
        3 <= len(v) <= 63
        and all(c in LOWER_ALNUM or c in ".-" for c in v)
        and v[0] in LOWER_ALNUM
        and v[-1] in LOWER_ALNUM
        and ".." not in v
        and not looks_ip
        and not any(v.startswith(p) for p in ("xn--", "sthree-", "amzn-s3-demo-"))
        and not any(v.endswith(s) for s in ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    )


def rule_topic(v: str) -> bool:
    ok_chars = all(c in ALNUM or c in "._-" for c in v)
    return 1 <= len(v) <= 249 and ok_chars and v not in (".", "..") and not v.startswith("__")


def rule_iceberg(v: str) -> bool:
    return 1 <= len(v) <= 128 and v[0] in ALNUM and all(c in ALNUM or c in "_-" for c in v)


def rule_pg(v: str) -> bool:
    return 1 <= len(v.encode()) <= 63 and "\x00" not in v


def rule_pg_schema(v: str) -> bool:
    return rule_pg(v) and not v.lower().startswith("pg_") and v.lower() != "information_schema"


def rule_pg_table(v: str) -> bool:
    return rule_pg(v) and not v.lower().startswith("_ap_stg_")


CLASSES = [
    ("dataset", _names.dataset, rule_dataset),
    ("bucket", _names.s3_bucket, rule_bucket),
    ("topic", _names.kafka_topic, rule_topic),
    ("namespace", _names.iceberg_namespace, rule_iceberg),
    ("table", _names.iceberg_table, rule_iceberg),
    ("column", lambda v: _names.pg_identifier(v, "column"), rule_pg),
    ("table", _names.pg_table, rule_pg_table),
    ("schema", _names.pg_schema, rule_pg_schema),
]


@pytest.mark.parametrize(("field", "func", "rule"), CLASSES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CLASSES)])
@settings(HOSTILE, suppress_health_check=[HealthCheck.too_slow])
@given(value=hostile)
def test_accepted_names_obey_the_rule(
    field: str, func: Callable[[str], str], rule: Callable[[str], bool], value: str
) -> None:
    if refused(func, value, field):
        return
    assert func(value) == value
    check_common(value)
    assert rule(value), value
    if field in ("dataset", "namespace") or func is _names.iceberg_table:  # names that become path segments
        assert value.casefold() not in RESERVED


@HOSTILE
@given(value=hostile)
def test_accepted_prefixes_obey_the_rule(value: str) -> None:
    if refused(_names.s3_prefix, value, "prefix"):
        return
    prefix = _names.s3_prefix(value)
    assert value in (prefix, prefix + "/")
    check_common(prefix)
    assert not prefix.startswith("/") and not prefix.endswith("/") and "\\" not in prefix
    for segment in prefix.split("/"):
        assert segment not in ("", ".", "..") and segment == segment.strip()
        assert segment.casefold() not in RESERVED and not segment.casefold().startswith("_ap_stg_")
    assert len(prefix.encode()) <= 1024


@HOSTILE
@given(topic=hostile, ledger=st.sampled_from(["atomic-publish-ledger", "a.b", "a_b", "x"]))
def test_distinct_topics_never_collide(topic: str, ledger: str) -> None:
    if refused(lambda t: _names.kafka_topics_distinct(t, ledger)[0], topic, "topic"):
        return
    assert topic != ledger and topic.replace(".", "_") != ledger.replace(".", "_")


@HOSTILE
@given(prefix=hostile, suffix=st.integers(min_value=0, max_value=1100))
def test_key_fits(prefix: str, suffix: int) -> None:
    if not refused(lambda p: _names.s3_key_fits(p, suffix), prefix, "prefix"):
        assert len(prefix.encode("utf-8", "surrogatepass")) + suffix <= 1024


# -- inside() -------------------------------------------------------------------------------------

SEGMENTS = ["..", ".", "a", "b", "up", "down", "", "%2e%2e", "..%2f", "_atomic_publish", "x\ny"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inside")
    (root / "warehouse" / "a" / "b").mkdir(parents=True)
    (root / "outside").mkdir()
    (root / "warehouse" / "up").symlink_to(root / "outside")  # a symlink that leaves the base
    (root / "warehouse" / "down").symlink_to(root / "warehouse" / "a")  # one that stays inside
    return root / "warehouse"


def resolves_inside(path: str, base: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(base.resolve())


@settings(HOSTILE, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(SEGMENTS), max_size=8), form=st.sampled_from(["rel", "abs", "uri"]))
def test_inside_local_never_accepts_an_escape(base: Path, parts: list[str], form: str) -> None:
    rel = "/".join(parts)
    candidate = {"rel": rel, "abs": f"{base}/{rel}", "uri": f"file://{base}/{rel}"}[form]
    try:
        result = _names.inside(str(base), candidate)
    except ValueError as exc:
        assert "\n" not in str(exc)
        # Refused: it escapes, or it carries a control character.
        local = unquote(urlparse(candidate).path) if form == "uri" else os.path.join(base, candidate)
        assert not candidate or "\n" in candidate or not resolves_inside(local, base)
        return
    assert "\n" not in result
    path = unquote(urlparse(result).path) if form == "uri" else result
    assert resolves_inside(path, base)
    assert os.path.realpath(path) == path


@HOSTILE
@given(parts=st.lists(st.sampled_from(SEGMENTS), max_size=8), bucket=st.sampled_from(["lake", "other"]))
def test_inside_object_store_never_accepts_an_escape(parts: list[str], bucket: str) -> None:
    candidate = f"s3://{bucket}/warehouse/" + "/".join(parts)
    try:
        result = _names.inside("s3://lake/warehouse", candidate)
    except ValueError:
        return
    assert result == candidate and bucket == "lake" and "\n" not in result
    key = unquote(candidate.removeprefix("s3://lake/")).rstrip("/")
    assert key == "warehouse" or key.startswith("warehouse/")
    assert all(seg not in ("", ".", "..") for seg in key.split("/"))


# -- known cases ----------------------------------------------------------------------------------

PG_SCHEMA = _names.pg_schema
REFUSED = [
    (_names.dataset, "abc\n"),
    (_names.dataset, "\nabc"),
    (_names.dataset, "abc "),
    (_names.dataset, "a..b"),
    (_names.dataset, "."),
    (_names.dataset, "_staging"),
    (_names.dataset, "x" * 101),
    (_names.s3_bucket, "abc\n"),
    (_names.s3_bucket, "192.168.5.4"),
    (_names.s3_bucket, "xn--abc"),
    (_names.s3_bucket, "sthree-data"),
    (_names.s3_bucket, "amzn-s3-demo-bucket"),
    (_names.s3_bucket, "data-s3alias"),
    (_names.s3_bucket, "data--ol-s3"),
    (_names.s3_bucket, "data.mrap"),
    (_names.s3_bucket, "data--x-s3"),
    (_names.s3_bucket, "data--table-s3"),
    (_names.s3_bucket, "Data"),
    (_names.s3_bucket, "ab"),
    (_names.s3_bucket, "a..b"),
    (_names.s3_prefix, "abc\n"),
    (_names.s3_prefix, "/abs"),
    (_names.s3_prefix, "a//b"),
    (_names.s3_prefix, "a/../b"),
    (_names.s3_prefix, "a\\b"),
    (_names.s3_prefix, "."),
    (_names.s3_prefix, ""),
    (_names.s3_prefix, "a/_attempts"),
    (_names.s3_prefix, "a" * 1025),
    (_names.kafka_topic, "abc\n"),
    (_names.kafka_topic, "__consumer_offsets"),
    (_names.kafka_topic, ".."),
    (_names.kafka_topic, "a" * 250),
    (_names.kafka_topic, "a b"),
    (_names.iceberg_namespace, "abc\n"),
    (_names.iceberg_namespace, "_atomic_publish"),
    (_names.iceberg_namespace, "a.b"),
    (_names.iceberg_table, "../../esc"),
    (_names.iceberg_table, "../../../../esc"),
    (_names.iceberg_table, "a/b"),
    (_names.iceberg_table, "a\\b"),
    (_names.iceberg_table, ".."),
    (_names.iceberg_table, "x" * 129),
    (_names.pg_table, "abc\n"),
    (_names.pg_table, "a" * 64),
    (_names.pg_table, "é" * 32),
    (_names.pg_table, "_ap_stg_1234"),
    (_names.pg_table, "a\x00b"),
    (_names.pg_table, "cafe\u0301"),
    (PG_SCHEMA, "pg_catalog"),
    (PG_SCHEMA, "pg_toast"),
    (PG_SCHEMA, "PG_x"),
    (PG_SCHEMA, "information_schema"),
]


@pytest.mark.parametrize(("func", "value"), REFUSED, ids=[f"{f.__name__}-{v[:20]!r}" for f, v in REFUSED])
def test_refused(func: Callable[[str], str], value: str) -> None:
    with pytest.raises(ValueError) as info:
        func(value)
    message = str(info.value)
    assert "\n" not in message
    assert repr(value)[:40] in message or len(repr(value)) > 80


ACCEPTED = [
    (_names.dataset, "refunds_settled"),
    (_names.dataset, "refunds.v2-eu"),
    (_names.dataset, "9" * 100),
    (_names.s3_bucket, "reports"),
    (_names.s3_bucket, "my.bucket-01"),
    (_names.s3_bucket, "192.168.5.4a"),
    (_names.kafka_topic, "atomic-publish-ledger"),
    (_names.kafka_topic, "a" * 249),
    (_names.iceberg_namespace, "reports"),
    (_names.iceberg_table, "refunds_settled-2"),
    (_names.pg_table, "a" * 63),
    (_names.pg_table, "Refunds Table"),
    (_names.pg_table, "é" * 31),
    (PG_SCHEMA, "public"),
    (PG_SCHEMA, "reports_pg_x"),
]


@pytest.mark.parametrize(("func", "value"), ACCEPTED, ids=[f"{f.__name__}-{v[:20]}" for f, v in ACCEPTED])
def test_accepted(func: Callable[[str], str], value: str) -> None:
    assert func(value) == value


def test_s3_prefix_normalizes_a_trailing_slash() -> None:
    assert _names.s3_prefix("published/") == "published"
    assert _names.s3_prefix("a/b/c") == "a/b/c"
    with pytest.raises(ValueError, match="prefix"):
        _names.s3_prefix("a//")


def test_key_fits_known_cases() -> None:
    with pytest.raises(ValueError, match="1040 bytes"):
        _names.s3_key_fits("a" * 1000, 40)
    assert _names.s3_key_fits("a" * 984, 40) == "a" * 984
    with pytest.raises(ValueError):
        _names.s3_key_fits("é" * 500, 40)  # 1,000 UTF-8 bytes


def test_topic_collisions() -> None:
    for topic, ledger in [("a.b", "a_b"), ("a_b", "a.b"), ("x", "x"), ("a.b.c", "a_b_c")]:
        with pytest.raises(ValueError, match=r"ledger_topic|collides"):
            _names.kafka_topics_distinct(topic, ledger)
    assert _names.kafka_topics_distinct("refunds", "atomic-publish-ledger") == ("refunds", "atomic-publish-ledger")


def test_message_names_the_field_and_cuts_long_values() -> None:
    with pytest.raises(ValueError) as info:
        _names.pg_identifier("x" * 5000, "key column")
    message = str(info.value)
    assert message.startswith("key column 'xxx") and "(5000 chars)" in message and len(message) < 250


def test_not_a_string() -> None:
    with pytest.raises(ValueError, match="not a string"):
        _names.dataset(None)


def test_reserved_any_case() -> None:
    for name in ("_staging", "_STAGING", "_Locks", "_manifest.JSON", "_ap_stg_x"):
        with pytest.raises(ValueError, match="reserved"):
            _names.not_reserved(name, "segment")
    assert _names.not_reserved("staging", "segment") == "staging"


@pytest.mark.parametrize(
    ("base_path", "candidate", "ok"),
    [
        ("s3://lake/warehouse", "s3://lake/warehouse/ns/t", True),
        ("s3://lake/warehouse", "s3a://lake/warehouse/ns/t", True),
        ("s3://lake/warehouse", "s3://lake/warehouse2/t", False),
        ("s3://lake/warehouse", "s3://other/warehouse/t", False),
        ("s3://lake/warehouse", "s3://lake/warehouse/../t", False),
        ("s3://lake/warehouse", "s3://lake/warehouse/%2E%2E/t", False),
        ("s3://lake/warehouse", "s3://lake/warehouse/a?x=1", False),
        ("s3://lake/warehouse", "/tmp/warehouse", False),
        ("s3://lake", "s3://lake/anything", True),
        ("/w", "/w/ns/t", True),
        ("/w", "/w/../etc", False),
        ("/w", "/wx", False),
        ("/w", "file:///w/ns", True),
        ("/w", "file://remote/w/ns", False),
        ("file:///w", "ns/t", True),
        ("file:///w", "/w/ns/t\n", False),
        ("/w", "file:/w/x", True),
        ("/w", "c:x", False),
    ],
)
def test_inside_known_cases(base_path: str, candidate: str, ok: bool) -> None:
    if ok:
        assert _names.inside(base_path, candidate)
    else:
        with pytest.raises(ValueError, match="is not inside"):
            _names.inside(base_path, candidate)


def test_docstring_lists_every_destination() -> None:
    doc = _names.__doc__ or ""
    for word in ("dataset", "bucket", "prefix", "topic", "Postgres", "schema", "Iceberg", "namespace", "inside"):
        assert word in doc


@pytest.mark.parametrize(
    ("value", "why"),
    [
        # Found from outside: "it starts with 'B'", where the uppercase letters and '_' are the problem.
        ("Bad_Bucket", "it contains 'B', '_'"),
        ("-abc", "it starts with '-'"),
        ("ab", "it is 2 characters long (at least 3)"),
    ],
)
def test_a_refused_bucket_says_what_is_wrong_with_it(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        _names.s3_bucket(value)
