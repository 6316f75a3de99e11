"""modelload: serve ML models with the model load pattern.

The server image and the model are versioned separately: the server starts, fetches
the model named by ``MODELLOAD_MODEL_URI``, checks it against the image's libraries,
and reports ready only once it is loaded. Everything public is re-exported here.
"""

from __future__ import annotations

__version__ = "0.1.0"

from modelload.app import create_app
from modelload.compat import CompatReport, EnvironmentProfile
from modelload.errors import (
    CacheError,
    CompatibilityError,
    IntegrityError,
    LoaderError,
    ManifestError,
    MissingExtraError,
    ModelLoadError,
    OfflineError,
    SourceError,
    SourceNotAllowedError,
    SourceNotFoundError,
    SourceUnavailableError,
    UnknownFormatError,
)
from modelload.loader import LoadedModel, ModelLoader, load_model
from modelload.loaders import register_loader
from modelload.manifest import Manifest, pack
from modelload.settings import Settings

__all__ = [
    "CacheError",
    "CompatReport",
    "CompatibilityError",
    "EnvironmentProfile",
    "IntegrityError",
    "LoadedModel",
    "LoaderError",
    "Manifest",
    "ManifestError",
    "MissingExtraError",
    "ModelLoadError",
    "ModelLoader",
    "OfflineError",
    "Settings",
    "SourceError",
    "SourceNotAllowedError",
    "SourceNotFoundError",
    "SourceUnavailableError",
    "UnknownFormatError",
    "__version__",
    "create_app",
    "load_model",
    "pack",
    "register_loader",
]
