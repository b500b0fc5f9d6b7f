"""The S3 sink against the harness's real S3 endpoint: what the contract suite does not cover."""

from __future__ import annotations

import hashlib
import json
import socket
import uuid

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from atomic_publish import (
    AlreadyPublished,
    CommitOutcomeUnknown,
    ConfigError,
    InputError,
    Run,
    load_config,
    open_inputs,
    publish,
)
from atomic_publish.diagnostics.s3 import S3Diagnostic
from atomic_publish.publishers._lease import pid_scope
from atomic_publish.publishers.s3 import S3Publisher, S3SinkConfig, run_lease
from atomic_publish.publishers.taxonomy import State
from tests.helpers import cli_env, race_for_the_lease, run_cli

pytestmark = pytest.mark.integration
DATE = "2026-04-24"


@pytest.fixture
def s3(s3_service, monkeypatch):
    # The service's own credentials when it has them (local servers, or keys given with the
    # endpoint); else the environment's chain (a profile, SSO) is left as it is.
    for name, value in s3_service.env().items():
        monkeypatch.setenv(name, value)
    prefix = f"unit/{uuid.uuid4().hex[:10]}"

    class Sink:
        service = s3_service
        client = s3_service.client()

        def config(self, **overrides):
            return S3SinkConfig(
                **{
                    "bucket": s3_service.bucket,
                    "prefix": prefix,
                    "endpoint_url": s3_service.endpoint,
                    "region": s3_service.region,
                    "addressing_style": "path",
                    "part_size_mb": 5,
                    **overrides,
                }
            )

        def make(self, **overrides):
            config = self.config(**overrides)
            return S3Publisher(config), S3Diagnostic(config)

        def object_keys(self):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=s3_service.bucket, Prefix=prefix)
            return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    Sink.prefix = prefix
    return Sink()


def table(n=1000):
    return pa.table({"id": list(range(n)), "v": [f"value-{i}" for i in range(n)]})


def test_publish_layout_and_manifest(s3):
    publisher, diagnostic = s3.make()
    run = Run.new("items", DATE)
    publish(publisher, diagnostic, run, table())
    assert s3.object_keys() == [
        f"{s3.prefix}/items/2026-04-24/_MANIFEST.json",
        f"{s3.prefix}/items/_attempts/2026-04-24/{run.attempt}/part-00000.csv",
    ]
    d = diagnostic.diagnose(Run.new("items", DATE))
    assert d.state is State.DONE and "ETags verified" in d.reason


def test_large_output_goes_up_in_several_parts(s3):
    publisher, diagnostic = s3.make()
    big = pa.table({"id": list(range(400_000)), "v": ["x" * 20] * 400_000})  # ~11 MB of CSV, 5 MB parts
    receipt = publish(publisher, diagnostic, Run.new("items", DATE), big).receipt
    key = f"{s3.prefix}/items/_attempts/2026-04-24/{receipt.attempt}/part-00000.csv"
    head = s3.client.head_object(Bucket=s3.service.bucket, Key=key)
    assert head["ContentLength"] == receipt.bytes and head["ETag"].endswith('-3"')  # a 3-part upload


def write_parquet(path, t):
    pq.write_table(t, path, row_group_size=50_000)
    return path


def test_parquet_files_are_published_byte_for_byte(s3, tmp_path):
    """Files already in the sink's format go up as they are: one object per file, same bytes."""
    publisher, diagnostic = s3.make(format="parquet")
    files = [write_parquet(tmp_path / f"in-{i}.parquet", table(200_000 + i)) for i in range(2)]
    receipt = publish(publisher, diagnostic, Run.new("items", DATE), open_inputs(files)).receipt
    prefix = f"{s3.prefix}/items/_attempts/2026-04-24/{receipt.attempt}/"
    assert s3.object_keys() == [f"{s3.prefix}/items/2026-04-24/_MANIFEST.json"] + [
        f"{prefix}part-0000{i}.parquet" for i in range(2)
    ]
    for i, path in enumerate(files):
        body = s3.client.get_object(Bucket=s3.service.bucket, Key=f"{prefix}part-0000{i}.parquet")["Body"].read()
        assert body == path.read_bytes()
    assert receipt.rows == 400_001 and receipt.bytes == sum(p.stat().st_size for p in files)
    joined = "\n".join(hashlib.sha256(p.read_bytes()).hexdigest() for p in files).encode()
    assert receipt.checksum == f"sha256-of-objects:{hashlib.sha256(joined).hexdigest()}"
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE


