from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from gallery import services
from gallery.management.events import acting_user, add_as_argument, event_by_slug, events_for


class Command(BaseCommand):
    help = "Queue photos to be indexed again (one event or all; optionally only failed ones)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_as_argument(parser)
        parser.add_argument("slug", nargs="?", help="The event's slug (default: every event).")
        parser.add_argument("--failed", action="store_true", help="Only photos whose indexing failed.")
        parser.add_argument(
            "--stuck",
            action="store_true",
            help="Only photos pending or processing for longer than Q_TIMEOUT (lost jobs).",
        )

    def handle(
        self, *args: object, slug: str | None, failed: bool, stuck: bool, as_user: str | None, **options: object
    ) -> None:
        user = acting_user(as_user)
        if slug:
            count = services.event_reindex(event=event_by_slug(slug, user=user), failed_only=failed, stuck_only=stuck)
        elif user is not None:  # every event of this organizer
            count = sum(
                services.event_reindex(event=event, failed_only=failed, stuck_only=stuck) for event in events_for(user)
            )
        else:
            count = services.event_reindex(failed_only=failed, stuck_only=stuck)
        scope = f"event {slug}" if slug else (f"the events of {as_user}" if as_user else "all events")
        kind = (
            " and ".join(word for word, on in (("failed", failed), ("stuck", stuck)) if on) + " photos"
            if failed or stuck
            else "photos"
        )
        self.stdout.write(self.style.SUCCESS(f"Queued {count} {kind} of {scope} for indexing."))
