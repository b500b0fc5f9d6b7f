"""atomic_publish.publishers._secrets: a planted secret never survives redact(), and ordinary text is left alone."""

from __future__ import annotations

import json
import os
import string
from unittest import mock
from urllib.parse import quote

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from atomic_publish.publishers._secrets import MASK, environment_secrets, is_secret_key, redact, secret_in_value

# 300 generated values per property; no example database written into the checkout.
HOSTILE = settings(max_examples=300, deadline=None, database=None)

PLACE = "\x00SECRET\x00"  # where a template takes the secret

# Secrets of characters a URL, a libpq value or a JSON string can hold; '*' is left out so the mask
# itself can never read as the secret.
_PRINTABLE = "".join(ch for ch in string.printable if ch not in string.whitespace and ch != "*")
token = st.text(alphabet=_PRINTABLE + "éß€", min_size=6, max_size=40)
url_password = st.text(alphabet="".join(c for c in _PRINTABLE if c not in "'\"<>") + "é", min_size=6, max_size=40)
any_line = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r*\x00"), min_size=6, max_size=40
)


def libpq_quote(secret: str) -> str:
    return "'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check(template: str, secret: str, shown: str | None = None) -> None:
    """Plant ``shown`` (the secret as it appears, default the secret) and check redact() hides it."""
    shown = secret if shown is None else shown
    assume(secret not in template.replace(PLACE, MASK) and shown not in template.replace(PLACE, MASK))
    text = template.replace(PLACE, shown)
    out = redact(text, environment=False)
    assert secret not in out and shown not in out, (text, out)
    assert MASK in out
    assert out.startswith(template.split(PLACE)[0][:8])  # the text before the secret is kept


URL_TEMPLATES = [
    f"could not connect to postgresql://publisher:{PLACE}@db.internal:5432/app: timeout",
    f"catalog uri postgresql+psycopg://u:{PLACE}@db/iceberg refused",
    f"GET http://user:{PLACE}@host/x failed",
    f"('SASL_SSL://alice:{PLACE}@kafka-1:9092', 'x')",
    f'{{"uri": "s3://ak:{PLACE}@bucket/key"}}',
]


@pytest.mark.parametrize("template", URL_TEMPLATES)
@HOSTILE
@given(secret=url_password)
def test_url_userinfo_password_is_hidden(template: str, secret: str) -> None:
    check(template, secret)


@HOSTILE
@given(secret=url_password)
@example(secret="//0000")  # found by hypothesis in a full run: it read as a URL whose user is 0000
@example(secret="//000:")
@example(secret="//0/:0")  # found in a CI run: "bob://0/:0@..." read as a URL whose user is "0/", which no URL has
def test_broker_userinfo_password_is_hidden(secret: str) -> None:
    assume("," not in secret)  # Kafka splits bootstrap.servers at ',': no such password can be written there
    check(f"bootstrap kafka-0:9092,bob:{PLACE}@kafka-1:9092 unreachable", secret)


@pytest.mark.parametrize("key", ["password", "sslpassword", "PASSWORD"])
@HOSTILE
@given(secret=token.filter(lambda s: s[0] not in "'\"\\"))
def test_conninfo_unquoted_password_is_hidden(key: str, secret: str) -> None:
    check(f"conninfo host=db port=5432 {key}={PLACE} user=publisher dbname=app", secret)
    check(f"conninfo host=db {key} = {PLACE}", secret)


@pytest.mark.parametrize("key", ["password", "sslpassword"])
@HOSTILE
@given(secret=any_line)
def test_conninfo_quoted_password_is_hidden(key: str, secret: str) -> None:
    check(f"conninfo host=db {key}={PLACE} user=publisher", secret, libpq_quote(secret))


@HOSTILE
@given(secret=any_line)
def test_uri_query_password_is_hidden(secret: str) -> None:
    check(f"postgresql://db/app?sslmode=require&password={PLACE}&application_name=x", secret, quote(secret, safe=""))


@pytest.mark.parametrize(
    "key", ["password", "secret_access_key", "s3.secret-access-key", "s3.session-token", "sasl.password", "apiKey"]
)
@HOSTILE
@given(secret=any_line)
def test_json_and_repr_values_are_hidden(key: str, secret: str) -> None:
    as_json = json.dumps({"user": "x", key: "@@"}).replace('"@@"', '"' + PLACE + '"')
    check(as_json, secret, json.dumps(secret)[1:-1])
    as_repr = repr({"user": "x", key: "@@"}).replace("'@@'", PLACE)
    check(as_repr, secret, repr(secret))
    check(f"{key}: {PLACE}", "".join(secret.split()))  # YAML-ish, unquoted: one word


