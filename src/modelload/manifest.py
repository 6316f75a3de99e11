"""The model manifest, ``modelload.toml``: parse, validate, write, and ``pack`` a directory.

The manifest pins every file of a model version by sha256 and size, so the sha256 of
the manifest's own bytes (the *model digest*) names the whole version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from modelload.errors import ManifestError
from modelload.sources import MANIFEST_NAME

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "MANIFEST_NAME",
    "FileEntry",
    "Manifest",
    "Requirements",
    "Signature",
    "TensorSpec",
    "pack",
    "sha256_file",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
V2_DATATYPES = {
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
}
_HASH_BLOCK = 4 * 1024 * 1024


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a local file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class Requirements:
    python: str | None = None
    packages: tuple[str, ...] = ()

    @property
    def parsed(self) -> list[Requirement]:
        return [Requirement(p) for p in self.packages]


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclasses.dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], origin: str) -> Signature:
        """Validate ``{"inputs": [...], "outputs": [...]}``; errors name ``origin``."""
        if not isinstance(doc, Mapping):
            raise ManifestError(f"{origin}: signature must be a table/object, found {doc!r}")
        return cls(
            inputs=_tensors(doc.get("inputs", []), f"{origin} [signature].inputs"),
            outputs=_tensors(doc.get("outputs", []), f"{origin} [signature].outputs"),
        )


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A parsed ``modelload.toml``. ``raw`` keeps the exact bytes the digest is taken of."""

    name: str
    version: str
    format: str
    path: str
    requires: Requirements = Requirements()
    files: Mapping[str, FileEntry] = dataclasses.field(default_factory=dict)
    signature: Signature | None = None
    build: Mapping[str, str] = dataclasses.field(default_factory=dict)
    raw: bytes = b""

    @property
    def digest(self) -> str:
        """sha256 of the manifest bytes: the identity of this model version."""
        return hashlib.sha256(self.raw or self.to_toml().encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    # -- reading -------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes, origin: str = MANIFEST_NAME) -> Manifest:
        """Parse and validate manifest bytes; ``origin`` is named in every error."""
        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{origin}: not UTF-8 text ({exc})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ManifestError(f"{origin}: not valid TOML: {exc}") from exc
        return cls._from_doc(doc, origin, data)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ManifestError(f"cannot read manifest {os.fspath(path)!r}: {exc}") from exc
        return cls.parse(data, os.fspath(path))

    @classmethod
    def _from_doc(cls, doc: Mapping[str, Any], origin: str, raw: bytes) -> Manifest:
        model = _table(doc, "model", origin, required=True)
        name = _string(model, "name", f"{origin} [model]", required=True)
        version = _string(model, "version", f"{origin} [model]", required=True)
        entry = _string(model, "path", f"{origin} [model]", required=True)
        _check_relpath(entry, f"{origin} [model].path")
        fmt = _string(model, "format", f"{origin} [model]", required=False)
        if not fmt:
            from modelload.loaders import format_for_path

            fmt = format_for_path(entry)
            if fmt is None:
                raise ManifestError(
                    f"{origin}: [model].format is missing and cannot be inferred from "
                    f'the extension of {entry!r}; add format = "joblib" (or another)'
                )

        req_table = _table(doc, "requires", origin, required=False)
        python = _string(req_table, "python", f"{origin} [requires]", required=False)
        if python:
            try:
                SpecifierSet(python)
            except InvalidSpecifier as exc:
                raise ManifestError(
                    f"{origin}: [requires].python = {python!r} is not a version "
                    f"specifier like '>=3.10' ({exc})"
                ) from exc
        packages = req_table.get("packages", [])
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            raise ManifestError(
                f"{origin}: [requires].packages must be a list of strings like "
                f"'scikit-learn==1.5.2', found {packages!r}"
            )
        for spec in packages:
            try:
                Requirement(spec)
            except InvalidRequirement as exc:
                raise ManifestError(
                    f"{origin}: [requires].packages entry {spec!r} is not a PEP 508 "
                    f"requirement ({exc})"
                ) from exc

        files_table = _table(doc, "files", origin, required=False)
        files: dict[str, FileEntry] = {}
        for rel, entry_doc in files_table.items():
            where = f'{origin} [files."{rel}"]'
            _check_relpath(rel, where)
            if not isinstance(entry_doc, Mapping):
                raise ManifestError(f"{where}: expected a table with sha256 and size")
            sha = entry_doc.get("sha256")
            if not isinstance(sha, str) or not _SHA256.match(sha):
                raise ManifestError(
                    f"{where}: sha256 must be 64 lowercase hex digits, found {sha!r}"
                )
            size = entry_doc.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ManifestError(f"{where}: size must be a non-negative integer, found {size!r}")
            files[rel] = FileEntry(sha, size)
        if entry not in files:
            raise ManifestError(
                f"{origin}: the entry file [model].path = {entry!r} is not pinned in "
                f"[files]; run `modelload pack` to pin it"
            )

        signature = None
        if "signature" in doc:
            sig = _table(doc, "signature", origin, required=True)
            signature = Signature.from_dict(sig, origin)
        build_table = _table(doc, "build", origin, required=False)
        build = {str(k): str(v) for k, v in build_table.items()}
        return cls(
            name=name,
            version=version,
            format=fmt,
            path=entry,
            requires=Requirements(python or None, tuple(packages)),
            files=files,
            signature=signature,
            build=build,
            raw=raw,
        )

    # -- writing -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": {
                "name": self.name,
                "version": self.version,
                "format": self.format,
                "path": self.path,
            },
            "requires": {},
            "files": {k: {"sha256": v.sha256, "size": v.size} for k, v in self.files.items()},
        }
        if self.requires.python:
            out["requires"]["python"] = self.requires.python
        out["requires"]["packages"] = list(self.requires.packages)
        if self.signature is not None:
            out["signature"] = self.signature.to_dict()
        if self.build:
            out["build"] = dict(self.build)
        return out

    def to_toml(self) -> str:
        """Serialise as TOML, deterministic for the same content."""
        d = self.to_dict()
        lines = ["# Written by `modelload pack`. The sha256 of this file is the model digest.", ""]
        lines.append("[model]")
        lines += [f"{k} = {_q(v)}" for k, v in d["model"].items()]
        lines += ["", "[requires]"]
        if "python" in d["requires"]:
            lines.append(f"python = {_q(d['requires']['python'])}")
        lines.append(_string_list("packages", d["requires"]["packages"]))
        if "signature" in d:
            lines += ["", "[signature]"]
            for key in ("inputs", "outputs"):
                items = ", ".join(_inline_tensor(t) for t in d["signature"][key])
                lines.append(f"{key} = [{items}]")
        if "build" in d:
            lines += ["", "[build]"]
            lines += [f"{_key(k)} = {_q(v)}" for k, v in sorted(d["build"].items())]
        for rel in sorted(d["files"]):
            entry = d["files"][rel]
            lines += ["", f"[files.{_q(rel)}]", f"sha256 = {_q(entry['sha256'])}"]
            lines.append(f"size = {entry['size']}")
        return "\n".join(lines) + "\n"

    def with_raw(self) -> Manifest:
        return dataclasses.replace(self, raw=self.to_toml().encode())


