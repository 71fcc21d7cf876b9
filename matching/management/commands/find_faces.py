from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gallery.images import ImageProblem, load_rgb
from gallery.management.events import acting_user, add_as_argument, event_by_slug
from matching import services


class Command(BaseCommand):
    # A diagnostic: one threshold, none of the event-level matching rules (docs/accuracy.md).
    help = (
        "List the photos of an event with a face within the tolerance of the largest face in IMAGE, "
        "best match first (one threshold, not the matching rules; opted-out faces are left out)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_as_argument(parser)
        parser.add_argument("slug", help="The event's slug.")
        parser.add_argument("image", type=Path, help="A photo of the person to look for.")
        parser.add_argument(
            "--tolerance", type=float, help="Largest distance that counts as a match (default FACE_TOLERANCE)."
        )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help='Print a JSON list of {"photo", "distance"} objects.'
        )

    def handle(
        self,
        *args: object,
        slug: str,
        image: Path,
        tolerance: float | None,
        as_json: bool,
        as_user: str | None,
        **options: object,
    ) -> None:
        event = event_by_slug(slug, user=acting_user(as_user))
        if tolerance is not None and not 0 < tolerance <= 2:
            raise CommandError("--tolerance must be between 0 and 2.")
        try:
            with image.open("rb") as handle:
                picture = load_rgb(handle)
        except FileNotFoundError as exc:
            raise CommandError(f"No such file: {image}") from exc
        except (ImageProblem, IsADirectoryError) as exc:
            raise CommandError(f"{image}: {exc}") from exc
        found = services.image_search(event=event, image=picture, tolerance=tolerance)
        if as_json:
            self.stdout.write(
                json.dumps([{"photo": p.original_name, "distance": round(d, 4)} for p, d in found], indent=2)
            )
            return
        for photo, distance in found:
            self.stdout.write(f"{photo.original_name}\t{distance:.4f}")
        self.stderr.write(f"{len(found)} matching photo{'s' if len(found) != 1 else ''} in {event.slug}.")