@HOSTILE
@given(secret=token, var=st.sampled_from(["PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MY_API_KEY"]))
def test_environment_secret_inside_a_longer_message_is_hidden(secret: str, var: str) -> None:
    message = f"error: the server said {secret!s} was wrong; retrying in 2s"
    assume(secret not in "error: the server said  was wrong; retrying in 2s")
    with mock.patch.dict(os.environ, {var: secret}, clear=True):
        out = redact(message)
    assert secret not in out and "retrying in 2s" in out


@HOSTILE
@given(secret=any_line)
def test_extra_secret_is_hidden_raw_and_escaped(secret: str) -> None:
    variants = (secret, quote(secret, safe=""), repr(secret)[1:-1], json.dumps(secret)[1:-1])
    assume(not any(v in f"failed: <{MASK}> (attempt 3)" for v in variants))
    for shown in variants:
        message = f"failed: <{shown}> (attempt 3)"
        out = redact(message, secret, environment=False)
        assert shown not in out and "(attempt 3)" in out


WORDS = ["the", "run", "published", "rows", "bucket", "refunds_settled", "2026-05-16", "file", "host", "port"]
ordinary = st.lists(
    st.one_of(st.sampled_from(WORDS), st.from_regex(r"[A-Za-z0-9_]{1,10}", fullmatch=True)), min_size=1, max_size=20
)


@HOSTILE
@given(words=ordinary, punct=st.lists(st.sampled_from([" ", ", ", ". ", ": ", " (", ") ", " - "]), min_size=20))
def test_ordinary_text_is_unchanged(words: list[str], punct: list[str]) -> None:
    text = "".join(w + p for w, p in zip(words, punct, strict=False)).strip()
    assume(not any(is_secret_key(w) for w in words))
    with mock.patch.dict(os.environ, {}, clear=True):
        assert redact(text) == text


ORDINARY = [
    "The run refunds_settled/2026-05-16 was published: 35,086 rows, 1.2 MiB, in 2.1 s.",
    'FATAL:  password authentication failed for user "publisher"',
    'connection to server at "db.internal" (10.0.0.5), port 5432 failed: timeout expired',
    "see https://example.com:8443/path?x=1&y=2 at 12:30, mail bob@example.com or postgresql://publisher@db/app",
    "bootstrap kafka-1:9092,token-service:9092 unreachable; key_columns = ['refund_id']",
    "ssl.key.location=/etc/kafka/client.key sasl.username=publisher",
    # the configuration's own errors name a variable, never its value (found from outside: masked)
    "environment variable ATOMIC_PUBLISH_SINKS__PG__PASSWORD: sinks.pg.password looks like a secret",
    "reading the run's lease failed: NoCredentialsError: Unable to locate credentials",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_known_ordinary_text_is_unchanged(text: str) -> None:
    assert redact(text, environment=False) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+psycopg://u:p4ss@h/db", "postgresql+psycopg://u:***@h/db"),
        ("host=db password=hunter22 user=x", "host=db password=*** user=x"),
        ("host=db password='a b\\' c' user=x", "host=db password='***' user=x"),
        ("host=db sslpassword = 'abc' user=x", "host=db sslpassword = '***' user=x"),
        ('{"password": "pa\\"ss", "user": "x"}', '{"password": "***", "user": "x"}'),
        ("{'aws_secret_access_key': 'k'}", "{'aws_secret_access_key': '***'}"),
        ("pg://h/db?sslmode=require&password=qw&x=1", "pg://h/db?sslmode=require&password=***&x=1"),
        ("brokers bob:pw4@kafka-1:9092", "brokers bob:***@kafka-1:9092"),
        ("Authorization: Bearer eyJ.abc", "Authorization: Bearer ***"),
        ('sasl.jaas.config=x.PlainLoginModule required username="u" password="pw";', None),
        ("p=p@ss@host", "p=p@ss@host"),
        ("mysql://u:p@ss@host/db", "mysql://u:***@host/db"),
        (
            "ATOMIC_PUBLISH_SINKS__K__PROPERTIES__SASL_PASSWORD=hunter2 x",
            "ATOMIC_PUBLISH_SINKS__K__PROPERTIES__SASL_PASSWORD=*** x",
        ),
    ],
)
def test_known_redactions(text: str, expected: str | None) -> None:
    out = redact(text, environment=False)
    if expected is None:
        assert "pw" not in out.replace("password", "")
    else:
        assert out == expected


