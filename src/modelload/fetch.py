"""Bring a located model from its source into a verified snapshot of the local cache.

This is the one place :class:`~modelload.loader.ModelLoader` and ``modelload fetch``
call to get bytes onto local disk. Blobs already in the cache (from an earlier run or
another model) are linked, the rest is downloaded by :mod:`modelload.transfer`
(concurrent ranges, retries, resume) into the content-addressed layout of
:mod:`modelload.cache`. Nothing appears at a final path before its sha256 matched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import posixpath
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from modelload.cache import Cache, link_or_copy
from modelload.errors import CacheError, IntegrityError, ModelLoadError, OfflineError, SourceError
from modelload.manifest import MANIFEST_NAME, Manifest
from modelload.settings import Settings
from modelload.sources import Location, join_path, source_errors
from modelload.transfer import FileRequest, FileResult, download

__all__ = [
    "ProgressCallback",
    "Snapshot",
    "fetch_model",
    "fetch_uri",
    "materialize",
    "open_offline",
    "verify_snapshot",
]

#: ``progress(bytes_done, bytes_total)``; ``bytes_total`` may be None when unknown.
ProgressCallback = Callable[[int, "int | None"], None]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A model version on local disk."""

    local_dir: Path
    manifest: Manifest | None
    digest: str
    entry: Path
    bytes_downloaded: int = 0


@contextlib.contextmanager
def _disk_errors(cache_dir: Path) -> Iterator[None]:
    """Local filesystem failures (not the source's) become :class:`CacheError`."""
    try:
        yield
    except ModelLoadError:
        raise
    except OSError as exc:
        raise CacheError(
            f"cannot write the model cache at {cache_dir}: {exc}; check free space and "
            "permissions, or point MODELLOAD_CACHE_DIR elsewhere"
        ) from exc


@contextlib.contextmanager
def _progress_bar(
    progress: ProgressCallback | None, label: str, total: int
) -> Iterator[Callable[[int, int], None] | None]:
    """The caller's callback, else a tqdm bar when stderr is a terminal, else nothing."""
    if progress is not None:
        yield progress
        return
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr
    )

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


def _download(
    location: Location,
    requests: list[FileRequest],
    settings: Settings,
    progress: ProgressCallback | None,
    label: str,
) -> list[FileResult]:
    if not requests:
        return []
    with _progress_bar(progress, label, sum(r.size for r in requests)) as callback:
        return download(location.source.fs, requests, settings, progress=callback)


def fetch_model(
    location: Location,
    manifest: Manifest | None,
    settings: Settings,
    *,
    progress: ProgressCallback | None = None,
) -> Snapshot:
    """Make ``<cache>/snapshots/<digest>/`` hold every file of the model, verified."""
    with _disk_errors(settings.cache_dir):
        if manifest is None:
            return _fetch_single(location, settings, progress)
        return _fetch_manifest(location, manifest, settings, progress)


def _fetch_manifest(
    location: Location,
    manifest: Manifest,
    settings: Settings,
    progress: ProgressCallback | None,
) -> Snapshot:
    cache = Cache(settings.cache_dir)
    digest = manifest.digest
    uri = location.source.uri
    existing = cache.find_snapshot(digest)
    if existing is not None:  # warm: a snapshot that exists is complete and verified
        cache.touch(digest)
        cache.set_ref(uri, digest)
        return Snapshot(existing, manifest, digest, existing / manifest.path, 0)
    resumable = not location.source.is_local
    with cache.staging(digest) as staging:
        cache.put_bytes(manifest.raw, link_to=staging / MANIFEST_NAME)
        requests = []
        for rel, pinned in manifest.files.items():
            target = staging / rel
            sha = pinned.sha256
            if cache.link_blob(sha, pinned.size, target):
                continue
            requests.append(
                FileRequest(
                    path=join_path(location.root, rel),
                    uri=location.uri_of(rel),
                    dest=cache.partial(sha),
                    size=pinned.size,
                    sha256=sha,
                    journal=cache.journal(sha) if resumable else None,
                    lock=cache.lock_path(sha),
                    present=functools.partial(cache.link_blob, sha, pinned.size, target),
                    commit=functools.partial(cache.commit_blob, link_to=target),
                )
            )
        results = _download(location, requests, settings, progress, manifest.label)
        final = cache.commit_snapshot(staging, digest)
    cache.set_ref(uri, digest)
    downloaded = sum(r.downloaded for r in results)
    return Snapshot(final, manifest, digest, final / manifest.path, downloaded)


