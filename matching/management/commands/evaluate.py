"""Measure matching on a labelled folder: precision, recall, false matches, misses, time.

FOLDER holds one sub-folder per person: its first image (by name) is that
person's selfie, the others are photos of that person alone. An optional
`groups/` folder holds photos of several people, with a `labels.json` naming who
is in each ({"photo.jpg": ["ann", "bob"]} or {"photo.jpg": {"people": [...]}});
faces of anybody else are distractors. tests/fixtures/make_hard_set.py lays out
such folders.

A throw-away event is built (deleted at the end, files included): every photo
is indexed and every selfie enrolled by the same services as in production, then
each strategy decides on the stored embeddings at each tolerance.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test.utils import override_settings

from gallery import services as gallery_services
from gallery.images import ImageProblem
from gallery.models import Event, Face, Match, Photo, Selfie
from matching import rules, services

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".gif", ".bmp", ".tif", ".tiff"}


@dataclass
class LabelledSet:
    selfies: dict[str, Path]  # person -> selfie file
    photos: dict[Path, set[str]]  # photo file -> enrolled people in it


def read_folder(folder: Path) -> LabelledSet:
    if not folder.is_dir():
        raise CommandError(f"{folder} is not a folder.")
    selfies: dict[str, Path] = {}
    photos: dict[Path, set[str]] = {}
    for person_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "groups"):
        images = sorted(p for p in person_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            continue
        selfies[person_dir.name] = images[0]
        for image in images[1:]:
            photos[image] = {person_dir.name}
    groups = folder / "groups"
    if groups.is_dir():
        try:
            labels = json.loads((groups / "labels.json").read_text())
        except FileNotFoundError as exc:
            raise CommandError(f"{groups} has no labels.json.") from exc
        except ValueError as exc:
            raise CommandError(f"{groups / 'labels.json'} is not valid JSON: {exc}") from exc
        for name, entry in sorted(labels.items()):
            people = entry.get("people", []) if isinstance(entry, dict) else entry
            if not (groups / name).is_file():
                raise CommandError(f"{groups / 'labels.json'} names {name}, which is not in {groups}.")
            # People without a selfie in this set are distractors, like the unknown faces.
            photos[groups / name] = {p for p in people if p in selfies}
    if not selfies:
        raise CommandError(f"{folder} has no person folder with an image.")
    return LabelledSet(selfies=selfies, photos=photos)


@dataclass
class Score:
    precision: float
    recall: float
    false_matches: int
    misses: int

    @classmethod
    def of(cls, predicted: set[tuple[str, int]], truth: set[tuple[str, int]]) -> Score:
        hits = len(predicted & truth)
        return cls(
            precision=round(hits / len(predicted), 4) if predicted else 1.0,
            recall=round(hits / len(truth), 4) if truth else 1.0,
            false_matches=len(predicted - truth),
            misses=len(truth - predicted),
        )


def default_rules(**overrides: object) -> rules.Rules:
    """The configured rules (settings), with command-line overrides."""
    values = {
        "tolerance": settings.FACE_TOLERANCE,
        "merge_distance": settings.FACE_MERGE_DISTANCE,
        "min_face_size": settings.FACE_MIN_QUALITY_SIZE,
        "min_sharpness": settings.FACE_MIN_SHARPNESS,
        "low_quality_tolerance": settings.FACE_LOW_QUALITY_TOLERANCE,
        "probe_distance": settings.FACE_PROBE_DISTANCE,
        "expansion_tolerance": settings.FACE_EXPANSION_TOLERANCE,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return rules.Rules(**values)


class Command(BaseCommand):
    help = "Measure matching on a labelled folder (one sub-folder per person, first image = selfie)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("folder", type=Path)
        parser.add_argument(
            "--tolerance",
            type=float,
            action="append",
            help="A tolerance to measure (repeatable; default FACE_TOLERANCE and 0.6).",
        )
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the results as JSON.")
        parser.add_argument("--dump", type=Path, help="Also save embeddings and labels (.npz) for offline study.")
        for name, help_text in (
            ("merge-distance", "selfies closer than this are one identity"),
            ("probe-distance", "matched faces this close become probes (expansion)"),
            ("expansion-tolerance", "faces this close to a probe match too"),
            ("low-quality-tolerance", "tolerance for tiny or blurred faces"),
            ("min-sharpness", "faces less sharp than this are low quality"),
        ):
            parser.add_argument(f"--{name}", type=float, help=f"{help_text} (default: setting)")
        parser.add_argument("--min-face-size", type=int, help="faces smaller (px) are low quality (default: setting)")

    def handle(self, *args: object, folder: Path, tolerance: list[float] | None, as_json: bool, **options) -> None:
        labelled = read_folder(folder)
        tolerances = sorted(set(tolerance or [settings.FACE_TOLERANCE, 0.6]))
        if any(not 0 < t <= 2 for t in tolerances):
            raise CommandError("--tolerance must be between 0 and 2.")
        configured = default_rules(
            merge_distance=options["merge_distance"],
            probe_distance=options["probe_distance"],
            expansion_tolerance=options["expansion_tolerance"],
            low_quality_tolerance=options["low_quality_tolerance"],
            min_sharpness=options["min_sharpness"],
            min_face_size=options["min_face_size"],
        )
        slug = f"evaluate-{uuid.uuid4().hex[:10]}"
        # One log line per job would bury the table.
        jobs_logger = logging.getLogger("trouvaille.jobs")
        level = jobs_logger.level
        jobs_logger.setLevel(max(level, logging.WARNING))
        # Jobs run inline here: the measure must not depend on (or disturb) a cluster.
        try:
            with override_settings(Q_CLUSTER={**settings.Q_CLUSTER, "sync": True}):  # django-q2's inline mode
                event = gallery_services.event_create(name=f"evaluate {folder.name}", slug=slug)
                try:
                    result = self._evaluate(event, labelled, tolerances, configured, options.get("dump"))
                finally:
                    event.delete()
        finally:
            jobs_logger.setLevel(level)
        result["folder"] = str(folder)
        if as_json:
            self.stdout.write(json.dumps(result, indent=2))
        else:
            self._print(result)

    def _evaluate(
        self, event: Event, labelled: LabelledSet, tolerances: list[float], configured: rules.Rules, dump: Path | None
    ) -> dict:
        started = time.monotonic()
        photo_person: dict[int, set[str]] = {}
        for path, people in labelled.photos.items():
            with path.open("rb") as handle:
                summary = gallery_services.photo_import(event=event, name=path.name, fileobj=handle)
            if summary.created:
                # Indexed here, whether or not the queued job already ran inline (then
                # this finds nothing to claim): the measure never waits on a cluster.
                services.photo_index(photo_id=summary.created[0])
                photo_person[summary.created[0]] = people
            elif summary.rejected:
                self.stderr.write(f"{path}: {summary.rejected[0][1]}")
            else:
                self.stderr.write(f"{path}: same content as another photo, counted once")
        indexing = time.monotonic() - started
        failed = list(event.photos.exclude(index_state=Photo.State.INDEXED).values_list("original_name", "index_error"))
        for name, error in failed:
            self.stderr.write(f"{name}: not indexed ({error})")

        selfie_person: dict[int, str] = {}
        selfie_seconds = []
        for person, path in labelled.selfies.items():
            began = time.monotonic()
            with path.open("rb") as handle:
                try:
                    selfie = gallery_services.selfie_create(event=event, upload=handle, consent=True)
                except ImageProblem as exc:
                    self.stderr.write(f"{path}: {exc}")
                    continue
            services.selfie_match(selfie_id=selfie.pk)
            selfie_seconds.append(time.monotonic() - began)
            selfie.refresh_from_db()
            if selfie.match_state != Selfie.State.DONE:
                self.stderr.write(f"{path}: selfie not matched ({selfie.match_error})")
            selfie_person[selfie.pk] = person

        truth = {(person, photo) for photo, people in photo_person.items() for person in people}
        recorded = {
            (selfie_person[s], p)
            for s, p in Match.objects.filter(selfie__event=event).values_list("selfie_id", "photo_id")
            if s in selfie_person
        }
        result: dict = {
            "people": len(labelled.selfies),
            "photos": len(photo_person),
            "pairs": len(truth),
            "faces": Face.objects.filter(photo__event=event).count(),
            "photos_not_indexed": len(failed),
            "seconds": {
                "indexing_per_photo": round(indexing / max(1, len(photo_person)), 3),
                "selfie_to_matches_median": round(statistics.median(selfie_seconds), 3) if selfie_seconds else None,
            },
            "recorded": {**Score.of(recorded, truth).__dict__, "tolerance": settings.FACE_TOLERANCE},
            "rules": {k: v for k, v in configured.__dict__.items() if not isinstance(v, bool)},
            "strategies": {},
        }
        arrays = _arrays(event, selfie_person)
        if arrays is None:
            return result  # a hosted engine: no embeddings to decide on here
        if dump:
            np.savez_compressed(
                dump,
                truth=np.array(sorted(truth), dtype=object),
                photo_people=np.array([json.dumps({k: sorted(v) for k, v in photo_person.items()})]),
                selfie_people=np.array([selfie_person[int(s)] for s in arrays["selfie_ids"]]),
                photo_names=np.array([json.dumps(dict(event.photos.values_list("id", "original_name")))]),
                **arrays,
            )
        for name in rules.STRATEGIES:
            rows = []
            for tolerance in tolerances:
                chosen = replace(configured.strategy(name), tolerance=tolerance)
                per_selfie = rules.selfie_photos(
                    faces=arrays["faces"],
                    face_photos=arrays["face_photos"],
                    selfies=arrays["selfies"],
                    rules=chosen,
                    face_low_quality=rules.low_quality(arrays["sizes"], arrays["sharpness"], chosen),
                )
                predicted = {
                    (selfie_person[int(s)], photo)
                    for s, photos in zip(arrays["selfie_ids"], per_selfie, strict=True)
                    for photo in photos
                }
                rows.append({"tolerance": tolerance, **Score.of(predicted, truth).__dict__})
            result["strategies"][name] = rows
        return result

    def _print(self, result: dict) -> None:
        self.stdout.write(
            f"{result['folder']}: {result['people']} people, {result['photos']} photos, "
            f"{result['faces']} faces, {result['pairs']} true (person, photo) pairs"
        )
        seconds = result["seconds"]
        self.stdout.write(
            f"time: {seconds['indexing_per_photo']} s per photo indexed; "
            f"selfie upload to matches recorded: median {seconds['selfie_to_matches_median']} s"
        )
        rec = result["recorded"]
        self.stdout.write(
            f"recorded by the jobs (FACE_TOLERANCE {rec['tolerance']}): precision {rec['precision']:.3f}, "
            f"recall {rec['recall']:.3f}, {rec['false_matches']} false matches, {rec['misses']} misses"
        )
        if not result["strategies"]:
            return
        self.stdout.write(
            f"{'strategy':<14} {'tolerance':>9} {'precision':>9} {'recall':>7} {'false':>6} {'missed':>6}"
        )
        for name, rows in result["strategies"].items():
            for row in rows:
                self.stdout.write(
                    f"{name:<14} {row['tolerance']:>9.2f} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                    f"{row['false_matches']:>6} {row['misses']:>6}"
                )


def _arrays(event: Event, selfie_person: dict[int, str]) -> dict[str, np.ndarray] | None:
    """The event's stored embeddings and face quality, as the rules take them."""
    faces = list(
        Face.objects.filter(photo__event=event)
        .exclude(embedding=b"")
        .order_by("photo_id", "id")
        .values_list("photo_id", "embedding", "size", "sharpness")
    )
    selfies = list(
        Selfie.objects.filter(pk__in=selfie_person).exclude(embedding=b"").order_by("id").values_list("id", "embedding")
    )
    if not selfies:
        return None
    return {
        "faces": np.array([np.frombuffer(f[1], dtype=np.float32) for f in faces]).reshape(len(faces), -1),
        "face_photos": np.array([f[0] for f in faces], dtype=np.int64),
        "sizes": np.array([-1 if f[2] is None else f[2] for f in faces], dtype=np.int64),
        "sharpness": np.array([-1.0 if f[3] is None else f[3] for f in faces]),
        "selfie_ids": np.array([s[0] for s in selfies], dtype=np.int64),
        "selfies": np.array([np.frombuffer(s[1], dtype=np.float32) for s in selfies]),
    }
