"""``modelload serve``: run :func:`~modelload.app.create_app` under uvicorn.

Owns what the command adds around the app: a logfmt-style logging configuration (one
line per event, ``key=value`` fields such as ``phase=fetch seconds=1.234``), driving
``uvicorn.Server`` directly so a permanent load failure can shut the server down
cleanly and make the process exit non-zero (Kubernetes then restarts it with backoff),
and ``--workers N`` through uvicorn's process supervisor.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from modelload.errors import SourceError
from modelload.settings import Settings

__all__ = ["EXIT_LOAD_FAILED", "EXIT_STARTUP_FAILED", "ServeOptions", "configure_logging", "run"]

EXIT_LOAD_FAILED = 1
EXIT_STARTUP_FAILED = 3  # uvicorn's code for "could not start" (bind failed, ...)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

# attributes every LogRecord has; anything else was passed as ``extra=``
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class LogfmtFormatter(logging.Formatter):
    """``time level logger msg="..." key=value ...``: greppable and machine-parsable."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        fields = [
            stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={_quote(record.getMessage())}",
        ]
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                if isinstance(value, float):
                    value = f"{value:.3f}"
                fields.append(f"{key}={_quote(str(value))}")
        line = " ".join(fields)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _quote(text: str) -> str:
    if text and not any(c in text for c in ' "=\n\t'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def configure_logging(level: str = "info", access_log: bool = True) -> None:
    """Send modelload's and uvicorn's logs to stderr as logfmt lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "modelload"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = access_log or name != "uvicorn.access"
        logger.setLevel(level.upper())
    logging.captureWarnings(True)


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """What ``modelload serve`` was asked for (picklable: sent to worker processes)."""

    model_uri: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    log_level: str = "info"
    access_log: bool = True
    inference_threads: int = 1
    stay_up_on_failure: bool = False
    #: set by the supervisor for its workers: where a worker reports a load failure
    failure_file: str | None = None


def _report(exc: BaseException) -> None:
    print(f"modelload: error: model load failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def _uvicorn_config(app: Any, options: ServeOptions, **kwargs: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_config=None,
        log_level=options.log_level,
        access_log=options.access_log,
        lifespan="on",
        timeout_graceful_shutdown=10,
        **kwargs,
    )


def run(options: ServeOptions) -> int:
    """Serve until stopped; the exit status (0, or 1 when the model failed to load)."""
    configure_logging(options.log_level, options.access_log)
    settings = Settings.from_env(model_uri=options.model_uri)
    if not settings.model_uri:
        raise SourceError("no model to serve: pass MODEL_URI or set MODELLOAD_MODEL_URI")
    if options.workers > 1:
        return _run_workers(dataclasses.replace(options, model_uri=settings.model_uri))
    return _run_single(options, settings)


def _run_single(options: ServeOptions, settings: Settings) -> int:
    import uvicorn

    from modelload.app import create_app

    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_failure(exc: BaseException) -> None:
        failures.append(exc)
        if not options.stay_up_on_failure and server is not None:
            server.should_exit = True

    app = create_app(
        settings=settings, on_failure=on_failure, inference_threads=options.inference_threads
    )
    server = uvicorn.Server(_uvicorn_config(app, options))
    server.run()
    if failures and not options.stay_up_on_failure:
        _report(failures[0])
        return EXIT_LOAD_FAILED
    if not server.started:
        return EXIT_STARTUP_FAILED
    return 0


# -- several workers ------------------------------------------------------------------


def worker_app(options: ServeOptions) -> Any:
    """The app of one worker process (a uvicorn app factory, called in the worker)."""
    from modelload.app import create_app

    configure_logging(options.log_level, options.access_log)

    def on_failure(exc: BaseException) -> None:
        if options.stay_up_on_failure or options.failure_file is None:
            return
        Path(options.failure_file).write_text(f"{type(exc).__name__}: {exc}")
        os.kill(os.getppid(), signal.SIGTERM)  # the supervisor stops every worker

    return create_app(
        options.model_uri, on_failure=on_failure, inference_threads=options.inference_threads
    )


def _run_workers(options: ServeOptions) -> int:
    from uvicorn.supervisors import Multiprocess

    with tempfile.TemporaryDirectory(prefix="modelload-serve-") as tmp:
        failure_file = Path(tmp) / "failure"
        options = dataclasses.replace(options, failure_file=str(failure_file))
        config = _uvicorn_config(
            functools.partial(worker_app, options), options, factory=True, workers=options.workers
        )
        sock = config.bind_socket()
        try:
            Multiprocess(config, sockets=[sock]).run()
        finally:
            sock.close()
        if failure_file.exists():
            reason = failure_file.read_text()
            print(f"modelload: error: model load failed: {reason}", file=sys.stderr)
            return EXIT_LOAD_FAILED
    return 0
