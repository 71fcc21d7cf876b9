"""Benchmark: selfie upload to matches visible, on an event of 1,000 photos (issue #7's < 2 s).

Run from the project root (not collected by pytest; ~1 minute):

    .venv/bin/python -m tests.bench.bench_selfie_decision
    .venv/bin/python -m tests.bench.bench_selfie_decision --photos 1000 --selfies 300 --runs 9
    .venv/bin/python -m tests.bench.bench_selfie_decision --selfies 2000   # and 5000: how the decision scales

The event: the five real photos of Obama from gallery/sample_photos, indexed by the
real dlib engine, plus synthetic photos (3 faces each, embeddings drawn around
random "people" so that distances look like dlib's: ~0.3 within a person, ~0.9
between people) up to --photos, and --selfies enrolled attendees (synthetic).
Each run is what an attendee does: `selfie_create` (the upload: a compressed copy,
then the job queued on commit, run inline here by django-q2's sync mode) with Obama's
selfie (obama2.jpg, not among the photos), which enrols the face (dlib) and makes
the event-level decision (matching.rules); the clock stops when the matches are
readable. The attendee is deleted after each run, so every run starts alike; that
deletion hands the selfie's faces over (the job deciding its photos again, inline),
timed as "deletion".
The first run pays for building the event's face matrix (a worker does that once
per event and keeps it); the median is over the runs after it.

A temporary SQLite database and media folder are used and removed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--selfies", type=int, default=200, help="attendees already enrolled")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="trouvaille-bench-"))
    os.environ.update(
        DATABASE_URL=f"sqlite:///{scratch / 'db.sqlite3'}",
        MEDIA_ROOT=str(scratch / "media"),
        CACHE_DIR=str(scratch / "cache"),
        FACE_BACKEND="dlib",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import logging

    import numpy as np
    from django.conf import settings
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    from gallery import services
    from gallery.models import Attendee, Event, Face, Match, Photo, Selfie
    from matching import services as matching_services
    from matching.engines import get_engine

    logging.getLogger("trouvaille").setLevel(logging.WARNING)
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    call_command("migrate", verbosity=0)
    get_engine()  # dlib's models are loaded once per worker, before any job
    event = Event.objects.create(name="Bench", slug="bench")
    samples = ROOT / "gallery" / "sample_photos"
    real = ["people/obama/obama.jpg", "people/obama/obama_small.jpg", "people/obama/obama-240p.jpg"]
    real += ["edge/obama_partial_face.jpg", "edge/obama_partial_face2.jpg"]
    services.paths_import(event=event, paths=[samples / p for p in real])
    assert Photo.objects.filter(index_state=Photo.State.INDEXED).count() == len(real)

    rng = np.random.default_rng(7)
    people = rng.normal(0, 0.06, (max(50, args.selfies), 128)).astype(np.float32)
    now = timezone.now()
    synthetic = args.photos - len(real)
    photos = Photo.objects.bulk_create(
        Photo(
            event=event,
            original_name=f"synthetic-{i}.jpg",
            content_hash=f"{i:064x}",
            index_state=Photo.State.INDEXED,
            face_count=3,
            indexed_at=now,
            width=4000,
            height=3000,
        )
        for i in range(synthetic)
    )
    faces = []
    for photo in photos:
        for person in rng.choice(len(people), 3, replace=False):
            embedding = people[person] + rng.normal(0, 0.025, 128).astype(np.float32)
            faces.append(
                Face(
                    photo=photo,
                    left=0,
                    top=0,
                    width=200,
                    height=200,
                    embedding=embedding.tobytes(),
                    engine="dlib",
                    size=200,
                    sharpness=0.4,
                )
            )
    Face.objects.bulk_create(faces, batch_size=2000)
    attendees = Attendee.objects.bulk_create(Attendee(event=event, consent_at=now) for _ in range(args.selfies))
    Selfie.objects.bulk_create(
        (
            Selfie(
                event=event,
                attendee=attendee,
                consent_at=now,
                image="none.jpg",
                embedding=(people[person] + rng.normal(0, 0.02, 128).astype(np.float32)).tobytes(),
                engine="dlib",
                match_state=Selfie.State.DONE,
            )
            for person, attendee in enumerate(attendees)
        ),
        batch_size=1000,
    )

    selfie_bytes = (samples / "people/obama/obama2.jpg").read_bytes()
    from tests.bench.machine import BusyMeter

    meter = BusyMeter()  # the host is shared: how busy it was is part of the result
    totals, decisions, deletions, matches = [], [], [], []
    for _ in range(args.runs):
        import io

        started = time.perf_counter()
        selfie = services.selfie_create(event=event, upload=io.BytesIO(selfie_bytes), consent=True)
        found = Match.objects.filter(selfie=selfie).count()  # what the status endpoint reads
        totals.append(time.perf_counter() - started)
        selfie.refresh_from_db()
        assert selfie.match_state == Selfie.State.DONE, selfie.match_error
        matches.append(found)
        began = time.perf_counter()
        with transaction.atomic():
            matching_services.event_decide(event=event, engine="dlib", selfie_id=selfie.pk)
        decisions.append(time.perf_counter() - began)
        began = time.perf_counter()
        services.attendee_delete(attendee=selfie.attendee)  # runs the hand-over job inline
        deletions.append(time.perf_counter() - began)

    warm = totals[1:] or totals
    result = {
        "photos": Photo.objects.filter(event=event).count(),
        "faces": Face.objects.filter(photo__event=event).count(),
        "selfies_enrolled": args.selfies,
        "runs": args.runs,
        "matches_found": matches[0],
        "first_run_s": round(totals[0], 3),
        "median_upload_to_matches_s": round(statistics.median(warm), 3),
        "max_upload_to_matches_s": round(max(warm), 3),
        "median_decision_only_s": round(statistics.median(decisions), 4),
        "median_deletion_s": round(statistics.median(deletions), 4),
        "machine_cores_busy": meter.cores_busy(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "selfie_jitter": settings.FACE_SELFIE_JITTER,
        "tolerance": settings.FACE_TOLERANCE,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
