"""Fetch throughput and memory: modelload's transfer versus s3fs ``get`` and boto3
``download_file``, all against one SeaweedFS S3 server on loopback.

    python benchmarks/fetch.py [--sizes 256,1024] [--repetitions 3]
    python benchmarks/fetch.py --sweep          # chunk size x concurrency, 256 MiB object

Uploads random objects, then for each repetition and size runs the three downloaders
in turn (the order rotates each repetition), each in a fresh subprocess that measures
only the download call: ``ours`` is ``modelload.fetch.fetch_model`` on the object into
a fresh cache (ranged reads, sha256, commit), ``s3fs`` is ``S3FileSystem.get``,
``boto3`` is ``S3Client.download_file`` with the default TransferConfig. Peak RSS growth
is the subprocess's peak RSS minus its RSS just before the call. Then a warm-cache
``load_model`` (a 256 MiB joblib model, manifest on S3) is timed against a bare
``joblib.load`` of the same file. Prints median MB/s per downloader and size, and the
ratios; the last line is ours/boto3.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

MiB = 1024 * 1024
IMPLS = ("ours", "boto3", "s3fs")


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _peak_rss() -> int:
    """This process's peak RSS (VmHWM). ``ru_maxrss`` would not do: Linux carries it
    over ``exec`` from the parent, so a child would report the driver's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker(args: argparse.Namespace) -> None:
    """Run one download in this (fresh) process and print {"seconds", "rss_growth"}."""
    options = json.loads(args.options)
    uri = f"s3://{args.bucket}/{args.key}"
    out = Path(args.out)
    if args.worker == "ours":
        from modelload.fetch import fetch_model
        from modelload.settings import Settings
        from modelload.sources import locate, resolve

        overrides = {k: v for k, v in (("chunk_size", args.chunk), ("concurrency", args.conc)) if v}
        settings = Settings(cache_dir=out, storage_options=options, **overrides)
        location = locate(resolve(uri, settings))
        before = _rss()
        start = time.perf_counter()
        snapshot = fetch_model(location, None, settings)
        seconds = time.perf_counter() - start
        assert snapshot.entry.stat().st_size == args.size
    elif args.worker == "s3fs":
        import s3fs

        fs = s3fs.S3FileSystem(**options)
        fs.info(uri)
        before = _rss()
        start = time.perf_counter()
        fs.get(uri, str(out / "obj"))
        seconds = time.perf_counter() - start
    else:
        import boto3
        from boto3.s3.transfer import TransferConfig

        client = boto3.client(
            "s3",
            endpoint_url=options["endpoint_url"],
            aws_access_key_id=options["key"],
            aws_secret_access_key=options["secret"],
            region_name="us-east-1",
        )
        client.head_object(Bucket=args.bucket, Key=args.key)
        before = _rss()
        start = time.perf_counter()
        client.download_file(args.bucket, args.key, str(out / "obj"), Config=TransferConfig())
        seconds = time.perf_counter() - start
    peak = _peak_rss()
    print(json.dumps({"seconds": seconds, "rss_growth": max(peak - before, 0)}))


def run_one(
    impl: str,
    bucket: str,
    key: str,
    size: int,
    options: dict[str, Any],
    chunk: int = 0,
    conc: int = 0,
) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix=f"fetchbench-{impl}-"))
    try:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            impl,
            "--bucket",
            bucket,
            "--key",
            key,
            "--size",
            str(size),
            "--out",
            str(out),
            "--options",
            json.dumps(options),
            "--chunk",
            str(chunk),
            "--conc",
            str(conc),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"{impl} failed:\n{result.stderr}")
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def upload(fs: Any, bucket: str, key: str, size: int) -> None:
    with tempfile.NamedTemporaryFile(prefix="fetchbench-src-") as handle:
        left = size
        while left:
            block = os.urandom(min(64 * MiB, left))
            handle.write(block)
            left -= len(block)
        handle.flush()
        fs.put_file(handle.name, f"{bucket}/{key}")


