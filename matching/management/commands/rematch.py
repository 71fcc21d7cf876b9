from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from gallery import services
from gallery.management.events import event_by_slug


class Command(BaseCommand):
    help = "Queue every selfie (of one event or all) to be matched again, e.g. after changing FACE_TOLERANCE."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", nargs="?", help="The event's slug (default: every event).")
        parser.add_argument(
            "--stuck", action="store_true", help="Only selfies pending or matching longer than Q_TIMEOUT (lost jobs)."
        )

    def handle(self, *args: object, slug: str | None, stuck: bool, **options: object) -> None:
        event = event_by_slug(slug) if slug else None
        count = services.event_rematch(event=event, stuck_only=stuck)
        scope = f"event {slug}" if slug else "all events"
        self.stdout.write(
            self.style.SUCCESS(f"Queued {count} {'stuck ' if stuck else ''}selfies of {scope} for matching.")
        )
