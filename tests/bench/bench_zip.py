"""Benchmark: memory of "download all" (a zip streamed as it is built) for 50 and 500 photos.

Run from the project root (not collected by pytest; ~1 minute, needs ~400 MB of temporary disk):

    .venv/bin/python -m tests.bench.bench_zip
    .venv/bin/python -m tests.bench.bench_zip --photos 50 500 --size-kb 400 --json /tmp/zip.json
    .venv/bin/python -m tests.bench.bench_zip --no-s3      # local storage only

What it measures: `gallery.serving.zip_response` (what the photos_zip view returns)
iterated to the end the way a WSGI server does, chunk by chunk, with each chunk
dropped at once, for N stored photos of --size-kb each (random bytes: the zip stores
photos without compressing them, so their content does not matter):

1. from local storage (FileSystemStorage in a temporary folder);
2. from S3: moto's S3 server run as a separate process on loopback (so its memory
   is not counted here), through django-storages' S3Storage.

For each: the zip's size, the time, and this process's resident memory (psutil RSS)
sampled every 64 chunks: before streaming, and the peak above that baseline. Flat
memory means the peak above baseline does not grow with the number of photos.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path

import django
import psutil

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.core.files.base import ContentFile  # noqa: E402
from django.core.files.storage import FileSystemStorage, Storage  # noqa: E402

from gallery.serving import zip_response  # noqa: E402

MB = 1024 * 1024


def _rss() -> int:
    return psutil.Process().memory_info().rss


def stream(storage: Storage, names: list[str]) -> dict:
    """Iterate the zip response once; return its size, time and memory."""
    files = ((f"photo-{n:04d}.jpg", types.SimpleNamespace(storage=storage, name=name)) for n, name in enumerate(names))
    response = zip_response(files, filename="bench.zip")
    baseline = peak = _rss()
    total, started = 0, time.monotonic()
    for n, chunk in enumerate(response.streaming_content):
        total += len(chunk)
        if n % 64 == 0:
            peak = max(peak, _rss())
    peak = max(peak, _rss())
    return {
        "photos": len(names),
        "zip_mb": round(total / MB, 1),
        "seconds": round(time.monotonic() - started, 2),
        "rss_before_mb": round(baseline / MB, 1),
        "rss_peak_above_mb": round((peak - baseline) / MB, 1),
    }


def fill(storage: Storage, count: int, size: int) -> list[str]:
    return [storage.save(f"bench/{n:04d}.jpg", ContentFile(os.urandom(size))) for n in range(count)]


def s3_storage(port: int) -> tuple[subprocess.Popen, Storage]:
    from storages.backends.s3 import S3Storage

    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ.update({key: env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    import boto3

    endpoint = f"http://127.0.0.1:{port}"
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + 30
    while True:
        try:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
            break
        except Exception:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.3)
    return server, S3Storage(bucket_name=bucket, endpoint_url=endpoint, default_acl=None, file_overwrite=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--size-kb", type=int, default=400, help="size of each photo (default 400 KB)")
    parser.add_argument("--no-s3", action="store_true", help="local storage only")
    parser.add_argument("--json", help="save the results here")
    args = parser.parse_args()
    size = args.size_kb * 1024
    results = []
    with tempfile.TemporaryDirectory(prefix="trouvaille-bench-zip-") as folder:
        local = FileSystemStorage(location=folder)
        names = fill(local, max(args.photos), size)
        for count in args.photos:
            results.append({"storage": "local", **stream(local, names[:count])})
            print(results[-1], flush=True)
    if not args.no_s3:
        from tests.ports import free_port

        server, s3 = s3_storage(free_port())
        try:
            names = fill(s3, max(args.photos), size)
            for count in args.photos:
                results.append({"storage": "s3", **stream(s3, names[:count])})
                print(results[-1], flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
