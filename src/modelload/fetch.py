"""Bring a located model from its source into a verified local snapshot directory.

This is the one place :class:`~modelload.loader.ModelLoader` and ``modelload fetch``
call to get bytes onto local disk. Files are written to temporary names and renamed
into place only after their sha256 matches the manifest, so an interrupted or corrupt
download is never visible at a final path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from modelload.errors import IntegrityError, OfflineError
from modelload.manifest import MANIFEST_NAME, Manifest, sha256_file
from modelload.settings import Settings
from modelload.sources import Location, source_errors

__all__ = ["ProgressCallback", "Snapshot", "fetch_model", "open_offline", "verify_snapshot"]

ProgressCallback = Callable[[int, "int | None"], None]
_COPY_BLOCK = 8 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A model version on local disk."""

    local_dir: Path
    manifest: Manifest | None
    digest: str
    entry: Path
    bytes_downloaded: int = 0
    verified: bool = False


def _snapshots(settings: Settings) -> Path:
    return settings.cache_dir / "snapshots"


def _complete_marker(snapshot_dir: Path) -> Path:
    return snapshot_dir.parent / f".{snapshot_dir.name}.complete"


def _copy(location: Location, src: str, dest: Path, progress: Callable[[int], None]) -> str:
    """Copy one file from the source to ``dest`` (temp name), returning its sha256."""
    digest = hashlib.sha256()
    uri = location.source.display(src)
    with source_errors(uri, "download"), location.source.fs.open(src, "rb") as fin:
        with open(dest, "wb") as fout:
            while block := fin.read(_COPY_BLOCK):
                fout.write(block)
                digest.update(block)
                progress(len(block))
    return digest.hexdigest()


def fetch_model(
    location: Location,
    manifest: Manifest | None,
    settings: Settings,
    *,
    progress: ProgressCallback | None = None,
) -> Snapshot:
    """Download every file of the model into ``<cache>/snapshots/<digest>/``."""
    if manifest is None:
        return _fetch_single(location, settings, progress)
    snapshot_dir = _snapshots(settings) / manifest.digest
    entry = snapshot_dir / manifest.path
    if _complete_marker(snapshot_dir).exists():
        return Snapshot(snapshot_dir, manifest, manifest.digest, entry, 0, verified=True)
    total = sum(f.size for f in manifest.files.values())
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    staging = _snapshots(settings) / f".tmp-{manifest.digest[:16]}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        for rel, pinned in manifest.files.items():
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            found = _copy(location, location.root + "/" + rel, dest, tick)
            if found != pinned.sha256:
                raise IntegrityError(
                    f"{location.uri_of(rel)}: sha256 mismatch: manifest pins {pinned.sha256}, "
                    f"downloaded file has {found}; the stored model is corrupt or was "
                    "changed after `modelload pack`"
                )
        (staging / MANIFEST_NAME).write_bytes(manifest.raw)
        if snapshot_dir.exists():
            shutil.rmtree(snapshot_dir)
        os.replace(staging, snapshot_dir)
        _complete_marker(snapshot_dir).touch()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Snapshot(snapshot_dir, manifest, manifest.digest, entry, done, verified=True)


def _fetch_single(
    location: Location, settings: Settings, progress: ProgressCallback | None
) -> Snapshot:
    assert location.entry_path is not None
    name = location.entry_path.rsplit("/", 1)[-1]
    staging = _snapshots(settings) / f".tmp-file-{uuid.uuid4().hex}"
    staging.mkdir(parents=True, exist_ok=True)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, None)

    try:
        sha = _copy(location, location.entry_path, staging / name, tick)
        digest = f"file-{sha}"
        snapshot_dir = _snapshots(settings) / digest
        if not _complete_marker(snapshot_dir).exists():
            if snapshot_dir.exists():
                shutil.rmtree(snapshot_dir)
            os.replace(staging, snapshot_dir)
            _complete_marker(snapshot_dir).touch()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Snapshot(snapshot_dir, None, digest, snapshot_dir / name, done, verified=True)


def verify_snapshot(snapshot: Snapshot, *, full: bool = False) -> None:
    """Check that every pinned file is present with its size (and sha256 when ``full``)."""
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
        if full:
            found = sha256_file(path)
            if found != pinned.sha256:
                raise IntegrityError(
                    f"{path}: sha256 mismatch: manifest pins {pinned.sha256}, found {found}"
                )


def open_offline(uri: str, settings: Settings) -> Snapshot:
    """Offline mode is implemented by the cache (issue 6); until then it always misses."""
    raise OfflineError(
        f"MODELLOAD_OFFLINE is set but {uri!r} is not in the cache at {settings.cache_dir}"
    )
