"""The content-addressed cache: layout, sharing blobs, warm loads, offline mode, prune."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fetchutil import MiB, make_model, served, sha256_of
from servers import RangeHTTPServer

from modelload import OfflineError, load_model
from modelload.cache import Cache, parse_duration
from modelload.cli import main

SMALL = {"chunk_size": 512 * 1024, "concurrency": 4}


@pytest.fixture
def two_models(range_http_server: RangeHTTPServer) -> tuple[str, str, bytes]:
    """Models ``a`` and ``b`` that share ``data.bin`` but differ in ``model.pkl``."""
    data = os.urandom(MiB + 17)
    www = Path(range_http_server.directory)
    make_model(www / "a", data, name="a")
    make_model(www / "b", data, name="b")
    return range_http_server.url_for("a/"), range_http_server.url_for("b/"), data


def test_layout_blobs_snapshots_refs(two_models: tuple[str, str, bytes], tmp_path: Path) -> None:
    uri_a, _, data = two_models
    cache = tmp_path / "c"
    loaded = load_model(uri_a, cache_dir=cache, **SMALL)
    snap = cache / "snapshots" / loaded.digest
    assert loaded.local_dir == snap
    blob = cache / "blobs" / sha256_of(snap / "data.bin")
    assert blob.read_bytes() == data
    # snapshot files are hard links to read-only blobs; the manifest is a blob too
    assert (snap / "data.bin").stat().st_ino == blob.stat().st_ino
    assert (snap / "modelload.toml").stat().st_ino == (
        cache / "blobs" / loaded.digest
    ).stat().st_ino
    assert not os.access(blob, os.W_OK) or os.geteuid() == 0
    assert blob.stat().st_mode & 0o222 == 0
    assert Cache(cache).get_ref(uri_a) == loaded.digest
    assert Cache(cache).get_ref(uri_a.rstrip("/") + "/modelload.toml") == loaded.digest


def test_shared_blob_is_not_fetched_again_and_warm_load_fetches_nothing(
    two_models: tuple[str, str, bytes], range_http_server: RangeHTTPServer, tmp_path: Path
) -> None:
    uri_a, uri_b, data = two_models
    cache = tmp_path / "c"
    a = load_model(uri_a, cache_dir=cache, **SMALL)
    assert served(range_http_server, "/a/data.bin") == len(data)
    range_http_server.reset()
    b = load_model(uri_b, cache_dir=cache, **SMALL)
    assert b.model["name"] == "b"
    assert served(range_http_server, "/b/data.bin") == 0
    assert served(range_http_server, "/b/model.pkl") > 0
    assert (a.local_dir / "data.bin").stat().st_ino == (b.local_dir / "data.bin").stat().st_ino
    # warm: only the manifest is read from the source, no file is downloaded again
    range_http_server.reset()
    again = load_model(uri_b, cache_dir=cache, **SMALL)
    assert again.digest == b.digest
    range_http_server.settle()
    paths = {h.path for h in range_http_server.hits if h.method == "GET"}
    assert paths == {"/b/modelload.toml"}


def test_offline_loads_from_the_cache_with_the_source_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    www = tmp_path / "www"
    manifest = make_model(www / "m", os.urandom(MiB))
    (www / "single.pkl").write_bytes((www / "m" / "model.pkl").read_bytes())
    cache = tmp_path / "c"
    with RangeHTTPServer(www) as server:
        uri = server.url_for("m/")
        single_uri = server.url_for("single.pkl")
        online = load_model(uri, cache_dir=cache)
        with pytest.warns(UserWarning, match="nothing is pinned"):
            single = load_model(single_uri, cache_dir=cache)
    server.settle()
    seen = len(server.hits)
    offline = load_model(uri, cache_dir=cache, offline=True)
    assert offline.digest == online.digest == manifest.digest
    assert offline.model == online.model
    monkeypatch.setenv("MODELLOAD_OFFLINE", "1")
    via_env = load_model(uri.rstrip("/"), cache_dir=cache)
    assert via_env.digest == manifest.digest
    single_offline = load_model(single_uri, cache_dir=cache)
    assert single_offline.digest == single.digest and single.digest.startswith("file-")
    missing = uri.replace("/m/", "/other/")
    with pytest.raises(OfflineError) as info:
        load_model(missing, cache_dir=cache)
    assert missing in str(info.value) and str(cache) in str(info.value)
    assert len(server.hits) == seen  # not even a pooled keep-alive connection was used


def test_prune_keeps_blobs_of_kept_snapshots(
    two_models: tuple[str, str, bytes], tmp_path: Path
) -> None:
    uri_a, uri_b, _ = two_models
    cache = tmp_path / "c"
    a = load_model(uri_a, cache_dir=cache, **SMALL)
    b = load_model(uri_b, cache_dir=cache, **SMALL)
    now = time.time()
    os.utime(a.local_dir, (now - 7200, now - 7200))  # a: used two hours ago
    os.utime(b.local_dir, (now - 60, now - 60))
    runner = CliRunner()
    listed = runner.invoke(main, ["cache", "ls", "--cache-dir", str(cache)])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(b.digest[:17]) and lines[1].startswith(a.digest[:17])
    assert uri_a.rstrip("/") in listed.stdout

    shared = cache / "blobs" / sha256_of(a.local_dir / "data.bin")
    only_a = cache / "blobs" / sha256_of(a.local_dir / "model.pkl")
    result = runner.invoke(main, ["cache", "prune", "--keep", "1", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert "removed 1 snapshots, 2 blobs" in result.stdout  # a's model.pkl and manifest
    assert not a.local_dir.exists() and b.local_dir.is_dir()
    assert shared.exists() and not only_a.exists()
    assert Cache(cache).get_ref(uri_a) is None
    assert load_model(uri_b, cache_dir=cache, offline=True).model["name"] == "b"

    result = runner.invoke(
        main, ["cache", "prune", "--older-than", "1h", "--cache-dir", str(cache)]
    )
    assert "removed 0 snapshots" in result.stdout and shared.exists()
    os.utime(b.local_dir, (now - 7200, now - 7200))
    result = runner.invoke(
        main, ["cache", "prune", "--older-than", "1h", "--cache-dir", str(cache)]
    )
    assert result.exit_code == 0 and "removed 1 snapshots" in result.stdout
    assert [p for p in (cache / "blobs").iterdir() if len(p.name) == 64] == []
    with pytest.raises(OfflineError):
        load_model(uri_b, cache_dir=cache, offline=True)


def test_parse_duration() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1d12h") == 36 * 3600
    assert parse_duration("2w") == 14 * 86400
    with pytest.raises(ValueError, match="12x"):
        parse_duration("12x")
    result = CliRunner().invoke(main, ["cache", "prune", "--older-than", "soon"])
    assert result.exit_code == 2 and "--older-than" in result.output
