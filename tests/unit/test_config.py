import re

import pytest

from atomic_publish import ConfigError, load_config


def test_no_config_file_gives_the_embedded_file_sink(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATOMIC_PUBLISH_CONFIG", raising=False)
    definition, options = load_config().sink()
    assert definition.name == "file"
    assert options.format == "csv"


def test_sinks_are_swapped_by_config(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[defaults]\nsink = "lake"\n\n'
        f'[sinks.lake]\ntype = "file"\nroot = "{tmp_path}/lake"\nformat = "parquet"\n\n'
        f'[sinks.reports]\ntype = "file"\nroot = "{tmp_path}/reports"\n'
    )
    config = load_config(cfg)
    _, lake = config.sink()
    _, reports = config.sink("reports")
    assert (lake.format, lake.root.name) == ("parquet", "lake")
    assert (reports.format, reports.root.name) == ("csv", "reports")


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.local]\ntype = "file"\nroot = "{tmp_path}/a"\nformat = "csv"\n')
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__LOCAL__FORMAT", "parquet")
    monkeypatch.setenv("ATOMIC_PUBLISH_DEFAULTS__SINK", "local")
    _, options = load_config(cfg).sink()
    assert options.format == "parquet"
    assert options.root.name == "a"


def test_malformed_toml_names_file_and_line(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.local]\ntype = "file"\nroot = "unterminated\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert str(cfg) in str(info.value) and "line 3" in str(info.value)


def test_bad_value_names_file_line_field_and_value(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.local]\ntype = "file"\nroot = "{tmp_path}"\n\nformat = "xlsx"\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg).sink("local")
    message = str(info.value)
    assert f"{cfg}:5" in message
    assert "sinks.local.format" in message and "'xlsx'" in message


def test_unknown_option_is_refused(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.local]\ntype = "file"\nroot = "{tmp_path}"\ncompresion = "zstd"\n')
    with pytest.raises(ConfigError, match="compresion") as info:
        load_config(cfg).sink("local")
    # Found from outside: "Extra inputs are not permitted", with no hint.
    assert "compresion = 'zstd': not an option of this sink (did you mean 'parquet_compression'?)" in str(info.value)


def test_secrets_in_the_file_are_refused_and_never_echoed(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.pg]\ntype = "postgres"\npassword = "hunter2-very-secret"\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    message = str(info.value)
    # A sink's own key takes no secret from anywhere: the advice is the client's mechanism, not a
    # variable the sink would then refuse ("Extra inputs are not permitted", found from outside).
    assert f"{cfg}:3" in message and "PGPASSWORD" in message and "ATOMIC_PUBLISH_" not in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[sinks.pg]   # the warehouse\ntype = "postgres"\npassword = "hunter2-x"\n', 3),
        ('[sinks]\npg.type = "postgres"\npg.password = "hunter2-x"\n', 3),
        ('[ sinks . pg ]\ntype = "postgres"\n"password" = "hunter2-x"\n', 3),
        ('[sinks.ice]\ntype = "iceberg"\n\ncatalog = { type = "sql", password = "hunter2-x" }\n', 4),
    ],
    ids=["a-comment-after-the-header", "dotted-keys", "spaces-and-quotes", "an-inline-table"],
)
def test_a_secret_in_the_file_is_refused_with_its_line_however_the_toml_spells_it(tmp_path, text, line):
    """Found from outside: a table header followed by a comment (as in the publish.toml that
    `scripts/services up` writes) gave `publish.toml:?`."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert str(info.value).startswith(f"{cfg}:{line}: sinks."), str(info.value)
    assert "looks like a secret" in str(info.value) and "hunter2" not in str(info.value)


@pytest.mark.parametrize("variable", ["ATOMIC_PUBLISH_SINKS__PG__PASSWORD", "ATOMIC_PUBLISH_DEFAULTS__API_TOKEN"])
def test_a_secret_for_an_option_that_takes_none_from_the_environment_says_where_it_goes(
    tmp_path, monkeypatch, variable
):
    """Found from outside: refused as "*** Extra inputs are not permitted" (the redaction hid the
    field's name too), with no word of PGPASSWORD."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.pg]\ntype = "postgres"\nconninfo = "host=127.0.0.1"\nkey_columns = ["id"]\n')
    monkeypatch.setenv(variable, "hunter2-x")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    message = str(info.value)
    field = variable.removeprefix("ATOMIC_PUBLISH_").lower().replace("__", ".")
    assert message.startswith(f"environment variable {variable}: {field} looks like a secret"), message
    assert "PGPASSWORD" in message and "Extra inputs" not in message
    from tests.helpers import cli_env, run_cli

    shown = run_cli("sinks", env=cli_env(cfg, **{variable: "hunter2-x"}))  # as the CLI prints it, redacted
    assert shown.code == 2 and shown.stderr.strip() == f"error: {message}", shown.stderr


