"""The examples run: the custom server answers its own and modelload's routes; deploy files."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from modelutil import IRIS_SAMPLES, REPO
from serveutil import serving, wait_ready

from modelload.manifest import Manifest

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_custom_server_routes_live_next_to_create_app(
    iris_model: Path, tmp_path: Path
) -> None:
    digest = Manifest.read(iris_model / "modelload.toml").digest
    app = _example("custom_server").build_app(str(iris_model), cache_dir=tmp_path / "c")
    async with serving(app) as client:
        await wait_ready(client)
        assert (await client.get("/about")).json()["digest"] == digest
        classify = await client.post("/classify", json={"instances": IRIS_SAMPLES})
        predict = await client.post("/predict", json={"instances": IRIS_SAMPLES})
        names = ["setosa", "versicolor", "virginica"]
        assert classify.json()["species"] == [names[p] for p in predict.json()["predictions"]]


def test_kubernetes_probes_use_readyz_and_livez() -> None:
    text = (REPO / "examples" / "kubernetes" / "deployment.yaml").read_text()
    probes = dict(re.findall(r"(\w+Probe):\s*\n\s*httpGet: \{path: (/\w+)", text))
    assert probes == {
        "startupProbe": "/readyz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/livez",
    }
    assert "MODELLOAD_MODEL_URI" in text


def test_dockerfile_has_no_model_and_serves_from_the_env() -> None:
    text = (REPO / "examples" / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["modelload", "serve"', text, re.M)
    assert "MODELLOAD_MODEL_URI" in text
    assert not re.search(r"^(COPY|ADD) .*(model|\.joblib)", text, re.M | re.I)
