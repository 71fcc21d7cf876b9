from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from gallery import services
from gallery.management.events import acting_user, add_as_argument, events_for


class Command(BaseCommand):
    help = (
        "Delete the attendee data (selfies, face data, matches, e-mail addresses) of every event past its "
        "retention period, as the daily job does. Photos stay."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_as_argument(parser)
        parser.add_argument("--dry-run", action="store_true", help="Print what would be deleted; delete nothing.")

    def handle(self, *args: object, dry_run: bool, as_user: str | None, **options: object) -> None:
        events = events_for(acting_user(as_user))
        purged = services.expired_attendee_data_purge(events=events, dry_run=dry_run)
        verb = "Would delete" if dry_run else "Deleted"
        for counts in purged:
            self.stdout.write(f"{verb} {counts.describe()}")
        self.stdout.write(self.style.SUCCESS(f"{len(purged)} events past their retention period."))