def test_a_secret_in_a_table_of_client_properties_is_refused_naming_the_variable_that_takes_it(tmp_path, monkeypatch):
    cfg = tmp_path / "publish.toml"
    catalog = (
        f'[sinks.k]\ntype = "iceberg"\n[sinks.k.catalog]\ntype = "sql"\n'
        f'uri = "sqlite:///{tmp_path}/c.db"\nwarehouse = "{tmp_path}"\n'
    )
    cfg.write_text(catalog + 'token = "hunter2-x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert "Set ATOMIC_PUBLISH_SINKS__K__CATALOG__TOKEN in the environment" in str(info.value)
    assert "hunter2" not in str(info.value)
    cfg.write_text(catalog)
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__K__CATALOG__TOKEN", "hunter2-x")  # the advice, followed
    _, options = load_config(cfg).sink("k")
    assert "token" in options.catalog


def test_unknown_sink_name_lists_the_configured_ones(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.local]\ntype = "file"\nroot = "{tmp_path}"\n')
    with pytest.raises(ConfigError, match="configured sinks: local"):
        load_config(cfg).sink("warehouse")


def test_unknown_sink_type_is_refused_when_the_file_is_loaded(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[defaults]\nsink = "f"\n[sinks.f]\ntype = "file"\n\n[sinks.x]\ntype = "carrier-pigeon"\n')
    # Refused on load although the command would only use sink "f": the whole file is checked.
    with pytest.raises(ConfigError, match=r"publish.toml:7: sinks.x.type = 'carrier-pigeon': unknown sink type"):
        load_config(cfg)


def test_every_configured_sink_is_validated_on_load_with_its_line(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.used]\ntype = "file"\n\n[sinks.unused]\ntype = "file"\nformat = "xlsx"\n')
    with pytest.raises(ConfigError, match=r"publish.toml:6: sinks.unused.format = 'xlsx'"):
        load_config(cfg)
    from tests.helpers import run_cli

    assert run_cli("sinks", config=cfg).code == 2


@pytest.mark.parametrize("root", ["/", "~"])
def test_root_that_is_not_a_dedicated_directory_is_refused(tmp_path, root):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.local]\ntype = "file"\nroot = "{root}"\n')
    with pytest.raises(ConfigError, match="not a dedicated directory"):
        load_config(cfg).sink("local")


def test_a_password_inside_a_connection_string_is_refused_and_never_echoed(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[sinks.pg]\ntype = "postgres"\nconninfo = "host=db user=app password=s3cr3t-pw"\nkey_columns = ["id"]\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg).sink("pg")
    message = str(info.value)
    assert f"{cfg}:3" in message and "PGPASSWORD" in message
    assert "s3cr3t-pw" not in message


def _libpq_secret_keywords() -> list[str]:
    """The conninfo keywords the linked libpq itself treats as secrets: those it hides as passwords
    (dispchar "*": password, sslpassword, oauth_client_secret) and its SCRAM keys (libpq 18's
    scram_client_key and scram_server_key, which authenticate in the password's place)."""
    from psycopg import pq

    return sorted(
        o.keyword.decode()
        for o in pq.Conninfo.get_defaults()
        if o.dispchar == b"*" or o.keyword.decode().startswith("scram_")
    )


def test_the_linked_libpq_has_secret_keywords_beyond_password():
    """The test below is only as good as this list: libpq has had sslpassword since 13."""
    assert {"password", "sslpassword"} <= set(_libpq_secret_keywords())


@pytest.mark.parametrize("keyword", _libpq_secret_keywords())
@pytest.mark.parametrize("uri", [False, True])
def test_every_secret_keyword_of_the_linked_libpq_is_refused_in_a_conninfo_and_never_echoed(tmp_path, keyword, uri):
    """Found in review: libpq 18's scram_client_key / scram_server_key were taken (and would have
    been printed) because their names did not look secret."""
    conninfo = f"postgresql://db/app?{keyword}=c2VjcmV0LXZhbHVl" if uri else f"host=db {keyword}=c2VjcmV0LXZhbHVl"
    for used in (True, False):  # the sink the command uses, and one it does not (checked without psycopg)
        cfg = tmp_path / "publish.toml"
        other = '[sinks.f]\ntype = "file"\nroot = "' + str(tmp_path / "f") + '"\n'
        cfg.write_text(other + f'[sinks.pg]\ntype = "postgres"\nconninfo = "{conninfo}"\nkey_columns = ["id"]\n')
        with pytest.raises(ConfigError) as info:
            load_config(cfg).sink("pg" if used else "f")
        message = str(info.value)
        assert f"{cfg}:6" in message and keyword in message
        assert "c2VjcmV0LXZhbHVl" not in message


def test_the_help_example_moves_the_default_sink(tmp_path, monkeypatch):
    """`--help` suggests ATOMIC_PUBLISH_SINKS__FILE__ROOT: with no config file it must work as shown."""
    from atomic_publish.cli import CONFIG_LOOKUP

    assert "ATOMIC_PUBLISH_SINKS__FILE__ROOT" in CONFIG_LOOKUP
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATOMIC_PUBLISH_CONFIG", raising=False)
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__FILE__ROOT", str(tmp_path / "elsewhere"))
    definition, options = load_config().sink()
    assert (definition.name, options.root) == ("file", tmp_path / "elsewhere")


def test_a_sink_defined_in_the_environment_is_located_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATOMIC_PUBLISH_CONFIG", raising=False)
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__LOCAL__ROOT", str(tmp_path / "x"))
    with pytest.raises(ConfigError) as info:
        load_config().check_every_sink()
    assert str(info.value) == (
        "environment variable ATOMIC_PUBLISH_SINKS__LOCAL__ROOT: sinks.local.type = 'local': unknown sink type; "
        "known types: file, iceberg, kafka, postgres, s3"
    )


def test_a_kafka_password_comes_from_the_environment_and_is_never_printed(tmp_path, monkeypatch):
    """The documented way to give librdkafka a SASL password: an environment variable whose name has
    a dot. The sink gets it; the options' repr (logs, a debugger, an error) shows ***."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[sinks.k]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\n'
        '[sinks.k.properties]\n"sasl.mechanism" = "PLAIN"\n"sasl.username" = "alice"\n'
    )
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__K__PROPERTIES__SASL.PASSWORD", "pw-kafka-777")
    _, options = load_config(cfg).sink("k")
    assert options.client_properties()["sasl.password"] == "pw-kafka-777"
    assert str(options.properties["sasl.password"]) == "**********"  # a pydantic SecretStr
    assert "pw-kafka-777" not in repr(options) and "pw-kafka-777" not in str(options)
    assert "'sasl.password': '***'" in repr(options)


def test_a_catalog_secret_from_the_environment_is_a_secretstr_until_pyiceberg_gets_it(tmp_path, monkeypatch):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[sinks.lake]\ntype = "iceberg"\n[sinks.lake.catalog]\ntype = "sql"\n'
        f'uri = "sqlite:///{tmp_path}/c.db"\nwarehouse = "{tmp_path}/wh"\n'
    )
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__LAKE__CATALOG__S3.SECRET-ACCESS-KEY", "pw-s3-888")
    _, options = load_config(cfg).sink("lake")
    assert str(options.catalog["s3.secret-access-key"]) == "**********"
    assert "pw-s3-888" not in repr(options) and "pw-s3-888" not in options.model_dump_json()
    assert options.merged_catalog()["s3.secret-access-key"] == "pw-s3-888"  # what load_catalog is given


def test_client_settings_written_as_toml_numbers_and_booleans_are_taken_as_their_text(tmp_path):
    """Found from outside: ``"linger.ms" = 5`` under a Kafka sink's properties was refused with two
    lines per key of pydantic's internal union names. A number or a boolean is the text librdkafka
    and pyiceberg take; a table or a list is refused in one line naming the key."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[sinks.k]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\n'
        '[sinks.k.properties]\n"linger.ms" = 5\n"socket.keepalive.enable" = true\n"x.ratio" = 0.5\n'
        '[sinks.lake]\ntype = "iceberg"\n[sinks.lake.catalog]\ntype = "sql"\n'
        f'uri = "sqlite:///{tmp_path}/c.db"\nwarehouse = "{tmp_path}/wh"\npool_size = 3\n'
    )
    loaded = load_config(cfg)
    props = loaded.sink("k")[1].client_properties()
    assert (props["linger.ms"], props["socket.keepalive.enable"], props["x.ratio"]) == ("5", "true", "0.5")
    assert loaded.sink("lake")[1].catalog["pool_size"] == "3"
    cfg.write_text('[sinks.k]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\nproperties = { "a.b" = [1] }\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "\n" not in str(err.value) and "'a.b' is a list" in str(err.value), str(err.value)


def test_every_problem_of_the_file_is_reported_at_once(tmp_path):
    """A top-level error does not hide the sinks' errors (they were reported only once it was fixed)."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[defaults]\nsink = "f"\nbogus = 1\n\n[sinks.f]\ntype = "file"\nformat = "xlsx"\n\n'
        '[sinks.g]\ntype = "carrier-pigeon"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    lines = str(info.value).splitlines()
    assert any(line.startswith(f"{cfg}:3: defaults.bogus") for line in lines), lines
    assert any(line.startswith(f"{cfg}:7: sinks.f.format = 'xlsx'") for line in lines), lines
    assert any(line.startswith(f"{cfg}:10: sinks.g.type = 'carrier-pigeon'") for line in lines), lines


def test_environment_values_are_converted_by_their_fields_and_json_arrays_and_objects_are_decoded(
    tmp_path, monkeypatch
):
    """The rules of ``environment_overrides``: any case; a plain value is the string, converted by
    its field (an integer, a flag); a JSON array or object is decoded (a list of key columns, a whole
    sink); variables with the prefix that name no section are not configuration."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATOMIC_PUBLISH_CONFIG", raising=False)
    monkeypatch.setenv("ATOMIC_PUBLISH_PIPELINE__RETRIES", "5")
    monkeypatch.setenv("atomic_publish_defaults__sink", "pg")
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__PG__TYPE", "postgres")
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__PG__CONNINFO", "host=127.0.0.1 dbname=x")
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__PG__KEY_COLUMNS", ' ["refund_id", "line"]')
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__LAKE", f'{{"type": "file", "root": "{tmp_path / "lake"}"}}')
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__LAKE__FORMAT", "parquet")
    monkeypatch.setenv("ATOMIC_PUBLISH_TEST_ANYTHING", "[not json")  # a harness's own variable
    config = load_config()
    assert config.settings.pipeline.retries == 5
    assert config.settings.defaults.sink == "pg"  # a variable in any case
    _, pg = config.sink()
    assert list(pg.key_columns) == ["refund_id", "line"]
    _, lake = config.sink("lake")
    assert (lake.root, lake.format) == (tmp_path / "lake", "parquet")


