"""Copy bytes from a source into local files: concurrent ranged reads, retries, resume.

One call, :func:`download`, fetches any number of files from one fsspec filesystem:

- each file is split into ``chunk_size`` byte ranges; ``concurrency`` workers read
  ranges from all files on the filesystem's event loop and write them at their offsets
  in a temporary file (:func:`os.pwritev`). For s3 and http(s) a range's body is
  streamed and written in ``WRITE_BLOCK`` pieces, so memory stays near
  ``WRITE_BLOCK x concurrency`` whatever the chunk and file sizes; other async backends
  (gcsfs, ...) use ``_cat_file(path, start, end)`` and synchronous ones (local, memory)
  ``cat_file`` in a thread pool, holding up to ``chunk_size x concurrency``. A backend
  gets streaming by :func:`register_range_streamer`.
- every range is bounded by the read timeout and retried with exponential backoff and
  jitter on transient failures (5xx, resets, timeouts, short reads);
- completed chunk indices are appended to a journal and fsynced, so a later run, even
  after ``kill -9``, downloads only the missing chunks;
- the sha256 is computed while the download runs (a hashing thread follows the
  contiguous prefix of completed chunks, reading it back from the page cache) and
  checked before the file is handed to the caller's ``commit``;
- a cross-process lock per file makes concurrent processes download it once.

The engine knows nothing about the cache layout: :mod:`modelload.fetch` describes each
file with a :class:`FileRequest` (where to write, which lock, how to commit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import os
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import filelock
import fsspec
import fsspec.asyn

from modelload.errors import CacheError, IntegrityError, ModelLoadError, SourceError
from modelload.settings import Settings
from modelload.sources import is_transient, source_errors

__all__ = [
    "FileRequest",
    "FileResult",
    "RangeStreamer",
    "TransferProgress",
    "download",
    "register_range_streamer",
]

T = TypeVar("T")

#: ``progress(bytes_done, bytes_total)``, called from the transfer's event loop thread.
TransferProgress = Callable[[int, int], None]

JOURNAL_MAGIC = "modelload-journal 1"
BACKOFF_BASE = 0.2
BACKOFF_CAP = 8.0
_HASH_BLOCK = 4 * 1024 * 1024
#: bytes of a streamed range gathered before one positional write
WRITE_BLOCK = 2 * 1024 * 1024
#: most bytes per file kept in memory, waiting for their turn to be hashed
STASH_LIMIT = 128 * 1024 * 1024
_IO_THREADS = 4
_LOCK_POLL = 0.1


@dataclasses.dataclass
class FileRequest:
    """One file to download.

    ``dest`` is the temporary file the chunks are written into. ``sha256`` is the
    expected digest (None: computed and returned, e.g. for a single file without a
    manifest). ``journal`` enables resume. ``lock`` is a lock file path held from
    before the first byte until after ``commit``; once it is held, ``present()`` says
    whether another process already finished the file. ``commit(dest, sha256)`` runs
    after the digest matched and must move ``dest`` out of the way (rename).
    """

    path: str
    uri: str
    dest: Path
    size: int
    sha256: str | None = None
    journal: Path | None = None
    lock: Path | None = None
    present: Callable[[], bool] | None = None
    commit: Callable[[Path, str], None] | None = None


@dataclasses.dataclass(frozen=True)
class FileResult:
    """What happened to one :class:`FileRequest`."""

    sha256: str | None
    downloaded: int
    resumed: int
    skipped: bool


def _write_chunk(fd: int, pieces: Sequence[bytes], offset: int) -> None:
    """Write ``pieces`` back to back at ``offset`` of ``fd``: the one place downloaded
    bytes reach the disk."""
    written = os.pwritev(fd, pieces, offset) if hasattr(os, "pwritev") else 0
    if written == sum(len(p) for p in pieces):
        return
    rest = memoryview(b"".join(pieces))[written:]  # short write, or no pwritev here
    offset += written
    while rest:
        n = os.pwrite(fd, rest, offset)
        rest = rest[n:]
        offset += n


#: ``streamer(fs, path, start, end)`` yields the bytes of ``[start, end)`` in pieces.
RangeStreamer = Callable[[fsspec.AbstractFileSystem, str, int, int], AsyncIterator[bytes]]
_streamers: dict[str, RangeStreamer] = {}


def register_range_streamer(protocol: str, streamer: RangeStreamer) -> None:
    """Stream ranges of ``protocol`` filesystems instead of reading each one whole."""
    _streamers[protocol] = streamer


async def _s3_stream(
    fs: fsspec.AbstractFileSystem, path: str, start: int, end: int
) -> AsyncIterator[bytes]:
    from s3fs.core import version_id_kw

    bucket, key, version = fs.split_path(path)
    response = await fs._call_s3(
        "get_object",
        Bucket=bucket,
        Key=key,
        Range=f"bytes={start}-{end - 1}",
        **version_id_kw(version),
        **fs.req_kw,
    )
    body = response["Body"]
    try:
        while piece := await body.read(WRITE_BLOCK):
            yield piece
    finally:
        body.close()


async def _http_stream(
    fs: fsspec.AbstractFileSystem, url: str, start: int, end: int
) -> AsyncIterator[bytes]:
    kwargs = dict(fs.kwargs)
    headers = dict(kwargs.pop("headers", None) or {})
    headers["Range"] = f"bytes={start}-{end - 1}"
    session = await fs.set_session()
    async with session.get(fs.encode_url(url), headers=headers, **kwargs) as response:
        fs._raise_not_found_for_status(response, url)
        async for piece in response.content.iter_chunked(WRITE_BLOCK):
            yield piece


for _protocol in ("s3", "s3a"):
    register_range_streamer(_protocol, _s3_stream)
for _protocol in ("http", "https"):
    register_range_streamer(_protocol, _http_stream)


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d], d = base * 2**attempt, capped."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * (2**attempt))
    return random.uniform(delay / 2, delay)


class ShortRead(ConnectionError):
    """The server sent fewer bytes than the range asked for (transient)."""


class StalledRead(TimeoutError):
    """No complete answer for a range within the read timeout (transient)."""


def _read_journal(journal: Path, header: str) -> set[int]:
    """Chunk indices recorded in ``journal`` if its header matches ``header``, else empty."""
    try:
        text = journal.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return set()
    lines = text.split("\n")
    if not lines or lines[0] != header:
        return set()
    done: set[int] = set()
    # the last element is "" after a complete line, or a torn write: ignore it
    for line in lines[1:-1]:
        if line.isdigit():
            done.add(int(line))
    return done


class _File:
    """Download state of one file, touched only on the event loop thread."""

    def __init__(self, request: FileRequest, chunk_size: int) -> None:
        self.request = request
        self.chunk_size = chunk_size
        self.nchunks = (request.size + chunk_size - 1) // chunk_size
        self.done = bytearray(self.nchunks)
        self.remaining = self.nchunks
        self._reset_hash()
        self.fd = -1
        self.journal_fd = -1
        self.lock: filelock.BaseFileLock | None = None
        self.resumed = 0
        self.downloaded = 0
        self.retried_clean = False
        self.result: FileResult | None = None

    @property
    def header(self) -> str:
        r = self.request
        return f"{JOURNAL_MAGIC} size={r.size} chunk={self.chunk_size} sha256={r.sha256}"

    def span(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.request.size)

    def open(self, *, resume: bool) -> None:
        """Open ``dest`` (and the journal); reuse recorded chunks when ``resume``."""
        r = self.request
        recorded: set[int] = set()
        if resume and r.journal is not None and r.dest.exists():
            recorded = {i for i in _read_journal(r.journal, self.header) if i < self.nchunks}
        if not recorded:
            for stale in (r.dest, r.journal):
                if stale is not None:
                    stale.unlink(missing_ok=True)
        try:
            r.dest.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(r.dest, os.O_RDWR | os.O_CREAT, 0o644)
            os.ftruncate(self.fd, r.size)
            if r.journal is not None:
                fresh = not recorded
                self.journal_fd = os.open(
                    r.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_TRUNC * fresh), 0o644
                )
                if fresh:
                    os.write(self.journal_fd, (self.header + "\n").encode())
                    os.fsync(self.journal_fd)
        except OSError as exc:
            raise _disk_error(exc, r.uri, r.dest) from exc
        self.done = bytearray(self.nchunks)
        self.resumed = 0
        for index in recorded:
            self.done[index] = 1
            start, end = self.span(index)
            self.resumed += end - start
        self.remaining = self.nchunks - len(recorded)
        self._reset_hash()
        for index in recorded:
            start, end = self.span(index)
            self.spilled[start] = end - start

    def _reset_hash(self) -> None:
        # bytes [0, hash_pos) are hashed (or queued for hashing, in order); written
        # bytes beyond it wait in ``stash`` (in memory) or ``spilled`` (on disk only)
        self.hasher = hashlib.sha256()
        self.hash_future: concurrent.futures.Future[None] | None = None
        self.hash_pos = 0
        self.stash: dict[int, Sequence[bytes]] = {}
        self.stash_bytes = 0
        self.spilled: dict[int, int] = {}

    def missing(self) -> list[int]:
        return [i for i in range(self.nchunks) if not self.done[i]]

    def write(self, pieces: Sequence[bytes], offset: int) -> None:
        """Write downloaded bytes at ``offset`` (runs on an I/O thread)."""
        try:
            _write_chunk(self.fd, pieces, offset)
        except OSError as exc:
            raise _disk_error(exc, self.request.uri, self.request.dest) from exc

    def record(self, index: int) -> None:
        """Append chunk ``index`` to the journal and fsync it (runs on an I/O thread)."""
        if self.journal_fd < 0:
            return
        try:
            os.write(self.journal_fd, f"{index}\n".encode())
            os.fsync(self.journal_fd)
        except OSError as exc:
            raise _disk_error(
                exc, self.request.uri, self.request.journal or self.request.dest
            ) from exc

    def close(self) -> None:
        for fd in (self.fd, self.journal_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.journal_fd = -1


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


def _hash_pieces(hasher: _Hasher, pieces: Sequence[bytes]) -> None:
    for piece in pieces:
        hasher.update(piece)


def _disk_error(exc: OSError, uri: str, path: Path) -> CacheError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "; free space there or point MODELLOAD_CACHE_DIR at a larger disk"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; make MODELLOAD_CACHE_DIR writable or point it elsewhere"
    return CacheError(f"cannot write {uri} to {path}: {reason} ({exc}){hint}")


class _Engine:
    """One :func:`download` call: shared workers, pools, progress, cleanup."""

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        requests: Sequence[FileRequest],
        settings: Settings,
        progress: TransferProgress | None,
    ) -> None:
        self.fs = fs
        self.settings = settings
        self.chunk_size = settings.chunk_size
        self.files = [_File(r, settings.chunk_size) for r in requests]
        self.progress = progress
        self.total = sum(r.size for r in requests)
        self.done_bytes = 0
        self.is_async = bool(getattr(fs, "async_impl", False))
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self.streamer = next((_streamers[p] for p in protocols if p in _streamers), None)
        if not self.is_async:
            self.streamer = None
        self.io_pool = concurrent.futures.ThreadPoolExecutor(_IO_THREADS, "modelload-io")
        self.hash_pool = concurrent.futures.ThreadPoolExecutor(1, "modelload-hash")
        self.read_pool: concurrent.futures.ThreadPoolExecutor | None = None
        if not self.is_async:
            self.read_pool = concurrent.futures.ThreadPoolExecutor(
                settings.concurrency, "modelload-read"
            )
        self.hash_buffer = bytearray(_HASH_BLOCK)
        self.stash_budget = min(settings.chunk_size * settings.concurrency, STASH_LIMIT)

    # -- running ----------------------------------------------------------------

    def run(self) -> list[FileResult]:
        try:
            if self.is_async and getattr(self.fs, "loop", None) is not None:
                fsspec.asyn.sync(self.fs.loop, self._main)
            else:
                self._run_in_thread()
        finally:
            if self.read_pool is not None:
                self.read_pool.shutdown(wait=False, cancel_futures=True)
            # wait for writes and hashing still using the file descriptors, then close
            self.io_pool.shutdown(wait=True)
            self.hash_pool.shutdown(wait=True)
            for f in self.files:
                f.close()
                if f.lock is not None and f.lock.is_locked:
                    f.lock.release()
        return [f.result or FileResult(None, 0, 0, True) for f in self.files]

    def _run_in_thread(self) -> None:
        failure: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(self._main())
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=target, name="modelload-transfer", daemon=True)
        thread.start()
        thread.join()
        if failure:
            raise failure[0]

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[_File, int] | None] = asyncio.Queue()
        unfinished = len(self.files)
        all_done = asyncio.Event()

        def finished(f: _File) -> None:
            nonlocal unfinished
            unfinished -= 1
            if unfinished == 0:
                all_done.set()

        async def start(f: _File) -> None:
            """Take the file's lock (waiting while another process holds it), then
            either skip it (already there) or queue its missing chunks."""
            r = f.request
            if r.lock is not None:
                f.lock = filelock.FileLock(r.lock, thread_local=False)
                while True:
                    try:
                        f.lock.acquire(blocking=False)
                        break
                    except filelock.Timeout:
                        await asyncio.sleep(_LOCK_POLL)
            if r.present is not None and await loop.run_in_executor(self.io_pool, r.present):
                f.result = FileResult(r.sha256, 0, 0, True)
                self._tick(r.size)
                self._release(f)
                finished(f)
                return
            await self._check_source_size(f)
            await loop.run_in_executor(self.io_pool, lambda: f.open(resume=True))
            self._tick(f.resumed)
            self._drain_hash(f)
            if f.remaining == 0:
                await self._finish(f, queue)
                if f.result is not None:
                    finished(f)
                return
            for index in f.missing():
                queue.put_nowait((f, index))

        async def worker() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                f, index = item
                size = await self._fetch_range(f, index)
                await loop.run_in_executor(self.io_pool, f.record, index)
                f.downloaded += size
                f.done[index] = 1
                f.remaining -= 1
                self._tick(size)
                if f.remaining == 0:
                    await self._finish(f, queue)
                    if f.result is not None:
                        finished(f)

        if not self.files:
            return
        tasks = [asyncio.ensure_future(start(f)) for f in self.files]
        tasks += [asyncio.ensure_future(worker()) for _ in range(self.settings.concurrency)]
        waiter = asyncio.ensure_future(all_done.wait())
        try:
            running: set[asyncio.Future[None]] = {*tasks, waiter}
            while not all_done.is_set():
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is not waiter and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            for _ in range(self.settings.concurrency):
                queue.put_nowait(None)
            await asyncio.gather(*tasks)
        finally:
            waiter.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, waiter, return_exceptions=True)

    # -- pieces -----------------------------------------------------------------

    def _tick(self, nbytes: int) -> None:
        if nbytes <= 0:
            return
        self.done_bytes += nbytes
        if self.progress is not None:
            self.progress(self.done_bytes, self.total)

    def _release(self, f: _File) -> None:
        if f.lock is not None and f.lock.is_locked:
            f.lock.release()

    def _feed_hash(self, f: _File, offset: int, pieces: Sequence[bytes], size: int) -> None:
        """Bytes ``[offset, offset + size)`` are written: hash them now if they come next,
        else keep them in memory (within the budget) or leave them to be read back."""
        if offset + size <= f.hash_pos:
            return  # written again by a retry; already hashed
        if offset < f.hash_pos:  # a retry split the range differently: keep the new part
            data = memoryview(b"".join(pieces))[f.hash_pos - offset :]
            pieces, size, offset = [data], len(data), f.hash_pos
        if offset == f.hash_pos:
            f.hash_future = self.hash_pool.submit(_hash_pieces, f.hasher, pieces)
            f.hash_pos += size
            self._drain_hash(f)
            return
        old = f.stash.pop(offset, None)
        if old is not None:
            f.stash_bytes -= sum(len(p) for p in old)
        if f.stash_bytes + size <= self.stash_budget:
            f.stash[offset] = pieces
            f.stash_bytes += size
        else:
            f.spilled[offset] = size

    def _drain_hash(self, f: _File) -> None:
        """Queue hashing of whatever continues the hashed prefix, in order."""
        while True:
            pieces = f.stash.pop(f.hash_pos, None)
            if pieces is not None:
                size = sum(len(p) for p in pieces)
                f.stash_bytes -= size
                f.hash_future = self.hash_pool.submit(_hash_pieces, f.hasher, pieces)
            else:
                size = f.spilled.pop(f.hash_pos, 0)
                if not size:
                    return
                start = f.hash_pos
                f.hash_future = self.hash_pool.submit(self._hash_span, f, start, start + size)
            f.hash_pos += size

    def _hash_span(self, f: _File, start: int, end: int) -> None:
        view = memoryview(self.hash_buffer)
        offset = start
        while offset < end:
            want = min(_HASH_BLOCK, end - offset)
            if hasattr(os, "preadv"):
                n = os.preadv(f.fd, [view[:want]], offset)
            else:
                data = os.pread(f.fd, want, offset)
                n = len(data)
                view[:n] = data
            if n <= 0:
                raise CacheError(f"{f.request.dest}: file shorter than expected while hashing")
            f.hasher.update(view[:n])
            offset += n

    async def _pieces(self, path: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes of ``[start, end)``: streamed, or read whole by ``_cat_file`` /
        ``cat_file`` (in the read thread pool) for backends without a streamer."""
        if self.streamer is not None:
            async with contextlib.aclosing(self.streamer(self.fs, path, start, end)) as stream:
                async for piece in stream:
                    yield piece
        elif self.is_async:
            yield await self.fs._cat_file(path, start=start, end=end)
        else:
            loop = asyncio.get_running_loop()
            yield await loop.run_in_executor(self.read_pool, self.fs.cat_file, path, start, end)

    async def _copy_range(self, f: _File, start: int, end: int) -> int:
        """Copy ``[start, end)`` of the source into ``f`` at its offsets."""
        loop = asyncio.get_running_loop()
        pending: list[bytes] = []
        pending_size = 0
        offset = start
        stream = self._pieces(f.request.path, start, end)
        async with contextlib.aclosing(stream):
            async for piece in stream:
                if offset + pending_size + len(piece) > end:
                    raise SourceError(
                        f"cannot download {f.request.uri!r}: asked for bytes {start}-{end - 1} "
                        f"({end - start} bytes), the server sent more; it does not honour "
                        "HTTP Range requests"
                    )
                pending.append(piece)
                pending_size += len(piece)
                if pending_size >= WRITE_BLOCK:
                    await loop.run_in_executor(self.io_pool, f.write, pending, offset)
                    self._feed_hash(f, offset, pending, pending_size)
                    offset += pending_size
                    pending, pending_size = [], 0
        if pending:
            await loop.run_in_executor(self.io_pool, f.write, pending, offset)
            self._feed_hash(f, offset, pending, pending_size)
            offset += pending_size
        if offset < end:
            raise ShortRead(
                f"short read: bytes {start}-{end - 1} should be {end - start} bytes, "
                f"got {offset - start}"
            )
        return end - start

    async def _retrying(self, uri: str, once: Callable[[], Awaitable[T]]) -> T:
        """``await once()``, retried with backoff on transient errors; errors name ``uri``."""
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            try:
                return await once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt + 1 >= attempts or not is_transient(exc):
                    _raise_source_error(exc, uri, attempt + 1)
                await asyncio.sleep(_backoff(attempt))
        raise AssertionError("unreachable")

    async def _check_source_size(self, f: _File) -> None:
        """A pinned file whose size at the source differs from the manifest is refused
        before any byte is fetched (ranged reads alone would never see appended bytes)."""
        r = f.request
        if r.sha256 is None:  # a bare file: its size was just read from the source
            return
        timeout = self.settings.read_timeout

        async def info() -> dict[str, object]:
            if self.is_async:
                found: dict[str, object] = await asyncio.wait_for(self.fs._info(r.path), timeout)
                return found
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.read_pool, self.fs.info, r.path)

        size = (await self._retrying(r.uri, info)).get("size")
        if isinstance(size, int) and size != r.size:
            raise IntegrityError(
                f"{r.uri}: size mismatch: manifest pins {r.size} bytes, the source has "
                f"{size}; the stored model was changed after `modelload pack`"
            )

    async def _fetch_range(self, f: _File, index: int) -> int:
        """Download chunk ``index`` with retries; returns its size."""
        start, end = f.span(index)
        timeout = self.settings.read_timeout

        async def once() -> int:
            try:
                return await asyncio.wait_for(self._copy_range(f, start, end), timeout)
            except asyncio.TimeoutError:
                raise StalledRead(
                    f"no complete answer for bytes {start}-{end - 1} within the read "
                    f"timeout of {timeout:g}s (MODELLOAD_READ_TIMEOUT)"
                ) from None

        return await self._retrying(f.request.uri, once)

    async def _finish(self, f: _File, queue: asyncio.Queue[tuple[_File, int] | None]) -> None:
        """All chunks are in: check the digest, commit, release the lock."""
        loop = asyncio.get_running_loop()
        r = f.request
        self._drain_hash(f)
        if f.hash_pos < r.size:  # pieces a retry split differently: read them back
            f.hash_future = self.hash_pool.submit(self._hash_span, f, f.hash_pos, r.size)
            f.hash_pos = r.size
        f.stash.clear()
        f.stash_bytes = 0
        if f.hash_future is not None:
            await asyncio.wrap_future(f.hash_future)
        found = f.hasher.hexdigest()
        if r.sha256 is not None and found != r.sha256:
            if f.resumed and not f.retried_clean:
                # chunks kept from an earlier run were bad (e.g. lost in a power cut):
                # start this file over once, from nothing
                f.retried_clean = True
                f.close()
                await loop.run_in_executor(self.io_pool, lambda: f.open(resume=False))
                self.done_bytes -= r.size
                for index in f.missing():
                    queue.put_nowait((f, index))
                return
            f.close()
            for stale in (r.dest, r.journal):
                if stale is not None:
                    stale.unlink(missing_ok=True)
            self._release(f)
            raise IntegrityError(
                f"{r.uri}: sha256 mismatch: manifest pins {r.sha256}, downloaded file has "
                f"{found}; the stored model is corrupt or was changed after `modelload pack`"
            )
        f.close()
        if r.commit is not None:
            try:
                await loop.run_in_executor(self.io_pool, r.commit, r.dest, found)
            except OSError as exc:
                raise _disk_error(exc, r.uri, r.dest) from exc
        self._release(f)
        f.result = FileResult(found, f.downloaded, f.resumed, False)


def _raise_source_error(exc: BaseException, uri: str, attempts: int) -> None:
    """Re-raise ``exc`` as a modelload error naming ``uri`` (and the attempts made)."""
    if isinstance(exc, ModelLoadError):
        raise exc
    try:
        with source_errors(uri, "download"):
            raise exc
    except ModelLoadError as err:
        if attempts > 1:
            err.args = (f"{err} (gave up after {attempts} attempts)",)
        raise


def download(
    fs: fsspec.AbstractFileSystem,
    requests: Sequence[FileRequest],
    settings: Settings,
    *,
    progress: TransferProgress | None = None,
) -> list[FileResult]:
    """Download every request concurrently; see the module docstring.

    Raises :class:`~modelload.errors.SourceError` (and subclasses) when the source
    fails after the retries, :class:`~modelload.errors.IntegrityError` on a digest
    mismatch, :class:`~modelload.errors.CacheError` when the local disk refuses a write.
    Whatever happens, nothing is committed unless its sha256 matched.
    """
    return _Engine(fs, requests, settings, progress).run()
