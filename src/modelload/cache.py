"""Content-addressed local cache of model files, shaped like the huggingface_hub cache.

Layout under ``MODELLOAD_CACHE_DIR``::

    blobs/<sha256>                    a verified file, named by its content, read-only
    blobs/<sha256>.incomplete         a download in progress (chunks at their offsets)
    blobs/<sha256>.journal            which chunks of the .incomplete file are written
    snapshots/<digest>/<path>         the model as a plain directory of hard links to blobs
    snapshots/<digest>/modelload.toml the manifest (a blob too: its sha256 is the digest)
    refs/<key>.json                   {"uri", "digest", "updated"}: what a URI resolved to
    .locks/<sha256>.lock              cross-process lock held while a blob is downloaded

Rules that keep it consistent without a database:

- a blob appears only by ``rename`` of a file whose sha256 matched, so a blob that
  exists is trusted: a warm load checks sizes, never re-hashes;
- a snapshot appears only by ``rename`` of a fully linked staging directory, so a
  snapshot directory that exists is complete;
- snapshot files are hard links (a copy where hard links are impossible), so a
  snapshot keeps its bytes even if ``prune`` or another process removes the blob, and
  loaders see ordinary files in an ordinary directory (relative sibling paths work);
- ``prune`` removes snapshots first and then only blobs no kept snapshot references.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import filelock

from modelload.errors import CacheError, ManifestError
from modelload.manifest import MANIFEST_NAME, Manifest

__all__ = ["Cache", "PruneReport", "SnapshotInfo", "link_or_copy", "parse_duration"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NO_HARDLINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
_STALE_STAGING_S = 24 * 3600
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text`` such as ``90s``, ``12h``, ``7d``, ``2w`` or ``1d12h``."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(
            f"duration {text!r}: expected a number and a unit s/m/h/d/w, e.g. 12h, 7d, 1d12h"
        )
    return sum(float(n) * _UNITS[u] for n, u in parts)


def link_or_copy(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` atomically: a hard link, or a copy when links are impossible.

    Raises FileNotFoundError when ``src`` is gone.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        try:
            os.link(src, tmp)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno not in _NO_HARDLINK:
                raise
            shutil.copyfile(src, tmp)  # a copy cut short (disk full) must not stay behind
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ref_key(uri: str) -> str:
    """The normalised form of ``uri`` that refs are keyed by."""
    text = uri.strip()
    if "://" not in text or text.startswith(("file://", "local://")):
        raw = text.split("://", 1)[1] if "://" in text else text
        text = str(Path(os.path.expanduser(raw)).absolute())
    text = text.rstrip("/")
    suffix = "/" + MANIFEST_NAME
    if text.endswith(suffix):
        text = text[: -len(suffix)]
    return text


@dataclasses.dataclass(frozen=True)
class SnapshotInfo:
    """One model version in the cache, as ``modelload cache ls`` shows it."""

    digest: str
    path: Path
    name: str
    version: str
    files: int
    size: int
    last_used: float
    uris: tuple[str, ...]
    blobs: frozenset[str]


@dataclasses.dataclass(frozen=True)
class PruneReport:
    """What ``prune`` removed."""

    snapshots: tuple[str, ...]
    blobs: int
    bytes_freed: int
    partials: int


class Cache:
    """The cache rooted at ``root`` (``Settings.cache_dir``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def refs(self) -> Path:
        return self.root / "refs"

    @property
    def locks(self) -> Path:
        return self.root / ".locks"

    def _mkdirs(self, *dirs: Path) -> None:
        try:
            for d in dirs:
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cannot create the cache directory {d}: {exc}; set MODELLOAD_CACHE_DIR to "
                "a writable directory"
            ) from exc

    # -- blobs ------------------------------------------------------------------

    def blob(self, sha256: str) -> Path:
        return self.blobs / sha256

    def partial(self, sha256: str) -> Path:
        return self.blobs / f"{sha256}.incomplete"

    def journal(self, sha256: str) -> Path:
        return self.blobs / f"{sha256}.journal"

    def lock_path(self, sha256: str) -> Path:
        self._mkdirs(self.locks)
        return self.locks / f"{sha256}.lock"

    def temp_partial(self) -> Path:
        """A unique temporary name for a download whose sha256 is not known yet."""
        self._mkdirs(self.blobs)
        return self.blobs / f".tmp-{uuid.uuid4().hex}.incomplete"

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        try:
            st = self.blob(sha256).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def link_blob(self, sha256: str, size: int | None, dest: Path) -> bool:
        """Link the blob (if present with ``size``) at ``dest``; False when it is absent."""
        if not self.has_blob(sha256, size):
            return False
        try:
            link_or_copy(self.blob(sha256), dest)
        except FileNotFoundError:  # removed by a concurrent prune: download it again
            return False
        return True

    def commit_blob(self, partial: Path, sha256: str, link_to: Path | None = None) -> None:
        """Make a verified ``partial`` file the blob ``sha256`` (and link it at ``link_to``).

        The link is made first, so the bytes are safe in the staging snapshot even if
        a concurrent prune removes the blob right after the rename.
        """
        os.chmod(partial, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        if link_to is not None:
            link_or_copy(partial, link_to)
        os.replace(partial, self.blob(sha256))
        self.journal(sha256).unlink(missing_ok=True)

    def put_bytes(self, data: bytes, link_to: Path | None = None) -> str:
        """Store small ``data`` (a manifest) as a blob; return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        if link_to is not None and self.link_blob(sha, len(data), link_to):
            return sha
        tmp = self.temp_partial()
        try:
            tmp.write_bytes(data)
            self.commit_blob(tmp, sha, link_to)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CacheError(f"cannot write {self.blob(sha)}: {exc}") from exc
        return sha

    # -- snapshots --------------------------------------------------------------

    def snapshot_dir(self, digest: str) -> Path:
        return self.snapshots / digest

    def find_snapshot(self, digest: str) -> Path | None:
        path = self.snapshot_dir(digest)
        return path if path.is_dir() else None

    @contextlib.contextmanager
    def staging(self, label: str) -> Iterator[Path]:
        """A private directory to assemble a snapshot in; removed unless committed."""
        self._mkdirs(self.snapshots, self.blobs)
        path = self.snapshots / f".tmp-{label[:16]}-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            yield path
        finally:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)

    def commit_snapshot(self, staging: Path, digest: str) -> Path:
        """Rename ``staging`` to ``snapshots/<digest>``; another process may have won."""
        final = self.snapshot_dir(digest)
        try:
            os.rename(staging, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.is_dir():
                raise CacheError(f"cannot commit the snapshot {final}: {exc}") from exc
        self.touch(digest)
        return final

    def touch(self, digest: str) -> None:
        """Record that the snapshot was used now (``prune`` keeps recently used ones)."""
        with contextlib.suppress(OSError):  # a read-only cache still loads
            os.utime(self.snapshot_dir(digest))

    # -- refs -------------------------------------------------------------------

    def _ref_file(self, uri: str) -> Path:
        key = hashlib.sha256(ref_key(uri).encode()).hexdigest()[:32]
        return self.refs / f"{key}.json"

    def get_ref(self, uri: str) -> str | None:
        """The digest ``uri`` last resolved to, or None."""
        try:
            doc = json.loads(self._ref_file(uri).read_text())
        except (OSError, ValueError):
            return None
        digest = doc.get("digest") if isinstance(doc, dict) else None
        return digest if isinstance(digest, str) else None

    def set_ref(self, uri: str, digest: str) -> None:
        if self.get_ref(uri) == digest:
            return
        path = self._ref_file(uri)
        doc = {"uri": ref_key(uri), "digest": digest, "updated": time.time()}
        with contextlib.suppress(OSError):
            self._mkdirs(self.refs)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            os.replace(tmp, path)

    def _all_refs(self) -> list[tuple[Path, str, str]]:
        out = []
        for path in sorted(self.refs.glob("*.json")) if self.refs.is_dir() else []:
            try:
                doc = json.loads(path.read_text())
                out.append((path, str(doc["uri"]), str(doc["digest"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    # -- listing and pruning ----------------------------------------------------

    def read_manifest(self, digest: str) -> Manifest | None:
        """The manifest of snapshot ``digest`` (None for a single-file snapshot)."""
        if digest.startswith("file-"):
            return None
        path = self.snapshot_dir(digest) / MANIFEST_NAME
        try:
            return Manifest.read(path)
        except (OSError, ManifestError) as exc:
            raise CacheError(
                f"the cached snapshot {self.snapshot_dir(digest)} is damaged ({exc}); run "
                "`modelload cache prune` or delete that directory, then fetch again"
            ) from exc

    def list_snapshots(self) -> list[SnapshotInfo]:
        """Every complete snapshot, most recently used first."""
        if not self.snapshots.is_dir():
            return []
        uris: dict[str, list[str]] = {}
        for _, uri, digest in self._all_refs():
            uris.setdefault(digest, []).append(uri)
        out = []
        for path in self.snapshots.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            digest = path.name
            try:
                info = self._info(digest, path, tuple(uris.get(digest, ())))
            except (CacheError, OSError):
                continue
            out.append(info)
        out.sort(key=lambda s: s.last_used, reverse=True)
        return out

    def _info(self, digest: str, path: Path, uris: tuple[str, ...]) -> SnapshotInfo:
        last_used = path.stat().st_mtime
        manifest = self.read_manifest(digest)
        if manifest is None:
            files = [p for p in path.iterdir() if not p.name.startswith(".")]
            sha = digest.removeprefix("file-")
            size = sum(p.stat().st_size for p in files)
            name = files[0].name if files else "?"
            return SnapshotInfo(
                digest,
                path,
                name,
                "unversioned",
                len(files),
                size,
                last_used,
                uris,
                frozenset([sha]),
            )
        blobs = frozenset([digest, *(f.sha256 for f in manifest.files.values())])
        size = sum(f.size for f in manifest.files.values())
        return SnapshotInfo(
            digest,
            path,
            manifest.name,
            manifest.version,
            len(manifest.files),
            size,
            last_used,
            uris,
            blobs,
        )

    def prune(
        self,
        *,
        keep: int | None = None,
        older_than: float | None = None,
        now: float | None = None,
    ) -> PruneReport:
        """Remove snapshots beyond the ``keep`` most recently used and those unused for
        ``older_than`` seconds, then every blob no remaining snapshot references.

        Blobs being downloaded (their lock is held) are left alone; partial downloads
        are removed only when ``older_than`` is given and they are that old.
        """
        now = time.time() if now is None else now
        snaps = self.list_snapshots()
        drop = []
        for rank, snap in enumerate(snaps):
            too_many = keep is not None and rank >= keep
            too_old = older_than is not None and now - snap.last_used > older_than
            if too_many or too_old:
                drop.append(snap)
        for snap in drop:
            trash = self.snapshots / f".trash-{uuid.uuid4().hex[:12]}"
            try:
                os.rename(snap.path, trash)
            except FileNotFoundError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
        dropped = {s.digest for s in drop}
        referenced: set[str] = set()
        for snap in snaps:
            if snap.digest not in dropped:
                referenced |= snap.blobs
        blobs = freed = partials = 0
        for path in sorted(self.blobs.iterdir()) if self.blobs.is_dir() else []:
            name = path.name
            if _HEX64.match(name):
                if name in referenced:
                    continue
                removed, nbytes = self._remove_locked(name, path)
                blobs += removed
                freed += nbytes
            elif name.endswith((".incomplete", ".journal")) and older_than is not None:
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > older_than:
                        partials += self._remove_locked(name.split(".", 1)[0], path)[0]
        for path, _, digest in self._all_refs():
            if digest in dropped or not self.snapshot_dir(digest).is_dir():
                path.unlink(missing_ok=True)
        for path in self.snapshots.glob(".t*") if self.snapshots.is_dir() else []:
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > _STALE_STAGING_S:
                    shutil.rmtree(path, ignore_errors=True)
        return PruneReport(tuple(sorted(dropped)), blobs, freed, partials)

    def _remove_locked(self, sha: str, path: Path) -> tuple[int, int]:
        """Unlink ``path`` unless another process holds the blob's lock.

        Returns (files removed, bytes freed); a blob still hard-linked from a snapshot
        frees nothing.
        """
        lock = filelock.FileLock(self.lock_path(sha), thread_local=False)
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            return 0, 0
        try:
            st = path.stat()
            path.unlink()
        except FileNotFoundError:
            return 0, 0
        finally:
            lock.release()
        return 1, st.st_size if st.st_nlink <= 1 else 0
