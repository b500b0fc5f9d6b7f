"""The S3 sink's loader of botocore's service models (layouts.s3.s3_model_loader): it skips
botocore's listing of every service's directory and its OrderedDicts, and must return what
botocore's own loader returns, model by model, in the same order (AWS_DATA_PATH included)."""

from __future__ import annotations

import json

import botocore.loaders
import pytest

from atomic_publish.publishers.layouts import s3 as layout
from atomic_publish.publishers.layouts.s3 import S3SinkConfig, s3_model_loader

MODELS = ("service-2", "endpoint-rule-set-1", "paginators-1", "waiters-2")
DATA = ("endpoints", "partitions", "sdk-default-configuration")


def _same(ours: object, botocores: object) -> None:
    assert json.dumps(ours) == json.dumps(botocores)  # key order included


@pytest.mark.parametrize("type_name", MODELS)
def test_the_s3_models_are_botocore_s_own(type_name):
    ours, theirs = s3_model_loader(None), botocore.loaders.create_loader(None)
    assert ours.list_available_services(type_name) == ["s3"]
    assert "s3" in theirs.list_available_services(type_name)
    _same(ours.load_service_model("s3", type_name), theirs.load_service_model("s3", type_name))


def test_the_shared_data_is_botocore_s_own():
    ours, theirs = s3_model_loader(None), botocore.loaders.create_loader(None)
    for name in DATA:
        _same(ours.load_data(name), theirs.load_data(name))
    assert ours.list_available_services("no-such-type") == theirs.list_available_services("no-such-type") == []


def test_a_model_on_aws_data_path_comes_first_as_with_botocore(tmp_path):
    model = botocore.loaders.create_loader(None).load_service_model("s3", "service-2")
    custom = {**model, "metadata": {**model["metadata"], "serviceFullName": "Custom S3"}}
    (tmp_path / "s3" / "2006-03-01").mkdir(parents=True)
    (tmp_path / "s3" / "2006-03-01" / "service-2.json").write_text(json.dumps(custom))
    ours, theirs = s3_model_loader(str(tmp_path)), botocore.loaders.create_loader(str(tmp_path))
    loaded = ours.load_service_model("s3", "service-2")
    assert loaded["metadata"]["serviceFullName"] == "Custom S3"
    _same(loaded, theirs.load_service_model("s3", "service-2"))


def test_the_sink_s_clients_skip_botocore_s_listing_of_every_service(monkeypatch):
    """botocore's list_available_services lists ~950 directories (twice a client): ~45 ms of a
    client's 129 (medians of 10 fresh processes)."""
    listed: list[str] = []
    original = botocore.loaders.Loader.list_available_services

    def counting(self, type_name):  # type: ignore[no-untyped-def]
        listed.append(type_name)
        return original(self, type_name)

    monkeypatch.setattr(botocore.loaders.Loader, "list_available_services", counting)
    monkeypatch.setattr(layout, "_LOADER", None)
    layout._session.cache_clear()
    layout.client.cache_clear()
    try:
        config = S3SinkConfig(bucket="a-bucket", prefix="p", endpoint_url="http://127.0.0.1:9", region="us-east-1")
        s3 = layout.client(config)
        assert s3.meta.service_model.service_name == "s3"
        assert listed == []
    finally:
        layout._session.cache_clear()
        layout.client.cache_clear()
