"""create_app in-process: routes, the load state machine, retries, hooks and every error code."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from modelutil import IRIS_SAMPLES
from servers import RangeHTTPServer
from serveutil import serving, wait_phase, wait_ready, wait_state

from modelload import create_app
from modelload.manifest import Signature, TensorSpec, pack

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("app-cache")


@pytest.fixture
async def client(iris_model: Path, cache_dir: Path) -> AsyncIterator[Any]:
    app = create_app(str(iris_model), cache_dir=cache_dir, max_body_bytes=4096)
    async with serving(app) as c:
        await wait_ready(c)
        yield c


def _v2_input(
    data: Any, shape: list[int], datatype: str = "FP64", name: str = "input-0"
) -> dict[str, Any]:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


async def test_ready_app_serves_metadata_predict_and_v2(
    client: Any, iris_model: Path, iris_expected: list[int]
) -> None:
    assert (await client.get("/livez")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["state"] == "ready"

    meta = (await client.get("/metadata")).json()
    manifest_bytes = (iris_model / "modelload.toml").read_bytes()
    import hashlib

    assert meta["digest"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert (meta["name"], meta["version"], meta["source_uri"]) == ("iris", "1.0.0", str(iris_model))
    assert meta["manifest"]["signature"]["inputs"][0]["name"] == "input-0"
    assert meta["compat"]["ok"] is True
    assert set(meta["timings"]) == {"resolve", "check", "fetch", "verify", "load"}

    predict = await client.post("/predict", json={"instances": IRIS_SAMPLES})
    assert predict.status_code == 200
    assert predict.headers["content-type"] == "application/json"
    assert predict.json() == {"predictions": iris_expected}

    server = (await client.get("/v2")).json()
    assert server["name"] == "modelload" and "binary_tensor_data" in server["extensions"]
    assert (await client.get("/v2/health/live")).status_code == 200
    assert (await client.get("/v2/health/ready")).status_code == 200
    assert (await client.get("/v2/models/iris/ready")).json() == {"name": "iris", "ready": True}
    v2_meta = (await client.get("/v2/models/iris/versions/1.0.0")).json()
    assert v2_meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert v2_meta["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]

    flat = [v for row in IRIS_SAMPLES for v in row]
    for path in ("/v2/models/iris/infer", "/v2/models/iris/versions/1.0.0/infer"):
        body = {"id": "r1", **_v2_input(flat, [3, 4])}
        infer = await client.post(path, json=body)
        assert infer.status_code == 200, infer.text
        out = infer.json()
        assert (out["model_name"], out["model_version"], out["id"]) == ("iris", "1.0.0", "r1")
        assert out["outputs"] == [
            {"name": "output-0", "datatype": "INT64", "shape": [3], "data": iris_expected}
        ]


async def test_400_malformed_or_incomplete_requests(client: Any) -> None:
    cases = [
        ("/predict", b"{not json"),
        ("/predict", b""),
        ("/predict", b'{"inputs": [[1, 2, 3, 4]]}'),
        ("/predict", b'{"instances": {"a": 1}}'),
        ("/predict", b"[[1, 2, 3, 4]]"),
        ("/v2/models/iris/infer", b'{"instances": []}'),
        ("/v2/models/iris/infer", b'{"inputs": []}'),
        ("/v2/models/iris/infer", json.dumps(_v2_input([1.0] * 4, [1, 4], "FLOAT")).encode()),
        ("/v2/models/iris/infer", json.dumps(_v2_input([1.0] * 4, [1, "4"])).encode()),
        ("/v2/models/iris/infer", b'{"inputs": [{"name": "input-0", "datatype": "FP64"}]}'),
    ]
    for path, body in cases:
        response = await client.post(path, content=body)
        assert response.status_code == 400, (path, body, response.text)
        assert isinstance(response.json()["error"], str) and response.json()["error"]


async def test_404_unknown_model_version_or_route(client: Any) -> None:
    for method, path in [
        ("GET", "/v2/models/resnet"),
        ("GET", "/v2/models/resnet/ready"),
        ("POST", "/v2/models/resnet/infer"),
        ("GET", "/v2/models/iris/versions/9.9.9"),
        ("GET", "/no/such/route"),
    ]:
        response = await client.request(method, path, json=_v2_input([1.0] * 4, [1, 4]))
        assert response.status_code == 404, path
        assert "error" in response.json()
    assert "iris" in (await client.get("/v2/models/resnet")).json()["error"]
    wrong_method = await client.get("/predict")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


async def test_413_by_content_length_and_while_streaming(client: Any) -> None:
    big = json.dumps({"instances": [IRIS_SAMPLES[0]] * 400}).encode()
    assert len(big) > 4096
    announced = await client.post("/predict", content=big)
    assert announced.status_code == 413
    assert "4096" in announced.json()["error"]

    sent = []

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for i in range(0, len(big), 1024):
            sent.append(i)
            yield big[i : i + 1024]

    streamed = await client.post("/predict", content=chunks())
    assert streamed.status_code == 413
    # refused once the running total passed the limit, not after reading everything
    assert len(sent) <= 5 < math.ceil(len(big) / 1024)
    ok = await client.post("/predict", json={"instances": IRIS_SAMPLES})
    assert ok.status_code == 200


async def test_422_wrong_shape_or_datatype(client: Any) -> None:
    cases = [
        ("/predict", {"instances": [[5.1, 3.5, 1.4]]}),
        ("/predict", {"instances": [5.1, 3.5, 1.4, 0.2]}),
        ("/predict", {"instances": [["a", "b", "c", "d"]]}),
        ("/predict", {"instances": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9]]}),
        ("/v2/models/iris/infer", _v2_input([1.0] * 4, [1, 4], "FP32")),
        ("/v2/models/iris/infer", _v2_input([1.0] * 3, [1, 3])),
        ("/v2/models/iris/infer", _v2_input([1.0] * 5, [1, 4])),
        ("/v2/models/iris/infer", _v2_input([1.0] * 4, [1, 4], name="x")),
        ("/v2/models/iris/infer", _v2_input(["a"] * 4, [1, 4])),
    ]
    for path, body in cases:
        response = await client.post(path, json=body)
        assert response.status_code == 422, (path, body, response.text)
        assert response.json()["error"]


def _pack_weights(directory: Path, signature: Signature | None = None) -> Path:
    directory.mkdir(parents=True)
    joblib.dump({"weights": [1.0, 2.0, 3.0, 4.0]}, directory / "weights.joblib")
    pack(directory, name="linear", version="7", infer=False, signature=signature)
    return directory


async def test_custom_predict_and_hooks_serve_a_non_sklearn_model(tmp_path: Path) -> None:
    model_dir = _pack_weights(tmp_path / "linear")
    calls: list[str] = []

    def preprocess(instances: Any) -> np.ndarray:
        calls.append("pre")
        return np.asarray(instances, dtype=float)

    def predict(model: dict, x: np.ndarray) -> np.ndarray:
        calls.append("predict")
        return x @ np.asarray(model["weights"])

    def postprocess(y: np.ndarray) -> list[dict[str, float]]:
        calls.append("post")
        return [{"score": float(v)} for v in y]

    app = create_app(
        str(model_dir),
        predict=predict,
        preprocess=preprocess,
        postprocess=postprocess,
        cache_dir=tmp_path / "cache",
    )
    async with serving(app) as client:
        assert (await wait_ready(client))["model"] == "linear"
        response = await client.post("/predict", json={"instances": [[1, 1, 1, 1], [0, 0, 0, 1]]})
        assert response.json() == {"predictions": [{"score": 10.0}, {"score": 4.0}]}
        assert calls == ["pre", "predict", "post"]
        meta = (await client.get("/v2/models/linear")).json()
        assert meta["inputs"] == [] and meta["versions"] == ["7"]


async def test_500_when_the_model_raises_then_the_server_keeps_serving(tmp_path: Path) -> None:
    signature = Signature(inputs=(TensorSpec("x", "FP64", (-1, 4)),))
    model_dir = _pack_weights(tmp_path / "linear", signature)

    def predict(model: dict, x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise ValueError("negative input")
        return x @ np.asarray(model["weights"])

    app = create_app(str(model_dir), predict=predict, cache_dir=tmp_path / "cache")
    async with serving(app) as client:
        await wait_ready(client)
        bad = await client.post("/predict", json={"instances": [[-1, 0, 0, 0]]})
        assert bad.status_code == 500
        assert bad.json() == {"error": "the model raised ValueError: negative input"}
        bad_v2 = await client.post(
            "/v2/models/linear/infer", json=_v2_input([-1] * 4, [1, 4], name="x")
        )
        assert bad_v2.status_code == 500
        good = await client.post("/predict", json={"instances": [[1, 0, 0, 1]]})
        assert good.status_code == 200 and good.json() == {"predictions": [5.0]}
        good_v2 = await client.post(
            "/v2/models/linear/infer", json=_v2_input([1] * 4, [1, 4], name="x")
        )
        assert good_v2.json()["outputs"][0]["data"] == [10.0]


async def test_nan_and_infinity_are_encoded_as_null(tmp_path: Path) -> None:
    model_dir = _pack_weights(tmp_path / "linear")

    def predict(model: dict, instances: list) -> Any:
        return {"array": np.array([math.nan, math.inf, 1.5]), "scalar": -math.inf}

    app = create_app(str(model_dir), predict=predict, cache_dir=tmp_path / "cache")
    async with serving(app) as client:
        await wait_ready(client)
        response = await client.post("/predict", json={"instances": [[0]]})
        strict = json.loads(response.text, parse_constant=lambda c: pytest.fail(f"emitted {c}"))
        assert strict == {"predictions": {"array": [None, None, 1.5], "scalar": None}}
        v2 = await client.post("/v2/models/linear/infer", json=_v2_input([0.0], [1]))
        outputs = {o["name"]: o for o in json.loads(v2.text, parse_constant=pytest.fail)["outputs"]}
        assert outputs["array"]["data"] == [None, None, 1.5]
        assert outputs["array"]["datatype"] == "FP64"


async def test_failed_load_stays_503_with_the_reason(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    app = create_app(
        str(tmp_path / "missing"), cache_dir=tmp_path / "cache", on_failure=failures.append
    )
    async with serving(app) as client:
        body = await wait_state(client, "failed")
        assert "SourceNotFoundError" in body["reason"] and "missing" in body["reason"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and "Retry-After" in ready.headers
        assert (await client.get("/livez")).status_code == 200
        predict = await client.post("/predict", json={"instances": IRIS_SAMPLES})
        assert predict.status_code == 503 and "Retry-After" in predict.headers
        assert "SourceNotFoundError" in predict.json()["error"]
        infer = await client.post("/v2/models/iris/infer", json=_v2_input([1.0] * 4, [1, 4]))
        assert infer.status_code == 503
        assert (await client.get("/v2/models/iris/ready")).status_code == 503
    assert len(failures) == 1 and type(failures[0]).__name__ == "SourceNotFoundError"
    assert app.state.model.attempt == 1  # a permanent error is not retried


async def test_loading_state_answers_503_with_phase(
    iris_model: Path, range_http_server: RangeHTTPServer, tmp_path: Path
) -> None:
    shutil.copytree(iris_model, Path(range_http_server.directory) / "iris")
    range_http_server.inject(r"model\.joblib", "slow", seconds=1, times=0)
    app = create_app(range_http_server.url_for("iris/"), cache_dir=tmp_path / "cache")
    async with serving(app) as client:
        body = await wait_phase(client, "fetch")
        assert body["state"] == "loading" and "fetch" in body["reason"]
        predict = await client.post("/predict", json={"instances": IRIS_SAMPLES})
        assert predict.status_code == 503 and predict.headers["Retry-After"] == "1"
        assert "loading" in predict.json()["error"]
        assert (await client.get("/v2/health/ready")).status_code == 503
        assert (await client.get("/v2/health/live")).status_code == 200
        await wait_ready(client)
        assert (await client.post("/predict", json={"instances": IRIS_SAMPLES})).status_code == 200


@pytest.mark.parametrize(
    ("failures", "load_retries", "state", "attempts"),
    [(2, 3, "ready", 3), (0, 2, "failed", 3)],  # failures=0: the source fails forever
    ids=["recovers", "gives-up"],
)
async def test_transient_errors_are_retried_with_backoff(
    failures: int,
    load_retries: int,
    state: str,
    attempts: int,
    iris_model: Path,
    range_http_server: RangeHTTPServer,
    tmp_path: Path,
) -> None:
    shutil.copytree(iris_model, Path(range_http_server.directory) / "iris")
    range_http_server.inject(r"modelload\.toml", "status", status=503, times=failures)
    app = create_app(
        range_http_server.url_for("iris/"),
        cache_dir=tmp_path / "cache",
        load_retries=load_retries,
        retry_backoff=0.01,
        retries=0,
    )
    async with serving(app) as client:
        body = await wait_state(client, state)
    assert app.state.model.attempt == attempts
    served_503 = [h for h in range_http_server.hits if h.status == 503]
    assert len(served_503) == (failures or attempts)
    if state == "failed":
        assert body["attempts"] == attempts and "SourceUnavailableError" in body["reason"]
