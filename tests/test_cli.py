"""The pack / env / check commands, run through click and as a real subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sklearn
from click.testing import CliRunner
from modelutil import rewrite_requires, train_iris

from modelload.cli import main
from modelload.compat import EnvironmentProfile


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    good = root / "good"
    train_iris(good)
    bad = root / "bad"
    shutil.copytree(good, bad)
    rewrite_requires(bad, ["scikit-learn==0.1"])
    return good, bad


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_pack_writes_manifest_and_prints_digest(tmp_path: Path) -> None:
    import joblib
    from sklearn.tree import DecisionTreeClassifier

    joblib.dump(DecisionTreeClassifier().fit([[0], [1]], [0, 1]), tmp_path / "tree.joblib")
    code, out, err = run(
        "pack", str(tmp_path), "--name", "tree", "--version", "3", "--requires", "numpy>=1"
    )
    assert code == 0, err
    digest = out.strip().removeprefix("sha256:")
    import hashlib

    assert digest == hashlib.sha256((tmp_path / "modelload.toml").read_bytes()).hexdigest()
    assert f"requires scikit-learn=={sklearn.__version__}" in err
    assert "requires numpy>=1" in err


def test_pack_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    code, _, err = run("pack", str(tmp_path), "--name", "x", "--version", "1")
    assert code == 1
    assert err.startswith("modelload: error: ManifestError:")
    assert "Traceback" not in err


def test_check_good_and_bad(models: tuple[Path, Path]) -> None:
    good, bad = models
    code, out, _ = run("check", str(good))
    assert code == 0
    assert out.splitlines()[-1].split() == ["iris:1.0.0", "ok"]
    code, out, _ = run("check", str(bad))
    assert code == 1
    assert "scikit-learn==0.1 (found" in out


def test_check_table_with_two_images(models: tuple[Path, Path], tmp_path: Path) -> None:
    good, bad = models
    code, out, _ = run("env", "--name", "current")
    assert code == 0
    here = json.loads(out)
    assert here["distributions"]["scikit-learn"] == sklearn.__version__
    (tmp_path / "new.json").write_text(out)
    old = dict(here, name="old-image")
    old["distributions"] = dict(here["distributions"], **{"scikit-learn": "0.1"})
    (tmp_path / "old.json").write_text(json.dumps(old))
    code, out, _ = run(
        "check", str(good), str(bad),
        "--image", str(tmp_path / "new.json"), "--image", str(tmp_path / "old.json"),
        "--format", "json",
    )  # fmt: skip
    assert code == 1
    doc = json.loads(out)
    assert doc["images"] == ["current", "old-image"]
    good_row, bad_row = doc["models"]
    assert good_row["results"]["current"]["ok"] is True
    assert good_row["results"]["old-image"]["failures"] == [
        {"requirement": f"scikit-learn=={sklearn.__version__}", "found": "0.1"}
    ]
    assert bad_row["results"]["current"]["ok"] is False
    assert bad_row["results"]["old-image"]["ok"] is True
    code, out, _ = run(
        "check", str(good), "--image", str(tmp_path / "new.json"),
        "--image", str(tmp_path / "old.json"), "--format", "markdown",
    )  # fmt: skip
    assert code == 1
    row = out.splitlines()[2]
    assert row.startswith("| iris:1.0.0 | ok | scikit-learn==")


def test_env_profile_loads_back(tmp_path: Path) -> None:
    code, _, _ = run("env", "-o", str(tmp_path / "img.json"))
    assert code == 0
    profile = EnvironmentProfile.load(tmp_path / "img.json")
    assert profile.name == "img"
    assert profile.distributions["numpy"]


def test_real_entry_point_exit_status(models: tuple[Path, Path]) -> None:
    exe = Path(sys.executable).with_name("modelload")
    good, bad = models
    ok = subprocess.run([str(exe), "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    fail = subprocess.run([str(exe), "check", str(bad)], capture_output=True, text=True)
    assert fail.returncode == 1
    assert "scikit-learn==0.1" in fail.stdout
    missing = subprocess.run(
        [str(exe), "check", str(good / "nope")], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert "SourceNotFoundError" in missing.stderr and "Traceback" not in missing.stderr


def test_pack_signature_file_is_validated(tmp_path: Path) -> None:
    import joblib
    from sklearn.tree import DecisionTreeClassifier

    from modelload.manifest import Manifest

    model = tmp_path / "m"
    model.mkdir()
    joblib.dump(DecisionTreeClassifier().fit([[0], [1]], [0, 1]), model / "tree.joblib")
    sig = tmp_path / "sig.json"
    sig.write_text(
        json.dumps(
            {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
                "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
            }
        )
    )
    code, _, err = run("pack", str(model), "--name", "t", "--version", "1", "--signature", str(sig))
    assert code == 0, err
    signature = Manifest.read(model / "modelload.toml").signature
    assert signature is not None and signature.inputs[0].shape == (-1, 1)
    sig.write_text(json.dumps({"inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1]}]}))
    code, _, err = run("pack", str(model), "--name", "t", "--version", "1", "--signature", str(sig))
    assert code == 1
    assert "sig.json" in err and "'FLOAT'" in err
    sig.write_text("{not json")
    code, _, err = run("pack", str(model), "--name", "t", "--version", "1", "--signature", str(sig))
    assert code == 1 and "not valid JSON" in err
