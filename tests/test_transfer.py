"""Concurrent ranged downloads against real servers, with injected faults.

Every fault either ends in the right bytes or in a clear SourceError / CacheError, and
never in a file at a final cache path.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import fsspec
import pytest
from fetchutil import KiB, MiB, assert_not_committed, make_model, served, sha256_of
from servers import RangeHTTPServer, wait_until

from modelload import (
    CacheError,
    IntegrityError,
    ModelLoader,
    SourceError,
    SourceUnavailableError,
    load_model,
)
from modelload import transfer as transfer_mod
from modelload.manifest import Manifest

DATA_SIZE = 2 * MiB + 123  # eight full 256 KiB chunks and a short ninth
FAST = {"chunk_size": 256 * KiB, "concurrency": 4, "read_timeout": 2.0, "retries": 3}


@pytest.fixture
def model(range_http_server: RangeHTTPServer) -> tuple[str, Manifest]:
    data = os.urandom(DATA_SIZE)
    manifest = make_model(Path(range_http_server.directory) / "m", data)
    return range_http_server.url_for("m/"), manifest


def _check_loaded(uri: str, cache: Path, manifest: Manifest, **settings: object) -> None:
    loaded = load_model(uri, cache_dir=cache, **{**FAST, **settings})  # type: ignore[arg-type]
    assert loaded.digest == manifest.digest
    assert sha256_of(loaded.local_dir / "data.bin") == manifest.files["data.bin"].sha256
    assert loaded.model["data_sha256"] == manifest.files["data.bin"].sha256


def test_ranges_are_fetched_concurrently_and_written_at_offsets(
    model: tuple[str, Manifest], range_http_server: RangeHTTPServer, tmp_path: Path
) -> None:
    uri, manifest = model
    seen: list[tuple[int, int | None]] = []
    loaded = ModelLoader(
        uri, cache_dir=tmp_path / "c", progress=lambda d, t: seen.append((d, t)), **FAST
    ).load()
    assert sha256_of(loaded.local_dir / "data.bin") == manifest.files["data.bin"].sha256
    total = sum(f.size for f in manifest.files.values())
    assert seen[-1] == (total, total) and len(seen) >= 9
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    range_http_server.settle()
    hits = [h for h in range_http_server.hits if "data.bin" in h.path]
    ranges = [h.range for h in hits if h.method == "GET"]
    assert len(ranges) == 9 and all(r and r.startswith("bytes=") for r in ranges)
    # one size check before the ranges, so bytes appended at the source are noticed
    assert [h.method for h in hits].count("HEAD") == 1
    assert served(range_http_server, "data.bin") == DATA_SIZE
    # the journal and the temporary file are gone once the blob is committed
    leftovers = [p.name for p in (tmp_path / "c" / "blobs").iterdir() if "." in p.name]
    assert leftovers == []


Fault = tuple[str, dict[str, int]]
Served = tuple[str, Manifest, RangeHTTPServer]


@pytest.fixture
def served_model(model: tuple[str, Manifest], range_http_server: RangeHTTPServer) -> Served:
    return (*model, range_http_server)


@pytest.mark.parametrize(
    "fault_spec",
    [
        ("status", {"status": 500}),
        ("status", {"status": 503}),
        ("reset", {"after": 100 * KiB}),
        ("truncate", {"after": 100 * KiB}),
        ("stall", {"after": 10 * KiB, "seconds": 30}),
    ],
)
def test_transient_fault_then_success(
    served_model: Served, tmp_path: Path, fault_spec: Fault
) -> None:
    uri, manifest, range_http_server = served_model
    kind, options = fault_spec
    fault = range_http_server.inject(r"data\.bin", kind, times=2, **options)
    _check_loaded(uri, tmp_path / "c", manifest, read_timeout=1.0)
    assert fault.served == 2
    # every range was answered in the end (a stalled handler records its hit only later)
    wait_until(
        lambda: (
            len(
                {
                    h.range
                    for h in range_http_server.hits
                    if h.method == "GET" and "data.bin" in h.path
                }
            )
            == 9
        ),
        10,
        "all nine ranges recorded",
    )


@pytest.mark.parametrize(
    ("fault_spec", "expected"),
    [
        (("status", {"status": 500}), "500"),
        (("stall", {"after": 10 * KiB, "seconds": 30}), "timeout"),
        (("truncate", {"after": 1000}), "content length"),
    ],
)
@pytest.mark.timeout(60)
def test_persistent_fault_fails_with_source_error(
    served_model: Served, tmp_path: Path, fault_spec: Fault, expected: str
) -> None:
    uri, manifest, range_http_server = served_model
    kind, options = fault_spec
    range_http_server.inject(r"data\.bin", kind, times=0, **options)
    cache = tmp_path / "c"
    with pytest.raises(SourceUnavailableError) as info:
        load_model(uri, cache_dir=cache, **{**FAST, "read_timeout": 0.5, "retries": 1})
    message = str(info.value)
    assert f"{uri}data.bin" in message and expected in message.lower()
    assert "after 2 attempts" in message
    assert info.value.transient
    assert_not_committed(cache, manifest)


def test_disk_full_is_a_cache_error_and_commits_nothing(
    model: tuple[str, Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, manifest = model
    real_write = transfer_mod._write_chunk
    writes = []

    def full_disk(fd: int, pieces: list[bytes], offset: int) -> None:
        if writes:  # the first write lands, the second finds the disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        writes.append(offset)
        real_write(fd, pieces, offset)

    monkeypatch.setattr(transfer_mod, "_write_chunk", full_disk)
    cache = tmp_path / "c"
    with pytest.raises(CacheError) as info:
        load_model(uri, cache_dir=cache, **FAST)
    message = str(info.value)
    assert "No space left on device" in message and "data.bin" in message
    assert "MODELLOAD_CACHE_DIR" in message
    assert_not_committed(cache, manifest)


def test_wrong_sha256_over_http(
    model: tuple[str, Manifest], range_http_server: RangeHTTPServer, tmp_path: Path
) -> None:
    uri, manifest = model
    path = Path(range_http_server.directory) / "m" / "data.bin"
    data = bytearray(path.read_bytes())
    data[DATA_SIZE // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    cache = tmp_path / "c"
    with pytest.raises(IntegrityError) as info:
        load_model(uri, cache_dir=cache, **FAST)
    message = str(info.value)
    assert "sha256 mismatch" in message and manifest.files["data.bin"].sha256 in message
    assert "data.bin" in message
    assert_not_committed(cache, manifest)
    # the bad bytes are not kept for a resume either
    sha = manifest.files["data.bin"].sha256
    assert not (cache / "blobs" / f"{sha}.incomplete").exists()
    assert not (cache / "blobs" / f"{sha}.journal").exists()


@pytest.mark.parametrize("where", ["http", "local"])
def test_appended_bytes_are_an_integrity_error(
    where: str, model: tuple[str, Manifest], range_http_server: RangeHTTPServer, tmp_path: Path
) -> None:
    """Ranged reads of the pinned size alone would hash the right prefix and miss bytes
    added after `modelload pack`; the source's size is checked first."""
    uri, manifest = model
    model_dir = Path(range_http_server.directory) / "m"
    with open(model_dir / "data.bin", "ab") as handle:
        handle.write(b"tampered")
    if where == "local":
        uri = str(model_dir)
    cache = tmp_path / "c"
    with pytest.raises(IntegrityError) as info:
        load_model(uri, cache_dir=cache, **FAST)
    message = str(info.value)
    assert "data.bin" in message and "size mismatch" in message
    assert f"manifest pins {DATA_SIZE} bytes, the source has {DATA_SIZE + 8}" in message
    assert_not_committed(cache, manifest)


