"""`modelload serve` as a real process: readiness during a slow load, tritonclient, failures."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from modelutil import IRIS_SAMPLES
from servers import RangeHTTPServer, wait_until
from serveutil import ServeProcess, modelload_serve

LIMIT = 4096


def test_probes_during_a_slow_load_then_predictions(
    iris_model: Path, iris_expected: list[int], range_http_server: RangeHTTPServer, tmp_path: Path
) -> None:
    shutil.copytree(iris_model, Path(range_http_server.directory) / "iris")
    range_http_server.inject(r"model\.joblib", "slow", seconds=3, times=0)
    env = {
        "MODELLOAD_MODEL_URI": range_http_server.url_for("iris/"),
        "MODELLOAD_CACHE_DIR": str(tmp_path / "cache"),
    }
    with modelload_serve(["--no-access-log"], env, tmp_path / "serve.log") as server:
        server.wait_listening()
        # poll until the load is inside the slow download; then every probe is observable
        deadline = time.monotonic() + 30
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = server.get("/readyz")
            body = response.json()
            if body.get("phase") == "fetch":
                break
            assert response.status_code == 503, body
            time.sleep(0.02)
        assert body.get("phase") == "fetch", body
        assert body["state"] == "loading"
        live = server.get("/livez")
        ready = server.get("/readyz")
        assert live.status_code == 200
        assert ready.status_code == 503
        assert int(ready.headers["Retry-After"]) > 0
        assert ready.json()["state"] == "loading"
        early = server.get("/metadata")
        assert early.status_code == 503 and "Retry-After" in early.headers
        assert "not ready" in early.json()["error"]

        server.wait_ready()
        assert server.get("/readyz").json()["state"] == "ready"
        response = httpx.post(server.url + "/predict", json={"instances": IRIS_SAMPLES})
        assert response.status_code == 200
        assert response.json() == {"predictions": iris_expected}
    assert any(h.path.endswith("model.joblib") for h in range_http_server.hits)
    log = server.output
    assert "phase=fetch" in log and "seconds=" in log


@pytest.fixture(scope="module")
def iris_server(
    iris_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve-iris")
    env = {"MODELLOAD_CACHE_DIR": str(tmp / "cache"), "MODELLOAD_MAX_BODY_BYTES": str(LIMIT)}
    with modelload_serve([str(iris_model), "--no-access-log"], env, tmp / "serve.log") as server:
        server.wait_ready()
        yield server


def test_tritonclient_against_serve(iris_server: ServeProcess, iris_expected: list[int]) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{iris_server.port}")
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_model_metadata("iris")
    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["1.0.0"]
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert metadata["outputs"][0]["name"] == "output-0"
    x = np.array(IRIS_SAMPLES, dtype=np.float64)
    for binary in (True, False):  # binary tensor extension (the default) and JSON tensors
        tensor = triton.InferInput("input-0", list(x.shape), "FP64")
        tensor.set_data_from_numpy(x, binary_data=binary)
        result = client.infer(
            "iris", [tensor], outputs=[triton.InferRequestedOutput("output-0", binary_data=binary)]
        )
        assert result.as_numpy("output-0").tolist() == iris_expected
    tensor = triton.InferInput("input-0", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)
    assert client.infer("iris", [tensor]).as_numpy("output-0").tolist() == iris_expected


def test_oversized_body_is_refused_by_the_real_server(iris_server: ServeProcess) -> None:
    big = b'{"instances": [' + b"[5.1, 3.5, 1.4, 0.2], " * 400 + b"[5.1, 3.5, 1.4, 0.2]]}"
    assert len(big) > LIMIT
    announced = httpx.post(iris_server.url + "/predict", content=big)
    assert announced.status_code == 413
    assert "exceeds" in announced.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    streamed = httpx.post(iris_server.url + "/predict", content=chunks())
    assert streamed.status_code == 413
    ok = httpx.post(iris_server.url + "/predict", json={"instances": IRIS_SAMPLES[:1]})
    assert ok.status_code == 200


def _corrupt_copy(iris_model: Path, dest: Path) -> Path:
    shutil.copytree(iris_model, dest)
    path = dest / "model.joblib"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different sha256
    path.write_bytes(bytes(data))
    return dest


def test_permanent_failure_exits_non_zero_with_the_reason(iris_model: Path, tmp_path: Path) -> None:
    model = _corrupt_copy(iris_model, tmp_path / "bad")
    env = {"MODELLOAD_CACHE_DIR": str(tmp_path / "cache")}
    server = ServeProcess([str(model)], env, tmp_path / "serve.log")
    try:
        code = server.process.wait(timeout=60)
    finally:
        server.stop()
    output = server.output
    assert code == 1, output
    assert "modelload: error: model load failed: IntegrityError" in output
    assert "model.joblib" in output.splitlines()[-1]


def test_stay_up_on_failure_keeps_readyz_503_with_the_reason(
    iris_model: Path, tmp_path: Path
) -> None:
    model = _corrupt_copy(iris_model, tmp_path / "bad")
    env = {"MODELLOAD_CACHE_DIR": str(tmp_path / "cache")}
    args = [str(model), "--stay-up-on-failure", "--no-access-log"]
    with modelload_serve(args, env, tmp_path / "serve.log") as server:
        server.wait_listening()
        deadline = time.monotonic() + 30
        while server.get("/readyz").json()["state"] != "failed":
            assert time.monotonic() < deadline, server.output
            time.sleep(0.05)
        for _ in range(2):  # it stays failed, and the process stays up
            ready = server.get("/readyz")
            assert ready.status_code == 503
            assert "Retry-After" in ready.headers
            assert ready.json()["reason"].startswith("IntegrityError")
            assert server.get("/livez").status_code == 200
            assert server.process.poll() is None
        predict = server.get("/v2/health/ready")
        assert predict.status_code == 503


def test_workers_serve_and_a_failure_stops_every_worker(
    iris_model: Path, iris_expected: list[int], tmp_path: Path
) -> None:
    env = {"MODELLOAD_CACHE_DIR": str(tmp_path / "cache")}
    args = [str(iris_model), "--workers", "2", "--no-access-log"]
    with modelload_serve(args, env, tmp_path / "ok.log") as server:
        # each worker loads its own copy and /readyz answers for whichever worker took
        # the connection: wait until both said they are ready
        wait_until(lambda: server.output.count('msg="model iris:1.0.0 ready') == 2, 60, "2 workers")
        for _ in range(4):
            response = httpx.post(server.url + "/predict", json={"instances": IRIS_SAMPLES})
            assert response.json() == {"predictions": iris_expected}
    assert "POST /predict" not in server.output  # --no-access-log reaches the workers

    bad = _corrupt_copy(iris_model, tmp_path / "bad")
    env = {"MODELLOAD_CACHE_DIR": str(tmp_path / "fresh-cache")}  # not the good snapshot
    failing = ServeProcess([str(bad), "--workers", "2"], env, tmp_path / "bad.log")
    try:
        code = failing.process.wait(timeout=60)
    finally:
        failing.stop()
    assert code == 1, failing.output
    assert "modelload: error: model load failed: IntegrityError" in failing.output


def test_serve_without_a_model_uri_says_what_to_set(tmp_path: Path) -> None:
    env = {"MODELLOAD_MODEL_URI": "", "MODELLOAD_CACHE_DIR": str(tmp_path / "cache")}
    server = ServeProcess([], env, tmp_path / "serve.log")
    try:
        code = server.process.wait(timeout=60)
    finally:
        server.stop()
    assert code == 1
    assert "MODELLOAD_MODEL_URI" in server.output.splitlines()[-1]
