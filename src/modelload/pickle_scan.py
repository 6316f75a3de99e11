"""Find the modules a pickle or joblib file refers to, without executing any of it.

The file is run through a *symbolic* pickle machine: every global the stream names is
recorded and replaced by an inert placeholder, so no model code is imported or called.
joblib's raw numpy array blocks (written between pickle frames) are skipped using the
shape and dtype recorded in each ``NumpyArrayWrapper``. The modules found are mapped
to installed distributions and pinned, which is how ``modelload pack`` fills
``[requires]``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import math
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from modelload.errors import ManifestError

__all__ = ["infer_requirements", "referenced_modules"]

# modules whose globals are part of the container format, not of the model
_CONTAINER_MODULES = {"joblib.numpy_pickle", "joblib._numpy_pickle_compat"}


class _Placeholder:
    """Stands in for any object the pickle would build; accepts every mutation."""

    _module = ""
    _qualname = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass

    def __reduce__(self) -> Any:  # pragma: no cover - never pickled
        raise TypeError("placeholder")


class _ScanUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """Pure-Python unpickler whose find_class never imports anything."""

    def __init__(self, file: IO[bytes], found: set[str]) -> None:
        super().__init__(file)
        self._handle = file
        self._found = found
        self._classes: dict[tuple[str, str], type[_Placeholder]] = {}
        self.dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
        self.dispatch[pickle.BUILD[0]] = _ScanUnpickler._load_build

    def find_class(self, module: str, name: str) -> Any:
        self._found.add(module)
        key = (module, name)
        if key not in self._classes:
            self._classes[key] = type(
                name.replace(".", "_"), (_Placeholder,), {"_module": module, "_qualname": name}
            )
        return self._classes[key]

    def persistent_load(self, pid: Any) -> Any:
        return _Placeholder()

    def _load_build(self) -> None:
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        if isinstance(inst, _Placeholder):
            inst.__setstate__(state)
            if inst._module.startswith("joblib.") and inst._qualname == "NumpyArrayWrapper":
                self._skip_joblib_array(state)
        # BUILD on anything else (plain dict/list states) needs no action for a scan

    def _skip_joblib_array(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ValueError("joblib NumpyArrayWrapper without a state dict")
        shape = tuple(state.get("shape", ()))
        itemsize, hasobject = _dtype_info(state.get("dtype"))
        if hasobject:
            nested = _ScanUnpickler(self._handle, self._found)
            nested.load()
            return
        if state.get("numpy_array_alignment_bytes") is not None:
            pad = self.read(1)
            if pad:
                self.read(int.from_bytes(pad, "little"))
        count = math.prod(int(d) for d in shape) if shape else 1
        remaining = count * itemsize
        while remaining > 0:
            block = self.read(min(remaining, 16 * 1024 * 1024))
            if not block:
                raise ValueError("file ends inside a joblib array block")
            remaining -= len(block)


def _dtype_info(dtype: Any) -> tuple[int, bool]:
    """(itemsize, hasobject) of a placeholder ``numpy.dtype(code, align, copy)``."""
    if not isinstance(dtype, _Placeholder) or not dtype.args:
        raise ValueError(f"unexpected dtype in joblib array: {dtype!r}")
    code = str(dtype.args[0])
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    flags = state[-1] if state and isinstance(state[-1], int) else 0
    hasobject = code.startswith("O") or bool(flags & 1)
    elsize = state[5] if len(state) > 5 and isinstance(state[5], int) else -1
    if hasobject:
        return 8, True
    if elsize > 0:
        return elsize, False
    digits = "".join(ch for ch in code if ch.isdigit())
    if not digits:
        raise ValueError(f"cannot tell the item size of dtype {code!r}")
    return int(digits), False


@contextlib.contextmanager
def _open_stream(path: Path) -> Iterator[IO[bytes]]:
    """Open ``path``, decompressing joblib's compressed formats (zlib, gzip, bz2, xz, lzma)."""
    with open(path, "rb") as raw:
        buffered = io.BufferedReader(raw, buffer_size=1024 * 1024)
        try:
            from joblib.compressor import _COMPRESSORS
            from joblib.numpy_pickle_utils import _detect_compressor

            name = _detect_compressor(buffered)
        except ImportError:  # pragma: no cover - joblib internals moved
            name = "not-compressed"
        if name == "compat":
            raise ValueError("joblib < 0.10 file format is not supported; re-save the model")
        if name in _COMPRESSORS:
            yield io.BufferedReader(_COMPRESSORS[name].decompressor_file(buffered))
        else:
            yield buffered


def referenced_modules(path: str | Path) -> set[str]:
    """Every module named by a global in the pickle/joblib file at ``path``."""
    path = Path(path)
    found: set[str] = set()
    try:
        with _open_stream(path) as stream:
            buffered = (
                stream if isinstance(stream, io.BufferedIOBase) else io.BufferedReader(stream)
            )  # type: ignore[arg-type]
            _ScanUnpickler(buffered, found).load()
    except (pickle.UnpicklingError, ValueError, EOFError, IndexError, KeyError) as exc:
        raise ManifestError(
            f"cannot scan {str(path)!r} for the modules it needs: {type(exc).__name__}: {exc}; "
            "pass --requires explicitly and --no-infer"
        ) from exc
    return found


def _pin(name: str, version: str, pin: str) -> str:
    if pin == "exact":
        return f"{name}=={version}"
    try:
        v = Version(version)
    except InvalidVersion:
        return f"{name}=={version}"
    if pin == "minor":
        return f"{name}=={v.major}.{v.minor}.*"
    if pin == "major":
        return f"{name}>={v.major}.{v.minor},<{v.major + 1}"
    raise ManifestError(f"unknown pin policy {pin!r}: expected exact, minor or major")


def infer_requirements(path: str | Path, *, pin: str = "exact") -> list[str]:
    """Pinned requirements (``name==version``) for the third-party modules a pickle uses.

    Standard-library modules and joblib's own container classes are left out. A module
    that belongs to no installed distribution (e.g. ``__main__``) raises
    :class:`ManifestError`, because no image could load such a model.
    """
    modules = referenced_modules(path) - _CONTAINER_MODULES
    top_levels = {m.split(".", 1)[0] for m in modules}
    stdlib = set(sys.stdlib_module_names) | {"__builtin__", "copy_reg"}
    mapping = importlib.metadata.packages_distributions()
    out: dict[str, str] = {}
    unknown = []
    for top in sorted(top_levels - stdlib):
        dists = mapping.get(top)
        if not dists:
            unknown.append(top)
            continue
        for dist in dists:
            name = canonicalize_name(dist)
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
            out[name] = _pin(name, version, pin)
    if unknown:
        raise ManifestError(
            f"{str(path)!r} refers to module(s) {', '.join(unknown)} that belong to no "
            "installed distribution (a class defined in __main__ or a local script?); "
            "move that code into an installable package, or pass --no-infer with --requires"
        )
    return sorted(out.values())
