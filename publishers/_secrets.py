"""Finding and hiding secrets in configuration values, messages and errors.

``redact(text)`` hides, in any text: URL userinfo passwords (``scheme://user:***@host``), bare
``user:***@host:port`` broker entries, the value of every ``key=value`` / ``key: value`` /
``"key": "value"`` pair whose key looks secret (libpq ``password=`` and ``sslpassword=``, quoted or
not, URI query parameters, JSON, Python reprs, JAAS configs, ``Authorization: Bearer ...``), and
every exact secret it is given or finds in the environment (also percent-, repr- and
JSON-escaped). ``secret_in_value`` says why a plain-looking configuration value carries a secret,
so the configuration can refuse it without echoing it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
WELL_KNOWN_SECRET_VARS = ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
MIN_SECRET_LEN = 4
# Values of secret-looking variables that are settings, not secrets (TOKENIZERS_PARALLELISM=true).
_NOT_SECRETS = frozenset({"true", "false", "none", "null", "yes", "no", "on", "off"})

# Matched against the lower-cased name with every run of non-alphanumerics turned into "_".
# ssl.key.location, sslkey, sslcert, sasl.username, key_columns: paths or names, not secrets.
_SECRET_NAME = re.compile(
    r"password|passwd|passphrase|secret|token|credential|authorization|access_?key"
    r"|(?:^|_)private_?\w*key|(?:^|_)api_?\w*key|signing_?\w*key"
    # libpq 18's SCRAM keys (scram_client_key, scram_server_key: they authenticate like the password);
    # an Azure storage account key (pyiceberg's adls.account-key).
    r"|(?:^|_)scram_\w*key(?:$|_)|(?:^|_)account_?key(?:$|_)"
    r"|(?:^|_)ssl_key_pem(?:$|_)|(?:^|_)sasl_jaas_config(?:$|_)|(?:^|_)sasl_oauthbearer_config(?:$|_)"
)
# scheme://user:PASSWORD@ - the password runs to the last '@' before a space, quote or the next
# "://", so one with '@' or '/' in it is hidden whole. Every pattern starts only where a run of its
# characters starts (lookbehinds), and none can run past the next delimiter: linear time on any text.
_URL_USERINFO = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:'\"<>]*:)(?P<pw>[^\s'\"<>]+)(?=@[^\s@'\"<>]*(?:[\s'\"<>]|$))"
)
# user:PASSWORD@host:port, standing alone (a bootstrap_servers entry; Kafka splits those at ',').
# "bob://0000@kafka-1:9092" is hidden as "bob://***@...": the password may start with "//" (it
# could also read as a URL whose user is 0000: hiding a user name is the safe side). A URL with
# user:password after the "//" is _URL_USERINFO's.
_BARE_USERINFO = re.compile(
    r"(?P<head>(?:^|(?<=[\s,;=(\['\"]))[^\s:/@,;=()\[\]'\"]+:(?!//[^\s/?#@:'\",<>]*:[^\s@'\",]+@)(?://)?)(?P<pw>[^\s'\",]+)(?=@[^\s@/,'\"]*:\d+(?![\w.-]))"
)
_BARE_ENTRY = re.compile(r"(?:[A-Za-z][\w+.-]*://)?[^\s:/@]+:[^\s@]+@[^\s@/]+")
_KEY = re.compile(r"""(?<![\w.\-])(?P<key>[\w.\-]+)(?P<close>\\?["']?)(?P<sep>\s*[=:]\s*)""")
_VALUE = re.compile(
    r"""(?P<q>\\")(?:(?!\\")[^\n])*(?P<end1>\\")?"""
    r"""|(?P<q2>")(?:[^"\\\n]|\\.)*(?P<end2>")?"""
    r"""|(?P<q3>')(?:[^'\\\n]|\\.)*(?P<end3>')?"""
    r"""|(?P<scheme>(?i:bearer|basic|digest)\s+)\S+"""
    r"""|\S+"""
)
_PORT = re.compile(r"\d{1,5}(?![^/,;\s])")


def is_secret_key(name: str) -> bool:
    """Whether a setting, variable or field called ``name`` holds a secret (case-insensitive)."""
    return bool(_SECRET_NAME.search(re.sub(r"[^a-z0-9]+", "_", name.lower())))


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of PGPASSWORD, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and every variable whose name
    looks secret, longest first (values under 4 characters, and true/false/none..., are skipped)."""
    env = os.environ if environ is None else environ
    found = {
        value
        for name, value in env.items()
        if (name in WELL_KNOWN_SECRET_VARS or is_secret_key(name))
        and len(value) >= MIN_SECRET_LEN
        and (name in WELL_KNOWN_SECRET_VARS or value.strip().lower() not in _NOT_SECRETS)
    }
    return sorted(found, key=lambda v: (-len(v), v))


def _secret_pairs(text: str) -> Iterator[tuple[str, int, int, str, str]]:
    """(key, start, end, opening, closing) of the value of each pair in ``text`` whose key looks secret."""
    pos = 0
    while (m := _KEY.search(text, pos)) is not None:
        pos = m.end()
        key = m["key"]
        if not is_secret_key(key) or (v := _VALUE.match(text, pos)) is None:
            continue
        if m["sep"] == ":" and ("." in key or "-" in key) and _PORT.match(text, pos):
            continue  # host:port (token-service:9092), not a setting
        if m["sep"].strip() == ":" and (
            key.upper().startswith("ATOMIC_PUBLISH_") or key.endswith(("Error", "Exception"))
        ):
            # "environment variable NAME: what is wrong" (a variable's value is never shown), and
            # "NoCredentialsError: Unable to locate credentials" (an exception's name, then its text)
            continue
        start, end = v.start(), v.end()
        opening = v["q"] or v["q2"] or v["q3"] or v["scheme"] or ""
        closing = v["end1"] or v["end2"] or v["end3"] or ""
        if not opening and m.start() > 0 and text[m.start() - 1] in "?&":
            end = start + len(re.split(r"[&#]", text[start:end], maxsplit=1)[0])  # a URI query parameter
        yield key, start, end, opening, closing
        pos = max(pos, end)


def _variants(secret: str) -> set[str]:
    encoded = (quote(secret, safe="", errors="surrogatepass"), quote_plus(secret, errors="surrogatepass"))
    return {secret, *encoded, repr(secret)[1:-1], json.dumps(secret)[1:-1]}


def redact(text: str, *extra_secrets: str, environment: bool = True) -> str:
    """``text`` with every secret it can find replaced by ``***``: the ``extra_secrets`` (and, unless
    ``environment=False``, the values of ``environment_secrets()``) wherever they occur, URL and
    broker userinfo passwords, and the values of secret-looking ``key=value`` pairs."""
    secrets = [s for s in extra_secrets if s]
    if environment:
        secrets += environment_secrets()
    for secret in sorted({v for s in secrets for v in _variants(s) if v}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(rf"\g<head>{MASK}", text)
    text = _BARE_USERINFO.sub(rf"\g<head>{MASK}", text)
    out, pos = [], 0
    for _key, start, end, opening, closing in _secret_pairs(text):
        out += [text[pos:start], opening, MASK, closing]
        pos = end
    return "".join(out) + text[pos:]


def secret_in_value(field: str, value: str) -> str | None:
    """Why ``value`` (of ``field``) carries a secret, without quoting it; None if it seems not to."""
    if _URL_USERINFO.search(value):
        return f"{field} holds a URL with a password in it (scheme://user:PASSWORD@host)"
    if any(_BARE_ENTRY.fullmatch(entry) for entry in re.split(r"[\s,;]+", value)):
        return f"{field} holds credentials in a host entry (user:PASSWORD@host)"
    for key, start, end, opening, closing in _secret_pairs(value):
        if end - start > len(opening) + len(closing):
            return f"{field} holds a secret setting {key!r} (e.g. password=... in a conninfo or URI query)"
    return None


def settings_as_text(settings: Any) -> Any:
    """A client's settings (Kafka's ``properties``, an Iceberg ``catalog``) as the text its library
    takes: a TOML number or boolean as its text (``"linger.ms" = 5`` -> ``"5"``, ``true`` ->
    ``"true"``; found from outside: refused with pydantic's internal type names). A table or a list
    is refused by name: no client setting is one."""
    if not isinstance(settings, Mapping):
        return settings
    out = {}
    for key, value in settings.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        elif isinstance(value, Mapping | list | tuple):
            raise ValueError(f"{key!r} is a {'table' if isinstance(value, Mapping) else 'list'}: give it as a string")
        out[key] = value
    return out


def hide_secret_values(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A client's settings with the value of every secret-named key held as a pydantic ``SecretStr``
    (printed as ``**********``); ``reveal`` gives the plain values back for the client library."""
    from pydantic import SecretStr

    return {
        k: SecretStr(str(v)) if is_secret_key(str(k)) and not isinstance(v, SecretStr) else v
        for k, v in settings.items()
    }


def reveal(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The plain values of ``hide_secret_values``'s result, for the client library that needs them."""
    from pydantic import SecretStr

    return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in settings.items()}
