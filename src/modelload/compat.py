"""Check a model's ``[requires]`` against an environment profile; build the image x model table.

An :class:`EnvironmentProfile` describes an image: python version, platform markers and
every installed distribution. ``modelload env`` writes the current one as JSON; a
profile read back from such a file lets ``modelload check`` answer "which of my images
can serve which of my models" without starting any of them.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import logging
import platform
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from modelload.errors import CompatibilityError, ManifestError
from modelload.manifest import Requirements

__all__ = [
    "CompatReport",
    "EnvironmentProfile",
    "Failure",
    "check",
    "enforce",
    "render_table",
]

logger = logging.getLogger("modelload")
PROFILE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class EnvironmentProfile:
    """What an image provides: python, platform markers, installed distributions."""

    name: str
    python_version: str
    markers: Mapping[str, str]
    distributions: Mapping[str, str]

    @classmethod
    def current(cls, name: str = "this environment") -> EnvironmentProfile:
        """The running interpreter's profile (distributions read once per process)."""
        return dataclasses.replace(_current_profile(), name=name)

    @classmethod
    def _read_current(cls) -> EnvironmentProfile:
        dists: dict[str, str] = {}
        for dist in importlib.metadata.distributions():
            dist_name = dist.metadata.get("Name") if dist.metadata else None
            if dist_name:
                dists.setdefault(canonicalize_name(dist_name), dist.version)
        return cls(
            name="this environment",
            python_version=platform.python_version(),
            markers=dict(default_environment()),
            distributions=dict(sorted(dists.items())),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "modelload_profile": PROFILE_FORMAT,
            "name": self.name,
            "python_version": self.python_version,
            "platform": self.markers.get("sys_platform", sys.platform)
            + "-"
            + self.markers.get("platform_machine", platform.machine()),
            "markers": dict(self.markers),
            "distributions": dict(self.distributions),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], origin: str) -> EnvironmentProfile:
        try:
            dists = doc["distributions"]
            python_version = doc["python_version"]
            markers = doc.get("markers") or {}
        except (KeyError, TypeError) as exc:
            raise ManifestError(
                f"{origin}: not an environment profile (missing {exc}); "
                "write one with `modelload env > image.json`"
            ) from exc
        if not isinstance(dists, Mapping):
            raise ManifestError(f"{origin}: 'distributions' must be an object of name: version")
        return cls(
            name=str(doc.get("name") or origin),
            python_version=str(python_version),
            markers={str(k): str(v) for k, v in markers.items()},
            distributions={canonicalize_name(k): str(v) for k, v in dists.items()},
        )

    @classmethod
    def load(cls, path: str | Path) -> EnvironmentProfile:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except OSError as exc:
            raise ManifestError(f"cannot read environment profile {str(path)!r}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{str(path)!r} is not JSON: {exc}") from exc
        profile = cls.from_dict(doc, str(path))
        if not doc.get("name") or doc.get("name") == "this environment":
            profile = dataclasses.replace(profile, name=path.stem)
        return profile

    def marker_environment(self) -> dict[str, str]:
        env = dict(default_environment())
        env.update(self.markers)
        env["python_full_version"] = self.python_version
        env["python_version"] = ".".join(self.python_version.split(".")[:2])
        return env


@functools.lru_cache(maxsize=1)
def _current_profile() -> EnvironmentProfile:
    return EnvironmentProfile._read_current()


@dataclasses.dataclass(frozen=True)
class Failure:
    requirement: str
    found: str | None

    def __str__(self) -> str:
        found = "not installed" if self.found is None else f"found {self.found}"
        return f"{self.requirement} ({found})"


@dataclasses.dataclass(frozen=True)
class CompatReport:
    profile: str
    failures: tuple[Failure, ...] = ()
    checked: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        return "ok" if self.ok else "; ".join(str(f) for f in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "ok": self.ok,
            "checked": list(self.checked),
            "skipped": list(self.skipped),
            "failures": [{"requirement": f.requirement, "found": f.found} for f in self.failures],
        }


def check(requires: Requirements, profile: EnvironmentProfile | None = None) -> CompatReport:
    """Every requirement in ``requires`` that ``profile`` does not satisfy."""
    profile = profile or EnvironmentProfile.current()
    failures: list[Failure] = []
    checked: list[str] = []
    skipped: list[str] = []
    if requires.python:
        checked.append(f"python{requires.python}")
        if not SpecifierSet(requires.python).contains(profile.python_version, prereleases=True):
            failures.append(Failure(f"python{requires.python}", profile.python_version))
    env = profile.marker_environment()
    for spec in requires.packages:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate(env):
            skipped.append(spec)
            continue
        checked.append(spec)
        found = profile.distributions.get(canonicalize_name(req.name))
        if found is None or not req.specifier.contains(found, prereleases=True):
            failures.append(Failure(spec, found))
    return CompatReport(profile.name, tuple(failures), tuple(checked), tuple(skipped))


def enforce(report: CompatReport, policy: str, model: str) -> None:
    """Apply ``MODELLOAD_COMPAT``: raise (error), warn (warn) or do nothing (ignore)."""
    if report.ok or policy == "ignore":
        return
    unmet = "; ".join(str(f) for f in report.failures)
    message = f"model {model} needs what {report.profile} does not provide: {unmet}"
    if policy == "error":
        raise CompatibilityError(
            f"{message}. Use an image that satisfies [requires], or set "
            "MODELLOAD_COMPAT=warn to load anyway"
        )
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    logger.warning(message)


# -- the image x model table --------------------------------------------------------

Row = tuple[str, Sequence[CompatReport]]


def render_table(rows: Sequence[Row], profiles: Sequence[str], fmt: str = "table") -> str:
    """Render check results: one row per model, one column per image."""
    if fmt == "json":
        doc = {
            "images": list(profiles),
            "models": [
                {"model": label, "results": {r.profile: r.to_dict() for r in reports}}
                for label, reports in rows
            ],
            "ok": all(r.ok for _, reports in rows for r in reports),
        }
        return json.dumps(doc, indent=2) + "\n"
    header = ["model", *profiles]
    body = [[label, *(r.summary() for r in reports)] for label, reports in rows]
    if fmt == "markdown":

        def md(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        lines = [md(header), md(["---"] * len(header))] + [md(b) for b in body]
        return "\n".join(lines) + "\n"
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}: expected table, json or markdown")
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"
