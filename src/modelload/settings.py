"""Runtime settings: one frozen object built from ``MODELLOAD_*`` environment variables.

Every variable has a keyword-argument twin; arguments win over the environment.
Nothing else in the package reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs

__all__ = ["CompatPolicy", "Settings"]

CompatPolicy = Literal["error", "warn", "ignore"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: expected one of 1/0, true/false, yes/no, on/off")


def _parse_int(name: str, value: str) -> int:
    try:
        return int(value.strip().replace("_", ""))
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected an integer") from None


def _parse_float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a number") from None


def _parse_json_object(name: str, value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value) if value.strip() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a JSON object, found {type(parsed).__name__}")
    return parsed


def _parse_list(name: str, value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("modelload", appauthor=False))


@dataclasses.dataclass(frozen=True)
class Settings:
    """All knobs of a model load. Build with :meth:`from_env`."""

    model_uri: str | None = None
    cache_dir: Path = dataclasses.field(default_factory=default_cache_dir)
    compat: CompatPolicy = "error"
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    offline: bool = False
    max_body_bytes: int = 64 * 1024 * 1024
    allowed_sources: tuple[str, ...] = ()
    # transfer (defaults measured with benchmarks/fetch.py, see docs/benchmarks.md)
    chunk_size: int = 16 * 1024 * 1024
    concurrency: int = 8
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5
    # server
    load_retries: int = 3

    def __post_init__(self) -> None:
        if self.compat not in ("error", "warn", "ignore"):
            raise ValueError(f"compat={self.compat!r}: expected 'error', 'warn' or 'ignore'")
        if self.chunk_size <= 0 or self.concurrency <= 0:
            raise ValueError("chunk_size and concurrency must be positive")
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``MODELLOAD_*`` variables, then apply keyword overrides (``None`` = unset)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field_name, (var, parser) in _ENV_VARS.items():
            raw = env.get(var)
            if raw is not None:
                values[field_name] = parser(var, raw)
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise TypeError(f"unknown setting {key!r}; known: {', '.join(sorted(known))}")
            if value is not None:
                values[key] = value
        if "allowed_sources" in values and isinstance(values["allowed_sources"], str):
            values["allowed_sources"] = _parse_list("allowed_sources", values["allowed_sources"])
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _str(_name: str, value: str) -> str:
    return value


def _compat(name: str, value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in ("error", "warn", "ignore"):
        raise ValueError(f"{name}={value!r}: expected 'error', 'warn' or 'ignore'")
    return lowered


_ENV_VARS: dict[str, tuple[str, Any]] = {
    "model_uri": ("MODELLOAD_MODEL_URI", _str),
    "cache_dir": ("MODELLOAD_CACHE_DIR", lambda _n, v: Path(v)),
    "compat": ("MODELLOAD_COMPAT", _compat),
    "storage_options": ("MODELLOAD_STORAGE_OPTIONS", _parse_json_object),
    "offline": ("MODELLOAD_OFFLINE", _parse_bool),
    "max_body_bytes": ("MODELLOAD_MAX_BODY_BYTES", _parse_int),
    "allowed_sources": ("MODELLOAD_ALLOWED_SOURCES", _parse_list),
    "chunk_size": ("MODELLOAD_CHUNK_SIZE", _parse_int),
    "concurrency": ("MODELLOAD_CONCURRENCY", _parse_int),
    "connect_timeout": ("MODELLOAD_CONNECT_TIMEOUT", _parse_float),
    "read_timeout": ("MODELLOAD_READ_TIMEOUT", _parse_float),
    "retries": ("MODELLOAD_RETRIES", _parse_int),
    "load_retries": ("MODELLOAD_LOAD_RETRIES", _parse_int),
}
