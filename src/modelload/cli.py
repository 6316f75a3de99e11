"""The ``modelload`` command line: pack, check, env, fetch, cache, serve.

Every :class:`~modelload.errors.ModelLoadError` is printed as one line on stderr
(no traceback) and the command exits non-zero.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from modelload import __version__
from modelload.errors import ManifestError, ModelLoadError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1
EXIT_USAGE = 2


def friendly_errors(func: F) -> F:
    """Turn ModelLoadError (and bad settings) into a one-line message and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ModelLoadError as exc:
            click.echo(f"modelload: error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        except ValueError as exc:  # settings parsed from the environment
            click.echo(f"modelload: error: {exc}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelload")
def main() -> None:
    """Serve ML models with the model load pattern."""


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name.")
@click.option("--version", "version_", required=True, help="Model version (a string).")
@click.option("--format", "format_", help="Loader format; default: from the entry's extension.")
@click.option("--entry", help="Entry file, relative to DIRECTORY; default: the one model file.")
@click.option(
    "--requires",
    multiple=True,
    help="PEP 508 requirement to add or override (repeatable), e.g. 'numpy>=2,<3'.",
)
@click.option("--python", "python_", help="Python specifier, e.g. '>=3.10'.")
@click.option(
    "--pin",
    type=click.Choice(["exact", "minor", "major"]),
    default="exact",
    show_default=True,
    help="How inferred requirements are pinned: ==X.Y.Z, ==X.Y.*, or >=X.Y,<X+1.",
)
@click.option("--no-infer", is_flag=True, help="Do not scan a pickle/joblib entry for modules.")
@click.option(
    "--signature",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="JSON file with {'inputs': [...], 'outputs': [...]} tensor specs.",
)
@friendly_errors
def pack(
    directory: Path,
    name: str,
    version_: str,
    format_: str | None,
    entry: str | None,
    requires: tuple[str, ...],
    python_: str | None,
    pin: str,
    no_infer: bool,
    signature: Path | None,
) -> None:
    """Write DIRECTORY/modelload.toml pinning every file, and print the model digest."""
    from modelload.manifest import Signature
    from modelload.manifest import pack as pack_dir

    sig = None
    if signature is not None:
        try:
            doc = json.loads(signature.read_text())
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{signature}: not valid JSON: {exc}") from None
        sig = Signature.from_dict(doc, str(signature))
    manifest = pack_dir(
        directory,
        name=name,
        version=version_,
        format=format_,
        entry=entry,
        requires=requires,
        python=python_,
        infer=not no_infer,
        pin=pin,
        signature=sig,
    )
    click.echo(f"wrote {directory / 'modelload.toml'}", err=True)
    for spec in manifest.requires.packages:
        click.echo(f"  requires {spec}", err=True)
    click.echo(f"sha256:{manifest.digest}")


@main.command()
@click.option("--name", default="", help="Name of this image in the table (default: file name).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
def env(name: str, output: Path | None) -> None:
    """Print this environment's profile (python, platform, distributions) as JSON."""
    from modelload.compat import EnvironmentProfile

    text = EnvironmentProfile.current(name=name or "this environment").to_json()
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Environment profile JSON from `modelload env` (repeatable). Default: this one.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
)
@click.option("--storage-options", help="JSON storage options (else MODELLOAD_STORAGE_OPTIONS).")
@friendly_errors
def check(
    models: tuple[str, ...], images: tuple[Path, ...], fmt: str, storage_options: str | None
) -> None:
    """Which IMAGES can serve which MODELS: one row per model, one column per image.

    Reads only each model's manifest, never its files. Exits 0 only when every cell is ok.
    """
    from modelload import compat
    from modelload.loader import read_manifest
    from modelload.settings import Settings
    from modelload.sources import locate, resolve

    overrides: dict[str, Any] = {}
    if storage_options:
        overrides["storage_options"] = json.loads(storage_options)
    settings = Settings.from_env(**overrides)
    profiles = [compat.EnvironmentProfile.load(p) for p in images] or [
        compat.EnvironmentProfile.current()
    ]
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        names = [str(p) for p in images]
        profiles = [
            compat.EnvironmentProfile(n, p.python_version, p.markers, p.distributions)
            for n, p in zip(names, profiles)
        ]
    rows = []
    for uri in models:
        manifest = read_manifest(locate(resolve(uri, settings)))
        label = f"{manifest.label}" if manifest else uri
        from modelload.manifest import Requirements

        requires = manifest.requires if manifest else Requirements()
        rows.append((label, [compat.check(requires, p) for p in profiles]))
    click.echo(compat.render_table(rows, [p.name for p in profiles], fmt), nl=False)
    ok = all(r.ok for _, reports in rows for r in reports)
    sys.exit(0 if ok else EXIT_FAILED)


# -- fetch and cache ------------------------------------------------------------------


def _fetch_settings(cache_dir: Path | None, storage_options: str | None) -> Any:
    from modelload.settings import Settings

    options = json.loads(storage_options) if storage_options else None
    return Settings.from_env(cache_dir=cache_dir, storage_options=options)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


_CACHE_DIR_OPTION = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Cache directory (else MODELLOAD_CACHE_DIR, else the user cache dir).",
)


