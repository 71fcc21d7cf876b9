"""Benchmark: the cost of a selfie search vs. event size (matching/index.py).

Run from the project root (not collected by pytest; takes ~1-3 minutes):

    .venv/bin/python -m tests.bench.bench_matching
    .venv/bin/python -m tests.bench.bench_matching --postgres postgres://postgres@127.0.0.1:5432/test
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python -m tests.bench.bench_matching
    .venv/bin/python -m tests.bench.bench_matching --sizes 1000,10000 --db-sizes 1000 --json /tmp/matching.json

What it measures, per event size (number of indexed faces):

1. The search itself, in memory: `np.linalg.norm(matrix - probe, axis=1)` and the
   thresholding `matching.index._best_per_key`, exactly as `photos_near` does, on
   synthetic L2-normalised 128-d float32 embeddings (a few planted near-duplicates
   of the probe so thresholding has hits to visit). Also, for comparison, the same
   distances from one matrix-vector product with cached squared norms.
2. Building the matrix from database rows: `matching.index._event_index` cold
   (per-process cache cleared) and warm (cache hit: only the version query runs),
   with a breakdown of the cold path (version query, row fetch, np.stack) and two
   cheaper alternatives (b"".join of the rows instead of np.stack; a version
   computed from the Photo rows instead of the Face rows), on a
   real database: always a temporary SQLite file (the project's WAL settings), and
   also PostgreSQL when --postgres or a postgres DATABASE_URL is given. For
   PostgreSQL a scratch database `trouvaille_bench_<pid>` is created on that
   server and dropped at the end; the database named in the URL is only used to
   connect. Rows are created with bulk_create (3 faces per photo).
3. Memory: the cached matrix (MB), the transient copy made by `matrix - probe`,
   and the peak Python allocation while building the matrix (tracemalloc).

Each database run happens in a subprocess (settings read DATABASE_URL once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from tests.bench.machine import BusyMeter

ROOT = Path(__file__).resolve().parents[2]
DIM = 128
FACES_PER_PHOTO = 3
PLANTED = 25  # faces near the probe, so thresholding visits some hits
TOLERANCE = 0.6
DEFAULT_SIZES = "1000,10000,100000,300000"
WORKER_TIMEOUT = 900  # seconds, one database run


# --- Helpers ----------------------------------------------------------------------------


def _setup_django(database_url: str | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def synthetic(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo ids, n x 128 unit float32 matrix, probe); PLANTED faces lie within 0.2-0.55 of the probe."""
    rng = np.random.default_rng(seed + n)
    matrix = rng.standard_normal((n, DIM), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    probe = rng.standard_normal(DIM, dtype=np.float32)
    probe /= np.linalg.norm(probe)
    planted = rng.choice(n, size=min(PLANTED, n), replace=False)
    for i in planted:
        noise = rng.standard_normal(DIM, dtype=np.float32)
        noise -= noise.dot(probe) * probe
        noise /= np.linalg.norm(noise)
        angle = rng.uniform(0.2, 0.55)  # chord ~= angle for small angles
        matrix[i] = np.cos(angle) * probe + np.sin(angle) * noise
    photo_ids = (np.arange(n, dtype=np.int64) // FACES_PER_PHOTO) + 1
    return photo_ids, matrix, probe


def timed(func, repeat: int) -> tuple[list[float], object]:
    """Run func `repeat` times; milliseconds per run and the last result."""
    samples, result = [], None
    for _ in range(repeat):
        result = None  # free the previous run's arrays first, as a worker would
        started = time.perf_counter()
        result = func()
        samples.append((time.perf_counter() - started) * 1000)
    return samples, result


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 3),
        "min_ms": round(ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
        "runs": len(ordered),
    }


def mb(nbytes: int) -> float:
    return round(nbytes / 2**20, 2)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def repeats_for(n: int, requested: int) -> int:
    return requested if n <= 10_000 else max(5, requested // 3)


# --- 1. The search in memory ----------------------------------------------------------------


def bench_search(sizes: list[int], repeat: int) -> list[dict]:
    from matching.index import _best_per_key

    results = []
    for n in sizes:
        photo_ids, matrix, probe = synthetic(n)
        runs = repeats_for(n, repeat)

        def norm_only(matrix=matrix, probe=probe):
            return np.linalg.norm(matrix - probe.astype(np.float32), axis=1)

        def search(matrix=matrix, probe=probe, photo_ids=photo_ids):
            # Exactly matching.index.photos_near after _event_index().
            distances = np.linalg.norm(matrix - probe.astype(np.float32), axis=1)
            return _best_per_key(photo_ids, distances, TOLERANCE)

        norms_sq = np.einsum("ij,ij->i", matrix, matrix)

        def search_matmul(matrix=matrix, probe=probe, photo_ids=photo_ids, norms_sq=norms_sq):
            # Alternative: |m - p|^2 = |m|^2 - 2 m.p + |p|^2, with |m|^2 cached next to the matrix.
            p = probe.astype(np.float32)
            squared = norms_sq - 2 * (matrix @ p) + p.dot(p)
            distances = np.sqrt(np.maximum(squared, 0))
            return _best_per_key(photo_ids, distances, TOLERANCE)

        search()  # warm-up (page faults, caches)
        norm_samples, distances = timed(norm_only, runs)
        threshold_samples, _ = timed(lambda d=distances, p=photo_ids: _best_per_key(p, d, TOLERANCE), runs)
        search_samples, hits = timed(search, runs)
        search_matmul()
        matmul_samples, hits_matmul = timed(search_matmul, runs)
        agree = set(hits) == set(hits_matmul) and all(abs(hits[k] - hits_matmul[k]) < 1e-5 for k in hits)
        results.append(
            {
                "faces": n,
                "hits": len(hits),
                "norm": summary(norm_samples),
                "threshold": summary(threshold_samples),
                "search": summary(search_samples),
                "search_matmul": summary(matmul_samples),
                "matmul_agrees": agree,
                "matrix_mb": mb(matrix.nbytes),
                "photo_ids_mb": mb(photo_ids.nbytes),
                "transient_mb": mb(matrix.nbytes),  # `matrix - probe` allocates one more matrix
            }
        )
        print(
            f"  search {n:>7} faces: {results[-1]['search']['median_ms']:9.2f} ms median "
            f"(norm {results[-1]['norm']['median_ms']:.2f}, threshold {results[-1]['threshold']['median_ms']:.3f}; "
            f"matmul variant {results[-1]['search_matmul']['median_ms']:.2f}) hits={len(hits)}",
            flush=True,
        )
        del matrix, photo_ids, norms_sq, distances
    return results


# --- 2. Building the matrix from the database (runs in a subprocess) ----------------------


def populate(n: int, slug: str) -> tuple[int, np.ndarray, float]:
    """An event with n indexed faces (3 per photo); returns (event id, probe, seconds taken)."""
    from django.db import transaction
    from django.utils import timezone

    from gallery.models import Event, Face, Photo

    photo_ids_rel, matrix, probe = synthetic(n)
    started = time.perf_counter()
    event = Event.objects.create(name=f"Bench {n}", slug=slug)
    n_photos = int(photo_ids_rel[-1])
    batch = 5000
    with transaction.atomic():
        photos = Photo.objects.bulk_create(
            (
                Photo(
                    event=event,
                    original=f"bench/{slug}/{i}.jpg",
                    original_name=f"{i}.jpg",
                    content_hash=f"{i:064x}",
                    index_state=Photo.State.INDEXED,
                    face_count=FACES_PER_PHOTO,
                    indexed_at=timezone.now(),
                )
                for i in range(n_photos)
            ),
            batch_size=batch,
        )
    photo_pk = {i + 1: photo.pk for i, photo in enumerate(photos)}
    for start in range(0, n, 50_000):
        with transaction.atomic():
            Face.objects.bulk_create(
                (
                    Face(
                        photo_id=photo_pk[int(photo_ids_rel[i])],
                        left=10,
                        top=10,
                        width=80,
                        height=80,
                        embedding=matrix[i].tobytes(),
                        engine="dlib",
                    )
                    for i in range(start, min(n, start + 50_000))
                ),
                batch_size=batch,
            )
    return event.pk, probe, time.perf_counter() - started


def bench_database(sizes: list[int], repeat: int) -> dict:
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count, Max, Sum

    from gallery.models import Photo
    from matching import index

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    migrate_s = time.perf_counter() - started
    vendor = connection.vendor
    rows = []
    for n in sizes:
        event_id, probe, insert_s = populate(n, f"bench-{n}")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # fresh planner statistics, as a live database would have
        cold_runs = 3 if n >= 100_000 else 5

        def cold(event_id=event_id):
            index._cache.clear()
            return index._event_index(event_id, "dlib")[:2]

        cold_samples, (ids, matrix) = timed(cold, cold_runs)
        assert matrix.shape == (n, DIM), matrix.shape
        warm_samples, _ = timed(lambda event_id=event_id: index._event_index(event_id, "dlib"), repeat)
        near_samples, hits = timed(
            lambda event_id=event_id, probe=probe: index.photos_near(
                event_id=event_id, engine="dlib", probe=probe, tolerance=TOLERANCE
            ),
            repeats_for(n, repeat),
        )

        # Breakdown of the cold path, step by step as _event_index does it.
        faces = index._event_faces(event_id, "dlib")
        version_samples, _ = timed(lambda faces=faces: faces.aggregate(n=Count("id"), last=Max("id")), cold_runs)
        fetch_samples, fetched = timed(lambda faces=faces: list(faces.values_list("photo_id", "embedding")), cold_runs)
        stack_samples, stacked = timed(
            lambda fetched=fetched: np.stack([np.frombuffer(row[1], dtype=np.float32) for row in fetched]), cold_runs
        )
        photos = Photo.objects.filter(event_id=event_id, index_state=Photo.State.INDEXED)
        photo_version_samples, _ = timed(
            lambda photos=photos: photos.aggregate(n=Count("id"), faces=Sum("face_count"), last=Max("indexed_at")),
            cold_runs,
        )
        join_samples, joined = timed(
            lambda fetched=fetched: np.frombuffer(b"".join([row[1] for row in fetched]), dtype=np.float32).reshape(
                -1, DIM
            ),
            cold_runs,
        )
        # Same rows, same order (without ORDER BY, two queries may return rows in different orders).
        assert np.array_equal(joined, stacked)
        del fetched, joined, stacked

        # Memory: peak Python-level allocations during one cold build (tracemalloc sees numpy too).
        index._cache.clear()
        rss_before = rss_mb()
        tracemalloc.start()
        index._event_index(event_id, "dlib")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = rss_mb()
        index._cache.clear()
        row = {
            "faces": n,
            "photos": n // FACES_PER_PHOTO,
            "insert_s": round(insert_s, 2),
            "cold_first_ms": round(cold_samples[0], 1),
            "cold": summary(cold_samples),
            "warm": summary(warm_samples),
            "photos_near_warm": summary(near_samples),
            "hits": len(hits),
            "version_query": summary(version_samples),
            "photo_level_version_alternative": summary(photo_version_samples),
            "fetch_rows": summary(fetch_samples),
            "np_stack": summary(stack_samples),
            "bytes_join_alternative": summary(join_samples),
            "matrix_mb": mb(matrix.nbytes + ids.nbytes),
            "build_peak_traced_mb": mb(peak),
            "rss_mb_after_build": rss_after,
            "rss_mb_before_build": rss_before,
        }
        rows.append(row)
        print(
            f"  {vendor} {n:>7} faces: insert {insert_s:6.1f} s, cold {row['cold']['median_ms']:8.1f} ms "
            f"(version {row['version_query']['median_ms']:.1f} + fetch {row['fetch_rows']['median_ms']:.1f} "
            f"+ stack {row['np_stack']['median_ms']:.1f}), warm {row['warm']['median_ms']:.2f} ms, "
            f"photos_near warm {row['photos_near_warm']['median_ms']:.1f} ms, "
            f"peak build {row['build_peak_traced_mb']} MB",
            flush=True,
        )
        del ids, matrix
    return {"vendor": vendor, "migrate_s": round(migrate_s, 1), "rows": rows}


def run_worker(args: argparse.Namespace) -> None:
    _setup_django()
    from django.db import connection

    result = bench_database(parse_sizes(args.db_sizes), args.repeat)
    connection.close()
    Path(args.worker_out).write_text(json.dumps(result))


def database_run(label: str, database_url: str, args: argparse.Namespace, tmp: Path) -> dict | None:
    out = tmp / f"{label}.json"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CACHE_DIR": str(tmp / "cache"),
        "MEDIA_ROOT": str(tmp / "media"),
        "LOG_LEVEL": "WARNING",
    }
    command = [
        sys.executable,
        "-m",
        "tests.bench.bench_matching",
        "--worker-out",
        str(out),
        "--db-sizes",
        args.db_sizes,
        "--repeat",
        str(args.repeat),
    ]
    print(f"\n[{label}] building events of {args.db_sizes} faces and timing _event_index ...", flush=True)
    try:
        subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=WORKER_TIMEOUT)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"[{label}] failed: {exc}", flush=True)
        return None
    return json.loads(out.read_text())


