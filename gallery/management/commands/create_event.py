from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gallery import access, services
from gallery.links import public_url


class Command(BaseCommand):
    help = "Create an event that attendees can open by its link."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The event's name, shown to attendees.")
        parser.add_argument("--slug", help="The event's URL part (default: made from the name).")
        parser.add_argument("--code", default="", help="An access code attendees must enter (default: none).")
        parser.add_argument("--owner", help="Username of the organizer who manages it in the admin.")

    def handle(
        self, *args: object, name: str, slug: str | None, code: str, owner: str | None, **options: object
    ) -> None:
        try:
            user = access.command_user(owner)
            event = services.event_create(name=name, slug=slug, code=code, owner=user)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Created event {event.name!r} (slug {event.slug})."))
        if user is not None:
            self.stdout.write(f"Managed by {user.get_username()}.")
        self.stdout.write(f"Attendee link: {public_url(event.get_absolute_url())}")
        if event.access_code:
            self.stdout.write(f"Access code: {event.access_code}")
