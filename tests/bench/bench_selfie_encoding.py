"""Benchmark: does jitter or the 68-point landmark model make selfie embeddings better?

Run from the project root (not collected by pytest), on a folder in the `evaluate`
layout and the embeddings `evaluate --dump` saved for it:

    .venv/bin/python manage.py evaluate FOLDER --dump /tmp/set.npz
    .venv/bin/python -m tests.bench.bench_selfie_encoding FOLDER /tmp/set.npz

Each person's selfie goes through the upload path (a 1024 px JPEG, as
selfie_create stores it) and is encoded by the dlib engine four ways: jitter 1
or 10, small (5-point) or large (68-point) landmarks. Photo faces keep the
embeddings indexing stored. Per variant: encoding time per selfie, the largest
true distance, the smallest false distance (a person's selfie to a photo they
are not in), their margin, and precision/recall of one threshold at 0.6.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("dump", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import numpy as np
    from django.conf import settings

    from gallery.images import jpeg_file, load_rgb
    from matching import rules
    from matching.engines import get_engine

    data = np.load(args.dump, allow_pickle=True)
    photo_people = {int(k): set(v) for k, v in json.loads(str(data["photo_people"][0])).items()}
    people = [str(p) for p in data["selfie_people"]]
    engine = get_engine("dlib")
    images = []
    for person in people:
        path = sorted(p for p in (args.folder / person).iterdir() if p.is_file())[0]
        with path.open("rb") as handle:
            image = load_rgb(handle, draft_side=settings.SELFIE_MAX_SIDE)
        stored = jpeg_file(image, max_side=settings.SELFIE_MAX_SIDE, quality=85)
        images.append(load_rgb(io.BytesIO(stored.read())))
    truth = {(person, photo) for photo, names in photo_people.items() for person in names}
    print(f"{'variant':<16} {'ms/selfie':>9} {'true max':>8} {'false min':>9} {'margin':>7} {'P@0.6':>6} {'R@0.6':>6}")
    for jitter in (1, 10):
        for landmarks in ("small", "large"):
            started = time.perf_counter()
            selfies = []
            for image in images:
                found = engine.detect(image, upsample=0, jitter=jitter, landmarks=landmarks, largest_only=True)
                selfies.append(found[0].embedding)
            per_selfie = (time.perf_counter() - started) / len(images)
            table = rules.distances(data["faces"], np.array(selfies))
            true, false = [], []
            for column, person in enumerate(people):
                for photo, names in photo_people.items():
                    rows = data["face_photos"] == photo
                    if rows.any():
                        (true if person in names else false).append(table[rows, column].min())
            found = rules.single_threshold(
                faces=data["faces"], face_photos=data["face_photos"], selfies=np.array(selfies), tolerance=0.6
            )
            predicted = {(people[i], photo) for i, photos in enumerate(found) for photo in photos}
            hits = len(predicted & truth)
            print(
                f"jitter {jitter:<2} {landmarks:<6} {per_selfie * 1000:>9.0f} {max(true):>8.3f} {min(false):>9.3f} "
                f"{min(false) - max(true):>7.3f} {hits / max(1, len(predicted)):>6.3f} {hits / len(truth):>6.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