@pytest.mark.parametrize("case", ["csv-input", "csv-sink", "schemas-differ", "target-schema"])
def test_inputs_the_sink_cannot_take_as_they_are_are_re_encoded(s3, tmp_path, case):
    fmt = "csv" if case == "csv-sink" else "parquet"
    publisher, diagnostic = s3.make(format=fmt)
    first = write_parquet(tmp_path / "a.parquet", table(100))
    files = [first]
    schema = None
    if case == "csv-input":
        files = [tmp_path / "a.csv"]
        pacsv.write_csv(table(100), files[0])
    elif case == "schemas-differ":
        files.append(
            write_parquet(tmp_path / "b.parquet", table(50).cast(pa.schema([("id", pa.int32()), ("v", pa.string())])))
        )
    elif case == "target-schema":
        schema = pa.schema([("id", pa.int32()), ("v", pa.string())])
    receipt = publish(publisher, diagnostic, Run.new("items", DATE), open_inputs(files), schema=schema).receipt
    (data_key,) = [k for k in s3.object_keys() if "_attempts" in k]
    assert data_key.endswith(f"part-00000.{fmt}")  # one object, written by the encoder
    body = s3.client.get_object(Bucket=s3.service.bucket, Key=data_key)["Body"].read()
    assert body != first.read_bytes()
    assert receipt.rows == (150 if case == "schemas-differ" else 100)
    if fmt == "parquet":
        assert pq.read_table(pa.BufferReader(body)).num_rows == receipt.rows


def test_a_parquet_file_without_rows_is_refused_and_writes_nothing(s3, tmp_path):
    publisher, diagnostic = s3.make(format="parquet")
    empty = write_parquet(tmp_path / "empty.parquet", table(0))
    with pytest.raises(InputError, match=r"empty\.parquet: the input has no rows"):
        publish(publisher, diagnostic, Run.new("items", DATE), open_inputs([empty]))
    assert s3.object_keys() == []


def test_a_file_that_is_not_parquet_is_refused_before_anything_is_written(s3, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"bad\.parquet: not a readable Parquet file"):
        open_inputs([bad])
    with pytest.raises(InputError, match=r"missing\.parquet: input file not found"):
        open_inputs([tmp_path / "missing.parquet"])
    assert s3.object_keys() == []


def test_rerun_of_a_published_run_writes_no_object(s3):
    publisher, diagnostic = s3.make()
    publish(publisher, diagnostic, Run.new("items", DATE), table())
    before = {k: s3.client.head_object(Bucket=s3.service.bucket, Key=k)["ETag"] for k in s3.object_keys()}
    result = publish(publisher, diagnostic, Run.new("items", DATE), table(5), if_absent=True)
    assert result.skipped
    assert {k: s3.client.head_object(Bucket=s3.service.bucket, Key=k)["ETag"] for k in s3.object_keys()} == before


def test_an_incomplete_upload_is_an_orphan_attributed_to_its_attempt(s3):
    """What an attempt killed mid-stage leaves (the contract suite kills one for real): an open
    multipart upload under its own prefix and the intent that names its key, found by a listing
    scoped to the run, no age needed (MinIO lists uploads only for an exact key: the intent names it)."""
    from atomic_publish.publishers.s3 import client

    publisher, diagnostic = s3.make()
    dead = Run.new("items", DATE)
    key = f"{s3.prefix}/items/_attempts/2026-04-24/{dead.attempt}/part-00000.csv"
    upload = publisher._start_upload(client(publisher.config), key, dead)  # as stage() starts it
    s3.client.upload_part(Bucket=s3.service.bucket, Key=key, UploadId=upload.upload_id, PartNumber=1, Body=b"x" * 100)
    d = diagnostic.diagnose(Run.new("items", DATE))
    assert d.state is State.ORPHANED
    assert sorted(a.kind for a in d.orphans) == ["incomplete-upload", "upload-intent"]
    assert {a.attempt for a in d.orphans} == {dead.attempt}
    diagnostic.clean(d)
    listed = s3.client.list_multipart_uploads(Bucket=s3.service.bucket, Prefix=key).get("Uploads", [])
    assert listed == []
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.NOTHING_IN_FLIGHT