def warm_load(fs: Any, bucket: str, options: dict[str, Any], repetitions: int) -> float:
    """Median ratio of a warm-cache ``load_model`` to a bare ``joblib.load`` of the file."""
    import joblib
    import numpy as np

    from modelload import load_model
    from modelload.manifest import pack

    work = Path(tempfile.mkdtemp(prefix="fetchbench-warm-"))
    try:
        model_dir = work / "model"
        model_dir.mkdir()
        rng = np.random.default_rng(0)
        model = {"weights": rng.standard_normal((256 * MiB) // 8), "classes": list(range(10))}
        joblib.dump(model, model_dir / "model.joblib")
        pack(model_dir, name="warm", version="1")
        for path in model_dir.iterdir():
            fs.put_file(str(path), f"{bucket}/warm/{path.name}")
        uri = f"s3://{bucket}/warm"
        cache = work / "cache"
        first = load_model(uri, cache_dir=cache, storage_options=options)
        entry = first.entry
        ours, bare = [], []
        del first
        for _ in range(max(repetitions, 5)):
            gc.collect()
            start = time.perf_counter()
            loaded = load_model(uri, cache_dir=cache, storage_options=options)
            ours.append(time.perf_counter() - start)
            del loaded
            gc.collect()
            start = time.perf_counter()
            plain = joblib.load(entry)
            bare.append(time.perf_counter() - start)
            del plain
        o, b = statistics.median(ours), statistics.median(bare)
        print(
            f"warm load_model {o * 1000:.1f} ms, bare joblib.load {b * 1000:.1f} ms "
            f"({entry.stat().st_size / MiB:.0f} MiB file): ratio {o / b:.2f}"
        )
        return o / b
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,1024", help="object sizes in MiB")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="tune chunk size x concurrency")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    for name in ("bucket", "key", "out", "options"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--conc", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from servers import seaweedfs

    sizes = [int(s) * MiB for s in args.sizes.split(",")]
    with seaweedfs() as server:
        fs = server.fs()
        options = dict(server.storage_options)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        fs.mkdir(bucket)
        for size in sizes:
            upload(fs, bucket, f"obj-{size // MiB}", size)
            # untimed warm-up read: the first download after an upload is slowed by the
            # server still flushing it, which would penalise whoever runs first
            run_one("s3fs", bucket, f"obj-{size // MiB}", size, options)
        print(f"SeaweedFS at {server.endpoint_url}; objects: {args.sizes} MiB", flush=True)
        if args.sweep:
            sweep(bucket, sizes[0], options, args.repetitions)
            return
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for rep in range(args.repetitions):
            order = IMPLS[rep % 3 :] + IMPLS[: rep % 3]
            for size in sizes:
                for impl in order:
                    r = run_one(impl, bucket, f"obj-{size // MiB}", size, options)
                    results.setdefault((impl, size), []).append(r)
                    mbps = size / MiB / r["seconds"]
                    print(
                        f"  rep {rep + 1} {size // MiB:>5} MiB {impl:<6} {mbps:8.1f} MB/s",
                        flush=True,
                    )
        print()
        print(f"{'size':>9} {'ours MB/s':>10} {'boto3':>8} {'s3fs.get':>9} {'ours RSS+':>10}")
        ratios_boto, ratios_s3fs = [], []
        for size in sizes:
            med = {
                impl: statistics.median(size / MiB / r["seconds"] for r in results[(impl, size)])
                for impl in IMPLS
            }
            rss = max(r["rss_growth"] for r in results[("ours", size)]) / MiB
            ratios_boto.append(med["ours"] / med["boto3"])
            ratios_s3fs.append(med["ours"] / med["s3fs"])
            print(
                f"{size // MiB:>5} MiB {med['ours']:>10.1f} {med['boto3']:>8.1f} "
                f"{med['s3fs']:>9.1f} {rss:>7.0f} MiB   ours/boto3 {ratios_boto[-1]:.2f}  "
                f"ours/s3fs.get {ratios_s3fs[-1]:.2f}",
                flush=True,
            )
        warm_load(fs, bucket, options, args.repetitions)
        print(f"ours/s3fs.get {min(ratios_s3fs):.2f} (worst size)")
        print(f"ours/boto3 {min(ratios_boto):.2f} (worst size)")


def sweep(bucket: str, size: int, options: dict[str, Any], repetitions: int) -> None:
    key = f"obj-{size // MiB}"
    for chunk_mib in (4, 8, 16):
        for conc in (4, 8, 16):
            runs = [
                run_one("ours", bucket, key, size, options, chunk_mib * MiB, conc)
                for _ in range(repetitions)
            ]
            mbps = statistics.median(size / MiB / r["seconds"] for r in runs)
            rss = max(r["rss_growth"] for r in runs) / MiB
            print(
                f"chunk {chunk_mib:>2} MiB x {conc:>2}: {mbps:7.1f} MB/s, peak RSS +{rss:.0f} MiB"
            )


if __name__ == "__main__":
    main()
