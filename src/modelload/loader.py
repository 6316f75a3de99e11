"""ModelLoader: the load state machine, from a URI to a model object in memory.

Phases, each timed: ``resolve`` (URI -> source, read the manifest), ``check`` (the
manifest's ``[requires]`` against this environment, *before* any large download),
``fetch`` (files into a local snapshot), ``verify`` (every pinned file present and
intact), ``load`` (the format's loader). Any failure raises a
:class:`~modelload.errors.ModelLoadError` and nothing is returned.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelload import compat, fetch, loaders
from modelload.compat import CompatReport, EnvironmentProfile
from modelload.errors import ModelLoadError, SourceError
from modelload.fetch import ProgressCallback, Snapshot
from modelload.manifest import Manifest
from modelload.settings import Settings
from modelload.sources import Location, locate, resolve

__all__ = ["LoadedModel", "ModelLoader", "load_model", "read_manifest"]

logger = logging.getLogger("modelload")
PHASES = ("resolve", "check", "fetch", "verify", "load")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model in memory, with what it is and where it came from."""

    model: Any
    manifest: Manifest | None
    digest: str
    source_uri: str
    local_dir: Path
    entry: Path
    format: str
    compat: CompatReport
    timings: Mapping[str, float]

    @property
    def name(self) -> str:
        return self.manifest.name if self.manifest else self.entry.stem

    @property
    def version(self) -> str:
        return self.manifest.version if self.manifest else "unversioned"

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description, served at ``GET /metadata``."""
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "source_uri": self.source_uri,
            "format": self.format,
            "manifest": self.manifest.to_dict() if self.manifest else None,
            "compat": self.compat.to_dict(),
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
        }


def read_manifest(location: Location) -> Manifest | None:
    """The manifest :func:`~modelload.sources.locate` read, parsed; None for a bare file."""
    if location.manifest_path is None or location.manifest_bytes is None:
        return None
    uri = location.source.display(location.manifest_path)
    return Manifest.parse(location.manifest_bytes, origin=uri)


class ModelLoader:
    """Loads the model named by a URI, following :class:`~modelload.settings.Settings`.

    ``ModelLoader(uri, cache_dir=..., compat="warn", storage_options={...})``; any
    keyword is a :class:`Settings` field and wins over the ``MODELLOAD_*`` environment.
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        settings: Settings | None = None,
        progress: ProgressCallback | None = None,
        profile: EnvironmentProfile | None = None,
        **overrides: Any,
    ) -> None:
        base = settings or Settings.from_env(**{k: v for k, v in overrides.items()})
        if settings is not None and overrides:
            base = settings.replace(**{k: v for k, v in overrides.items() if v is not None})
        uri = uri or base.model_uri
        if not uri:
            raise SourceError("no model URI: set MODELLOAD_MODEL_URI or pass the URI")
        self.uri = uri
        self.settings = base.replace(model_uri=uri)
        self.progress = progress
        self._profile = profile
        self.phase: str | None = None
        self.timings: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        self.phase = phase
        start = time.perf_counter()
        logger.info("model load phase started", extra={"phase": phase, "uri": self.uri})
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.timings[phase] = elapsed
            logger.info(
                "model load phase %s took %.3fs",
                phase,
                elapsed,
                extra={"phase": phase, "uri": self.uri, "seconds": elapsed},
            )

    def load(self) -> LoadedModel:
        """Run every phase; return the loaded model or raise a ModelLoadError."""
        with self._lock:
            self.timings = {}
            try:
                return self._load()
            except ModelLoadError as exc:
                logger.error(
                    "model load failed in phase %s: %s",
                    self.phase,
                    exc,
                    extra={"phase": self.phase, "uri": self.uri},
                )
                raise
            finally:
                self.phase = None

    def _load(self) -> LoadedModel:
        settings = self.settings
        snapshot: Snapshot
        if settings.offline:
            with self._timed("resolve"):
                snapshot = fetch.open_offline(self.uri, settings)
            manifest = snapshot.manifest
            with self._timed("check"):
                report = self._check(manifest)
            self.timings["fetch"] = 0.0
        else:
            with self._timed("resolve"):
                location = locate(resolve(self.uri, settings))
                manifest = read_manifest(location)
            if manifest is None:
                warnings.warn(
                    f"{self.uri} has no modelload.toml: nothing is pinned (no sha256, no "
                    "[requires]); run `modelload pack` on its directory",
                    UserWarning,
                    stacklevel=3,
                )
            with self._timed("check"):
                report = self._check(manifest)
            with self._timed("fetch"):
                snapshot = fetch.fetch_model(location, manifest, settings, progress=self.progress)
        with self._timed("verify"):
            fetch.verify_snapshot(snapshot)
        fmt = manifest.format if manifest else loaders.format_for_path(snapshot.entry)
        if fmt is None:
            from modelload.errors import UnknownFormatError

            raise UnknownFormatError(
                f"cannot tell the format of {self.uri!r} from its extension; pack it with "
                "`modelload pack --format ...` or rename it (.joblib, .pkl, .onnx, .skops)"
            )
        with self._timed("load"):
            model = loaders.load(fmt, snapshot.entry, snapshot.local_dir)
        return LoadedModel(
            model=model,
            manifest=manifest,
            digest=snapshot.digest,
            source_uri=self.uri,
            local_dir=snapshot.local_dir,
            entry=snapshot.entry,
            format=fmt,
            compat=report,
            timings=dict(self.timings),
        )

    def _check(self, manifest: Manifest | None) -> CompatReport:
        profile = self._profile or EnvironmentProfile.current()
        if manifest is None:
            return CompatReport(profile.name)
        report = compat.check(manifest.requires, profile)
        compat.enforce(report, self.settings.compat, f"{manifest.label} ({self.uri})")
        return report


def load_model(uri: str | None = None, **overrides: Any) -> LoadedModel:
    """Load the model at ``uri`` (or ``MODELLOAD_MODEL_URI``) in one call."""
    return ModelLoader(uri, **overrides).load()
