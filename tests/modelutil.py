"""Helpers that build real models and manifests for the tests."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
IRIS_SAMPLES = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]


def _train_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "iris_train", REPO / "examples" / "iris" / "train.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_iris(directory: Path) -> str:
    """Train and pack the iris example into ``directory``; return the model digest."""
    digest: str = _train_module().train(directory)
    return digest


def iris_predictions(directory: Path) -> list[int]:
    """The trained model's own predictions for ``IRIS_SAMPLES``, loaded directly."""
    import joblib
    import numpy as np

    model = joblib.load(directory / "model.joblib")
    return [int(x) for x in model.predict(np.array(IRIS_SAMPLES))]


def copy_model(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def rewrite_requires(model_dir: Path, packages: list[str]) -> None:
    """Re-pack ``model_dir`` with ``packages`` as its only requirements."""
    from modelload.manifest import Manifest, pack

    old = Manifest.read(model_dir / "modelload.toml")
    pack(
        model_dir,
        name=old.name,
        version=old.version,
        format=old.format,
        entry=old.path,
        requires=packages,
        infer=False,
        signature=old.signature,
    )
