"""What the management commands (gallery's and matching's) share."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.management.base import CommandError, CommandParser
from django.db.models import QuerySet

from gallery import access
from gallery.models import Event


def add_as_argument(parser: CommandParser) -> None:
    parser.add_argument(
        "--as",
        dest="as_user",
        metavar="USERNAME",
        help="Act as this organizer: only the events they manage (default: the operator, every event).",
    )


def acting_user(username: str | None) -> AbstractBaseUser | None:
    """The organizer given with --as, or None for the operator; a CommandError for an unknown one."""
    try:
        return access.command_user(username)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def events_for(user: AbstractBaseUser | None) -> QuerySet[Event]:
    """The events a command run as this user (None: the operator) may touch."""
    return access.command_events(user)


def event_by_slug(slug: str, *, user: AbstractBaseUser | None = None) -> Event:
    """The event with this slug, or a CommandError that says how to make one.

    With an organizer (--as), another organizer's event is "no event" too.
    """
    event = events_for(user).filter(slug=slug).first()
    if event is None:
        raise CommandError(f"No event with the slug {slug!r}. Create it with `manage.py create_event`.")
    return event
