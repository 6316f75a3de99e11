"""Train a small scikit-learn classifier on the iris data bundled with scikit-learn,
save it with joblib, and pack the directory with a modelload.toml.

    python examples/iris/train.py [OUTPUT_DIR]

OUTPUT_DIR defaults to examples/iris/model. Prints the model digest.
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelload import pack
from modelload.manifest import Signature, TensorSpec


def train(output: Path) -> str:
    data = load_iris()
    model = make_pipeline(
        StandardScaler(), RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0)
    )
    model.fit(data.data, data.target)
    output.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, output / "model.joblib")
    manifest = pack(
        output,
        name="iris",
        version="1.0.0",
        signature=Signature(
            inputs=(TensorSpec("input-0", "FP64", (-1, 4)),),
            outputs=(TensorSpec("output-0", "INT64", (-1,)),),
        ),
    )
    return manifest.digest


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "model"
    digest = train(out)
    print(f"packed {out} sha256:{digest}")