def test_a_secret_from_the_environment_is_never_decoded(tmp_path, monkeypatch):
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.k]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\n')
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__K__PROPERTIES__SASL.PASSWORD", '["pw-kafka-1"]')
    _, options = load_config(cfg).sink("k")
    assert options.client_properties()["sasl.password"] == '["pw-kafka-1"]'


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"ATOMIC_PUBLISH_GROUPS__G__SINKS": "[pw-777"},
            "environment variable ATOMIC_PUBLISH_GROUPS__G__SINKS: starts like JSON but is not JSON "
            "(Expecting value, column 2)",
        ),
        (
            {"ATOMIC_PUBLISH_SINKS__F____ROOT": "/x"},
            "environment variable ATOMIC_PUBLISH_SINKS__F____ROOT: an empty key (two '__' in a row, or one at the end)",
        ),
        (
            {"ATOMIC_PUBLISH_SINKS__F__ROOT": "/x", "atomic_publish_sinks__f__root": "/y"},
            "environment variables ATOMIC_PUBLISH_SINKS__F__ROOT and atomic_publish_sinks__f__root "
            "both set sinks.f.root",
        ),
        (
            {"ATOMIC_PUBLISH_SINKS__F": "pw-777", "ATOMIC_PUBLISH_SINKS__F__ROOT": "/x"},
            "environment variables ATOMIC_PUBLISH_SINKS__F and ATOMIC_PUBLISH_SINKS__F__ROOT: the first sets "
            "sinks.f to a value, the second a key inside it",
        ),
        (  # a key inside a value of a JSON table (it was "unexpected KeyError", exit 1)
            {"ATOMIC_PUBLISH_SINKS__F": '{"type": "file", "root": "/pw-777"}', "ATOMIC_PUBLISH_SINKS__F__ROOT__X": "1"},
            "environment variables ATOMIC_PUBLISH_SINKS__F and ATOMIC_PUBLISH_SINKS__F__ROOT__X: the first sets "
            "sinks.f.root to a value, the second a key inside it",
        ),
    ],
)
def test_a_bad_environment_override_is_one_line_naming_the_variable_and_exit_2(tmp_path, variables, expected):
    """It was an 'unexpected SettingsError' (exit 1) for a group's sinks that were not JSON; the value
    (it may be a secret) is never shown, and nothing is written."""
    from tests.helpers import cli_env, run_cli

    out = tmp_path / "out"
    args = ("publish", "--dataset", "refunds", "--run-date", "2026-04-24", str(tmp_path / "missing.csv"))
    result = run_cli(*args, env=cli_env(ATOMIC_PUBLISH_SINKS__FILE__ROOT=str(out), **variables), cwd=tmp_path)
    assert (result.code, result.stderr.strip()) == (2, f"error: {expected}")
    assert "pw-777" not in result.stdout + result.stderr
    assert not out.exists()