def test_changed_or_missing_objects_and_stray_data_are_unknown(s3):
    publisher, diagnostic = s3.make()
    receipt = publish(publisher, diagnostic, Run.new("items", DATE), table()).receipt
    key = f"{s3.prefix}/items/_attempts/2026-04-24/{receipt.attempt}/part-00000.csv"
    s3.client.put_object(Bucket=s3.service.bucket, Key=key, Body=b"tampered")
    d = diagnostic.diagnose(Run.new("items", DATE))
    assert d.state is State.UNKNOWN and "changed" in d.reason
    s3.client.delete_object(Bucket=s3.service.bucket, Key=key)
    assert "missing" in diagnostic.diagnose(Run.new("items", DATE)).reason

    _, stray_diagnostic = s3.make()
    s3.client.put_object(Bucket=s3.service.bucket, Key=f"{s3.prefix}/other/2026-04-24/data.csv", Body=b"a,b\n")
    d = stray_diagnostic.diagnose(Run.new("other", DATE))
    assert d.state is State.UNKNOWN and "no evidence explains" in d.reason


def _fail_manifest_put(client, *, after_landing: bool, times: int):
    """Fault injection on a real client: a timeout on the manifest PUT, before it is sent or after
    S3 applied it (the answer lost)."""
    from botocore.exceptions import ReadTimeoutError

    state = {"left": times}

    def hook(params, **kwargs):
        if params.get("Key", "").endswith("_MANIFEST.json") and "IfNoneMatch" in params and state["left"] > 0:
            state["left"] -= 1
            if after_landing:
                clean = {k: v for k, v in params.items() if k != "IfNoneMatch"}
                client.meta.events.unregister("provide-client-params.s3.PutObject", hook)
                client.put_object(**clean)
                client.meta.events.register("provide-client-params.s3.PutObject", hook)
            raise ReadTimeoutError(endpoint_url="s3://manifest")

    client.meta.events.register("provide-client-params.s3.PutObject", hook)
    return client


@pytest.mark.parametrize("after_landing", [True, False])
def test_timeout_on_the_manifest_put_is_settled_by_reading_it_back(s3, monkeypatch, after_landing):
    import atomic_publish.publishers.s3 as s3_module

    publisher, diagnostic = s3.make(commit_timeout_seconds=2)
    run = Run.new("items", DATE)
    staged = publisher.stage(run, table().to_reader())
    real_client = s3_module.conditional_client
    with monkeypatch.context() as patch:
        patch.setattr(
            s3_module,
            "conditional_client",
            lambda config: _fail_manifest_put(real_client(config), after_landing=after_landing, times=100),
        )
        if after_landing:
            receipt = publisher.commit(run, [staged])  # it landed: reading it back proves it is ours
            assert receipt.attempt == run.attempt
        else:
            with pytest.raises(CommitOutcomeUnknown, match="without an answer"):
                publisher.commit(run, [staged])
    expected = State.DONE if after_landing else State.ORPHANED
    assert diagnostic.diagnose(Run.new("items", DATE)).state is expected