@main.command("fetch")
@click.argument("uri")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also lay the model out as a plain directory here (e.g. a volume shared with the "
    "server, which then loads MODELLOAD_MODEL_URI=DEST).",
)
@_CACHE_DIR_OPTION
@click.option("--storage-options", help="JSON storage options (else MODELLOAD_STORAGE_OPTIONS).")
@friendly_errors
def fetch_command(
    uri: str, dest: Path | None, cache_dir: Path | None, storage_options: str | None
) -> None:
    """Fetch and verify the model at URI into the cache (and DEST); print its digest.

    The init-container mode of the model load pattern: `modelload fetch URI --dest
    /models/current` in an init container, then the server starts with
    MODELLOAD_MODEL_URI=/models/current. An interrupted fetch resumes where it stopped.
    Exits 0 only when every file's sha256 matched. No compatibility check is made: the
    init container's image need not carry the model's libraries.
    """
    import time

    from modelload.fetch import fetch_uri

    settings = _fetch_settings(cache_dir, storage_options)
    started = time.perf_counter()
    snapshot = fetch_uri(uri, settings, dest=dest)
    elapsed = time.perf_counter() - started
    where = dest if dest is not None else snapshot.local_dir
    click.echo(
        f"fetched {uri} -> {where} ({_human_bytes(snapshot.bytes_downloaded)} downloaded "
        f"in {elapsed:.1f}s)",
        err=True,
    )
    click.echo(f"sha256:{snapshot.digest}" if snapshot.manifest else snapshot.digest)


@main.group("cache")
def cache_group() -> None:
    """Inspect and prune the local model cache."""


@cache_group.command("ls")
@_CACHE_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per snapshot.")
@friendly_errors
def cache_ls(cache_dir: Path | None, as_json: bool) -> None:
    """List cached model snapshots, most recently used first."""
    import datetime

    from modelload.cache import Cache

    cache = Cache(_fetch_settings(cache_dir, None).cache_dir)
    snaps = cache.list_snapshots()
    if as_json:
        for snap in snaps:
            doc = {
                "digest": snap.digest,
                "name": snap.name,
                "version": snap.version,
                "files": snap.files,
                "size": snap.size,
                "last_used": snap.last_used,
                "uris": list(snap.uris),
                "path": str(snap.path),
            }
            click.echo(json.dumps(doc))
        return
    click.echo(f"cache: {cache.root} ({len(snaps)} snapshots)", err=True)
    for snap in snaps:
        used = datetime.datetime.fromtimestamp(snap.last_used).strftime("%Y-%m-%d %H:%M")
        uris = ", ".join(snap.uris) or "-"
        click.echo(
            f"{snap.digest[:17]:<17}  {snap.name} {snap.version}  {snap.files} files  "
            f"{_human_bytes(snap.size)}  used {used}  {uris}"
        )


@cache_group.command("prune")
@click.option("--keep", type=click.IntRange(min=0), help="Keep the N most recently used snapshots.")
@click.option("--older-than", help="Remove snapshots unused for this long: 12h, 7d, 2w, 1d12h.")
@_CACHE_DIR_OPTION
@friendly_errors
def cache_prune(keep: int | None, older_than: str | None, cache_dir: Path | None) -> None:
    """Remove old snapshots, then the blobs no remaining snapshot uses.

    Without options only unreferenced blobs are removed.
    """
    from modelload.cache import Cache, parse_duration

    try:
        seconds = parse_duration(older_than) if older_than else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    cache = Cache(_fetch_settings(cache_dir, None).cache_dir)
    report = cache.prune(keep=keep, older_than=seconds)
    click.echo(
        f"removed {len(report.snapshots)} snapshots, {report.blobs} blobs and "
        f"{report.partials} partial downloads; freed {_human_bytes(report.bytes_freed)}"
    )
    for digest in report.snapshots:
        click.echo(f"  removed snapshot {digest}")


# -- serve ----------------------------------------------------------------------------


@main.command()
@click.argument("model_uri", required=False)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option("--access-log/--no-access-log", default=True, show_default=True)
@click.option(
    "--inference-threads",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Predictions run at once per worker (raise for models that release the GIL).",
)
@click.option(
    "--stay-up-on-failure",
    is_flag=True,
    help="Keep serving (/readyz 503 with the reason) when the model fails to load, "
    "instead of exiting non-zero.",
)
@friendly_errors
def serve(
    model_uri: str | None,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    access_log: bool,
    inference_threads: int,
    stay_up_on_failure: bool,
) -> None:
    """Serve MODEL_URI (else MODELLOAD_MODEL_URI) over HTTP: /predict, V2, /readyz, /livez.

    The server answers /livez at once and /readyz 503 until the model is loaded. A load
    that fails for good (not found, integrity, compatibility, manifest) exits with status
    1 after logging the reason, so an orchestrator restarts it with backoff.
    """
    from modelload.serve import ServeOptions, run

    options = ServeOptions(
        model_uri=model_uri,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
        inference_threads=inference_threads,
        stay_up_on_failure=stay_up_on_failure,
    )
    sys.exit(run(options))


if __name__ == "__main__":  # pragma: no cover
    main()