@pytest.mark.parametrize(
    "name",
    [
        "password", "PGPASSWORD", "passwd", "ssl.key.password", "ssl.keystore.password", "sslpassword",
        "AWS_SECRET_ACCESS_KEY", "aws_access_key_id", "AccessKeyId", "s3.access-key-id", "s3.secret-access-key",
        "s3.session-token", "token", "GITHUB_TOKEN", "credential", "client.credentials", "api_key", "x-api-key",
        "apiKey", "private_key", "privateKey", "gcs.private-key-id", "signing_key", "request.signing.key",
        "ssl.key.pem", "sasl.password", "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret",
        "sasl.jaas.config", "header.Authorization", "passphrase", "oauth_client_secret", "scram_client_key",
        "scram_server_key", "adls.account-key", "AZURE_STORAGE_ACCOUNT_KEY", "accountKey",
    ],
)  # fmt: skip
def test_secret_keys(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name",
    [
        "ssl.key.location", "sslkey", "sslcert", "ssl.certificate.pem", "sasl.username", "sasl.mechanism",
        "key_columns", "user", "host", "bootstrap_servers", "s3.endpoint", "warehouse", "capital_key", "PWD",
        "PGPASSFILE", "ledger_topic", "keyword", "partition_column", "sasl.oauthbearer.client.id",
        "sslkeylogfile", "oauth_client_id", "adls.account-name", "s3.sse-kms-key-id",
    ],
)  # fmt: skip
def test_not_secret_keys(name: str) -> None:
    assert not is_secret_key(name)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uri", "postgresql+psycopg://u:p@h/db"),
        ("endpoint_url", "http://user:key@host"),
        ("uri", "postgresql://u:p%40ss@h:5432/db?sslmode=require"),
        ("conninfo", "host=db password=x user=u"),
        ("conninfo", "host=db sslpassword='a b'"),
        ("conninfo", "postgresql://h/db?password=x"),
        ("conninfo", "postgresql://h/db?sslmode=require&sslpassword=x"),
        ("bootstrap_servers", "u:p@kafka-1:9092"),
        ("bootstrap_servers", "kafka-0:9092,u:p@kafka-1:9092"),
        ("bootstrap_servers", "SASL_SSL://u:p@kafka-1:9092"),
        ("catalog.uri", "https://catalog/api?token=abc"),
    ],
)
def test_secret_in_value(field: str, value: str) -> None:
    reason = secret_in_value(field, value)
    assert reason and reason.startswith(field) and "\n" not in reason
    for part in ("p%40ss", "key@", "'a b'"):
        assert part not in reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uri", "postgresql+psycopg://publisher@db.internal/iceberg"),
        ("uri", "sqlite:///data/iceberg/catalog.db"),
        ("conninfo", "host=db.internal dbname=analytics user=publisher"),
        ("conninfo", "host=db password="),
        ("conninfo", ""),
        ("bootstrap_servers", "kafka-1:9092,kafka-2:9092"),
        ("bootstrap_servers", "token-service:9092"),
        ("endpoint_url", "https://minio.internal:9000"),
        ("warehouse", "s3://lake/warehouse"),
        ("sasl.kerberos.principal", "kafka/host@REALM"),
    ],
)
def test_no_secret_in_value(field: str, value: str) -> None:
    assert secret_in_value(field, value) is None


def test_environment_secrets() -> None:
    env = {
        "PGPASSWORD": "abcd",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
        "AWS_SESSION_TOKEN": "tok",  # under 4 characters: skipped
        "MY_SERVICE_TOKEN": "t0k3n-value",
        "TOKENIZERS_PARALLELISM": "true",  # a setting, not a secret
        "HOME": "/home/user",
        "PWD": "/work/main",
        "PGPASSFILE": "/home/user/.pgpass",
    }
    assert environment_secrets(env) == ["wJalrXUtnFEMI", "t0k3n-value", "abcd"]  # longest first


def test_redact_uses_the_environment_by_default() -> None:
    with mock.patch.dict(os.environ, {"PGPASSWORD": "s3cr3t-pw"}, clear=True):
        assert redact("auth failed for s3cr3t-pw") == "auth failed for ***"
        assert redact("auth failed for s3cr3t-pw", environment=False) == "auth failed for s3cr3t-pw"


def test_redact_survives_undecodable_secrets() -> None:
    # os.environ carries undecodable bytes as lone surrogates; redact() must not fail on them.
    assert redact("failed for \ud800abcd", "\ud800abcd", environment=False) == "failed for ***"