# -- validation helpers -----------------------------------------------------------


def _table(doc: Mapping[str, Any], key: str, origin: str, *, required: bool) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        if required:
            raise ManifestError(f"{origin}: missing required table [{key}]")
        return {}
    if not isinstance(value, Mapping):
        raise ManifestError(f"{origin}: [{key}] must be a table, found {type(value).__name__}")
    return value


def _string(table: Mapping[str, Any], key: str, where: str, *, required: bool) -> str:
    value = table.get(key)
    if value is None:
        if required:
            raise ManifestError(f"{where}: missing required key {key!r}")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise ManifestError(
            f"{where}: {key} must be a non-empty string, found {value!r}"
            + (' (quote it: version = "1.0")' if key == "version" else "")
        )
    return value


def _check_relpath(rel: str, where: str) -> None:
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise ManifestError(
            f"{where}: {rel!r} must be a relative path inside the model directory "
            "(no leading '/', no '..')"
        )


def _tensors(value: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list):
        raise ManifestError(f"{where}: expected a list of tables, found {value!r}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ManifestError(f"{where}[{i}]: expected a table, found {item!r}")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not name:
            raise ManifestError(f"{where}[{i}]: name must be a non-empty string")
        if datatype not in V2_DATATYPES:
            raise ManifestError(
                f"{where}[{i}] {name!r}: datatype {datatype!r} is not one of "
                f"{', '.join(sorted(V2_DATATYPES))}"
            )
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            raise ManifestError(
                f"{where}[{i}] {name!r}: shape must be a list of integers (-1 = any), "
                f"found {shape!r}"
            )
        out.append(TensorSpec(name, datatype, tuple(shape)))
    return tuple(out)


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _q(key)


def _string_list(key: str, values: Sequence[str]) -> str:
    if not values:
        return f"{key} = []"
    inner = "".join(f"    {_q(v)},\n" for v in values)
    return f"{key} = [\n{inner}]"


def _inline_tensor(t: Mapping[str, Any]) -> str:
    shape = ", ".join(str(d) for d in t["shape"])
    return f"{{ name = {_q(t['name'])}, datatype = {_q(t['datatype'])}, shape = [{shape}] }}"


# -- pack ---------------------------------------------------------------------------

_SKIP_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints"}


def _walk(root: Path) -> list[str]:
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith(".") or (Path(dirpath) == root and fn == MANIFEST_NAME):
                continue
            rels.append((Path(dirpath) / fn).relative_to(root).as_posix())
    return rels


def merge_requirements(inferred: Iterable[str], overrides: Iterable[str]) -> list[str]:
    """Inferred requirements, with any that share a name with ``overrides`` replaced."""
    merged: dict[str, str] = {}
    for spec in inferred:
        merged[canonicalize_name(Requirement(spec).name)] = spec
    for spec in overrides:
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            raise ManifestError(
                f"--requires {spec!r} is not a PEP 508 requirement ({exc})"
            ) from exc
        merged[canonicalize_name(req.name)] = spec
    return sorted(merged.values(), key=lambda s: canonicalize_name(Requirement(s).name))


def pack(
    directory: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    format: str | None = None,
    entry: str | None = None,
    requires: Iterable[str] = (),
    python: str | None = None,
    infer: bool = True,
    pin: str = "exact",
    signature: Signature | None = None,
    write: bool = True,
) -> Manifest:
    """Pin every file under ``directory`` and write its ``modelload.toml``.

    ``requires`` adds to or overrides (by distribution name) the requirements inferred
    from a pickle/joblib entry file. Returns the manifest with ``raw`` set to what was
    written, so ``manifest.digest`` is the model digest.
    """
    from modelload.loaders import format_for_path
    from modelload.pickle_scan import infer_requirements

    root = Path(directory)
    if not root.is_dir():
        raise ManifestError(f"cannot pack {os.fspath(directory)!r}: not a directory")
    rels = _walk(root)
    if not rels:
        raise ManifestError(f"cannot pack {os.fspath(directory)!r}: the directory is empty")
    if entry is None:
        candidates = [r for r in rels if format_for_path(r) is not None]
        if len(candidates) != 1:
            found = ", ".join(candidates) or "none"
            raise ManifestError(
                f"cannot pick the entry file in {os.fspath(directory)!r}: expected exactly one "
                f"model file (.joblib, .pkl, .onnx, .skops), found {found}; pass --entry"
            )
        entry = candidates[0]
    entry = PurePosixPath(entry).as_posix()
    if entry not in rels:
        raise ManifestError(
            f"entry file {entry!r} not found in {os.fspath(directory)!r}; files: {', '.join(rels)}"
        )
    fmt = format or format_for_path(entry)
    if fmt is None:
        raise ManifestError(f"cannot infer the format of {entry!r}; pass --format")
    if python:
        try:
            SpecifierSet(python)
        except InvalidSpecifier as exc:
            raise ManifestError(f"--python {python!r} is not a version specifier") from exc

    inferred: list[str] = []
    if infer and fmt in ("joblib", "pickle"):
        inferred = infer_requirements(root / entry, pin=pin)
    packages = merge_requirements(inferred, requires)

    files = {}
    for rel in rels:
        path = root / rel
        files[rel] = FileEntry(sha256_file(path), path.stat().st_size)
    from modelload import __version__

    manifest = Manifest(
        name=name,
        version=version,
        format=fmt,
        path=entry,
        requires=Requirements(python, tuple(packages)),
        files=files,
        signature=signature,
        build={
            "python": platform.python_version(),
            "platform": f"{sys.platform}-{platform.machine()}",
            "modelload": __version__,
        },
    ).with_raw()
    if write:
        target = root / MANIFEST_NAME
        tmp = target.with_name(f".{MANIFEST_NAME}.tmp-{os.getpid()}")
        tmp.write_bytes(manifest.raw)
        os.replace(tmp, target)
    return manifest
