"""The iris model loads identically from every kind of source, each one a real server."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from modelutil import IRIS_SAMPLES

from modelload import SourceNotFoundError, load_model
from modelload.settings import Settings
from modelload.sources import resolve


@pytest.fixture(scope="module")
def iris_dir(iris_model: Path) -> Path:
    return iris_model  # the session's trained iris model (conftest.py), read-only


@pytest.fixture(scope="module")
def expected(iris_expected: list[int]) -> list[int]:
    return iris_expected


def _upload(fs: fsspec.AbstractFileSystem, local: Path, remote: str) -> None:
    for path in sorted(local.iterdir()):
        fs.put_file(str(path), f"{remote}/{path.name}")


Publisher = Callable[[Path], tuple[str, dict[str, Any]]]


def _local(iris_dir: Path, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return str(iris_dir), {}


def _file_uri(iris_dir: Path, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return f"file://{iris_dir}/", {}


def _memory(iris_dir: Path, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    fs = fsspec.filesystem("memory")
    remote = f"/models-{uuid.uuid4().hex[:8]}/iris"
    _upload(fs, iris_dir, remote)
    return f"memory://{remote}", {}


def _s3(iris_dir: Path, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    server = request.getfixturevalue("s3_server")
    fs = server.fs()
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    _upload(fs, iris_dir, f"{bucket}/iris/1.0.0")
    return f"s3://{bucket}/iris/1.0.0", dict(server.storage_options)


def _gcs(iris_dir: Path, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    server = request.getfixturevalue("gcs_server")
    fs = server.fs()
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    _upload(fs, iris_dir, f"{bucket}/iris")
    return f"gs://{bucket}/iris", dict(server.storage_options)


def _http(iris_dir: Path, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    server = request.getfixturevalue("range_http_server")
    shutil.copytree(iris_dir, Path(server.directory) / "iris")
    return server.url_for("iris/"), {}


@pytest.mark.parametrize(
    "publish",
    [_local, _file_uri, _memory, _s3, _gcs, _http],
    ids=["local", "file", "memory", "s3", "gs", "http"],
)
def test_iris_loads_from_every_source(
    publish: Callable[..., tuple[str, dict[str, Any]]],
    iris_dir: Path,
    expected: list[int],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    uri, options = publish(iris_dir, request)
    loaded = load_model(uri, cache_dir=tmp_path / "cache", storage_options=options)
    assert loaded.name == "iris"
    assert loaded.source_uri == uri
    assert [int(x) for x in loaded.model.predict(np.array(IRIS_SAMPLES))] == expected
    assert loaded.manifest is not None
    assert loaded.digest == loaded.manifest.digest


def test_storage_options_keyed_by_protocol(request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("s3_server")
    settings = Settings(storage_options={"s3": dict(server.storage_options), "gs": {"x": 1}})
    source = resolve("s3://bucket/iris", settings)
    assert source.protocol == "s3"
    assert source.fs.endpoint_url == server.endpoint_url
    local = resolve("/tmp/x", settings)
    assert local.protocol == "file" and local.path == "/tmp/x"


def test_missing_object_in_s3_is_not_found(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("s3_server")
    fs = server.fs()
    bucket = f"empty-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    with pytest.raises(SourceNotFoundError) as info:
        load_model(
            f"s3://{bucket}/nothing/here",
            cache_dir=tmp_path,
            storage_options=dict(server.storage_options),
        )
    assert f"s3://{bucket}/nothing/here" in str(info.value)
