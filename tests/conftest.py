"""Session-wide real servers (SeaweedFS S3, fake-gcs-server, a Range-aware HTTP server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
from modelutil import iris_predictions, train_iris
from servers import GCSServer, RangeHTTPServer, S3Server, fake_gcs, seaweedfs


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with seaweedfs() as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSServer]:
    with fake_gcs() as server:
        yield server


@pytest.fixture
def range_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RangeHTTPServer]:
    """A fresh HTTP server (own directory, no faults, empty request log) per test."""
    with RangeHTTPServer(tmp_path_factory.mktemp("www")) as server:
        yield server


@pytest.fixture(scope="session")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The iris example, trained and packed once per run. Read-only: copy it to alter it."""
    path = tmp_path_factory.mktemp("iris-model") / "iris"
    train_iris(path)
    return path


@pytest.fixture(scope="session")
def iris_expected(iris_model: Path) -> list[int]:
    """What the iris model itself predicts for ``IRIS_SAMPLES``."""
    return iris_predictions(iris_model)
