"""Hostile environment overrides, property-tested against ``environment_overrides``'s documented
rules (docs/configuration.md, "Environment overrides"), with an oracle written here from those rules
and not from the code: any set of ``ATOMIC_PUBLISH_*`` variables either becomes exactly the nested
tables the rules say, or is refused with ``ConfigError``, one line that names a variable and never
contains a value. Nothing else escapes (it was pydantic-settings' ``SettingsError``, exit 1)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomic_publish import ConfigError
from atomic_publish.publishers.config import ENV_PREFIX, environment_overrides

SECTIONS = ("defaults", "sinks", "groups", "pipeline")
PLANTED = "zq9secret"  # in every generated value, so an echoed value is seen

key = st.sampled_from(["root", "format", "pg", "lake", "sasl.password", "s3.secret-access-key", "key_columns", ""])
path = st.tuples(st.sampled_from([*SECTIONS, "config", "test"]), st.lists(key, min_size=0, max_size=3))
value = st.one_of(
    st.sampled_from(["plain", " 5", "true", "[1, 2]", '{"a": "b"}', "[broken", "{", '  ["x"]', '"q"', ""]),
    st.text(max_size=12),
).map(lambda v: v + PLANTED if not v.lstrip().startswith(("[", "{")) else v.replace("x", PLANTED))
case = st.sampled_from([str.upper, str.lower])


def variable(parts: tuple[str, list[str]], style) -> str:  # type: ignore[no-untyped-def]
    return style(ENV_PREFIX) + style("__".join([parts[0], *parts[1]]))


def expected(env: dict[str, str]) -> dict | None:  # type: ignore[type-arg]
    """The rules, applied one variable at a time (shorter paths first); None: refused."""
    tables: dict = {}  # type: ignore[type-arg]
    seen: set[tuple[str, ...]] = set()
    for name in sorted(env, key=lambda n: (n[len(ENV_PREFIX) :].lower().count("__"), n)):
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if parts[0] not in SECTIONS:
            continue
        if "" in parts or tuple(parts) in seen:
            return None
        seen.add(tuple(parts))
        raw = env[name]
        secret = any(word in parts[-1] for word in ("password", "secret"))
        if secret and (len(parts) < 4 or parts[0] != "sinks"):
            return None  # only a sink's table of client properties takes a secret
        if raw.lstrip().startswith(("[", "{")) and not secret:
            try:
                raw = json.loads(raw)
            except ValueError:
                return None
        node = tables
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                return None
        node[parts[-1]] = raw
    return tables


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(path, case, value), max_size=5))
def test_every_set_of_variables_is_read_by_the_rules_or_refused_in_one_line_without_a_value(variables):
    env = {variable(p, style): v for p, style, v in variables}
    want = expected(env)
    try:
        got = environment_overrides(env)
    except ConfigError as exc:
        message = str(exc)
        assert want is None, (env, message)
        assert "\n" not in message and "environment variable" in message
        assert any(name in message for name in env), message
        assert PLANTED not in message, message
        return
    assert want == got, env
