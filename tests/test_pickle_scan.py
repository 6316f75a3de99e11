"""Requirement inference from pickle/joblib opcodes, without unpickling."""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import sklearn
from modelutil import train_iris

from modelload import ManifestError
from modelload.manifest import Manifest
from modelload.pickle_scan import infer_requirements, referenced_modules


class Boom:
    """A class whose unpickling would raise: proves the scan never calls it."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (builtins.exec, ("raise SystemExit('unpickled!')",))


def test_iris_pack_infers_sklearn_and_numpy_only(tmp_path: Path) -> None:
    train_iris(tmp_path)
    manifest = Manifest.read(tmp_path / "modelload.toml")
    assert list(manifest.requires.packages) == [
        f"numpy=={np.__version__}",
        f"scikit-learn=={sklearn.__version__}",
    ]


def test_scan_does_not_execute_the_pickle(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": Boom(), "arr": np.arange(3)}))
    modules = referenced_modules(path)
    assert "builtins" in modules
    assert any(m.startswith("numpy") for m in modules)
    # stdlib (builtins) is not a requirement; numpy is
    assert infer_requirements(path) == [f"numpy=={np.__version__}"]


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("lzma", 1)])
def test_joblib_arrays_and_compression_are_skipped(tmp_path: Path, compress: object) -> None:
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(200, 5))
    y = (X[:, 0] > 0).astype(int)
    obj = {
        "model": LogisticRegression().fit(X, y),
        "big": np.zeros((300, 300)),
        "objects": np.array(["a", None, 3], dtype=object),
        "strings": np.array(["abc", "de"]),
    }
    path = tmp_path / "m.joblib"
    joblib.dump(obj, path, compress=compress)
    reqs = infer_requirements(path, pin="major")
    major = int(np.__version__.split(".")[0])
    assert f"numpy>={'.'.join(np.__version__.split('.')[:2])},<{major + 1}" in reqs
    assert any(r.startswith("scikit-learn>=") for r in reqs)
    assert not any(r.startswith("joblib") for r in reqs)


def test_main_module_class_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    # a stream that refers to __main__.Thing, written by hand
    path.write_bytes(b"\x80\x04\x8c\x08__main__\x8c\x05Thing\x93)R.")
    with pytest.raises(ManifestError, match="__main__"):
        infer_requirements(path)


def test_garbage_file_gives_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(ManifestError, match="cannot scan"):
        infer_requirements(path)