def test_server_ignoring_range_is_a_clear_error(tmp_path: Path) -> None:
    """A source that answers a range with the whole file cannot be fetched in ranges."""
    fs = fsspec.filesystem("memory")
    request = transfer_mod.FileRequest(
        path="/x", uri="memory://x", dest=tmp_path / "x.part", size=10, sha256=None
    )
    fs.pipe("/x", b"0123456789")

    class WholeFile(type(fs)):  # type: ignore[misc]
        def cat_file(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
            return super().cat_file(path)

    from modelload.settings import Settings

    with pytest.raises(SourceError, match="does not honour HTTP Range"):
        transfer_mod.download(
            WholeFile(skip_instance_cache=True), [request], Settings(chunk_size=4)
        )


def test_memory_source_uses_the_thread_pool_backend(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    root = f"/models-{uuid.uuid4().hex[:8]}/m"
    local = tmp_path / "m"
    manifest = make_model(local, os.urandom(DATA_SIZE))
    for path in local.iterdir():
        fs.put_file(str(path), f"{root}/{path.name}")
    loaded = load_model(f"memory://{root}", cache_dir=tmp_path / "c", **FAST)
    assert sha256_of(loaded.local_dir / "data.bin") == manifest.files["data.bin"].sha256


def test_s3_multi_chunk_fetch(s3_server: object, tmp_path: Path) -> None:
    fs = s3_server.fs()  # type: ignore[attr-defined]
    bucket = f"fetch-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    local = tmp_path / "m"
    manifest = make_model(local, os.urandom(3 * MiB + 5))
    for path in local.iterdir():
        fs.put_file(str(path), f"{bucket}/m/{path.name}")
    loaded = load_model(
        f"s3://{bucket}/m",
        cache_dir=tmp_path / "c",
        storage_options=s3_server.storage_options,  # type: ignore[attr-defined]
        chunk_size=1 * MiB,
        concurrency=3,
    )
    assert sha256_of(loaded.local_dir / "data.bin") == manifest.files["data.bin"].sha256
    assert loaded.model["name"] == "blobby"


def _plant_partial(cache: Path, manifest: Manifest, data: bytes, chunks: list[int]) -> Path:
    """A partial download as an interrupted run leaves it: ``chunks`` written and journaled."""
    from modelload.transfer import JOURNAL_MAGIC

    sha, chunk = manifest.files["data.bin"].sha256, FAST["chunk_size"]
    blobs = cache / "blobs"
    blobs.mkdir(parents=True)
    with open(blobs / f"{sha}.incomplete", "wb") as handle:
        handle.truncate(len(data))
        for index in chunks:
            handle.seek(index * chunk)
            handle.write(data[index * chunk : (index + 1) * chunk])
    header = f"{JOURNAL_MAGIC} size={len(data)} chunk={chunk} sha256={sha}"
    lines = [header, *map(str, chunks)]
    (blobs / f"{sha}.journal").write_text("\n".join(lines) + "\n7")  # 7: a torn last line
    return blobs / f"{sha}.incomplete"


def test_resume_downloads_only_missing_chunks(served_model: Served, tmp_path: Path) -> None:
    uri, manifest, server = served_model
    data = (Path(server.directory) / "m" / "data.bin").read_bytes()
    cache = tmp_path / "c"
    _plant_partial(cache, manifest, data, [0, 1, 2, 5])
    _check_loaded(uri, cache, manifest)
    assert served(server, "data.bin") == len(data) - 4 * FAST["chunk_size"]


def test_bad_resumed_bytes_are_downloaded_again(served_model: Served, tmp_path: Path) -> None:
    uri, manifest, server = served_model
    data = (Path(server.directory) / "m" / "data.bin").read_bytes()
    cache = tmp_path / "c"
    partial = _plant_partial(cache, manifest, data, [0, 1])
    with open(partial, "r+b") as handle:  # chunk 1 "lost in a power cut"
        handle.seek(FAST["chunk_size"] + 7)
        handle.write(b"\0" * 100)
    _check_loaded(uri, cache, manifest)
    # the first pass skipped two chunks, the second fetched the whole file
    assert served(server, "data.bin") == 2 * len(data) - 2 * FAST["chunk_size"]


def test_journal_for_another_chunk_size_is_ignored(served_model: Served, tmp_path: Path) -> None:
    uri, manifest, server = served_model
    data = (Path(server.directory) / "m" / "data.bin").read_bytes()
    cache = tmp_path / "c"
    _plant_partial(cache, manifest, data, [0, 1, 2])
    _check_loaded(uri, cache, manifest, chunk_size=128 * KiB)
    assert served(server, "data.bin") == len(data)
