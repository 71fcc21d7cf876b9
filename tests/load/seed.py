"""Deterministic event photos with real faces, made from gallery/sample_photos (not a test module).

The load test needs an event of hundreds of photos in which the attendees' faces really
appear, but the repository only carries ~20 real photos of six people. Each generated
photo is either a variant of one sample photo (cropped, scaled, maybe mirrored, with its
brightness and contrast changed) or a collage of two to four such variants on a plain
background, so dlib finds faces in every one and their embeddings differ from photo to
photo. Who is in each generated photo follows from the sample photos' labels.json.

The selfies the load test uploads (SELFIES) are never used as sources: a selfie is never
one of the indexed photos.

    .venv/bin/python -m tests.load.seed OUT_DIR --count 500 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "gallery" / "sample_photos"
LABELS: dict[str, dict] = json.loads((SAMPLES / "labels.json").read_text())

# One selfie per person who has another photo to be found in; Lin-Manuel Miranda has a
# single photo, so he is only in the event (attendees never look for him).
SELFIES = [
    "people/alex_lacamoire/alex1.jpg",
    "people/biden/biden2.jpg",
    "people/kit_harington/kit1.jpg",
    "people/obama/obama2.jpg",
    "people/rose_leslie/rose1.jpg",
]
# Everything else with a whole face: the people photos, the groups (two_people.jpg is
# Kit Harington and Rose Leslie; obama_and_biden.jpg has an unknown child too). Photos
# too small to be scaled up convincingly and the deliberately partial faces stay out.
SOURCES = sorted(
    name
    for name, label in LABELS.items()
    if name not in SELFIES
    and not name.startswith("edge/")
    and label["people"]
    and "small" not in name
    and "240p" not in name
)
BACKGROUNDS = [(236, 232, 224), (40, 44, 52), (200, 214, 228), (96, 110, 84), (250, 250, 250)]
# Phone-sized photos: dlib's cost grows with pixels, and seeding 500 photos on 2 shared
# cores must take minutes, not a quarter of an hour. Faces stay 100+ px wide.
MAX_SIDE = 1200


def _variant(rng: random.Random, name: str, longest: int) -> Image.Image:
    """One sample photo, cropped by up to 8% per side, scaled to `longest`, maybe mirrored, relit."""
    with Image.open(SAMPLES / name) as original:
        image = original.convert("RGB")
    width, height = image.size
    box = (
        int(width * rng.uniform(0, 0.08)),
        int(height * rng.uniform(0, 0.08)),
        int(width * (1 - rng.uniform(0, 0.08))),
        int(height * (1 - rng.uniform(0, 0.08))),
    )
    image = image.crop(box)
    scale = longest / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(0.85, 1.15))


def _collage(rng: random.Random, names: list[str]) -> Image.Image:
    """Two to four variants side by side (or in a 2x2 grid) on a plain background."""
    columns = len(names) if len(names) <= 3 else 2
    rows = 1 if len(names) <= 3 else 2
    cell = MAX_SIDE // columns
    canvas = Image.new("RGB", (cell * columns, cell * rows), rng.choice(BACKGROUNDS))
    for n, name in enumerate(names):
        tile = _variant(rng, name, int(cell * rng.uniform(0.8, 0.95)))
        x = (n % columns) * cell + (cell - tile.width) // 2
        y = (n // columns) * cell + (cell - tile.height) // 2
        canvas.paste(tile, (x, y))
    return canvas


def generate(out: Path, count: int, seed: int, prefix: str = "event") -> dict[str, list[str]]:
    """Write `count` JPEGs into out (kept from an earlier run with the same seed); file name -> people."""
    manifest = out / "labels.json"
    if manifest.exists():
        made = json.loads(manifest.read_text())
        if (
            made.get("seed") == seed
            and len(made["photos"]) == count
            and all((out / f).exists() for f in made["photos"])
        ):
            return made["photos"]
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    labels: dict[str, list[str]] = {}
    for n in range(count):
        if rng.random() < 0.6:
            names = [rng.choice(SOURCES)]
            make = lambda names=names: _variant(rng, names[0], rng.randint(600, MAX_SIDE - 200))  # noqa: E731
        else:
            names = rng.sample(SOURCES, rng.randint(2, 4))
            make = lambda names=names: _collage(rng, names)  # noqa: E731
        filename = f"{prefix}-{seed}-{n:04d}.jpg"
        make().save(out / filename, "JPEG", quality=85)
        labels[filename] = sorted({person for name in names for person in LABELS[name]["people"]})
    manifest.write_text(json.dumps({"seed": seed, "photos": labels}, indent=1, sort_keys=True))
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    labels = generate(args.out, args.count, args.seed)
    print(f"{len(labels)} photos in {args.out}")


if __name__ == "__main__":
    main()
