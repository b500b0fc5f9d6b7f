"""Every name a sink turns into a path, an object key, an SQL identifier or a topic is checked here.

A name is matched as a whole string (``re.fullmatch``: ``"abc\\n"`` is not ``"abc"``), and first
passes the checks common to every field: a ``str``, not empty, NFC-normalized, no leading or trailing
whitespace, and no control (C0, DEL, C1, so no NUL and no newline), format (zero-width, bidi),
surrogate, private-use, unassigned, line- or paragraph-separator character. Then, per destination:

============  ===========================  ==================================================================
destination   field                        accepted
============  ===========================  ==================================================================
all sinks     dataset                      1-100 of ``A-Z a-z 0-9 _ . -``, first a letter or digit, no ``..``
S3            bucket                       AWS rules: 3-63 of ``a-z 0-9 . -``, first and last a letter or
                                           digit, no ``..``, not an IPv4 address, no prefix ``xn--``,
                                           ``sthree-``, ``amzn-s3-demo-``, no suffix ``-s3alias``,
                                           ``--ol-s3``, ``.mrap``, ``--x-s3``, ``--table-s3``
S3            prefix                       ``/``-separated segments; no leading ``/`` (one trailing ``/``
                                           is dropped); no empty, ``.``, ``..`` or reserved segment, no
                                           ``\\``, no whitespace at a segment's ends; prefix + the longest
                                           key the sink writes under it <= 1,024 UTF-8 bytes
Kafka         topic, ledger_topic          1-249 of ``A-Z a-z 0-9 . _ -``, not ``.`` or ``..``, not
                                           starting ``__``; the two differ, also after ``.`` -> ``_``
Postgres      table, ledger_table, column  1-63 UTF-8 bytes (any printable text: identifiers are quoted);
                                           tables do not start with ``_ap_stg_`` (the staging tables)
Postgres      schema, staging_schema       1-63 UTF-8 bytes as above, not starting ``pg_`` (any case),
                                           not ``information_schema``
Iceberg       namespace, table             1-128 of ``A-Z a-z 0-9 _ -``, first a letter or digit (so one
                                           level, and never ``_atomic_publish``, the sink's own area)
file/Iceberg  every path built from names  resolves inside its base (``inside``)
============  ===========================  ==================================================================

Reserved (the sinks' own areas, any case): ``_staging``, ``_locks``, ``_attempts``, ``_leases``,
``_atomic_publish``, ``_MANIFEST.json`` and anything starting ``_ap_stg_``.

Every validator returns the (possibly normalized) value or raises ``ValueError`` with one line that
names the field, shows the value with ``repr()`` (cut to 80 characters) and states the rule.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

RESERVED = frozenset({"_staging", "_locks", "_attempts", "_leases", "_atomic_publish", "_MANIFEST.json"})
_RESERVED_FOLDED = frozenset(name.casefold() for name in RESERVED)
RESERVED_PREFIXES = ("_ap_stg_",)
RESERVED_TEXT = ", ".join(sorted(RESERVED, key=str.casefold) + [p + "*" for p in RESERVED_PREFIXES])
S3_MAX_KEY_BYTES = 1024
PG_MAX_IDENTIFIER_BYTES = 63
ICEBERG_MAX_NAME = 128

DATASET_RULE = "1-100 of letters, digits, '_', '.', '-', starting with a letter or digit, without '..'"
BUCKET_RULE = "3-63 of a-z, 0-9, '.', '-', starting and ending with a letter or digit (AWS bucket naming rules)"
PREFIX_RULE = "'/'-separated segments, no leading '/', no empty, '.', '..' or reserved segment, no '\\'"
TOPIC_RULE = "1-249 of letters, digits, '.', '_', '-', not '.' or '..', not starting with '__'"
PG_RULE = f"1-{PG_MAX_IDENTIFIER_BYTES} UTF-8 bytes of printable text"
ICEBERG_RULE = f"1-{ICEBERG_MAX_NAME} of letters, digits, '_', '-', starting with a letter or digit"

_DATASET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
_ICEBERG_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{ICEBERG_MAX_NAME - 1}}}")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_OBJECT_SCHEMES = {"s3a": "s3", "s3n": "s3"}
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)", re.S)


def show(value: object, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (with the full length when cut)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} chars)" if isinstance(value, str) else ""
    return text[: limit - 3] + "..." + size


def _refuse(field: str, value: object, problem: str, rule: str) -> ValueError:
    from ._secrets import redact

    # Secrets hidden before the value is cut to its first 80 characters (a cut secret is not found).
    shown = show(redact(value)) if isinstance(value, str) else show(value)
    return ValueError(f"{field} {shown} is refused: {problem}; allowed: {rule}")


def _bad_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")


def common(value: object, field: str, rule: str = "a non-empty name") -> str:
    """The checks every name field gets; returns the value as a ``str``."""
    if not isinstance(value, str):
        raise _refuse(field, value, f"it is a {type(value).__name__}, not a string", rule)
    if not value:
        raise _refuse(field, value, "it is empty", rule)
    for pos, ch in enumerate(value):
        if _bad_char(ch):
            kind = "a control" if unicodedata.category(ch) == "Cc" else "an invisible or unassigned"
            raise _refuse(field, value, f"it contains {kind} character U+{ord(ch):04X} at {pos}", rule)
    if value != value.strip():
        raise _refuse(field, value, "it starts or ends with whitespace", rule)
    if not unicodedata.is_normalized("NFC", value):
        raise _refuse(field, value, "it is not NFC-normalized Unicode", rule)
    return value


def _mismatch(name: str, allowed: str, max_len: int, first: str | None = None, min_len: int = 1) -> str:
    """Why ``name`` breaks a character rule, in words an operator can act on."""
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if ".." in name:
        return "it contains '..'"
    if len(name) > max_len:
        return f"it is {len(name)} characters long (at most {max_len})"
    if len(name) < min_len:
        return f"it is {len(name)} characters long (at least {min_len})"
    # Characters the rule never allows come first (found from outside: 'Bad_Bucket' was refused as
    # "it starts with 'B'", where the uppercase letters and the '_' are the problem).
    bad = list(dict.fromkeys(ch for ch in name if ch not in allowed))
    if bad:
        return "it contains " + ", ".join(map(repr, bad[:5])) + (" ..." if len(bad) > 5 else "")
    if first is not None and name[0] not in first:
        return f"it starts with {name[0]!r}"
    return "it does not match the rule"


_LETTERS_DIGITS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def is_reserved(name: str) -> bool:
    """Whether ``name`` is (any case) one of the sinks' own area names, or starts like one."""
    return name.casefold() in _RESERVED_FOLDED or name.casefold().startswith(RESERVED_PREFIXES)


