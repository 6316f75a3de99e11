"""Serving overhead: `modelload serve` versus a minimal hand-written Starlette endpoint.

    python benchmarks/serve.py [--concurrency 32] [--duration 10] [--repetitions 5]

Both serve the same trained iris model (examples/iris/train.py) under uvicorn with one
worker, each in its own process, on loopback; the servers are pinned to one set of CPUs
and the client to another (when the machine has two or more). One httpx.AsyncClient
drives each in turn (interleaved repetitions) with a fixed number of concurrent
POST /predict requests for a fixed duration. Prints requests/s (median over
repetitions), p50/p99 latency (over all requests) and server CPU time per request
(steadier than requests/s on a machine shared with other work) per server and, as the
last line, the median over repetitions of the ratio ours/bare of requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]}


def serve_bare(model_dir: str, port: int) -> None:
    """The peer: what a person writes by hand with Starlette, joblib and uvicorn."""
    import joblib
    import numpy as np
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    model = joblib.load(Path(model_dir) / "model.joblib")

    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        predictions = model.predict(np.asarray(body["instances"], dtype=np.float64))
        return JSONResponse({"predictions": predictions.tolist()})

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"state": "ready"})

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", ready)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The client and the servers get CPUs of their own (when there are 2 or more), so the
# client's work does not compete with a server's threads for a core.
_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
CLIENT_CPUS = set(_CPUS[:1]) if len(_CPUS) >= 2 else set()
SERVER_CPUS = set(_CPUS[1:]) if len(_CPUS) >= 2 else set()


def _pin(cpus: set[int]) -> Callable[[], None] | None:
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def start(name: str, model_dir: Path, cache: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    if name == "modelload":
        exe = shutil.which("modelload") or str(Path(sys.executable).with_name("modelload"))
        cmd = [exe, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--no-access-log", "--log-level", "warning"]
    else:
        cmd = [sys.executable, __file__, "--serve-bare", str(model_dir), str(port)]
    env = {**os.environ, "MODELLOAD_CACHE_DIR": str(cache)}
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_pin(SERVER_CPUS))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{name} server not ready")


async def load(url: str, concurrency: int, duration: float) -> tuple[float, list[float]]:
    """Requests per second and per-request latencies (s) at fixed concurrency."""
    latencies: list[float] = []
    errors: list[Exception] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for _ in range(concurrency):  # warm the connections up
            (await client.post("/predict", json=PAYLOAD)).raise_for_status()
        stop = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    response = await client.post("/predict", json=PAYLOAD)
                except httpx.TransportError as exc:  # counted, like wrk's socket errors
                    errors.append(exc)
                    continue
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text}")

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    if errors:
        print(f"  {url}: {len(errors)} transport errors ({errors[0]!r})", flush=True)
    return len(latencies) / elapsed, latencies


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a server process has used so far."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("train", REPO / "examples/iris/train.py")
    assert spec and spec.loader
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)

    if CLIENT_CPUS:
        os.sched_setaffinity(0, CLIENT_CPUS)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model_dir = Path(tmp) / "iris"
        train.train(model_dir)
        servers = {
            name: start(name, model_dir, Path(tmp) / "cache") for name in ("modelload", "bare")
        }
        rps: dict[str, list[float]] = {name: [] for name in servers}
        lat: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        try:
            for rep in range(args.repetitions):
                order = list(servers) if rep % 2 == 0 else list(reversed(servers))
                for name in order:
                    proc, url = servers[name]
                    cpu_before = _cpu_seconds(proc.pid)
                    r, latencies = asyncio.run(load(url, args.concurrency, args.duration))
                    cpu_ms = (_cpu_seconds(proc.pid) - cpu_before) / len(latencies) * 1000
                    rps[name].append(r)
                    lat[name].extend(latencies)
                    cpu[name].append(cpu_ms)
                    print(
                        f"rep {rep + 1} {name:9s} {r:8.1f} req/s  {cpu_ms:.2f} ms CPU/request",
                        flush=True,
                    )
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(10)
    print(
        f"\nPOST /predict, 3 iris rows, concurrency {args.concurrency}, {args.duration:g} s x "
        f"{args.repetitions} interleaved, uvicorn 1 worker, loopback, "
        f"client on CPUs {sorted(CLIENT_CPUS) or 'any'}, servers on {sorted(SERVER_CPUS) or 'any'}"
    )
    for name in servers:
        print(
            f"{name:9s} median {statistics.median(rps[name]):8.1f} req/s   "
            f"p50 {percentile(lat[name], 0.50) * 1000:6.2f} ms   "
            f"p99 {percentile(lat[name], 0.99) * 1000:6.2f} ms   "
            f"mean {statistics.fmean(lat[name]) * 1000:6.2f} ms   "
            f"server CPU {statistics.median(cpu[name]):.2f} ms/request"
        )
    # each repetition runs both servers back to back, so their ratio shares the machine's
    # conditions; the median over repetitions resists load from other processes
    ratios = [ours / bare for ours, bare in zip(rps["modelload"], rps["bare"])]
    print("per-repetition ratios: " + ", ".join(f"{r:.2f}" for r in ratios))
    print(f"ratio ours/bare (req/s, median of repetitions): {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-bare":
        serve_bare(sys.argv[2], int(sys.argv[3]))
    else:
        main()
