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


if __name__ == "__main__":  # pragma: no cover
    main()
