"""Benchmark: dlib indexing throughput on the bundled real photos.

Run from the project root (not collected by pytest; takes ~1.5-3 minutes on 2 cores):

    .venv/bin/python -m tests.bench.bench_indexing
    .venv/bin/python -m tests.bench.bench_indexing --other-side 1024 --rounds 2 --json /tmp/indexing.json
    .venv/bin/python -m tests.bench.bench_indexing --quick      # one round, no camera-size photos

What it measures (each in a fresh worker-like process: Django set up, dlib loaded once):

1. `get_engine("dlib").detect(image)` per photo on gallery/sample_photos/people and
   /groups (20 photos, 240-2333 px, already decoded and upright), at the default
   FACE_DETECT_MAX_SIDE and at one other size (--other-side), with the number of
   faces found vs. the labelled number (labels.json).
2. "Camera-size" photos: six of those photos scaled up to 6000 px (24 MP, JPEG q90),
   timed through the CPU work of a whole index job except the database: decode
   (`load_rgb`), the served copies (`jpeg_file` display 3000 px and thumbnail
   480 px), and `detect` at the default size and at the other size.
3. The same default-size workloads in 2 processes at once (like Q_WORKERS=2), for
   the real 2-worker throughput on this machine; photos/hour = photos / wall time.
4. Selfie enrolment: the people photos stored as the selfie view stores them
   (<= SELFIE_MAX_SIDE, JPEG q85), `detect` with the configured upsampling vs.
   none (faces found, CPU, how far the two embeddings are apart).
5. Peak RSS of each worker process: resource.getrusage(RUSAGE_SELF).ru_maxrss,
   and the RSS once dlib's models are loaded.

Every row also gives the CPU time per photo (time.process_time: what a photo costs
a core, whatever else runs) and the cores used by *other* processes meanwhile,
since on a shared host wall times depend on them; --wait-quiet waits (bounded)
for a quiet machine before each measurement.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.machine import BusyMeter, wait_quiet

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "gallery" / "sample_photos"
LABELS = json.loads((SAMPLES / "labels.json").read_text())
CAMERA_PHOTOS = [
    "groups/obama_and_biden.jpg",
    "groups/two_people.jpg",
    "groups/kit_with_rose.jpg",
    "people/obama/obama3.jpg",
    "people/biden/biden.jpg",
    "people/rose_leslie/rose1.jpg",
]
CAMERA_SIDE = 6000
CHILD_TIMEOUT = 600  # seconds per measurement process


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # Never touched (no query runs), but keep the project's db.sqlite3 out of it.
    os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.gettempdir()}/trouvaille-bench-unused.sqlite3"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sample_paths() -> list[str]:
    return sorted(name for name in LABELS if name.startswith(("people/", "groups/")))


def expected_faces(name: str) -> int:
    entry = LABELS[name]
    return len(entry["people"]) + entry.get("unknown_faces", 0)


# --- Work done in a child process -----------------------------------------------------------


def child(task: dict, barrier, results) -> None:
    """One worker-like process: load dlib, wait for the others, run the workload."""
    _setup_django()
    from gallery.images import jpeg_file, load_rgb
    from matching.engines import get_engine

    rss_start = _rss_mb()
    started = time.perf_counter()
    engine = get_engine("dlib")
    load_s = time.perf_counter() - started
    rss_engine = _rss_mb()
    engine.max_side = task["max_side"]
    records = []
    if task["kind"] == "detect":
        images = []
        for name in task["photos"]:
            with open(SAMPLES / name, "rb") as handle:
                images.append((name, load_rgb(handle)))
        engine.detect(images[0][1])  # warm-up: first call pays one-off allocations
        if barrier is not None:
            barrier.wait(timeout=120)
        meter = BusyMeter()
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        for _ in range(task["rounds"]):
            for name, image in images:
                t0, c0 = time.perf_counter(), time.process_time()
                faces = engine.detect(image)
                records.append(
                    {
                        "photo": name,
                        "size": list(image.size),
                        "ms": (time.perf_counter() - t0) * 1000,
                        "cpu_ms": (time.process_time() - c0) * 1000,
                        "faces": len(faces),
                    }
                )
    elif task["kind"] == "selfie":
        import numpy as np

        selfies = []
        for name in task["photos"]:
            with open(SAMPLES / name, "rb") as handle:
                stored = jpeg_file(load_rgb(handle, draft_side=task["selfie_side"]), max_side=task["selfie_side"])
            selfies.append((name, load_rgb(stored)))
        engine.detect(selfies[0][1])
        meter = BusyMeter()
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        configured = engine.upsample
        for name, image in selfies:
            found = {}
            for upsample in (configured, 0):
                engine.upsample = upsample
                c0 = time.process_time()
                faces = engine.detect(image)
                found[upsample] = ((time.process_time() - c0) * 1000, faces)
            engine.upsample = configured
            (cpu_configured, faces_configured), (cpu_none, faces_none) = found[configured], found[0]
            apart = None
            if faces_configured and faces_none:
                a = max(faces_configured, key=lambda face: face.area).embedding
                b = max(faces_none, key=lambda face: face.area).embedding
                apart = float(np.linalg.norm(a - b))
            records.append(
                {
                    "photo": name,
                    "size": list(image.size),
                    "ms": cpu_configured,
                    "cpu_ms": cpu_configured,
                    "cpu_ms_no_upsample": cpu_none,
                    "faces": len(faces_configured),
                    "faces_no_upsample": len(faces_none),
                    "embedding_distance": apart,
                }
            )
    else:  # "job": decode + served copies + detect, from JPEG bytes, like photo_index minus the database
        blobs = [(name, Path(path).read_bytes()) for name, path in task["files"]]
        if barrier is not None:
            barrier.wait(timeout=120)
        meter = BusyMeter()
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        for _ in range(task["rounds"]):
            for name, data in blobs:
                t0, c0 = time.perf_counter(), time.process_time()
                image = load_rgb(io.BytesIO(data))
                t1 = time.perf_counter()
                jpeg_file(image, max_side=task["display_side"])
                jpeg_file(image, max_side=task["thumbnail_side"], quality=80)
                t2 = time.perf_counter()
                faces = engine.detect(image)
                t3 = time.perf_counter()
                records.append(
                    {
                        "photo": name,
                        "size": list(image.size),
                        "decode_ms": (t1 - t0) * 1000,
                        "copies_ms": (t2 - t1) * 1000,
                        "detect_ms": (t3 - t2) * 1000,
                        "ms": (t3 - t0) * 1000,
                        "cpu_ms": (time.process_time() - c0) * 1000,
                        "faces": len(faces),
                    }
                )
                del image
    wall = time.perf_counter() - wall0
    machine_busy = meter.cores_busy()
    results.put(
        {
            "machine_busy_cores": machine_busy,
            "pid": os.getpid(),
            "records": records,
            "wall_s": wall,
            "cpu_s": _cpu_s() - cpu0,
            "engine_load_s": load_s,
            "rss_start_mb": rss_start,
            "rss_engine_mb": rss_engine,
            "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    )


def run(task: dict, processes: int = 1) -> list[dict]:
    """Run the task in `processes` fresh processes at once; their results."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes) if processes > 1 else None
    results = ctx.Queue()
    workers = [ctx.Process(target=child, args=(task, barrier, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    out = []
    try:
        for _ in workers:
            out.append(results.get(timeout=CHILD_TIMEOUT))
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join()
    return out


# --- Summaries ------------------------------------------------------------------------------


def describe(label: str, outs: list[dict], expected: dict[str, int] | None = None) -> dict:
    records = [record for out in outs for record in out["records"]]
    ms = [record["ms"] for record in records]
    wall = max(out["wall_s"] for out in outs)
    cpu_total = sum(out["cpu_s"] for out in outs)
    cpu_ms = [record["cpu_ms"] for record in records]
    row = {
        "label": label,
        "processes": len(outs),
        "photos": len(records),
        "mean_ms": round(statistics.fmean(ms), 1),
        "median_ms": round(statistics.median(ms), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
        "cpu_mean_ms": round(statistics.fmean(cpu_ms), 1),
        "cpu_photos_per_hour_per_core": round(3600 / (statistics.fmean(cpu_ms) / 1000)),
        "other_processes_cores": round(max(0.0, max(out["machine_busy_cores"] for out in outs) - cpu_total / wall), 2),
        "wall_s": round(wall, 2),
        "photos_per_hour": round(len(records) / wall * 3600),
        "cpu_per_wall": round(cpu_total / wall, 2),
        "engine_load_s": round(max(out["engine_load_s"] for out in outs), 2),
        "rss_engine_mb": max(out["rss_engine_mb"] for out in outs),
        "maxrss_mb": max(out["maxrss_mb"] for out in outs),
    }
    for part in ("decode_ms", "copies_ms", "detect_ms"):
        if records and part in records[0]:
            row[part.replace("_ms", "_mean_ms")] = round(statistics.fmean(record[part] for record in records), 1)
    if expected:
        first_round = {record["photo"]: record["faces"] for record in outs[0]["records"]}
        row["faces_found"] = sum(first_round.values())
        row["faces_labelled"] = sum(expected[name] for name in first_round)
        row["photos_missing_faces"] = sorted(name for name, n in first_round.items() if n < expected[name])
    per_photo: dict[str, list[float]] = {}
    for record in outs[0]["records"]:
        per_photo.setdefault(record["photo"], []).append(record["ms"])
    row["per_photo_median_ms"] = {name: round(statistics.median(v), 1) for name, v in per_photo.items()}
    row["sizes"] = {record["photo"]: record["size"] for record in outs[0]["records"]}
    print(
        f"  {label:<44} {row['photos']:>3} photos in {row['processes']} proc: mean {row['mean_ms']:7.1f} ms/photo, "
        f"wall {row['wall_s']:6.1f} s -> {row['photos_per_hour']:>6} photos/h, cpu/wall {row['cpu_per_wall']}, "
        f"cpu {row['cpu_mean_ms']} ms/photo, other processes {row['other_processes_cores']} cores, "
        f"peak RSS {row['maxrss_mb']} MB"
        + (f", faces {row['faces_found']}/{row['faces_labelled']}" if expected else ""),
        flush=True,
    )
    return row


def make_camera_files(tmp: Path) -> list[tuple[str, str]]:
    """Six sample photos scaled to a 24 MP camera size, as JPEG files."""
    from PIL import Image

    from gallery.images import load_rgb

    files = []
    for name in CAMERA_PHOTOS:
        with open(SAMPLES / name, "rb") as handle:
            image = load_rgb(handle)
        scale = CAMERA_SIDE / max(image.size)
        big = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        path = tmp / (Path(name).stem + "-24mp.jpg")
        big.save(path, format="JPEG", quality=90)
        files.append((name, str(path)))
    return files


def print_tables(result: dict) -> None:
    print("\n## detect() per photo, sample photos (people + groups), 1 process\n")
    print(
        "| FACE_DETECT_MAX_SIDE | photos timed | mean ms | median ms | max ms | CPU ms/photo "
        "| faces found / labelled | photos/h (1 proc) | other procs (cores) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in result["samples"]:
        if row["processes"] == 1:
            print(
                f"| {row['max_side']} | {row['photos']} | {row['mean_ms']} | {row['median_ms']} | {row['max_ms']} | "
                f"{row['cpu_mean_ms']} | {row['faces_found']}/{row['faces_labelled']} | "
                f"{row['photos_per_hour']:,} | {row['other_processes_cores']} |"
            )
    if result["camera"]:
        print("\n## Camera-size photos (6000 px, 24 MP): CPU of an index job without the database, 1 process\n")
        print(
            "| FACE_DETECT_MAX_SIDE | decode ms | served copies ms | detect ms | total ms/photo | CPU ms/photo "
            "| photos/h (1 proc) | other procs (cores) |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in result["camera"]:
            if row["processes"] == 1:
                print(
                    f"| {row['max_side']} | {row['decode_mean_ms']} | {row['copies_mean_ms']} | "
                    f"{row['detect_mean_ms']} | {row['mean_ms']} | {row['cpu_mean_ms']} | "
                    f"{row['photos_per_hour']:,} | {row['other_processes_cores']} |"
                )
    print("\n## Throughput, 1 vs 2 worker processes (default max side)\n")
    print(
        "| workload | processes | photos | wall s | photos/hour | CPU/wall | other procs (cores) "
        "| peak RSS per worker MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in result["samples"] + result["camera"]:
        if row["max_side"] == result["default_side"]:
            print(
                f"| {row['workload']} | {row['processes']} | {row['photos']} | {row['wall_s']} | "
                f"{row['photos_per_hour']:,} | {row['cpu_per_wall']} | {row['other_processes_cores']} | "
                f"{row['maxrss_mb']} |"
            )
    sel = result.get("selfies")
    if sel:
        print("\n## Selfie enrolment: detect() on stored selfies (<= SELFIE_MAX_SIDE), 1 process\n")
        print("| upsample | CPU ms/selfie | selfies with a face | largest embedding shift vs. configured |")
        print("|---:|---:|---:|---:|")
        print(f"| {sel['upsample']} (configured) | {sel['cpu_mean_ms']} | {sel['found']}/{sel['photos']} | - |")
        print(
            f"| 0 | {sel['cpu_mean_ms_no_upsample']} | {sel['found_no_upsample']}/{sel['photos']} | "
            f"{sel['max_embedding_distance']} |"
        )
    print(
        f"\nworker RSS with dlib loaded: {result['rss_engine_mb']} MB; dlib load time "
        f"{result['engine_load_s']} s; load average start {result['loadavg_start']}, end {result['loadavg_end']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other-side", type=int, default=1024, help="second FACE_DETECT_MAX_SIDE to time")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the sample photos per process")
    parser.add_argument("--quick", action="store_true", help="one round, no camera-size photos")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--wait-quiet", type=float, default=20, help="seconds to wait at most for an idle machine before each run"
    )
    args = parser.parse_args()
    _setup_django()
    from django.conf import settings

    default_side = settings.FACE_DETECT_MAX_SIDE
    rounds = 1 if args.quick else args.rounds
    photos = sample_paths()
    expected = {name: expected_faces(name) for name in photos}
    result: dict = {
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "default_side": default_side,
        "upsample": settings.FACE_DETECT_UPSAMPLE,
        "model": settings.FACE_MODEL,
        "samples": [],
        "camera": [],
    }
    print(f"{len(photos)} sample photos, {rounds} round(s); default FACE_DETECT_MAX_SIDE={default_side}", flush=True)
    for side, processes in ((default_side, 1), (args.other_side, 1), (default_side, 2)):
        task = {"kind": "detect", "max_side": side, "rounds": rounds, "photos": photos}
        wait_quiet(args.wait_quiet)
        row = describe(f"samples detect max_side={side}", run(task, processes), expected)
        row.update(max_side=side, workload="sample photos, detect()")
        result["samples"].append(row)
    if not args.quick:
        with tempfile.TemporaryDirectory(prefix="trouvaille-bench-") as tmp:
            files = make_camera_files(Path(tmp))
            for side, processes in ((default_side, 1), (args.other_side, 1), (default_side, 2)):
                task = {
                    "kind": "job",
                    "max_side": side,
                    "rounds": 1,
                    "files": files,
                    "display_side": settings.DISPLAY_MAX_SIDE,
                    "thumbnail_side": settings.THUMBNAIL_SIDE,
                }
                wait_quiet(args.wait_quiet)
                row = describe(f"24 MP job CPU max_side={side}", run(task, processes))
                row.update(max_side=side, workload="24 MP photos, decode + copies + detect")
                result["camera"].append(row)
    task = {
        "kind": "selfie",
        "max_side": default_side,
        "rounds": 1,
        "photos": [name for name in photos if name.startswith("people/")],
        "selfie_side": settings.SELFIE_MAX_SIDE,
    }
    wait_quiet(args.wait_quiet)
    out = run(task)[0]
    records = out["records"]
    result["selfies"] = {
        "photos": len(records),
        "upsample": settings.FACE_DETECT_UPSAMPLE,
        "cpu_mean_ms": round(statistics.fmean(r["cpu_ms"] for r in records), 1),
        "cpu_mean_ms_no_upsample": round(statistics.fmean(r["cpu_ms_no_upsample"] for r in records), 1),
        "found": sum(1 for r in records if r["faces"]),
        "found_no_upsample": sum(1 for r in records if r["faces_no_upsample"]),
        "max_embedding_distance": round(max(r["embedding_distance"] or 0 for r in records), 3),
        "other_processes_cores": round(max(0.0, out["machine_busy_cores"] - out["cpu_s"] / out["wall_s"]), 2),
    }
    sel = result["selfies"]
    print(
        f"  selfie enrolment ({sel['photos']} people photos stored as selfies): upsample {sel['upsample']} "
        f"{sel['cpu_mean_ms']} ms CPU, upsample 0 {sel['cpu_mean_ms_no_upsample']} ms CPU; faces found "
        f"{sel['found']} vs {sel['found_no_upsample']}; largest embedding shift {sel['max_embedding_distance']}",
        flush=True,
    )
    first = result["samples"][0]
    result["rss_engine_mb"] = first["rss_engine_mb"]
    result["engine_load_s"] = first["engine_load_s"]
    result["loadavg_end"] = os.getloadavg()
    print_tables(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
