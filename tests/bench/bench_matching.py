"""Benchmark: the cost of a selfie search vs. event size (matching/index.py).

Run from the project root (not collected by pytest; ~5-15 minutes with 1M faces):

    .venv/bin/python -m tests.bench.bench_matching
    .venv/bin/python -m tests.bench.bench_matching --postgres postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m tests.bench.bench_matching --sizes 1000,10000 --db-sizes 1000 --json /tmp/matching.json

What it measures, per event size (number of indexed faces), on the code as it is:

1. The search in memory: the distances exactly as `matching.index.photos_near` computes
   them (|m|^2 - 2 m.p + |p|^2 with the cached squared norms, one matrix-vector product)
   and `_best_per_key`, on synthetic L2-normalised 128-d float32 embeddings (a few
   planted near-duplicates of the probe so thresholding has hits to visit); and, for
   comparison with the numbers from before the optimisation, `norm(matrix - probe)`.
2. The per-worker index on a real database: `photos_near` cold (cache cleared: the
   version query, the row fetch, the matrix and its norms are built) and warm (cache hit:
   only the version query runs), with the cold path broken down step by step. Always a
   temporary SQLite file (the project's WAL settings), and also PostgreSQL when
   --postgres or a postgres DATABASE_URL is given: a scratch database
   `trouvaille_bench_<pid>` is created on that server and dropped at the end. Rows are
   created with bulk_create (3 faces per photo).
3. Memory per worker: the cached arrays (`matching.index.cache_bytes()`, bounded by
   FACE_CACHE_MAX_BYTES), the worker's RSS before and after (psutil), and the peak
   Python allocation while building (tracemalloc sees numpy too).

Timings use `timeit` (one call per sample, the median of several samples). Each
database run happens in a subprocess (settings read DATABASE_URL once).
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
import timeit
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from tests.bench.machine import BusyMeter, rss_mb

ROOT = Path(__file__).resolve().parents[2]
DIM = 128
FACES_PER_PHOTO = 3
PLANTED = 25  # faces near the probe, so thresholding visits some hits
TOLERANCE = 0.6
DEFAULT_SIZES = "1000,10000,100000,300000,1000000"
WORKER_TIMEOUT = 3600  # seconds, one database run


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


def timed(func, repeat: int, timer=time.perf_counter) -> list[float]:
    """Milliseconds per call of func, `repeat` samples of one call each (timeit, GC off while timing).

    With timer=time.process_time: this process's CPU time (all its BLAS threads), which
    other processes on a shared machine inflate much less than wall time.
    """
    return [seconds * 1000 for seconds in timeit.repeat(func, number=1, repeat=repeat, timer=timer)]


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


def repeats_for(n: int, requested: int) -> int:
    return requested if n <= 10_000 else max(5, requested // 3)


# --- 1. The search in memory ----------------------------------------------------------------


def bench_search(sizes: list[int], repeat: int) -> list[dict]:
    from matching.index import _best_per_key

    results = []
    for n in sizes:
        photo_ids, matrix, probe = synthetic(n)
        norms = np.einsum("ij,ij->i", matrix, matrix)
        runs = repeats_for(n, repeat)

        def distances(matrix=matrix, probe=probe, norms=norms):
            # Exactly matching.index.photos_near once it has the event's arrays.
            p = probe.astype(np.float32)
            squared = norms - 2 * (matrix @ p) + p.dot(p)
            return np.sqrt(np.maximum(squared, 0, out=squared), out=squared)

        def search(photo_ids=photo_ids):
            return _best_per_key(photo_ids, distances(), TOLERANCE)

        def norm_before(matrix=matrix, probe=probe):
            # The distances before the optimisation: a faces x dims temporary per search.
            return np.linalg.norm(matrix - probe.astype(np.float32), axis=1)

        hits = search()  # warm-up (page faults, caches)
        reference = _best_per_key(photo_ids, norm_before(), TOLERANCE)
        agree = set(hits) == set(reference) and all(abs(hits[k] - reference[k]) < 1e-4 for k in hits)
        computed = distances()
        rows = {
            "faces": n,
            "hits": len(hits),
            "agrees_with_norm": agree,
            "distances": summary(timed(distances, runs)),
            "threshold": summary(timed(lambda d=computed, p=photo_ids: _best_per_key(p, d, TOLERANCE), runs)),
            "search": summary(timed(search, runs)),
            "search_cpu": summary(timed(search, runs, timer=time.process_time)),
            "norm_before": summary(timed(norm_before, max(3, runs // 3))),
            "arrays_mb": mb(matrix.nbytes + photo_ids.nbytes + norms.nbytes),
        }
        results.append(rows)
        print(
            f"  search {n:>8} faces: {rows['search']['median_ms']:8.2f} ms median "
            f"(CPU {rows['search_cpu']['median_ms']:.2f}; "
            f"distances {rows['distances']['median_ms']:.2f}, threshold {rows['threshold']['median_ms']:.3f}; "
            f"before: norm {rows['norm_before']['median_ms']:.2f}) hits={len(hits)} agree={agree}",
            flush=True,
        )
        del matrix, photo_ids, norms, computed
    return results


# --- 2. The index on a database (runs in a subprocess) -------------------------------------


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
    del photos
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
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from matching import index

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    migrate_s = time.perf_counter() - started
    vendor = connection.vendor
    rows = []
    rss_start = rss_mb()
    for n in sizes:
        event_id, probe, insert_s = populate(n, f"bench-{n}")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # fresh planner statistics, as a live database would have
        cold_runs = 3 if n >= 100_000 else 5

        def near(event_id=event_id, probe=probe):
            return index.photos_near(event_id=event_id, engine="dlib", probe=probe, tolerance=TOLERANCE)

        def cold():
            index._cache.clear()
            return near()

        cold_samples = timed(cold, cold_runs)
        hits = near()
        warm_samples = timed(near, repeats_for(n, repeat))

        # The cold path step by step, as matching.index._event_index does it.
        version_samples = timed(lambda event_id=event_id: index._event_version(event_id), cold_runs)
        faces = index._event_faces(event_id, "dlib")
        fetch_samples = timed(lambda faces=faces: list(faces.values_list("photo_id", "embedding")), cold_runs)
        fetched = list(faces.values_list("photo_id", "embedding"))
        matrix_samples = timed(lambda fetched=fetched: index._matrix([row[1] for row in fetched]), cold_runs)
        matrix = index._matrix([row[1] for row in fetched])
        norms_samples = timed(lambda matrix=matrix: np.einsum("ij,ij->i", matrix, matrix), cold_runs)
        del fetched, matrix

        # Memory: the worker's RSS and the peak Python allocation during one cold build.
        index._cache.clear()
        rss_before = rss_mb()
        tracemalloc.start()
        near()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        row = {
            "faces": n,
            "photos": n // FACES_PER_PHOTO,
            "insert_s": round(insert_s, 2),
            "hits": len(hits),
            "cold_first_ms": round(cold_samples[0], 1),
            "cold": summary(cold_samples),
            "warm": summary(warm_samples),
            "version_query": summary(version_samples),
            "fetch_rows": summary(fetch_samples),
            "join_matrix": summary(matrix_samples),
            "norms": summary(norms_samples),
            "cache_mb": mb(index.cache_bytes()),
            "cache_limit_mb": mb(settings.FACE_CACHE_MAX_BYTES),
            "build_peak_traced_mb": mb(peak),
            "rss_mb_before_build": rss_before,
            "rss_mb_after_build": rss_mb(),
            "rss_mb_worker_start": rss_start,
        }
        index._cache.clear()
        rows.append(row)
        print(
            f"  {vendor} {n:>8} faces: insert {insert_s:6.1f} s, cold {row['cold']['median_ms']:8.1f} ms "
            f"(version {row['version_query']['median_ms']:.1f} + fetch {row['fetch_rows']['median_ms']:.1f} "
            f"+ matrix {row['join_matrix']['median_ms']:.1f} + norms {row['norms']['median_ms']:.1f}), "
            f"warm {row['warm']['median_ms']:.2f} ms, cache {row['cache_mb']} MB, "
            f"RSS {row['rss_mb_before_build']} -> {row['rss_mb_after_build']} MB, "
            f"build peak {row['build_peak_traced_mb']} MB",
            flush=True,
        )
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
    print(f"\n[{label}] building events of {args.db_sizes} faces and timing photos_near ...", flush=True)
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
        "| faces | distances ms | `_best_per_key` ms | search ms | search CPU ms "
        "| before: `norm(matrix - probe)` ms | arrays MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in result["search"]:
        print(
            f"| {row['faces']:,} | {row['distances']['median_ms']:.2f} | {row['threshold']['median_ms']:.3f} | "
            f"{row['search']['median_ms']:.2f} | {row['search_cpu']['median_ms']:.2f} | "
            f"{row['norm_before']['median_ms']:.2f} | {row['arrays_mb']:.1f} |"
        )
    for db in result["databases"]:
        print(f"\n## photos_near on {db['vendor']} (ms, median)\n")
        print(
            "| faces | insert s | cold (first) | cold | version query | fetch rows | matrix | norms "
            "| warm (cached) | cache MB | RSS before → after MB | build peak MB |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
        for row in db["rows"]:
            print(
                f"| {row['faces']:,} | {row['insert_s']:.1f} | {row['cold_first_ms']:.1f} | "
                f"{row['cold']['median_ms']:.1f} | {row['version_query']['median_ms']:.1f} | "
                f"{row['fetch_rows']['median_ms']:.1f} | {row['join_matrix']['median_ms']:.1f} | "
                f"{row['norms']['median_ms']:.1f} | {row['warm']['median_ms']:.2f} | {row['cache_mb']:.1f} | "
                f"{row['rss_mb_before_build']:.0f} → {row['rss_mb_after_build']:.0f} | "
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
