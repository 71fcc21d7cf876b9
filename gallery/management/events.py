"""What the management commands (gallery's and matching's) share."""

from __future__ import annotations

from django.core.management.base import CommandError

from gallery.models import Event


def event_by_slug(slug: str) -> Event:
    """The event with this slug, or a CommandError that says how to make one."""
    event = Event.objects.filter(slug=slug).first()
    if event is None:
        raise CommandError(f"No event with the slug {slug!r}. Create it with `manage.py create_event`.")
    return event
