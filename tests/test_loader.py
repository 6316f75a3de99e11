"""ModelLoader end to end on local sources: integrity, compatibility policy, errors."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from modelutil import IRIS_SAMPLES, rewrite_requires, train_iris

from modelload import (
    CompatibilityError,
    IntegrityError,
    LoadedModel,
    ManifestError,
    ModelLoader,
    SourceNotFoundError,
    SourceUnavailableError,
    UnknownFormatError,
    load_model,
)
from modelload.errors import SourceError, SourceNotAllowedError


@pytest.fixture(scope="module")
def iris_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("iris") / "iris"
    train_iris(path)
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_load_dir_and_manifest_uri(iris_src: Path, cache: Path) -> None:
    loaded = load_model(str(iris_src), cache_dir=cache)
    assert isinstance(loaded, LoadedModel)
    assert loaded.name == "iris" and loaded.version == "1.0.0"
    assert loaded.digest == loaded.manifest.digest  # type: ignore[union-attr]
    assert list(loaded.timings) == ["resolve", "check", "fetch", "verify", "load"]
    assert loaded.compat.ok
    assert loaded.local_dir.is_relative_to(cache)
    preds = loaded.model.predict(np.array(IRIS_SAMPLES))
    via_manifest = load_model(f"file://{iris_src}/modelload.toml", cache_dir=cache)
    assert list(via_manifest.model.predict(np.array(IRIS_SAMPLES))) == list(preds)
    meta = loaded.metadata()
    assert meta["manifest"]["model"]["name"] == "iris"
    assert meta["compat"]["ok"] is True


def test_single_file_loads_with_a_warning(iris_src: Path, cache: Path) -> None:
    with pytest.warns(UserWarning, match="nothing is pinned"):
        loaded = load_model(str(iris_src / "model.joblib"), cache_dir=cache)
    assert loaded.manifest is None
    assert loaded.digest.startswith("file-")
    assert loaded.format == "joblib"


def test_flipped_byte_raises_integrity_error(iris_src: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(iris_src, bad)
    data = bytearray((bad / "model.joblib").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "model.joblib").write_bytes(bytes(data))
    cache = tmp_path / "cache"
    result = None
    with pytest.raises(IntegrityError) as info:
        result = load_model(str(bad), cache_dir=cache)
    assert result is None
    msg = str(info.value)
    assert "model.joblib" in msg and "sha256 mismatch" in msg
    from modelload.manifest import Manifest

    pinned = Manifest.read(bad / "modelload.toml").files["model.joblib"].sha256
    assert pinned in msg
    # nothing at any final path in the cache
    assert not list(cache.rglob("model.joblib"))


@pytest.fixture
def old_sklearn_model(iris_src: Path, tmp_path: Path) -> Path:
    import shutil

    path = tmp_path / "old"
    shutil.copytree(iris_src, path)
    rewrite_requires(path, ["scikit-learn==0.1", "numpy>=1"])
    return path


def test_compat_policies(old_sklearn_model: Path, cache: Path) -> None:
    with pytest.raises(CompatibilityError) as info:
        load_model(str(old_sklearn_model), cache_dir=cache)
    assert "scikit-learn==0.1" in str(info.value) and "found" in str(info.value)
    # the check happens before the download: nothing was fetched
    assert not (cache / "snapshots").exists() or not any((cache / "snapshots").iterdir())
    with pytest.warns(RuntimeWarning, match="scikit-learn==0.1"):
        warned = load_model(str(old_sklearn_model), cache_dir=cache, compat="warn")
    assert not warned.compat.ok
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ignored = load_model(str(old_sklearn_model), cache_dir=cache, compat="ignore")
    assert ignored.model.predict(np.array(IRIS_SAMPLES)).shape == (3,)


def test_env_var_policy_and_argument_wins(
    old_sklearn_model: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELLOAD_COMPAT", "ignore")
    monkeypatch.setenv("MODELLOAD_MODEL_URI", str(old_sklearn_model))
    assert ModelLoader(cache_dir=cache).load().name == "iris"
    with pytest.raises(CompatibilityError):
        ModelLoader(cache_dir=cache, compat="error").load()


def test_missing_file_named_in_manifest(iris_src: Path, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "m"
    shutil.copytree(iris_src, path)
    (path / "model.joblib").unlink()
    with pytest.raises(SourceNotFoundError) as info:
        load_model(str(path), cache_dir=tmp_path / "c")
    assert "model.joblib" in str(info.value)


def test_missing_uri(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nope"), cache_dir=tmp_path / "c")


def test_dir_without_manifest(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "weights.bin").write_bytes(b"x")
    with pytest.raises(ManifestError, match="modelload pack"):
        load_model(str(tmp_path / "m"), cache_dir=tmp_path / "c")


def test_unknown_format_in_manifest(iris_src: Path, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "m"
    shutil.copytree(iris_src, path)
    manifest = path / "modelload.toml"
    manifest.write_text(manifest.read_text().replace('format = "joblib"', 'format = "pytorch"'))
    with pytest.raises(UnknownFormatError, match="'pytorch'"):
        load_model(str(path), cache_dir=tmp_path / "c")


def test_unreachable_host_is_transient(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}/models/iris/"
    with pytest.raises(SourceUnavailableError) as info:
        load_model(uri, cache_dir=tmp_path / "c")
    assert info.value.transient
    assert f"127.0.0.1:{port}" in str(info.value)


def test_unknown_protocol_and_allow_list(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unknown protocol 'nosuch'"):
        load_model("nosuch://x/y", cache_dir=tmp_path)
    with pytest.raises(SourceNotAllowedError, match="s3://prod/"):
        load_model("file:///tmp/x", cache_dir=tmp_path, allowed_sources=("s3://prod/",))


def test_missing_extra_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['s3fs'] = None; sys.modules['gcsfs'] = None\n"
        "from modelload import load_model, MissingExtraError\n"
        "for uri in ('s3://bucket/iris', 'gs://bucket/iris'):\n"
        "    try:\n"
        "        load_model(uri)\n"
        "    except MissingExtraError as exc:\n"
        "        print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "pip install 'modelload[s3]'" in out
    assert "pip install 'modelload[gcs]'" in out
    assert "s3://bucket/iris" in out and "gs://bucket/iris" in out
