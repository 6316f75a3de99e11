"""Session-wide real servers (SeaweedFS S3, fake-gcs-server, a Range-aware HTTP server)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
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
