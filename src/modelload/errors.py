"""One exception hierarchy for everything that can go wrong while loading a model.

Every error is a :class:`ModelLoadError`. Messages name the URI or file involved and
say what was expected and what was found, so a person can act on them without a
traceback. ``transient`` tells callers (the server's retry loop, the transfer
engine) whether trying again may help.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "CompatibilityError",
    "IntegrityError",
    "LoaderError",
    "ManifestError",
    "MissingExtraError",
    "ModelLoadError",
    "OfflineError",
    "SourceError",
    "SourceNotAllowedError",
    "SourceNotFoundError",
    "SourceUnavailableError",
    "UnknownFormatError",
]


class ModelLoadError(Exception):
    """Base class of every modelload error."""

    #: True when retrying the same operation later may succeed.
    transient: bool = False


class SourceError(ModelLoadError):
    """The model's source could not be read (bad URI, missing, unreachable, denied)."""


class SourceNotFoundError(SourceError):
    """The URI (or a file the manifest names) does not exist at the source."""


class SourceUnavailableError(SourceError):
    """The source did not answer properly: unreachable host, 5xx, reset, timeout."""

    transient = True


class SourceNotAllowedError(SourceError):
    """The URI is outside ``MODELLOAD_ALLOWED_SOURCES``."""


class MissingExtraError(SourceError):
    """The URI's protocol needs an optional dependency that is not installed."""


class OfflineError(SourceError):
    """Offline mode was requested but the model is not in the local cache."""


class CacheError(ModelLoadError):
    """The local cache could not be written or read (disk full, permissions, corruption)."""


class ManifestError(ModelLoadError):
    """``modelload.toml`` is missing a field, has a wrong type, or is not TOML."""


class IntegrityError(ModelLoadError):
    """A file's size or sha256 differs from what the manifest pins."""


class CompatibilityError(ModelLoadError):
    """The model's ``[requires]`` are not met by this environment."""


class LoaderError(ModelLoadError):
    """The model file could not be turned into a model object."""


class UnknownFormatError(LoaderError):
    """No loader is registered for the requested format."""
