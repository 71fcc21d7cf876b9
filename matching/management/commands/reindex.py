from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from gallery import services
from gallery.management.events import event_by_slug


class Command(BaseCommand):
    help = "Queue photos to be indexed again (one event or all; optionally only failed ones)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", nargs="?", help="The event's slug (default: every event).")
        parser.add_argument("--failed", action="store_true", help="Only photos whose indexing failed.")
        parser.add_argument(
            "--stuck",
            action="store_true",
            help="Only photos pending or processing for longer than Q_TIMEOUT (lost jobs).",
        )

    def handle(self, *args: object, slug: str | None, failed: bool, stuck: bool, **options: object) -> None:
        event = event_by_slug(slug) if slug else None
        count = services.event_reindex(event=event, failed_only=failed, stuck_only=stuck)
        scope = f"event {slug}" if slug else "all events"
        kind = (
            " and ".join(word for word, on in (("failed", failed), ("stuck", stuck)) if on) + " photos"
            if failed or stuck
            else "photos"
        )
        self.stdout.write(self.style.SUCCESS(f"Queued {count} {kind} of {scope} for indexing."))