def test_a_group_s_sinks_given_as_a_plain_word_are_refused_as_not_a_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATOMIC_PUBLISH_CONFIG", raising=False)
    monkeypatch.setenv("ATOMIC_PUBLISH_GROUPS__G__SINKS", "abc")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(info.value) == (
        "environment variable ATOMIC_PUBLISH_GROUPS__G__SINKS: groups.g.sinks = 'abc': Input should be a valid list"
        ' (a list is written ["a", "b"], a JSON array in an environment variable)'
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ATOMIC_PUBLISH_SINKS__PG__KEY_COLUMNS__X", "1"),
        ("ATOMIC_PUBLISH_SINKS", '{"x": 1}'),
        ("atomic_publish_sinks__pg__timeout_seconds", "abc"),
    ],
    ids=["a-key-inside-the-field", "a-json-table", "any-case"],
)
def test_an_error_in_a_value_an_environment_variable_set_names_the_variable_not_the_file(
    tmp_path, monkeypatch, variable, value
):
    """Found from outside: these were blamed on the file's line of the field (or on the file)."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.pg]\ntype = "postgres"\nconninfo = "host=127.0.0.1"\nkey_columns = ["id"]\n')
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert str(info.value).startswith(f"environment variable {variable}: sinks."), str(info.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('endpoint_url = "notaurl"', "endpoint_url must be an http:// or https:// URL"),
        ('endpoint_url = "ftp://example.com/x"', "endpoint_url must be an http:// or https:// URL"),
        ('endpoint_url = "http://127.0.0.1:99999"', "has no valid port (1-65535)"),
        ('endpoint_url = "http://127.0.0.1:abc"', "has no valid port (1-65535)"),
        ('region = "../../x"', "region must be a region name"),
        ("timeout_seconds = inf", "finite number"),
        ("commit_timeout_seconds = nan", "finite number"),
    ],
)
def test_an_s3_option_that_can_never_work_is_refused_on_load(tmp_path, line, message):
    """Found from outside: taken, then every command exited 5 (the server 'unreachable'), or every
    wait was unbounded (inf); the configuration is what needs fixing: exit 2, its line named."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.b]\ntype = "s3"\nbucket = "a-bucket"\nprefix = "p"\n{line}\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert f"{cfg}:5: sinks.b." in str(info.value) and message in str(info.value), str(info.value)


