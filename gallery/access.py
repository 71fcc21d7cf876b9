"""Who may see what. Every attendee view starts with one of these checks.

Attendees are anonymous: the session remembers which events they unlocked with
the event code and which attendee (by their private link's secret token) they are. Anything they
may not see is a 404, so nothing reveals that it exists.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.core.cache import cache
from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404

from gallery.models import Attendee, Event, Photo


def _unlocked_key(event: Event) -> str:
    return f"unlocked:{event.pk}"


def _selfie_key(event: Event) -> str:
    return f"selfie:{event.pk}"


def event_for_attendee(request: HttpRequest, slug: str) -> Event:
    """A published event, or 404. Staff can preview unpublished ones."""
    event = get_object_or_404(Event, slug=slug)
    if not event.published and not request.user.is_staff:
        raise Http404("No such event.")
    return event


def _normalised(code: str) -> str:
    # Codes are typed on phones: case and surrounding spaces do not count.
    return code.strip().casefold()


def code_matches(event: Event, code: str) -> bool:
    """Is this the event's code? Compared in constant time."""
    return hmac.compare_digest(_normalised(code).encode(), _normalised(event.access_code).encode())


def _code_digest(event: Event) -> str:
    # The session remembers which code opened the event: changing a leaked code
    # locks out everyone who got in with the old one.
    return hashlib.sha256(f"{event.pk}:{_normalised(event.access_code)}".encode()).hexdigest()


def event_is_unlocked(request: HttpRequest, event: Event) -> bool:
    return not event.access_code or request.session.get(_unlocked_key(event)) == _code_digest(event)


def event_unlock(request: HttpRequest, event: Event) -> None:
    request.session[_unlocked_key(event)] = _code_digest(event)


def client_ip(request: HttpRequest) -> str:
    """The client's address; behind our proxy, the one it appended to X-Forwarded-For."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.BEHIND_PROXY and forwarded:
        return forwarded.rsplit(",", 1)[-1].strip()
    return request.META.get("REMOTE_ADDR", "")


def _attempts_key(request: HttpRequest, event: Event) -> str:
    return f"code-attempts:{event.pk}:{client_ip(request)}"


def code_attempts_exhausted(request: HttpRequest, event: Event) -> bool:
    """Too many wrong codes from this client lately: the code is not to be guessed."""
    return cache.get(_attempts_key(request, event), 0) >= settings.CODE_ATTEMPTS


def code_attempt_failed(request: HttpRequest, event: Event) -> None:
    key = _attempts_key(request, event)
    cache.add(key, 0, timeout=settings.CODE_ATTEMPT_WINDOW)
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=settings.CODE_ATTEMPT_WINDOW)


def unlocked_event_for_attendee(request: HttpRequest, slug: str) -> Event:
    """A published event whose code (if any) this visitor has entered, or 404."""
    event = event_for_attendee(request, slug)
    if not event_is_unlocked(request, event):
        raise Http404("Enter the event code first.")
    return event


def _own_key(event: Event) -> str:
    return f"own-selfie:{event.pk}"


# The session keys keep their old names ("selfie:", "own-selfie:"): each
# attendee inherited the token of the selfie it was made from, so sessions
# from before attendees existed still open the same photos.
def _session_attendee(request: HttpRequest, event: Event, key: str) -> Attendee | None:
    """The event's attendee whose token the session keeps under `key`, if it still exists."""
    token = request.session.get(key)
    return Attendee.objects.by_token(event=event, token=token).first() if token else None


def attendee_remember(request: HttpRequest, attendee: Attendee, *, own: bool) -> None:
    """Show this attendee's photos in this browser; `own` when this browser took their selfie.

    A private link shows someone's photos without making them this browser's
    own: a new selfie taken here from the event page replaces only the
    browser's own attendee's selfies.
    """
    request.session[_selfie_key(attendee.event)] = attendee.token
    if own:
        request.session[_own_key(attendee.event)] = attendee.token


def own_attendee(request: HttpRequest, event: Event) -> Attendee | None:
    """The attendee this browser took a selfie as (not one opened by private link), or None."""
    return _session_attendee(request, event, _own_key(event))


def attendee_forget(request: HttpRequest, event: Event) -> None:
    """Stop showing the current attendee's photos here; back to this browser's own, if any."""
    request.session.pop(_selfie_key(event), None)
    own = own_attendee(request, event)
    if own is None:
        request.session.pop(_own_key(event), None)
    else:
        request.session[_selfie_key(event)] = own.token


def attendee_for_visitor(request: HttpRequest, event: Event) -> Attendee | None:
    """The attendee whose photos this visitor sees for the event, or None."""
    return _session_attendee(request, event, _selfie_key(event))


def private_link_open(request: HttpRequest, event: Event, token: str) -> Attendee | None:
    """Show the attendee a private link names in this browser; None for a wrong event or a deleted or wrong token.

    The link stands for the event code too: only someone who got past it was
    given one. It does not make the attendee this browser's own.
    """
    attendee = Attendee.objects.by_token(event=event, token=token).first()
    if attendee is not None:
        event_unlock(request, event)
        attendee_remember(request, attendee, own=False)
    return attendee


def matched_photo_for_attendee(request: HttpRequest, event: Event, photo_id: int) -> Photo:
    """A photo of the event in this visitor's gallery (matched, not marked "not me"), or 404."""
    attendee = attendee_for_visitor(request, event)
    if attendee is None:
        raise Http404("No such photo.")
    return get_object_or_404(attendee.photos(), pk=photo_id)
