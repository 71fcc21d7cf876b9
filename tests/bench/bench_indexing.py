"""Benchmark: indexing with Trouvaille vs. the `face_recognition` command-line tool.

Run from the project root (not collected by pytest; ~6 minutes on 2 idle cores):

    .venv/bin/python -m tests.bench.bench_indexing
    .venv/bin/python -m tests.bench.bench_indexing --sets large --repeat 2 --json /tmp/indexing.json
    .venv/bin/python -m tests.bench.bench_indexing --profile      # where one index job's CPU goes

Both sides answer the same question on the same photos, back to back in one run:
"who of these six people is in which photo?"

- The tool: `face_recognition --cpus 2 KNOWN UNKNOWN` (the venv's console script),
  KNOWN holding one selfie per person, UNKNOWN the photos. Timed from start to exit.
- Trouvaille: a fresh SQLite database and media folder, `manage.py qcluster`
  (2 workers, ORM broker: the embedded setup) started and idle beforehand, then
  `manage.py import_photos bench UNKNOWN --wait` (hash, store, queue, index: decode,
  served copies, detection, embeddings, database), then the six selfies through
  `selfie_create` until every selfie job is done. Timed: the import command, then
  the selfies; the ratio is the tool's time over the sum.

Precision and recall are counted over (photo, person) pairs against labels: the
tool's printed names, Trouvaille's Match rows. The photo sets are made
deterministically from /work/shared/faces (../shared/faces, a benchmark-only input):

- `mixed`: every labelled photo that is not a selfie, at its own size, at half size
  (when >= 400 px) and doubled (at most 4,600 px): 400 to 4,600 px.
- `large`: 4000x2667 scenes with 2 to 5 small faces (2.7% to 7% of the longest side)
  pasted on a textured background, and 2000x2000 collages of four labelled photos.

The machine is shared: each side's row also says how many cores other processes
used meanwhile (psutil, whole machine minus our process tree); --repeat alternates
which side runs first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# --profile runs the index job's work in this process: with one OpenBLAS thread, as
# config/settings.py gives every worker, which must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import psutil
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
# ../shared/faces beside the clone (or beside the folder of git worktrees).
FACES = next(
    (p / "shared" / "faces" for p in ROOT.parents[:2] if (p / "shared" / "faces").is_dir()),
    ROOT.parent / "shared" / "faces",
)
PYTHON = ROOT / ".venv" / "bin" / "python"
CLI = ROOT / ".venv" / "bin" / "face_recognition"
# One photo per person to take the selfie from, never among the indexed photos.
SELFIES = {
    "alex_lacamoire": "people/alex_lacamoire/alex1.jpg",
    "biden": "people/biden/biden2.jpg",
    "kit_harington": "people/kit_harington/kit2.jpg",
    "lin_manuel_miranda": "people/lin_manuel_miranda/lin1.png",
    "obama": "people/obama/obama2.jpg",
    "rose_leslie": "people/rose_leslie/rose1.jpg",
}
SEED = 20261129


# --- Photo sets -----------------------------------------------------------------


def _labels() -> dict[str, set[str]]:
    raw = json.loads((FACES / "labels.json").read_text())
    return {name: set(entry["people"]) for name, entry in raw.items() if name not in SELFIES.values()}


def _save(image: Image.Image, path: Path) -> None:
    image.convert("RGB").save(path, format="JPEG", quality=92)


def make_mixed(folder: Path) -> dict[str, set[str]]:
    labels: dict[str, set[str]] = {}
    for name, people in sorted(_labels().items()):
        source = Image.open(FACES / name)
        stem = name.replace("/", "_").rsplit(".", 1)[0]
        longest = max(source.size)
        for tag, scale in (("x1", 1.0), ("half", 0.5), ("x2", min(2.0, 4600 / longest))):
            if tag == "half" and longest * scale < 400:
                continue
            size = (round(source.width * scale), round(source.height * scale))
            image = source if scale == 1.0 else source.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            file = f"{stem}-{tag}.jpg"
            _save(image, folder / file)
            labels[file] = people
    return labels


def _face_crops() -> list[tuple[str, Image.Image, tuple[int, int, int, int]]]:
    """(person, head-and-shoulders crop, face box in it) for every one-person photo."""
    import face_recognition

    crops = []
    for name, people in sorted(_labels().items()):
        if len(people) != 1 or not name.startswith("people/"):
            continue
        image = Image.open(FACES / name).convert("RGB")
        boxes = face_recognition.face_locations(np.asarray(image), 1)
        if len(boxes) != 1:
            continue
        top, right, bottom, left = boxes[0]
        margin = int((right - left) * 0.7)
        box = (
            max(0, left - margin),
            max(0, top - margin),
            min(image.width, right + margin),
            min(image.height, bottom + margin),
        )
        crops.append((next(iter(people)), image.crop(box), (left - box[0], top - box[1], right - left, bottom - top)))
    return crops


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A textured, non-face background: colour noise at several scales (walls, crowds, foliage)."""
    width, height = size
    layers = np.zeros((height, width, 3), dtype=np.float32)
    for cells, weight in ((6, 90.0), (40, 40.0), (250, 20.0), (1000, 8.0)):
        small = rng.normal(0, 1, (max(2, cells * height // width), cells, 3)).astype(np.float32)
        layer = Image.fromarray(np.uint8(np.clip(small * 40 + 128, 0, 255))).resize(size, Image.Resampling.BICUBIC)
        layers += (np.asarray(layer, dtype=np.float32) - 128) * weight / 40
    base = rng.uniform(70, 170, 3).astype(np.float32)
    return Image.fromarray(np.uint8(np.clip(layers + base, 0, 255)))


def make_large(
    folder: Path, count: int, *, size: tuple[int, int] = (4000, 2667), collages: bool = True
) -> dict[str, set[str]]:
    """Scenes of `size` with 2-5 small faces (2.7-7% of the longest side), and 2,000 px collages."""
    rng = np.random.default_rng(SEED)
    pick = random.Random(SEED)
    crops = _face_crops()
    labels: dict[str, set[str]] = {}
    scenes = count * 2 // 3 if collages else count
    width, height = size
    for n in range(scenes):
        canvas = _background(rng, size)
        people: set[str] = set()
        taken: list[tuple[int, int, int, int]] = []
        for _ in range(pick.randint(2, 5)):
            person, crop, (_, _, fw, _) = pick.choice(crops)
            scale = pick.uniform(110, 280) * width / 4000 / fw
            head = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.Resampling.LANCZOS)
            for _attempt in range(50):
                x, y = pick.randint(0, width - head.width), pick.randint(0, height - head.height)
                box = (x, y, x + head.width, y + head.height)
                if all(box[2] < t[0] or box[0] > t[2] or box[3] < t[1] or box[1] > t[3] for t in taken):
                    break
            else:
                continue
            # Feathered edges: no hard rectangle for the detector to latch onto.
            mask = Image.new("L", head.size, 0)
            mask.paste(255, (head.width // 8, head.height // 8, head.width * 7 // 8, head.height * 7 // 8))
            canvas.paste(head, (x, y), mask.filter(ImageFilter.GaussianBlur(head.width // 16)))
            taken.append(box)
            people.add(person)
        file = f"scene-{n:03d}.jpg"
        _save(canvas, folder / file)
        labels[file] = people
    photos = sorted(_labels().items())
    for n in range(count - scenes):
        canvas = Image.new("RGB", (2000, 2000), (128, 128, 128))
        people = set()
        for slot, (name, who) in enumerate(pick.sample(photos, 4)):
            tile = Image.open(FACES / name).convert("RGB")
            tile.thumbnail((1000, 1000), Image.Resampling.LANCZOS)
            canvas.paste(tile, ((slot % 2) * 1000, (slot // 2) * 1000))
            people |= who
        file = f"collage-{n:03d}.jpg"
        _save(canvas, folder / file)
        labels[file] = people
    return labels


def make_known(folder: Path) -> None:
    for person, name in SELFIES.items():
        shutil.copy(FACES / name, folder / f"{person}{Path(name).suffix}")


# --- Measuring ------------------------------------------------------------------


class TreeCPU:
    """CPU seconds of our process tree vs. the whole machine, sampled with psutil."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, float], float] = {}
        self._record()
        # Processes already running (the idle cluster) count from now on only.
        self.before = dict(self.seen)
        self.machine0 = psutil.cpu_times()
        self.wall0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            self._record()

    def _record(self) -> None:
        for proc in psutil.Process().children(recursive=True):
            try:
                times = proc.cpu_times()
                self.seen[(proc.pid, proc.create_time())] = times.user + times.system
            except psutil.Error:
                pass

    def stop(self) -> dict:
        self._record()
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self.wall0
        machine1 = psutil.cpu_times()
        busy = sum(
            getattr(machine1, f) - getattr(self.machine0, f) for f in ("user", "system", "nice", "irq", "softirq")
        )
        ours = sum(cpu - self.before.get(key, 0.0) for key, cpu in self.seen.items())
        return {
            "wall_s": round(wall, 2),
            "our_cpu_s": round(ours, 1),
            "other_cores": round(max(0.0, busy - ours) / wall, 2),
        }


def score(found: set[tuple[str, str]], labels: dict[str, set[str]]) -> dict:
    truth = {(photo, person) for photo, people in labels.items() for person in people}
    hits = len(found & truth)
    return {
        "pairs": len(truth),
        "true_positives": hits,
        "false_positives": len(found - truth),
        "precision": round(hits / len(found), 4) if found else 1.0,
        "recall": round(hits / len(truth), 4) if truth else 1.0,
    }


def run_cli(known: Path, unknown: Path, labels: dict[str, set[str]]) -> dict:
    meter = TreeCPU()
    done = subprocess.run(
        [str(CLI), "--cpus", "2", str(known), str(unknown)], capture_output=True, text=True, check=True
    )
    result = meter.stop()
    found = set()
    for line in done.stdout.splitlines():
        path, _, name = line.rpartition(",")
        if name in SELFIES:
            found.add((Path(path).name, name))
    return {**result, **score(found, labels)}


def _project_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{tmp}/db.sqlite3",
        MEDIA_ROOT=str(tmp / "media"),
        CACHE_DIR=str(tmp / "cache"),
        Q_CLUSTER_NAME=f"bench-indexing-{os.getpid()}",
        Q_WORKERS="2",
        LOG_LEVEL="WARNING",
        Q_LOG_LEVEL="WARNING",
    )
    return env


def run_project(known: Path, unknown: Path, labels: dict[str, set[str]], extra_env: dict[str, str]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="trouvaille-bench-"))
    env = {**_project_env(tmp), **extra_env}
    manage = [str(PYTHON), str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=ROOT)
    subprocess.run(
        [*manage, "create_event", "Bench", "--slug", "bench"], env=env, check=True, cwd=ROOT, capture_output=True
    )
    log = open(tmp / "qcluster.log", "w")  # noqa: SIM115 - closed below
    cluster = subprocess.Popen(
        [*manage, "qcluster"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        time.sleep(4)  # workers spawned and idle, like a running deployment
        meter = TreeCPU()
        subprocess.run(
            [*manage, "import_photos", "bench", str(unknown), "--wait"],
            env=env,
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        imported = meter.stop()
        meter = TreeCPU()
        pairs = subprocess.run(
            [str(PYTHON), "-m", "tests.bench.bench_indexing", "--selfies-into", str(known)],
            env=env,
            check=True,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        selfies = meter.stop()
    finally:
        os.killpg(cluster.pid, signal.SIGTERM)
        try:
            cluster.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
        log.close()
    answer = json.loads(pairs.stdout)
    found = {tuple(pair) for pair in answer["pairs"]}
    selfies["wall_s"] = answer["wall_s"]
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "wall_s": round(imported["wall_s"] + selfies["wall_s"], 2),
        "import_wall_s": imported["wall_s"],
        "selfies_wall_s": selfies["wall_s"],
        "our_cpu_s": round(imported["our_cpu_s"] + selfies["our_cpu_s"], 1),
        "other_cores": round(max(imported["other_cores"], selfies["other_cores"]), 2),
        **score(found, labels),
    }


def selfies_into(known: Path) -> None:
    """(In the project's environment) take one selfie per person, wait, print the matched pairs."""
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from gallery import services
    from gallery.models import Event, Match, Selfie

    event = Event.objects.get(slug="bench")
    start = time.perf_counter()  # from the first upload: this helper's start-up is no part of the product
    person_of = {}
    for file in sorted(known.iterdir()):
        with file.open("rb") as upload:
            person_of[services.selfie_create(event=event, upload=upload, consent=True).pk] = file.stem
    pending = Selfie.objects.filter(match_state__in=[Selfie.State.PENDING, Selfie.State.MATCHING])
    deadline = time.monotonic() + 300
    while pending.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pairs = [(name, person_of[sid]) for name, sid in Match.objects.values_list("photo__original_name", "selfie_id")]
    print(json.dumps({"pairs": pairs, "wall_s": round(time.perf_counter() - start, 2)}))


# --- Profile of one index job ------------------------------------------------------


def profile(unknown: Path, limit: int) -> None:
    """CPU per stage of the index job's work on the set's photos, in this process."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.gettempdir()}/trouvaille-bench-unused.sqlite3"
    sys.path.insert(0, str(ROOT))
    django.setup()
    import cProfile
    import pstats

    from django.conf import settings

    from gallery.images import fitted, jpeg_file, load_scaled
    from matching.engines import get_engine

    engine = get_engine("dlib")
    files = sorted(unknown.iterdir())[:limit]
    stages = dict.fromkeys(["decode", "resize", "copies", "detect+embed"], 0.0)
    profiler = cProfile.Profile(time.process_time)
    faces = 0
    for file in files:
        profiler.enable()
        marks = [time.process_time()]
        with file.open("rb") as original:  # as photo_index does: DCT-scaled when large enough
            image, _ = load_scaled(original, side=settings.DISPLAY_MAX_SIDE)
        marks.append(time.process_time())
        display = fitted(image, settings.DISPLAY_MAX_SIDE)
        marks.append(time.process_time())
        jpeg_file(display, max_side=settings.DISPLAY_MAX_SIDE)
        jpeg_file(display, max_side=settings.THUMBNAIL_SIDE, quality=80)
        marks.append(time.process_time())
        faces += len(engine.detect(display))
        marks.append(time.process_time())
        profiler.disable()
        for stage, start, end in zip(stages, marks, marks[1:], strict=False):
            stages[stage] += end - start
    total = sum(stages.values())
    per = ", ".join(f"{k} {v / len(files) * 1000:.0f}" for k, v in stages.items())
    print(f"Trouvaille: {len(files)} photos, {faces} faces: {total / len(files) * 1000:.0f} ms CPU per photo ({per})")
    # The command-line tool's work per photo (face_recognition_cli.test_image without the printing).
    import face_recognition

    start, faces = time.process_time(), 0
    for file in files:
        pixels = face_recognition.load_image_file(file)
        if max(pixels.shape) > 1600:
            small = Image.fromarray(pixels)
            small.thumbnail((1600, 1600), Image.LANCZOS)
            pixels = np.array(small)
        faces += len(face_recognition.face_encodings(pixels))
    tool = time.process_time() - start
    print(f"face_recognition: {faces} faces, {tool / len(files) * 1000:.0f} ms CPU per photo: {tool / total:.2f}x ours")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


# --- Report ------------------------------------------------------------------------


def compare(name: str, run: int, known: Path, unknown: Path, labels: dict[str, set[str]], extra_env: dict) -> dict:
    """Both sides on the same photos, back to back; odd runs start with Trouvaille."""
    row: dict = {"set": name, "photos": len(labels), "run": run + 1}
    sides = ["cli", "trouvaille"] if run % 2 == 0 else ["trouvaille", "cli"]
    for side in sides:
        if side == "cli":
            row[side] = run_cli(known, unknown, labels)
        else:
            row[side] = run_project(known, unknown, labels, extra_env)
    cli, ours = row["cli"], row["trouvaille"]
    row["ratio"] = round(cli["wall_s"] / ours["wall_s"], 2)
    row["ratio_import_only"] = round(cli["wall_s"] / ours["import_wall_s"], 2)
    # On a busy machine wall times depend on the others; CPU seconds much less.
    row["cpu_ratio"] = round(cli["our_cpu_s"] / ours["our_cpu_s"], 2)
    print(
        f"  run {run + 1}: face_recognition {cli['wall_s']:.1f} s "
        f"(P {cli['precision']:.3f} R {cli['recall']:.3f}, others {cli['other_cores']} cores) | "
        f"trouvaille {ours['wall_s']:.1f} s = import {ours['import_wall_s']:.1f} "
        f"+ selfies {ours['selfies_wall_s']:.1f} "
        f"(P {ours['precision']:.3f} R {ours['recall']:.3f}, others {ours['other_cores']} cores) | "
        f"ratio {row['ratio']:.2f}x ({row['ratio_import_only']:.2f}x import only; "
        f"CPU {cli['our_cpu_s']:.0f} s / {ours['our_cpu_s']:.0f} s = {row['cpu_ratio']:.2f}x)",
        flush=True,
    )
    return row


def main() -> None:
    global FACES  # --faces: one folder for the whole run
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sets",
        default="mixed,large",
        help="comma-separated: mixed, large, camera (6000x4000 scenes, half as many as --large)",
    )
    parser.add_argument("--large", type=int, default=60, help="photos in the large set")
    parser.add_argument("--repeat", type=int, default=1, help="runs per set, alternating which side goes first")
    parser.add_argument(
        "--project-env", action="append", default=[], metavar="NAME=VALUE", help="setting for Trouvaille's side"
    )
    parser.add_argument("--profile", action="store_true", help="profile the index job's CPU on each set instead")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--faces", type=Path, help=f"the labelled faces folder (default {FACES})")
    parser.add_argument("--selfies-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.selfies_into:
        selfies_into(args.selfies_into)
        return
    if args.faces:
        FACES = args.faces
    if not FACES.is_dir():
        sys.exit(f"{FACES} is missing: this benchmark makes its photos from the shared labelled faces.")
    extra_env = dict(item.split("=", 1) for item in args.project_env)
    results = []
    with tempfile.TemporaryDirectory(prefix="trouvaille-bench-sets-") as tmp:
        known = Path(tmp) / "known"
        known.mkdir()
        make_known(known)
        for name in args.sets.split(","):
            unknown = Path(tmp) / name
            unknown.mkdir()
            if name == "mixed":
                labels = make_mixed(unknown)
            elif name == "camera":  # what most event photographers' cameras make: 24 MP
                labels = make_large(unknown, args.large // 2, size=(6000, 4000), collages=False)
            else:
                labels = make_large(unknown, args.large)
            sizes = [max(Image.open(unknown / f).size) for f in labels]
            pairs = sum(map(len, labels.values()))
            print(f"\n{name}: {len(labels)} photos, {min(sizes)}-{max(sizes)} px, {pairs} labelled pairs")
            if args.profile:
                profile(unknown, limit=24)
                continue
            for run in range(args.repeat):
                results.append(compare(name, run, known, unknown, labels, extra_env))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
