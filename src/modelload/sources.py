"""Turn a model URI into an fsspec filesystem and path, and find what the URI points at.

A URI may be a local path, ``file://``, ``memory://``, ``s3://``, ``gs://``,
``http(s)://`` or any other protocol fsspec has installed. It may name a directory
holding ``modelload.toml``, the manifest itself, or a single model file.

This module also owns the allowed-source policy and the translation of backend
exceptions (aiohttp, botocore, gcsfs, OSError) into :mod:`modelload.errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import posixpath
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec

from modelload.errors import (
    MissingExtraError,
    ModelLoadError,
    SourceError,
    SourceNotAllowedError,
    SourceNotFoundError,
    SourceUnavailableError,
)
from modelload.settings import Settings

__all__ = [
    "MANIFEST_NAME",
    "Location",
    "Source",
    "is_transient",
    "locate",
    "resolve",
    "source_errors",
]

MANIFEST_NAME = "modelload.toml"

#: protocol -> the modelload extra that installs it
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
_LOCAL = {"file", "local", "memory"}

_TRANSIENT_NAMES = {
    "ClientConnectorError",
    "ClientConnectionError",
    "ClientOSError",
    "ClientPayloadError",
    "ServerDisconnectedError",
    "ServerTimeoutError",
    "ContentLengthError",
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ResponseStreamingError",
    "IncompleteReadError",
    "TransportError",
    "TimeoutError",
    "RemoteProtocolError",
    "ReadError",
    "ConnectError",
}
_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EPIPE,
}


@dataclasses.dataclass(frozen=True)
class Source:
    """A resolved URI: the filesystem that reads it and the path inside that filesystem."""

    uri: str
    fs: fsspec.AbstractFileSystem
    path: str
    protocol: str

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    def join(self, *parts: str) -> str:
        """Join relative ``parts`` (always ``/``-separated) onto ``self.path``."""
        return join_path(self.path, *parts)

    def display(self, path: str) -> str:
        """A URI a person can paste for ``path`` inside this source."""
        return display_uri(self, path)


@dataclasses.dataclass(frozen=True)
class Location:
    """What a URI points at: a model directory, a manifest, or a single file."""

    source: Source
    root: str
    manifest_path: str | None
    entry_path: str | None
    #: the manifest's bytes when :func:`locate` already read them
    manifest_bytes: bytes | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> str:
        if self.manifest_path is not None:
            return "manifest"
        return "file"

    def uri_of(self, relpath: str) -> str:
        return self.source.display(join_path(self.root, relpath))


def join_path(base: str, *parts: str) -> str:
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.lstrip('/')}"
    return out


def display_uri(source: Source, path: str) -> str:
    if source.protocol in ("http", "https") or "://" in path:
        return path
    if source.is_local:
        return path
    return f"{source.protocol}://{path}"


def _protocol_of(uri: str) -> str:
    if "://" not in uri:
        return "file"
    return uri.split("://", 1)[0].lower()


def check_allowed(uri: str, allowed: tuple[str, ...]) -> None:
    """Raise :class:`SourceNotAllowedError` unless ``uri`` matches the allow-list.

    Entries are either a protocol (``s3``, ``file``) or a URI prefix
    (``s3://models-prod/``). An empty list allows everything.
    """
    if not allowed:
        return
    protocol = _protocol_of(uri)
    for entry in allowed:
        if "://" in entry:
            if uri.startswith(entry):
                return
        elif entry.lower() == protocol:
            return
    raise SourceNotAllowedError(
        f"model URI {uri!r} is not allowed by MODELLOAD_ALLOWED_SOURCES "
        f"({', '.join(allowed)}); add its protocol or prefix to the list"
    )


def _options_for(protocol: str, storage_options: Mapping[str, Any]) -> dict[str, Any]:
    """Storage options for ``protocol``.

    ``storage_options`` is either flat (applied to every remote protocol) or keyed by
    protocol (``{"s3": {...}, "gs": {...}}``). Local and memory filesystems get none.
    """
    nested = storage_options.get(protocol)
    if isinstance(nested, Mapping):
        return dict(nested)
    if protocol in _LOCAL:
        return {}
    known = set(fsspec.available_protocols())
    return {k: v for k, v in storage_options.items() if not (k in known and isinstance(v, Mapping))}


def _with_transfer_defaults(
    protocol: str, options: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """Connect/read timeouts and a connection pool as large as the transfer concurrency,
    unless the storage options already set them."""
    if protocol in ("s3", "s3a"):
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", settings.connect_timeout)
        config.setdefault("read_timeout", settings.read_timeout)
        config.setdefault("max_pool_connections", max(10, settings.concurrency))
        options["config_kwargs"] = config
    elif protocol in ("http", "https"):
        client = dict(options.get("client_kwargs") or {})
        if "timeout" not in client:
            import aiohttp

            client["timeout"] = aiohttp.ClientTimeout(
                total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
            )
        options["client_kwargs"] = client
    return options


def resolve(uri: str, settings: Settings | None = None) -> Source:
    """Map ``uri`` to ``Source(fs, path)``; no network access happens here."""
    settings = settings or Settings.from_env()
    if not uri or not uri.strip():
        raise SourceError("empty model URI: set MODELLOAD_MODEL_URI or pass model_uri")
    uri = uri.strip()
    check_allowed(uri, settings.allowed_sources)
    protocol = _protocol_of(uri)
    if protocol in ("file", "local"):
        raw = uri.split("://", 1)[1] if "://" in uri else uri
        path = str(Path(os.path.expanduser(raw)).absolute())
        return Source(uri=uri, fs=fsspec.filesystem("file"), path=path, protocol="file")
    options = _with_transfer_defaults(
        protocol, _options_for(protocol, settings.storage_options), settings
    )
    try:
        fs, path = fsspec.url_to_fs(uri, **options)
    except ImportError as exc:
        extra = _EXTRAS.get(protocol)
        hint = (
            f"pip install 'modelload[{extra}]'"
            if extra
            else "install the fsspec implementation for it"
        )
        raise MissingExtraError(
            f"cannot read {uri!r}: the {protocol}:// protocol needs an optional "
            f"dependency that is not installed ({exc}); {hint}"
        ) from exc
    except ValueError as exc:
        if "protocol" in str(exc).lower():
            raise SourceError(
                f"cannot read {uri!r}: unknown protocol {protocol!r}; known protocols: "
                "local path, file, memory, http, https, s3, gs and installed fsspec ones"
            ) from exc
        raise SourceError(f"cannot read {uri!r}: {exc}") from exc
    except TypeError as exc:
        raise SourceError(
            f"cannot read {uri!r}: bad storage options for {protocol}:// "
            f"(MODELLOAD_STORAGE_OPTIONS): {exc}"
        ) from exc
    if protocol in ("http", "https"):
        path = uri  # fsspec's http filesystem keeps the whole URL as the path
    return Source(uri=uri, fs=fs, path=path, protocol=protocol)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: 5xx, 408/429, resets, timeouts, short reads, or a
    transient error behind a FileNotFoundError (fsspec's http refused connection)."""
    if isinstance(exc, ModelLoadError):
        return exc.transient
    return _is_transient(exc) or _transient_cause(exc) is not None


def _is_transient(exc: BaseException) -> bool:
    for klass in type(exc).__mro__:
        if klass.__name__ in _TRANSIENT_NAMES:
            return True
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    if isinstance(status, int) and (status >= 500 or status in (408, 429)):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def _transient_cause(exc: BaseException) -> BaseException | None:
    """A transient error hidden behind ``exc`` (fsspec's http raises FileNotFoundError
    for a refused connection), or None."""
    seen = 0
    current: BaseException | None = exc.__cause__ or exc.__context__
    while current is not None and seen < 8:
        if _is_transient(current):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


@contextlib.contextmanager
def source_errors(uri: str, action: str = "read") -> Iterator[None]:
    """Translate backend exceptions raised inside the block into modelload errors."""
    try:
        yield
    except ModelLoadError:
        raise
    except FileNotFoundError as exc:
        cause = _transient_cause(exc)
        if cause is not None:
            raise SourceUnavailableError(
                f"cannot {action} {uri!r}: source unreachable or failing "
                f"({type(cause).__name__}: {cause})"
            ) from exc
        raise SourceNotFoundError(f"cannot {action} {uri!r}: not found at the source") from exc
    except PermissionError as exc:
        raise SourceError(
            f"cannot {action} {uri!r}: permission denied ({exc}); check the credentials "
            "in MODELLOAD_STORAGE_OPTIONS or the environment"
        ) from exc
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        if _is_transient(exc):
            raise SourceUnavailableError(
                f"cannot {action} {uri!r}: source unreachable or failing ({detail})"
            ) from exc
        status = getattr(exc, "status", None) or getattr(exc, "code", None)
        if status == 404:
            raise SourceNotFoundError(f"cannot {action} {uri!r}: not found (HTTP 404)") from exc
        if status in (401, 403):
            raise SourceError(
                f"cannot {action} {uri!r}: access denied (HTTP {status}); check credentials"
            ) from exc
        raise SourceError(f"cannot {action} {uri!r}: {detail}") from exc


def _read_if_exists(source: Source, path: str) -> bytes | None:
    """The bytes of the (small) file at ``path``, or None when there is none there.

    One GET instead of a HEAD then a GET: a warm restart pays one round trip to the
    source. Connection failures raise instead of answering None.
    """
    with source_errors(source.display(path), "read manifest"):
        try:
            return bytes(source.fs.cat_file(path))
        except (NotADirectoryError, IsADirectoryError):
            return None
        except FileNotFoundError as exc:
            if _transient_cause(exc) is not None:
                raise
            return None


def locate(source: Source) -> Location:
    """Find the manifest or the single model file that ``source`` points at."""
    fs, path = source.fs, source.path.rstrip("/") or source.path
    if posixpath.basename(path) == MANIFEST_NAME:
        data = _read_if_exists(source, path)
        if data is None:
            raise SourceNotFoundError(f"manifest {source.uri!r} does not exist")
        return Location(source, posixpath.dirname(path), path, None, data)
    candidate = join_path(path, MANIFEST_NAME)
    data = _read_if_exists(source, candidate)
    if data is not None:
        return Location(source, path, candidate, None, data)
    with source_errors(source.uri, "read"):
        try:
            info = fs.info(path)
        except FileNotFoundError:
            info = None
    if info is None:
        raise SourceNotFoundError(
            f"model URI {source.uri!r} does not exist (no file there, and no "
            f"{MANIFEST_NAME} under it)"
        )
    if info.get("type") == "directory":
        from modelload.errors import ManifestError

        raise ManifestError(
            f"model directory {source.uri!r} has no {MANIFEST_NAME}; run "
            f"`modelload pack {source.uri}` or point the URI at the model file"
        )
    return Location(source, posixpath.dirname(path), None, path)
