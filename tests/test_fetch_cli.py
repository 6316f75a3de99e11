"""`modelload fetch` as a real subprocess: init-container mode, kill -9 and resume, and
two processes fetching the same model at once."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fetchutil import MiB, cli_env, make_model, modelload_cmd, run_cli, served, sha256_of
from servers import RangeHTTPServer, wait_until

from modelload import load_model
from modelload.fetch import fetch_uri
from modelload.settings import Settings


def test_fetch_dest_is_a_plain_model_directory(
    range_http_server: RangeHTTPServer, tmp_path: Path
) -> None:
    manifest = make_model(Path(range_http_server.directory) / "m", os.urandom(MiB))
    uri = range_http_server.url_for("m/")
    cache, dest = tmp_path / "cache", tmp_path / "volume" / "model"
    result = run_cli("fetch", uri, "--dest", str(dest), env=cli_env(cache))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sha256:{manifest.digest}"
    assert sorted(p.name for p in dest.iterdir()) == ["data.bin", "model.pkl", "modelload.toml"]
    blob = cache / "blobs" / manifest.files["data.bin"].sha256
    assert (dest / "data.bin").stat().st_ino == blob.stat().st_ino  # same disk: hard link
    # the server side: load the shared volume with its own cache, no network involved
    range_http_server.reset()
    loaded = load_model(str(dest), cache_dir=tmp_path / "server-cache")
    range_http_server.settle()
    assert loaded.digest == manifest.digest and range_http_server.hits == []
    # fetching again is a no-op that prints the same digest
    again = run_cli("fetch", uri, "--dest", str(dest), env=cli_env(cache))
    assert again.returncode == 0 and again.stdout == result.stdout
    assert served(range_http_server, "data.bin") == 0


def test_fetch_error_is_one_line(range_http_server: RangeHTTPServer, tmp_path: Path) -> None:
    result = run_cli("fetch", range_http_server.url_for("nope/"), env=cli_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("modelload: error: SourceNotFoundError:")
    assert "nope" in result.stderr and "Traceback" not in result.stderr


def _journal_chunks(journal: Path) -> int:
    try:
        return max(len(journal.read_text().splitlines()) - 1, 0)
    except FileNotFoundError:
        return 0


@pytest.mark.timeout(120)
def test_kill_9_mid_fetch_then_resume(range_http_server: RangeHTTPServer, tmp_path: Path) -> None:
    size = 64 * MiB
    manifest = make_model(Path(range_http_server.directory) / "m", os.urandom(size))
    sha = manifest.files["data.bin"].sha256
    uri = range_http_server.url_for("m/")
    cache = tmp_path / "cache"
    env = cli_env(cache, chunk_size=2 * MiB, concurrency=2)
    range_http_server.inject(r"data\.bin", "slow", seconds=0.25, times=0)  # killable
    proc = subprocess.Popen(
        modelload_cmd("fetch", uri), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    journal = cache / "blobs" / f"{sha}.journal"
    try:
        wait_until(lambda: _journal_chunks(journal) >= 6, 60, "six journaled chunks")
    finally:
        proc.kill()  # SIGKILL: no cleanup handlers run
        proc.wait(30)
    assert proc.returncode == -9
    recorded = _journal_chunks(journal)
    assert 6 <= recorded < 32
    assert not (cache / "blobs" / sha).exists()
    assert not (cache / "snapshots" / manifest.digest).exists()

    range_http_server.reset()  # no more faults; count only the second run
    result = run_cli("fetch", uri, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sha256:{manifest.digest}"
    second_run = served(range_http_server, "data.bin")
    assert second_run <= size - recorded * 2 * MiB
    assert sha256_of(cache / "snapshots" / manifest.digest / "data.bin") == sha
    assert not journal.exists()


_LOAD = (
    "import sys\n"
    "from modelload import load_model\n"
    "m = load_model(sys.argv[1])\n"
    "print(m.digest, m.model['data_sha256'])\n"
)


@pytest.mark.timeout(120)
def test_two_processes_download_each_blob_once(
    range_http_server: RangeHTTPServer, tmp_path: Path
) -> None:
    size = 8 * MiB
    manifest = make_model(Path(range_http_server.directory) / "m", os.urandom(size))
    sha = manifest.files["data.bin"].sha256
    uri = range_http_server.url_for("m/")
    env = cli_env(tmp_path / "cache", chunk_size=1 * MiB, concurrency=2)
    # hold data.bin at the server until both processes are running
    gate = range_http_server.inject(r"data\.bin", "gate", seconds=60, times=0)
    cmd = [sys.executable, "-c", _LOAD, uri]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)]

    def manifest_reads() -> int:
        return sum(
            h.method == "GET" and h.path.endswith("modelload.toml") for h in range_http_server.hits
        )

    try:
        # the first holds the blob's lock once its first range is at the server
        wait_until(lambda: gate.served >= 1, 60, "first process downloading")
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        wait_until(lambda: manifest_reads() == 2, 60, "second process resolving")
    finally:
        gate.release.set()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err.decode()
        outputs.append(out.decode().split())
    assert outputs[0] == outputs[1] == [manifest.digest, sha]
    assert served(range_http_server, "data.bin") == size  # every byte served once


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_model(tmp_path / "m", os.urandom(3 * MiB))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    fetch_uri(str(tmp_path / "m"), Settings(cache_dir=tmp_path / "c", chunk_size=MiB))
    assert "blobby:1" in terminal.getvalue() and "100%" in terminal.getvalue()
    quiet = io.StringIO()  # not a terminal: no bar
    monkeypatch.setattr(sys, "stderr", quiet)
    fetch_uri(str(tmp_path / "m"), Settings(cache_dir=tmp_path / "c2"))
    assert quiet.getvalue() == ""