def not_reserved(value: str, field: str) -> str:
    if is_reserved(value):
        raise _refuse(field, value, "it is reserved for the sinks' own areas", "any name but " + RESERVED_TEXT)
    return value


def dataset(value: object, field: str = "dataset") -> str:
    name = not_reserved(common(value, field, DATASET_RULE), field)
    if not _DATASET_RE.fullmatch(name) or ".." in name:
        why = _mismatch(name, _LETTERS_DIGITS + "_.-", 100, _LETTERS_DIGITS)
        raise _refuse(field, name, why, DATASET_RULE)
    return name


def s3_bucket(value: object, field: str = "bucket") -> str:
    name = common(value, field, BUCKET_RULE)
    if not _BUCKET_RE.fullmatch(name) or ".." in name:
        lower = "abcdefghijklmnopqrstuvwxyz0123456789"
        raise _refuse(field, name, _mismatch(name, lower + ".-", 63, lower, min_len=3), BUCKET_RULE)
    if _IPV4_RE.fullmatch(name):
        raise _refuse(field, name, "it is formatted as an IP address", BUCKET_RULE)
    if name.startswith(_BUCKET_PREFIXES) or name.endswith(_BUCKET_SUFFIXES):
        raise _refuse(field, name, "AWS reserves its prefix or suffix", BUCKET_RULE)
    return name


def s3_prefix(value: object, field: str = "prefix") -> str:
    """The prefix without its trailing '/': every key and every cleanup of the sink is under it."""
    prefix = common(value, field, PREFIX_RULE)
    if prefix.startswith("/"):
        raise _refuse(field, prefix, "it starts with '/'", PREFIX_RULE)
    if "\\" in prefix:
        raise _refuse(field, prefix, "it contains '\\'", PREFIX_RULE)
    prefix = prefix.removesuffix("/")
    for segment in prefix.split("/"):
        if segment in ("", ".", "..") or segment != segment.strip():
            raise _refuse(field, value, f"segment {show(segment)} is empty, '.', '..' or padded", PREFIX_RULE)
        if is_reserved(segment):
            raise _refuse(field, value, f"segment {show(segment)} is reserved for the sinks' own areas", PREFIX_RULE)
    return s3_key_fits(prefix, 0, field)


def s3_key_fits(prefix: str, longest_suffix_len: int, field: str = "prefix") -> str:
    """Refuse a prefix if prefix + the longest key part the sink appends (UTF-8 bytes, counting its
    leading '/') exceeds S3's 1,024-byte key limit."""
    size = len(prefix.encode("utf-8", "surrogatepass")) + longest_suffix_len
    if size > S3_MAX_KEY_BYTES:
        raise _refuse(
            field,
            prefix,
            f"with the longest key written under it ({longest_suffix_len} more bytes) a key would be {size} bytes",
            f"keys of at most {S3_MAX_KEY_BYTES} UTF-8 bytes",
        )
    return prefix


def kafka_topic(value: object, field: str = "topic") -> str:
    name = common(value, field, TOPIC_RULE)
    if not _TOPIC_RE.fullmatch(name) or name in (".", ".."):
        raise _refuse(field, name, _mismatch(name, _LETTERS_DIGITS + "._-", 249), TOPIC_RULE)
    if name.startswith("__"):
        raise _refuse(field, name, "Kafka reserves '__' for internal topics", TOPIC_RULE)
    return name


