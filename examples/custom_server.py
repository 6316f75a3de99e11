"""Your own Starlette routes next to modelload's: one app, one process, one model load.

    python examples/custom_server.py [MODEL_URI] [--port 8080]

MODEL_URI defaults to MODELLOAD_MODEL_URI, then to examples/iris/model (run
examples/iris/train.py first). Besides modelload's routes (/predict, /readyz, /v2/...)
the app answers:

    POST /classify {"instances": [[5.1, 3.5, 1.4, 0.2]]} -> {"species": ["setosa"]}
    GET  /about                                         -> name, version and digest

The custom routes read the loaded model from ``request.app.state.model``; until the
load is over they answer 503, like modelload's own prediction routes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from modelload import LoadedModel, create_app

SPECIES = ["setosa", "versicolor", "virginica"]
DEFAULT_MODEL = Path(__file__).parent / "iris" / "model"


def _loaded(request: Request) -> LoadedModel | None:
    loaded: LoadedModel | None = request.app.state.model.loaded
    return loaded


async def classify(request: Request) -> JSONResponse:
    loaded = _loaded(request)
    if loaded is None:
        return JSONResponse({"error": "model not ready"}, 503, headers={"Retry-After": "1"})
    body = await request.json()
    labels = await run_in_threadpool(loaded.model.predict, body["instances"])
    return JSONResponse({"species": [SPECIES[int(label)] for label in labels]})


async def about(request: Request) -> JSONResponse:
    loaded = _loaded(request)
    if loaded is None:
        return JSONResponse({"error": "model not ready"}, 503, headers={"Retry-After": "1"})
    return JSONResponse({"name": loaded.name, "version": loaded.version, "digest": loaded.digest})


def build_app(model_uri: str | None = None, **settings: object) -> Starlette:
    """modelload's app with two extra routes."""
    routes = [
        Route("/classify", classify, methods=["POST"]),
        Route("/about", about, methods=["GET"]),
    ]
    return create_app(model_uri, routes=routes, **settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_uri", nargs="?")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uri = args.model_uri or os.environ.get("MODELLOAD_MODEL_URI") or str(DEFAULT_MODEL)
    uvicorn.run(build_app(uri), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