def test_a_default_sink_that_does_not_exist_and_a_group_naming_a_sink_twice_are_refused_on_load(tmp_path):
    """Found from outside: `atomic-publish sinks` exited 0 for both; every command without --sink
    then failed, and the group's publish refused the duplicate only when it ran."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[defaults]\nsink = "warehouse"\n[sinks.local]\ntype = "file"\nroot = "{tmp_path}"\n'
        f'[groups.g]\nsinks = ["local", "local"]\njournal = "{tmp_path}"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    lines = str(info.value).splitlines()
    assert f"{cfg}:2: defaults.sink = 'warehouse': no sink of that name; configured sinks: local" in lines, lines
    assert f"{cfg}:7: groups.g.sinks names ['local'] twice" in lines, lines


@pytest.mark.parametrize(
    ("conninfo", "message"),
    [
        ("host=127.0.0.1 port=abc", "conninfo port='abc' is not a valid port"),
        ("host=a,b port=5432,70000", "conninfo port='5432,70000' is not a valid port"),
        ("postgresql://127.0.0.1:0/db", "conninfo port='0' is not a valid port"),
    ],
)
def test_a_conninfo_value_libpq_would_refuse_is_refused_on_load(tmp_path, conninfo, message):
    """Found from outside: ``port=abc`` was taken, then libpq refused it at every connect and every
    command exited 5, as if the server were down: exit 2, its line named."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.pg]\ntype = "postgres"\nconninfo = "{conninfo}"\nkey_columns = ["id"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert f"{cfg}:3: sinks.pg.conninfo" in str(info.value) and message in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "conninfo",
    [
        "host=a,b port=5432,5433",
        "host=a,b port=5432,",
        "host=a connect_timeout=-1",
        "host=a connect_timeout=+5",
        "host=a connect_timeout=abc keepalives_idle=1.5",  # the sink sets these itself
    ],
)
def test_a_conninfo_libpq_takes_is_taken(tmp_path, conninfo):
    """Found from outside (a regression of the check above): an empty item of a port list (the
    default port) and a signed connect_timeout are values libpq accepts."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.pg]\ntype = "postgres"\nconninfo = "{conninfo}"\nkey_columns = ["id"]\n')
    assert load_config(cfg).sink("pg")[1].conninfo == conninfo


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("PGPORT", "abc", 'invalid integer value "abc" for connection option "port"'),
        ("PGSSLMODE", "bogus", 'invalid sslmode value: "bogus"'),
        ("PGPORT", "5432,", "could not match 2 port numbers to 1 hosts"),  # found from outside: exit 5
    ],
)
def test_a_pg_variable_libpq_refuses_is_a_configuration_error_not_an_unreachable_server(
    tmp_path, variable, value, says
):
    """PGPORT=abc or PGSSLMODE=bogus (the environment, not the file) is refused by libpq at connect:
    exit 2, not 5."""
    from tests.helpers import cli_env, run_cli

    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.pg]\ntype = "postgres"\nconninfo = "host=127.0.0.1 dbname=x"\nkey_columns = ["id"]\n')
    args = ("diagnose", "--config", str(cfg), "--sink", "pg", "--dataset", "d", "--run-date", "2026-01-01")
    result = run_cli(*args, env=cli_env(cfg, **{variable: value}))
    assert result.code == 2, result.stderr
    assert says in result.stderr, result.stderr


def test_a_kafka_max_record_bytes_above_the_producers_limit_is_refused_on_load(tmp_path):
    """Records between the two limits would pass our check and be refused by librdkafka (exit 5 before)."""
    cfg = tmp_path / "publish.toml"
    base = '[sinks.k]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9092"\nmax_record_bytes = 3000000\n'
    cfg.write_text(base)
    with pytest.raises(ConfigError, match=r"max_record_bytes = 3000000 is above the producer's message.max.bytes"):
        load_config(cfg)
    cfg.write_text(base + '[sinks.k.properties]\n"message.max.bytes" = 3000000\n')
    assert load_config(cfg).sink("k")[1].max_record_bytes == 3_000_000


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('bootstrap_servers = "127.0.0.1:99999"', "bootstrap_servers '127.0.0.1:99999' is not host:port"),
        ('bootstrap_servers = "a:9092,b:abc"', "bootstrap_servers 'b:abc' is not host:port"),
        ('bootstrap_servers = "a:9092"\n[sinks.k.properties]\n"message.max.bytes" = "1M"', "'1M' is not a number"),
    ],
)
def test_a_kafka_setting_that_can_never_work_is_refused_on_load(tmp_path, line, message):
    """Found from outside: taken, then every command exited 5 as if the broker were down (or a bare
    int() error named nothing)."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.k]\ntype = "kafka"\n{line}\n')
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(cfg)


