"""create_app: a Starlette app that loads its model in the background and gates on readiness.

The lifespan starts the load in a worker thread, so the event loop answers probes at
once. The state goes ``loading`` -> ``ready`` | ``failed``: ``/livez`` is 200 in every
state, ``/readyz`` is 503 with ``Retry-After`` until the model is loaded, and every
prediction route answers 503 until then. Transient source errors are retried with
exponential backoff (``Settings.load_retries`` times) before the load is declared failed.

Inference runs in worker threads (one at a time by default, see ``inference_threads``)
so the event loop keeps answering probes during a long prediction; request and
response codecs live in :mod:`modelload.protocol`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelload import protocol
from modelload.errors import ModelLoadError
from modelload.loader import LoadedModel, ModelLoader
from modelload.manifest import Signature
from modelload.protocol import ProtocolError
from modelload.settings import Settings

__all__ = ["Hook", "ModelServer", "PredictFn", "create_app"]

logger = logging.getLogger("modelload")

#: ``predict(model, inputs) -> outputs``
PredictFn = Callable[[Any, Any], Any]
#: a pre- or post-processing step: ``inputs -> inputs`` or ``outputs -> outputs``
Hook = Callable[[Any], Any]

LOADING, READY, FAILED = "loading", "ready", "failed"
RETRY_AFTER_LOADING = "1"
RETRY_AFTER_FAILED = "30"
_BACKOFF_CAP = 60.0


def default_predict(model: Any, inputs: Any) -> Any:
    """``model.predict(inputs)``; an onnxruntime session is run; a plain callable is called."""
    if hasattr(model, "predict"):
        return model.predict(inputs)
    if hasattr(model, "run") and hasattr(model, "get_inputs"):  # onnxruntime.InferenceSession
        feeds = inputs if isinstance(inputs, dict) else {model.get_inputs()[0].name: inputs}
        results = model.run(None, feeds)
        names = [o.name for o in model.get_outputs()]
        return results[0] if len(results) == 1 else dict(zip(names, results))
    if callable(model):
        return model(inputs)
    raise TypeError(
        f"a {type(model).__name__} has no predict(); pass create_app(predict=...) to say "
        "how to call it"
    )


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        protocol.dumps(content), status_code=status, headers=headers, media_type="application/json"
    )


class ModelServer:
    """The load state machine of one app and the route handlers that depend on it."""

    def __init__(
        self,
        loader: ModelLoader,
        *,
        predict: PredictFn | None = None,
        preprocess: Hook | None = None,
        postprocess: Hook | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        retry_backoff: float = 1.0,
        inference_threads: int = 1,
    ) -> None:
        if inference_threads < 1:
            raise ValueError(f"inference_threads={inference_threads}: must be at least 1")
        self.loader = loader
        self.inference_threads = inference_threads
        self._limiter: anyio.CapacityLimiter | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.predict_fn = predict or default_predict
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.on_failure = on_failure
        self.retry_backoff = retry_backoff
        self.max_body_bytes = loader.settings.max_body_bytes
        self.state = LOADING
        self.loaded: LoadedModel | None = None
        self.error: BaseException | None = None
        self.attempt = 0
        self._started_at = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- the load -----------------------------------------------------------------

    def start(self) -> None:
        """Start the background load (once; later calls do nothing)."""
        if self._thread is not None:
            return
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="modelload-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Interrupt a retry backoff (a load in progress finishes in its daemon thread)
        and release the inference threads."""
        self._stop.set()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def wait(self, timeout: float | None = None) -> str:
        """Block until the load is over (or ``timeout``); return the state."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state

    def _run(self) -> None:
        retries = max(self.loader.settings.load_retries, 0)
        while True:
            self.attempt += 1
            try:
                loaded = self.loader.load()
            except Exception as exc:
                transient = bool(getattr(exc, "transient", False))
                if transient and self.attempt <= retries and not self._stop.is_set():
                    delay = min(self.retry_backoff * 2 ** (self.attempt - 1), _BACKOFF_CAP)
                    logger.warning(
                        "transient load error, retry %d of %d in %.1fs: %s",
                        self.attempt,
                        retries,
                        delay,
                        exc,
                        extra={"attempt": self.attempt, "delay": delay},
                    )
                    if not self._stop.wait(delay):
                        continue
                self._fail(exc)
                return
            self.loaded = loaded
            self.state = READY
            total = time.monotonic() - self._started_at
            logger.info(
                "model %s:%s ready in %.3fs (digest %s)",
                loaded.name,
                loaded.version,
                total,
                loaded.digest[:12],
                extra={"model": loaded.name, "digest": loaded.digest, "seconds": total},
            )
            return

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self.state = FAILED
        if not isinstance(exc, ModelLoadError):  # a bug, not a bad model: show where
            logger.error("model load crashed", exc_info=exc)
        if self.on_failure is not None:
            try:
                self.on_failure(exc)
            except Exception:
                logger.exception("the on_failure callback raised")

    # -- state ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``/readyz`` says: state, and why not ready."""
        if self.state == READY and self.loaded is not None:
            return {
                "state": READY,
                "model": self.loaded.name,
                "version": self.loaded.version,
                "digest": self.loaded.digest,
            }
        if self.state == FAILED:
            error = self.error
            return {
                "state": FAILED,
                "reason": f"{type(error).__name__}: {error}",
                "attempts": self.attempt,
            }
        phase = self.loader.phase or "starting"
        elapsed = round(time.monotonic() - self._started_at, 3)
        return {
            "state": LOADING,
            "reason": f"loading {self.loader.uri} (phase {phase}, {elapsed}s)",
            "phase": phase,
            "attempt": self.attempt,
            "elapsed": elapsed,
        }

    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": RETRY_AFTER_FAILED if self.state == FAILED else RETRY_AFTER_LOADING}

    def ready_model(self) -> LoadedModel:
        """The loaded model, or a 503 ProtocolError saying why there is none."""
        loaded = self.loaded
        if loaded is None:
            reason = self.status()["reason"]
            raise ProtocolError(503, f"model not ready: {reason}", self._retry_after())
        return loaded

    def named_model(self, request: Request) -> LoadedModel:
        """The loaded model if the path's name (and version) match it, else 404."""
        loaded = self.ready_model()
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name != loaded.name:
            raise ProtocolError(404, f"unknown model {name!r}; this server serves {loaded.name!r}")
        if version is not None and version != loaded.version:
            raise ProtocolError(
                404, f"unknown version {version!r} of {name!r}; serving {loaded.version!r}"
            )
        return loaded

    # -- helpers -------------------------------------------------------------------

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it is known to exceed the limit."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise ProtocolError(400, f"bad Content-Length {declared!r}") from None
            if length > limit:
                raise ProtocolError(413, f"request body of {length} bytes exceeds {limit} bytes")
        chunks: list[bytes] = []
        total = 0
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise ProtocolError(413, f"request body exceeds {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect:  # nobody to answer; not a server error worth a traceback
            raise ProtocolError(400, "the client disconnected while sending the body") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def run_model(self, model: Any, inputs: Any) -> Any:
        """Pre-process, predict, post-process (in a worker thread)."""
        if self.preprocess is not None:
            inputs = self.preprocess(inputs)
        outputs = self.predict_fn(model, inputs)
        if self.postprocess is not None:
            outputs = self.postprocess(outputs)
        return outputs

    async def _to_thread(self, model: Any, inputs: Any) -> Any:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): anyio's portable, slower path
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(self.inference_threads)
            return await anyio.to_thread.run_sync(
                self.run_model, model, inputs, limiter=self._limiter
            )
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self.inference_threads, thread_name_prefix="modelload-predict"
            )
        return await loop.run_in_executor(self._executor, self.run_model, model, inputs)

    async def infer(self, model: Any, inputs: Any) -> Any:
        """Run the model in a worker thread; its exceptions become 500 responses."""
        try:
            return await self._to_thread(model, inputs)
        except ProtocolError:
            raise
        except Exception as exc:
            logger.exception("the model raised %s", type(exc).__name__)
            raise ProtocolError(500, f"the model raised {type(exc).__name__}: {exc}") from exc

    def signature(self, loaded: LoadedModel) -> Signature | None:
        return loaded.manifest.signature if loaded.manifest else None

    # -- routes --------------------------------------------------------------------

    async def livez(self, request: Request) -> Response:
        return _json({"status": "alive", "state": self.state})

    async def readyz(self, request: Request) -> Response:
        if self.state == READY:
            return _json(self.status())
        return _json(self.status(), 503, self._retry_after())

    async def metadata(self, request: Request) -> Response:
        loaded = self.ready_model()
        return _json({"state": self.state, **loaded.metadata()})

    async def predict(self, request: Request) -> Response:
        loaded = self.ready_model()
        doc = protocol.decode_json(await self.read_body(request))
        inputs = protocol.parse_instances(doc, self.signature(loaded))
        predictions = await self.infer(loaded.model, inputs)
        try:
            body = protocol.dumps({"predictions": predictions})
        except TypeError as exc:
            raise ProtocolError(500, f"the model's output is not JSON-encodable: {exc}") from exc
        return Response(body, media_type="application/json")

    async def v2_server(self, request: Request) -> Response:
        from modelload import __version__

        return _json(
            {"name": "modelload", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def v2_live(self, request: Request) -> Response:
        return _json({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        if self.state == READY:
            return _json({"ready": True})
        return _json({"ready": False, **self.status()}, 503, self._retry_after())

    async def v2_model(self, request: Request) -> Response:
        loaded = self.named_model(request)
        return _json(
            protocol.model_metadata(
                loaded.name, loaded.version, loaded.format, self.signature(loaded)
            )
        )

    async def v2_model_ready(self, request: Request) -> Response:
        loaded = self.named_model(request)
        return _json({"name": loaded.name, "ready": True})

    async def v2_infer(self, request: Request) -> Response:
        loaded = self.named_model(request)
        body = await self.read_body(request)
        raw_length = request.headers.get(protocol.HEADER_LENGTH)
        try:
            header_length = None if raw_length is None else int(raw_length)
        except ValueError:
            raise ProtocolError(
                400, f"bad Inference-Header-Content-Length {raw_length!r}"
            ) from None
        signature = self.signature(loaded)
        infer_request = protocol.parse_infer_request(body, header_length, signature)
        result = await self.infer(loaded.model, infer_request.model_input())
        try:
            outputs = protocol.split_outputs(result, signature)
            content, json_length = protocol.encode_infer_response(
                loaded.name, loaded.version, infer_request, outputs
            )
        except (TypeError, ValueError) as exc:
            raise ProtocolError(500, f"the model's output cannot be encoded: {exc}") from exc
        if json_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_length)},
        )

    def routes(self) -> list[BaseRoute]:
        v2_model_routes: list[BaseRoute] = []
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            v2_model_routes += [
                Route(prefix, self.v2_model, methods=["GET"]),
                Route(f"{prefix}/ready", self.v2_model_ready, methods=["GET"]),
                Route(f"{prefix}/infer", self.v2_infer, methods=["POST"]),
            ]
        return [
            Route("/livez", self.livez, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metadata", self.metadata, methods=["GET"]),
            Route("/predict", self.predict, methods=["POST"]),
            Route("/v2", self.v2_server, methods=["GET"]),
            Route("/v2/health/live", self.v2_live, methods=["GET"]),
            Route("/v2/health/ready", self.v2_ready, methods=["GET"]),
            *v2_model_routes,
        ]


async def _protocol_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProtocolError)
    return _json({"error": exc.message}, exc.status, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _json({"error": exc.detail}, exc.status_code, dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    return _json({"error": f"internal server error: {type(exc).__name__}"}, 500)


def create_app(
    model_uri: str | None = None,
    *,
    predict: PredictFn | None = None,
    preprocess: Hook | None = None,
    postprocess: Hook | None = None,
    routes: Sequence[BaseRoute] = (),
    on_failure: Callable[[BaseException], None] | None = None,
    retry_backoff: float = 1.0,
    inference_threads: int = 1,
    settings: Settings | None = None,
    **overrides: Any,
) -> Starlette:
    """A Starlette app serving the model at ``model_uri`` (or ``MODELLOAD_MODEL_URI``).

    ``predict(model, inputs)`` replaces the default ``model.predict(inputs)``, so any
    object a loader returns can be served; ``preprocess(inputs)`` and
    ``postprocess(outputs)`` run around it, in the same worker thread. ``routes`` are
    added after the built-in ones. ``on_failure(exc)`` is called (in the loading
    thread) when the load fails for good. ``retry_backoff`` is the first delay (seconds,
    doubled each time) between attempts after a transient error. ``inference_threads``
    bounds how many predictions run at once in worker threads: 1 (the default) suits
    models that hold the GIL, like most scikit-learn ones; raise it for models that
    release it. Every other keyword is a
    :class:`~modelload.settings.Settings` field and wins over the environment.

    The model's state is at ``app.state.model`` (a :class:`ModelServer`):
    ``.state``, ``.loaded``, ``.error``.
    """
    loader = ModelLoader(model_uri, settings=settings, **overrides)
    server = ModelServer(
        loader,
        predict=predict,
        preprocess=preprocess,
        postprocess=postprocess,
        on_failure=on_failure,
        retry_backoff=retry_backoff,
        inference_threads=inference_threads,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.start()
        try:
            yield
        finally:
            server.stop()

    app = Starlette(
        routes=[*server.routes(), *routes],
        lifespan=lifespan,
        exception_handlers={
            ProtocolError: _protocol_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.model = server
    return app