def kafka_topics_distinct(topic: str, ledger_topic: str) -> tuple[str, str]:
    """Refuse a data topic equal to the ledger topic, or colliding with it once '.' reads as '_'."""
    if topic.replace(".", "_") == ledger_topic.replace(".", "_"):
        why = f"it is ledger_topic {show(ledger_topic)}"
        if topic != ledger_topic:
            why = f"it collides with ledger_topic {show(ledger_topic)} (Kafka's metric names read '.' as '_')"
        raise _refuse("topic", topic, why, "a topic distinct from ledger_topic, also after '.' -> '_'")
    return topic, ledger_topic


def pg_identifier(value: object, field: str) -> str:
    name = common(value, field, PG_RULE)
    size = len(name.encode())
    if size > PG_MAX_IDENTIFIER_BYTES:
        raise _refuse(field, name, f"it is {size} bytes (Postgres would silently truncate it)", PG_RULE)
    return name


def pg_table(value: object, field: str = "table") -> str:
    name = pg_identifier(value, field)
    if name.casefold().startswith(RESERVED_PREFIXES):
        raise _refuse(field, name, "the sink's staging tables start like that", PG_RULE + ", not '_ap_stg_*'")
    return name


def pg_schema(value: object, field: str = "schema") -> str:
    name = pg_identifier(value, field)
    if name.casefold().startswith("pg_") or name.casefold() == "information_schema":
        raise _refuse(field, name, "Postgres reserves it", PG_RULE + ", not 'pg_*' or 'information_schema'")
    return name


def iceberg_namespace(value: object, field: str = "namespace") -> str:
    name = not_reserved(common(value, field, ICEBERG_RULE), field)
    if not _ICEBERG_RE.fullmatch(name):
        why = _mismatch(name, _LETTERS_DIGITS + "_-", ICEBERG_MAX_NAME, _LETTERS_DIGITS)
        raise _refuse(field, name, why, ICEBERG_RULE)
    return name


def iceberg_table(value: object, field: str = "table") -> str:
    return iceberg_namespace(value, field)


def _location(loc: str) -> tuple[str, str, str, bool]:
    """(scheme, bucket, path, was_uri) of a plain path or URI; file URIs become local paths."""
    m = _SCHEME_RE.fullmatch(loc)
    if not m:
        return "file", "", loc, False
    scheme, rest = m[1].lower(), m[2]
    if "?" in rest or "#" in rest:
        raise ValueError(f"location {show(loc)} has a query or fragment ('?' or '#')")
    if scheme == "file":
        if rest.startswith("//"):
            host, _, path = rest[2:].partition("/")
            if host not in ("", "localhost"):
                raise ValueError(f"location {show(loc)} names a remote host")
            rest = "/" + path
        return "file", "", unquote(rest), True
    if not rest.startswith("//"):
        raise ValueError(f"location {show(loc)} is neither a path nor a scheme://bucket/key URI")
    bucket, _, key = rest[2:].partition("/")
    return _OBJECT_SCHEMES.get(scheme, scheme), bucket, key, True


def inside(base_path: str, candidate: str) -> str:
    """Return ``candidate`` (resolved, in its own form) if it is ``base_path`` or under it, else raise.

    Local paths and file:// URIs are resolved (``..``, symlinks; a relative candidate is taken
    relative to the base); for object-store URIs (s3://, gs://, ...) the scheme and bucket must
    match and the key must be under the base key, with no '.', '..' or empty segment.
    """

    def refuse(why: str) -> ValueError:
        return ValueError(f"path {show(candidate)} is not inside {show(base_path)}: {why}")

    for loc in (base_path, candidate):
        if not isinstance(loc, str) or not loc or any(unicodedata.category(ch) == "Cc" for ch in loc):
            raise refuse(f"{show(loc)} is empty or contains a control character")
    try:
        (b_scheme, b_bucket, b_path, _), (c_scheme, c_bucket, c_path, c_uri) = (
            _location(base_path),
            _location(candidate),
        )
    except ValueError as exc:
        raise refuse(str(exc)) from None
    if (b_scheme, b_bucket) != (c_scheme, c_bucket) or (b_scheme != "file" and not b_bucket):
        raise refuse(f"different storage ({b_scheme}://{b_bucket} vs {c_scheme}://{c_bucket})")
    if b_scheme == "file":
        base = os.path.realpath(b_path)
        resolved = os.path.realpath(os.path.join(base, c_path))
        if os.path.commonpath([base, resolved]) != base:
            raise refuse(f"it resolves to {show(resolved)}")
        return Path(resolved).as_uri() if c_uri else resolved
    base_key, key = b_path.rstrip("/"), c_path.rstrip("/")
    segments = [s for k in (key, unquote(key)) for s in k.split("/")]
    if key and ("\\" in unquote(key) or any(s in ("", ".", "..") for s in segments)):
        raise refuse("its key has a '\\', or an empty, '.' or '..' segment")
    if base_key and key != base_key and not key.startswith(base_key + "/"):
        raise refuse("its key is not under the base key")
    return candidate