@pytest.mark.parametrize(
    "servers",
    ["kafka-1", "kafka-1:9092,kafka-2", "[::1]:9092", "[::1]", "SSL://k:9093", "a:9092,", "a:9092,,b:9092", "a:9092 b"],
)
def test_bootstrap_servers_librdkafka_takes_are_taken(tmp_path, servers):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.k]\ntype = "kafka"\nbootstrap_servers = "{servers}"\n')
    assert load_config(cfg).sink("k")[1].bootstrap_servers == servers


def test_the_default_max_record_bytes_follows_a_lower_message_max_bytes(tmp_path):
    """Found from outside: setting only message.max.bytes lower made the default max_record_bytes fail."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[sinks.k]\ntype = "kafka"\nbootstrap_servers = "a:9092"\n[sinks.k.properties]\n"message.max.bytes" = 500000\n'
    )
    assert load_config(cfg).sink("k")[1].max_record_bytes == 500_000


def test_a_misspelt_iceberg_catalog_type_is_refused_on_load(tmp_path):
    """Found from outside: `type = "rset"` passed `sinks`, then diagnose said UNKNOWN (exit 14) and
    publish exit 5 (unreachable) with pyiceberg's ValueError."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[sinks.lake]\ntype = "iceberg"\nnamespace = "n"\nwork_location = "/tmp/w"\n'
        '[sinks.lake.catalog]\ntype = "rset"\nuri = "http://127.0.0.1:1"\n'
    )
    with pytest.raises(ConfigError, match=r"publish.toml:\d+: sinks.lake.catalog.*'rset' is not a catalog type"):
        load_config(cfg)
    from tests.helpers import run_cli

    assert run_cli("sinks", config=cfg).code == 2


