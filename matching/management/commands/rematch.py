from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from gallery import services
from gallery.management.events import acting_user, add_as_argument, event_by_slug, events_for


class Command(BaseCommand):
    help = "Queue every selfie (of one event or all) to be matched again, e.g. after changing FACE_TOLERANCE."

    def add_arguments(self, parser: CommandParser) -> None:
        add_as_argument(parser)
        parser.add_argument("slug", nargs="?", help="The event's slug (default: every event).")
        parser.add_argument(
            "--stuck", action="store_true", help="Only selfies pending or matching longer than Q_TIMEOUT (lost jobs)."
        )

    def handle(self, *args: object, slug: str | None, stuck: bool, as_user: str | None, **options: object) -> None:
        user = acting_user(as_user)
        if slug:
            count = services.event_rematch(event=event_by_slug(slug, user=user), stuck_only=stuck)
        elif user is not None:  # every event of this organizer
            count = sum(services.event_rematch(event=event, stuck_only=stuck) for event in events_for(user))
        else:
            count = services.event_rematch(stuck_only=stuck)
        scope = f"event {slug}" if slug else (f"the events of {as_user}" if as_user else "all events")
        self.stdout.write(
            self.style.SUCCESS(f"Queued {count} {'stuck ' if stuck else ''}selfies of {scope} for matching.")
        )