def _fetch_single(
    location: Location, settings: Settings, progress: ProgressCallback | None
) -> Snapshot:
    """A bare file: its sha256 is known only once downloaded, so no resume and no
    skipping; the digest is ``file-<sha256>``."""
    assert location.entry_path is not None
    path = location.entry_path
    name = posixpath.basename(path)
    uri = location.source.display(path)
    with source_errors(uri, "read"):
        size = location.source.fs.info(path).get("size")
    if size is None:
        raise SourceError(
            f"cannot download {uri!r}: the source does not report its size; pack the model "
            "with `modelload pack` so its files are pinned"
        )
    cache = Cache(settings.cache_dir)
    with cache.staging("file") as staging:
        request = FileRequest(
            path=path,
            uri=uri,
            dest=cache.temp_partial(),
            size=int(size),
            commit=functools.partial(cache.commit_blob, link_to=staging / name),
        )
        try:
            (result,) = _download(location, [request], settings, progress, name)
        finally:
            request.dest.unlink(missing_ok=True)
        digest = f"file-{result.sha256}"
        final = cache.commit_snapshot(staging, digest)
    cache.set_ref(location.source.uri, digest)
    return Snapshot(final, None, digest, final / name, result.downloaded)


def verify_snapshot(snapshot: Snapshot) -> None:
    """Check that every pinned file is present with its size.

    No re-hash: a file reaches a snapshot only from a blob whose sha256 matched."""
    if snapshot.manifest is None:
        if not snapshot.entry.is_file():
            raise IntegrityError(f"{snapshot.entry}: missing from the local snapshot")
        return
    for rel, pinned in snapshot.manifest.files.items():
        path = snapshot.local_dir / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise IntegrityError(f"{path}: missing from the local snapshot") from None
        if size != pinned.size:
            raise IntegrityError(f"{path}: size {size} bytes, manifest pins {pinned.size}")


def open_offline(uri: str, settings: Settings) -> Snapshot:
    """The snapshot ``uri`` last resolved to, from the cache alone (``MODELLOAD_OFFLINE``)."""
    cache = Cache(settings.cache_dir)
    digest = cache.get_ref(uri)
    local_dir = cache.find_snapshot(digest) if digest else None
    if digest is None or local_dir is None:
        detail = (
            "it was never fetched into this cache"
            if digest is None
            else f"it resolved to {digest}, but that snapshot is no longer there"
        )
        raise OfflineError(
            f"MODELLOAD_OFFLINE is set but {uri!r} is not in the cache at "
            f"{settings.cache_dir} ({detail}); fetch it once with network access "
            "(`modelload fetch URI` with the same MODELLOAD_CACHE_DIR) or unset MODELLOAD_OFFLINE"
        )
    manifest = cache.read_manifest(digest)
    if manifest is not None:
        entry = local_dir / manifest.path
    else:
        files = sorted(p for p in local_dir.iterdir() if not p.name.startswith("."))
        if len(files) != 1:
            raise CacheError(f"the cached snapshot {local_dir} is damaged: expected one file")
        entry = files[0]
    cache.touch(digest)
    return Snapshot(local_dir, manifest, digest, entry, 0)


def materialize(snapshot: Snapshot, dest: Path) -> None:
    """Make ``dest`` a plain model directory: the snapshot's files (hard links when the
    cache is on the same filesystem, copies otherwise) and, written last, its
    ``modelload.toml``, so a ``dest`` with a manifest is always complete."""
    with _disk_errors(dest):
        dest.mkdir(parents=True, exist_ok=True)
        if snapshot.manifest is None:
            link_or_copy(snapshot.entry, dest / snapshot.entry.name)
            return
        manifest_path = dest / MANIFEST_NAME
        with contextlib.suppress(FileNotFoundError):
            if manifest_path.read_bytes() != snapshot.manifest.raw:
                os.unlink(manifest_path)  # an older model: not complete until replaced
        for rel in snapshot.manifest.files:
            link_or_copy(snapshot.local_dir / rel, dest / rel)
        link_or_copy(snapshot.local_dir / MANIFEST_NAME, manifest_path)


def fetch_uri(
    uri: str,
    settings: Settings,
    *,
    dest: Path | None = None,
    progress: ProgressCallback | None = None,
) -> Snapshot:
    """``modelload fetch``: the model at ``uri`` into the cache (and ``dest``), verified.

    No compatibility check: an init container's image need not carry the model's
    libraries. With ``settings.offline`` the cache alone is used.
    """
    from modelload.loader import read_manifest
    from modelload.sources import locate, resolve

    if settings.offline:
        snapshot = open_offline(uri, settings)
    else:
        location = locate(resolve(uri, settings))
        manifest = read_manifest(location)
        snapshot = fetch_model(location, manifest, settings, progress=progress)
    verify_snapshot(snapshot)
    if dest is not None:
        materialize(snapshot, dest)
    return snapshot
