"""Registry of loaders by model format: ``joblib``, ``pickle``, ``onnx``, ``skops``,
``module:callable``, and anything registered under the ``modelload.loaders`` entry point.

A loader is a callable ``(entry: Path, model_dir: Path) -> model``. Like fsspec's
protocol registry, adding a backend is a registration, not an ``if`` branch.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelload.errors import LoaderError, UnknownFormatError

__all__ = [
    "Loader",
    "available_formats",
    "format_for_path",
    "get_loader",
    "load",
    "register_loader",
]

Loader = Callable[[Path, Path], Any]
ENTRY_POINT_GROUP = "modelload.loaders"

_registry: dict[str, Loader] = {}
_extensions: dict[str, str] = {}
_entry_points_loaded = False
_lock = threading.Lock()


def register_loader(
    format: str, loader: Loader, *, extensions: tuple[str, ...] = (), replace: bool = False
) -> None:
    """Register ``loader`` for ``format`` (and optionally the file extensions that imply it)."""
    if ":" in format:
        raise ValueError(f"format {format!r} must not contain ':' (reserved for module:callable)")
    with _lock:
        if format in _registry and not replace:
            raise ValueError(f"a loader for format {format!r} is already registered")
        _registry[format] = loader
        for ext in extensions:
            _extensions[ext.lower().lstrip(".")] = format


def format_for_path(path: str | Path) -> str | None:
    """The format implied by a file name's extension, or None."""
    name = str(path).lower()
    for ext, fmt in sorted(_extensions.items(), key=lambda kv: -len(kv[0])):
        if name.endswith("." + ext):
            return fmt
    return None


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registry:
            continue
        try:
            _registry[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must not break the others
            _registry[ep.name] = _broken(ep.name, ep.value, exc)


def _broken(name: str, target: str, exc: BaseException) -> Loader:
    def loader(entry: Path, model_dir: Path) -> Any:
        raise LoaderError(
            f"the loader plugin {name!r} ({target}) failed to import: {type(exc).__name__}: {exc}"
        )

    return loader


def available_formats() -> list[str]:
    _load_entry_points()
    return sorted(_registry)


def _callable_loader(spec: str) -> Loader:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UnknownFormatError(f"format {spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LoaderError(
            f"format {spec!r}: cannot import module {module_name!r} ({exc}); is it installed "
            "in this image?"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoaderError(f"format {spec!r}: {module_name} has no attribute {attr!r}") from None
    if not callable(target):
        raise LoaderError(f"format {spec!r}: {attr!r} is not callable")

    def loader(entry: Path, model_dir: Path) -> Any:
        return target(model_dir)

    return loader


def get_loader(format: str) -> Loader:
    """The loader for ``format``; ``module:callable`` formats import the callable."""
    if ":" in format:
        return _callable_loader(format)
    loader = _registry.get(format)
    if loader is None:
        _load_entry_points()
        loader = _registry.get(format)
    if loader is None:
        raise UnknownFormatError(
            f"unknown model format {format!r}; available: {', '.join(available_formats())}, "
            "or 'package.module:function' for a custom loader"
        )
    return loader


def load(format: str, entry: Path, model_dir: Path) -> Any:
    """Load the model at ``entry`` with the loader for ``format``; errors become LoaderError."""
    loader = get_loader(format)
    try:
        return loader(entry, model_dir)
    except LoaderError:
        raise
    except ModuleNotFoundError as exc:
        raise LoaderError(
            f"cannot load {str(entry)!r} as {format}: it needs module {exc.name!r}, which is "
            "not installed in this image; add it to the image or to the manifest's [requires]"
        ) from exc
    except Exception as exc:
        raise LoaderError(
            f"cannot load {str(entry)!r} as {format}: {type(exc).__name__}: {exc}"
        ) from exc


# -- built-in loaders -------------------------------------------------------------


def _load_joblib(entry: Path, model_dir: Path) -> Any:
    import joblib

    return joblib.load(entry)


def _load_pickle(entry: Path, model_dir: Path) -> Any:
    with open(entry, "rb") as handle:
        return pickle.load(handle)


def _import_for(module: str, format: str, extra: str, entry: Path) -> Any:
    """Import ``module`` for a format whose library comes from a modelload extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise LoaderError(
            f"cannot load {str(entry)!r}: the {format} format needs {module.split('.')[0]}; "
            f"pip install 'modelload[{extra}]'"
        ) from exc


def _load_onnx(entry: Path, model_dir: Path) -> Any:
    onnxruntime = _import_for("onnxruntime", "onnx", "onnx", entry)
    return onnxruntime.InferenceSession(str(entry), providers=["CPUExecutionProvider"])


def _load_skops(entry: Path, model_dir: Path) -> Any:
    sio = _import_for("skops.io", "skops", "skops", entry)
    untrusted = sio.get_untrusted_types(file=entry)
    if untrusted:
        # skops refuses unknown types by default; the manifest's sha256 pins the file,
        # so the types in it are the ones the model's author packed.
        return sio.load(entry, trusted=untrusted)
    return sio.load(entry)


register_loader("joblib", _load_joblib, extensions=("joblib", "jl", "joblib.gz", "joblib.z"))
register_loader("pickle", _load_pickle, extensions=("pkl", "pickle"))
register_loader("onnx", _load_onnx, extensions=("onnx",))
register_loader("skops", _load_skops, extensions=("skops",))