def _requests_to(key: str | None, monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """Every request the process sends for ``key`` (any key: None) from now on, as "METHOD status"
    ("METHOD status path" for any key)."""
    import botocore.endpoint

    sent: list[str] = []
    real = botocore.endpoint.Endpoint._send

    def send(self, request):  # type: ignore[no-untyped-def]
        response = real(self, request)
        path = request.url.split("?", 1)[0]
        if key is None:
            sent.append(f"{request.method} {response.status_code} {path}")
        elif path.endswith("/" + key):
            sent.append(f"{request.method} {response.status_code}")
        return response

    monkeypatch.setattr(botocore.endpoint.Endpoint, "_send", send)
    return sent


@pytest.mark.parametrize("fenced_before", [False, True])
def test_the_commit_is_one_conditional_put_unless_the_commit_point_holds_something(s3, monkeypatch, fenced_before):
    """The commit point is read only when the conditional PUT is not a plain success (it was read
    before every commit: one request more on every publish). A fence that recover left there for
    other attempts is replaced by a PUT conditional on its ETag, and the run is published."""
    from atomic_publish.publishers.layouts.s3 import S3Layout, fence_document

    publisher, diagnostic = s3.make()
    run = Run.new("items", DATE)
    staged = publisher.stage(run, table().to_reader())
    key = S3Layout(s3.config()).manifest("items", run.run_date)
    if fenced_before:
        s3.client.put_object(
            Bucket=s3.service.bucket, Key=key, Body=fence_document(run.run_id, ["20260101T000000Z-dead01"])
        )
    sent = _requests_to(key, monkeypatch)
    publisher.commit(run, [staged])
    assert sent == (["PUT 412", "GET 200", "PUT 200"] if fenced_before else ["PUT 200"])
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE


def test_a_diagnosis_sends_no_head_bucket_and_still_names_a_missing_bucket(s3, monkeypatch):
    """The listing of the run's attempts answers NoSuchBucket for a bucket that does not exist: the
    HeadBucket each diagnosis (so each publish) sent first was one request too many."""
    publisher, diagnostic = s3.make()
    publish(publisher, diagnostic, Run.new("items", DATE), table(10))
    sent = _requests_to(None, monkeypatch)
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE
    assert sent and not [r for r in sent if r.startswith("HEAD") and r.endswith("/" + s3.service.bucket)]
    missing = S3Diagnostic(s3.config(bucket=f"no-such-bucket-{uuid.uuid4().hex[:8]}"))
    diagnosis = missing.diagnose(Run.new("items", DATE))
    assert diagnosis.missing_destination is not None and "does not exist" in diagnosis.missing_destination


@pytest.mark.parametrize(
    "line, fragment",
    [
        ('prefix = ""', "must not be empty"),
        ('prefix = "/"', "must not be empty"),
        ('prefix = "/data"', "starts with '/'"),
        ('prefix = "a/../b"', "'..'"),
        ('prefix = "ok"\nbucket = "Not_A_Bucket"', "bucket 'Not_A_Bucket' is refused"),
    ],
)
def test_unsafe_prefixes_and_bad_buckets_are_refused(tmp_path, line, fragment):
    cfg = tmp_path / "publish.toml"
    body = f'[sinks.b]\ntype = "s3"\n{line}\n'
    if "bucket" not in line:
        body += 'bucket = "fine-bucket"\n'
    cfg.write_text(body)
    with pytest.raises(ConfigError, match=fragment):
        load_config(cfg).sink("b")


def test_keys_in_the_config_are_refused_and_secrets_never_printed(s3, tmp_path, small_inputs):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[sinks.b]\ntype = "s3"\nbucket = "x-bucket"\nprefix = "p"\naws_secret_access_key = "SHOULD-NOT-PRINT"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert "SHOULD-NOT-PRINT" not in str(info.value)
    cfg.write_text(
        f'[sinks.b]\ntype = "s3"\nbucket = "{s3.service.bucket}"\nprefix = "{s3.prefix}"\n'
        f'endpoint_url = "{s3.service.endpoint}"\nregion = "us-east-1"\naddressing_style = "path"\n'
    )
    creds = s3.service.env()
    if s3.service.server == "moto":  # moto takes any secret: plant a fresh one
        creds["AWS_SECRET_ACCESS_KEY"] = "secret-" + uuid.uuid4().hex
    secret = creds["AWS_SECRET_ACCESS_KEY"]
    result = run_cli(
        "-v",
        "publish",
        "--sink",
        "b",
        "--dataset",
        "items",
        "--run-date",
        DATE,
        str(small_inputs[0]),
        env=cli_env(cfg, **creds),
    )
    assert result.code == 0, result.stderr
    assert secret not in result.stderr + result.stdout


@pytest.mark.parametrize("held_before", ["nothing", "a dead attempt"])
def test_two_attempts_never_both_hold_the_lease(s3, held_before):
    """The lease is taken by a conditional write: of attempts racing for it, exactly one holds it
    (a lost lease would let the loser's diagnosis call the winner's live objects orphans)."""
    config = s3.config()
    for _ in range(5):
        if held_before == "a dead attempt":
            dead = Run.new("items", DATE)
            doc = {
                "attempt": dead.attempt,
                "pid": 2**22 + 1,
                "host": socket.gethostname(),
                "pid_scope": pid_scope(),  # a dead attempt of this host, boot and PID namespace
                "expires_at": "2999-01-01T00:00:00+00:00",
            }
            s3.client.put_object(
                Bucket=s3.service.bucket, Key=f"{s3.prefix}/items/_leases/{DATE}.json", Body=json.dumps(doc).encode()
            )
        winners = race_for_the_lease([run_lease(config, Run.new("items", DATE)) for _ in range(3)])
        assert len(winners) == 1, winners


def test_a_schema_that_differs_from_the_last_published_run_is_refused_unless_allowed(s3):
    from atomic_publish import SchemaMismatch

    publisher, diagnostic = s3.make()
    publish(publisher, diagnostic, Run.new("items", "2026-04-23"), table())
    keys = s3.object_keys()
    drifted = table().append_column("extra", pa.array(["x"] * 1000))
    with pytest.raises(SchemaMismatch, match="column 'extra' is new"):
        publish(publisher, diagnostic, Run.new("items", DATE), drifted)
    assert s3.object_keys() == keys  # nothing written, not even the lease
    allowing, _ = s3.make(allow_schema_change=True)
    assert publish(allowing, diagnostic, Run.new("items", DATE), drifted).receipt is not None


def _writes_during(config, action):
    """The S3 operations that write (PUT, POST, DELETE) sent by the sink's clients during ``action``."""
    from atomic_publish.publishers.layouts.s3 import client, conditional_client

    writes: list[str] = []

    def record(model, **kwargs):
        if model.http["method"] in ("PUT", "POST", "DELETE"):
            writes.append(model.name)

    clients = (client(config), conditional_client(config))
    for c in clients:
        c.meta.events.register("before-call.s3", record)
    try:
        action()
    finally:
        for c in clients:
            c.meta.events.unregister("before-call.s3", record)
    return writes


def test_a_rerun_of_a_published_run_writes_nothing_not_even_a_lease(s3):
    """The early check (a cheap look at the commit point, then the full diagnosis when there is a
    manifest) refuses a published run before the lock: no request that writes is sent."""
    publisher, diagnostic = s3.make()
    publish(publisher, diagnostic, Run.new("items", DATE), table())
    config = s3.config()

    def again():
        with pytest.raises(AlreadyPublished):
            publish(publisher, diagnostic, Run.new("items", DATE), table())
        assert publish(publisher, diagnostic, Run.new("items", DATE), table(), if_absent=True).skipped

    assert _writes_during(config, again) == []
    # The probe is what lets a first publish skip the early diagnosis; it must see the manifest.
    assert diagnostic.surely_unpublished(Run.new("items", DATE)) is False
    assert diagnostic.surely_unpublished(Run.new("items", "2026-04-25")) is True
    first = _writes_during(config, lambda: publish(publisher, diagnostic, Run.new("items", "2026-04-25"), table()))
    assert "PutObject" in first  # the lease, the intent, the manifest: the check can fail


def test_a_bucket_that_does_not_exist_is_the_configuration_s_to_fix(s3, tmp_path, small_inputs):
    """Found from outside: diagnose said a first publish creates the bucket, and publish then
    failed with exit 5 ('reading the run's lease failed: NoSuchBucket'), whose advice (diagnose,
    re-run when it is back) goes round in a loop. A publish never creates a bucket: exit 2, saying so."""
    missing = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[sinks.b]\ntype = "s3"\nbucket = "{missing}"\nprefix = "p"\nendpoint_url = "{s3.service.endpoint}"\n'
        'region = "us-east-1"\naddressing_style = "path"\n'
    )
    env = cli_env(cfg, **s3.service.env())
    args = ("--sink", "b", "--dataset", "items", "--run-date", DATE)
    diagnosed = run_cli("diagnose", *args, "--json", env=env)
    assert diagnosed.code == 14 and "a publish never creates one" in diagnosed.json()["reason"], diagnosed.stdout
    published = run_cli("publish", *args, str(small_inputs[0]), env=env)
    assert published.code == 2, published.stderr
    assert f"{missing}" in published.stderr and "a publish never creates a bucket" in published.stderr
    assert len(published.stderr.strip().splitlines()) == 1
    for apply in ((), ("--apply",)):  # was exit 5 ("listing the run dates with leftovers failed")
        swept = run_cli("sweep", "--sink", "b", "--dataset", "items", "--older-than", "1h", *apply, env=env)
        assert swept.code == 2 and "a publish never creates a bucket" in swept.stderr, swept.stderr
    buckets = [b["Name"] for b in s3.client.list_buckets()["Buckets"]]
    assert missing not in buckets