def test_the_catalog_types_are_pyicebergs():
    from pyiceberg.catalog import CatalogType

    from atomic_publish.publishers.layouts.iceberg import CATALOG_TYPES

    assert sorted(CATALOG_TYPES) == sorted(t.value for t in CatalogType)


def test_a_variable_under_a_section_that_does_not_exist_is_named_once(tmp_path):
    """Found from outside: ATOMIC_PUBLISH_SINK__FILE__ROOT (not SINKS) was silently ignored, and the
    publish went where the file said."""
    from tests.helpers import cli_env, run_cli

    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.file]\ntype = "file"\nroot = "{tmp_path / "out"}"\n')
    env = cli_env(cfg, ATOMIC_PUBLISH_SINK__FILE__ROOT=str(tmp_path / "elsewhere"), ATOMIC_PUBLISH_NOT_NESTED="x")
    result = run_cli("diagnose", "--dataset", "d", "--run-date", "2026-04-24", env=env)
    warned = [line for line in result.stderr.splitlines() if "ATOMIC_PUBLISH_SINK__FILE__ROOT" in line]
    assert len(warned) == 1, result.stderr
    assert "did you mean ATOMIC_PUBLISH_SINKS__FILE__ROOT?" in warned[0]
    assert "ATOMIC_PUBLISH_NOT_NESTED" not in result.stderr  # not the nested form: not meant as configuration


def test_a_list_given_as_a_word_says_how_a_list_is_written(tmp_path, monkeypatch):
    """Found from outside: KEY_COLUMNS='refund_id' said only "Input should be a valid tuple"."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.pg]\ntype = "postgres"\nconninfo = "host=/tmp dbname=x"\n')
    monkeypatch.setenv("ATOMIC_PUBLISH_SINKS__PG__KEY_COLUMNS", "refund_id")
    with pytest.raises(ConfigError, match=r'a list is written \["a", "b"\], a JSON array in an environment variable'):
        load_config(cfg)
