"""Helpers for the transfer, cache and `modelload fetch` tests: small packed models with
one large data file, and byte counts taken at the server."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from servers import RangeHTTPServer

from modelload.manifest import Manifest, pack

KiB = 1024
MiB = 1024 * 1024


def make_model(directory: Path, data: bytes, *, name: str = "blobby") -> Manifest:
    """A packed ``pickle`` model: ``model.pkl`` (a small dict) plus ``data.bin``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data.bin").write_bytes(data)
    with open(directory / "model.pkl", "wb") as handle:
        pickle.dump({"name": name, "data_sha256": hashlib.sha256(data).hexdigest()}, handle)
    return pack(directory, name=name, version="1", format="pickle", entry="model.pkl", infer=False)


def served(server: RangeHTTPServer, fragment: str) -> int:
    """Body bytes the server sent for successful GETs whose path contains ``fragment``."""
    server.settle()
    return sum(
        h.body_bytes
        for h in server.hits
        if h.method == "GET" and fragment in h.path and h.status in (200, 206)
    )


def assert_not_committed(cache: Path, manifest: Manifest, rel: str = "data.bin") -> None:
    """Nothing of ``rel`` (nor the snapshot) is at a final path of the cache."""
    assert not (cache / "snapshots" / manifest.digest).exists()
    assert not (cache / "blobs" / manifest.files[rel].sha256).exists()
    visible = [p for p in cache.rglob(rel) if not p.name.startswith(".")] if cache.exists() else []
    assert visible == []


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli_env(cache: Path, **settings: Any) -> dict[str, str]:
    """Environment for a `modelload` subprocess using ``cache`` and MODELLOAD_* ``settings``."""
    env = dict(os.environ)
    env["MODELLOAD_CACHE_DIR"] = str(cache)
    for key, value in settings.items():
        env[f"MODELLOAD_{key.upper()}"] = str(value)
    return env


def modelload_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelload.cli", *args]


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        modelload_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout
    )
