"""Helpers for serving tests: run an app in-process with its lifespan, or `modelload serve`."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
from servers import free_port, stop_process, wait_until
from starlette.applications import Starlette


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and yield a client that talks to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


async def wait_ready(client: httpx.AsyncClient, deadline_s: float = 30) -> dict[str, Any]:
    """Poll ``/readyz`` until 200 (returning its body); fail on ``failed`` or the deadline."""
    deadline = time.monotonic() + deadline_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get("/readyz")
        body = response.json()
        if response.status_code == 200:
            return body
        assert body["state"] != "failed", body
        await anyio.sleep(0.02)
    raise TimeoutError(f"not ready after {deadline_s}s: {body}")


async def wait_state(
    client: httpx.AsyncClient, state: str, deadline_s: float = 30
) -> dict[str, Any]:
    """Poll ``/readyz`` until its body's state is ``state``; return the body."""
    return await _wait_body(client, "state", state, deadline_s)


async def wait_phase(
    client: httpx.AsyncClient, phase: str, deadline_s: float = 30
) -> dict[str, Any]:
    """Poll ``/readyz`` until the load is in ``phase``; return the body."""
    return await _wait_body(client, "phase", phase, deadline_s)


async def _wait_body(
    client: httpx.AsyncClient, key: str, value: str, deadline_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = (await client.get("/readyz")).json()
        if body.get(key) == value:
            return body
        await anyio.sleep(0.02)
    raise TimeoutError(f"{key} {value!r} not reached after {deadline_s}s: {body}")


def modelload_command() -> list[str]:
    script = shutil.which("modelload") or str(Path(sys.executable).with_name("modelload"))
    return [script] if Path(script).exists() else [sys.executable, "-m", "modelload.cli"]


class ServeProcess:
    """A real ``modelload serve`` subprocess on a free loopback port."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*modelload_command(), "serve", *args, "--host", "127.0.0.1", "--port", str(self.port)],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )

    @property
    def output(self) -> str:
        """Everything the process wrote to stderr (its logs and errors) so far."""
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def wait_listening(self, deadline_s: float = 30) -> None:
        """Poll until ``/livez`` answers 200."""
        self._wait_for("/livez", deadline_s)

    def wait_ready(self, deadline_s: float = 60) -> None:
        """Poll until ``/readyz`` answers 200."""
        self._wait_for("/readyz", deadline_s)

    def _wait_for(self, path: str, deadline_s: float) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.output}")
            return self.get(path).status_code == 200

        wait_until(answers, deadline_s, f"{path} 200 on {self.url}")

    def stop(self) -> None:
        stop_process(self.process)
        self._log_file.close()


@contextlib.contextmanager
def modelload_serve(args: list[str], env: dict[str, str], log: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(args, env, log)
    try:
        yield server
    finally:
        server.stop()