def _with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def postgres_run(url: str, args: argparse.Namespace, tmp: Path) -> dict | None:
    import psycopg

    scratch = f"trouvaille_bench_{os.getpid()}"
    admin_url = url.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{scratch}"')
    try:
        return database_run("postgresql", _with_dbname(url, scratch), args, tmp)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


# --- Report ---------------------------------------------------------------------------------


def print_tables(result: dict) -> None:
    print("\n## Selfie search in memory (synthetic unit embeddings, median of runs)\n")
    print(
        "| faces | norm ms | threshold ms | search ms (norm+threshold) | matmul variant ms "
        "| matrix MB | + transient MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in result["search"]:
        print(
            f"| {row['faces']:,} | {row['norm']['median_ms']:.2f} | {row['threshold']['median_ms']:.3f} | "
            f"{row['search']['median_ms']:.2f} | {row['search_matmul']['median_ms']:.2f} | "
            f"{row['matrix_mb'] + row['photo_ids_mb']:.1f} | {row['transient_mb']:.1f} |"
        )
    for db in result["databases"]:
        print(f"\n## _event_index on {db['vendor']} (ms, median)\n")
        print(
            "| faces | insert s | cold ms (first) | cold ms | version query ms | fetch rows ms | np.stack ms "
            "| b''.join alt ms | photo-level version alt ms | warm (cached) ms | photos_near warm ms "
            "| matrix MB | build peak MB |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in db["rows"]:
            print(
                f"| {row['faces']:,} | {row['insert_s']:.1f} | {row['cold_first_ms']:.1f} | "
                f"{row['cold']['median_ms']:.1f} | {row['version_query']['median_ms']:.1f} | "
                f"{row['fetch_rows']['median_ms']:.1f} | {row['np_stack']['median_ms']:.1f} | "
                f"{row['bytes_join_alternative']['median_ms']:.1f} | "
                f"{row['photo_level_version_alternative']['median_ms']:.1f} | {row['warm']['median_ms']:.2f} | "
                f"{row['photos_near_warm']['median_ms']:.1f} | {row['matrix_mb']:.1f} | "
                f"{row['build_peak_traced_mb']:.1f} |"
            )


def parse_sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="faces per event for the in-memory search")
    parser.add_argument("--db-sizes", default=DEFAULT_SIZES, help="faces per event for the database runs")
    parser.add_argument("--repeat", type=int, default=21, help="runs per measurement (fewer for >10k faces)")
    parser.add_argument("--postgres", help="postgres://... server to also benchmark (scratch database)")
    parser.add_argument("--skip-db", action="store_true", help="only the in-memory search")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_out:
        run_worker(args)
        return

    postgres_url = args.postgres or os.environ.get("DATABASE_URL", "")
    postgres_url = postgres_url if postgres_url.startswith(("postgres://", "postgresql://")) else ""
    with tempfile.TemporaryDirectory(prefix="trouvaille-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # Only to import matching.index; the search part never touches a database.
        _setup_django(f"sqlite:///{tmp / 'unused.sqlite3'}")
        result: dict = {
            "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "numpy": np.__version__},
            "search": [],
            "databases": [],
        }
        print(f"In-memory search, sizes {args.sizes}", flush=True)
        meter = BusyMeter()
        result["search"] = bench_search(parse_sizes(args.sizes), args.repeat)
        result["machine"]["busy_cores_search"] = meter.cores_busy()
        if not args.skip_db:
            meter = BusyMeter()
            sqlite = database_run("sqlite", f"sqlite:///{tmp / 'bench.sqlite3'}", args, tmp)
            if sqlite:
                sqlite["machine_busy_cores"] = meter.cores_busy()
                result["databases"].append(sqlite)
            if postgres_url:
                meter = BusyMeter()
                postgres = postgres_run(postgres_url, args, tmp)
                if postgres:
                    postgres["machine_busy_cores"] = meter.cores_busy()
                    result["databases"].append(postgres)
        result["machine"]["loadavg_end"] = os.getloadavg()
    print_tables(result)
    busy = [f"search {result['machine']['busy_cores_search']}"] + [
        f"{db['vendor']} {db.get('machine_busy_cores')}" for db in result["databases"]
    ]
    print(
        f"\nwhole machine busy (cores of {result['machine']['cpus']}; this benchmark uses ~1): {', '.join(busy)}; "
        f"load average at start {result['machine']['loadavg_start']}, end {result['machine']['loadavg_end']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
