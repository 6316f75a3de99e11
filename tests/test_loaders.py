"""Loader registry: built-in formats, module:callable, entry-point style registration."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from modelutil import IRIS_SAMPLES

from modelload import LoaderError, UnknownFormatError, register_loader
from modelload.loaders import available_formats, format_for_path, get_loader, load


def test_formats_from_extension() -> None:
    assert format_for_path("a/model.joblib") == "joblib"
    assert format_for_path("m.PKL") == "pickle"
    assert format_for_path("m.onnx") == "onnx"
    assert format_for_path("m.skops") == "skops"
    assert format_for_path("m.bin") is None


def test_unknown_format_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownFormatError) as info:
        get_loader("tensorflow-saved-model")
    assert "tensorflow-saved-model" in str(info.value)
    assert "joblib" in str(info.value) and "module:function" in str(info.value)


def test_module_callable_gets_the_model_dir(tmp_path: Path) -> None:
    (tmp_path / "weights.txt").write_text("42")
    model = load("pathlib:Path.read_text", tmp_path / "x", tmp_path / "weights.txt")
    assert model == "42"
    with pytest.raises(LoaderError, match="cannot import module 'no_such_mod'"):
        load("no_such_mod:f", tmp_path, tmp_path)
    with pytest.raises(LoaderError, match="has no attribute"):
        load("pathlib:nope", tmp_path, tmp_path)


def test_register_loader_and_missing_module_message(tmp_path: Path) -> None:
    register_loader("test-txt", lambda entry, d: entry.read_text().upper(), replace=True)
    assert "test-txt" in available_formats()
    (tmp_path / "m.txt").write_text("hi")
    assert load("test-txt", tmp_path / "m.txt", tmp_path) == "HI"
    bad = tmp_path / "m.pkl"
    bad.write_bytes(b"\x80\x04\x8c\x07nosuchm\x8c\x01X\x93)R.")
    with pytest.raises(LoaderError) as info:
        load("pickle", bad, tmp_path)
    assert "nosuchm" in str(info.value) and "not installed in this image" in str(info.value)


def test_onnx_and_skops_loaders(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from skops.io import dump

    data = load_iris()
    clf = LogisticRegression(max_iter=500).fit(data.data, data.target)
    onx = to_onnx(clf, data.data[:1].astype(np.float32))
    (tmp_path / "m.onnx").write_bytes(onx.SerializeToString())
    session = load("onnx", tmp_path / "m.onnx", tmp_path)
    x = np.array(IRIS_SAMPLES, dtype=np.float32)
    onnx_labels = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert list(onnx_labels) == list(clf.predict(x))
    dump(clf, tmp_path / "m.skops")
    restored = load("skops", tmp_path / "m.skops", tmp_path)
    assert list(restored.predict(x)) == list(clf.predict(x))
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(clf))
    assert list(load("pickle", tmp_path / "p.pkl", tmp_path).predict(x)) == list(clf.predict(x))
