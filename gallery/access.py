"""Who may see what. Every attendee view starts with one of these checks.

Attendees are anonymous: the session remembers which events they unlocked with
the event code and which attendee (by their private link's secret token) they are. Anything they
may not see is a 404, so nothing reveals that it exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.utils import timezone

from gallery.models import Attendee, Event, Photo

logger = logging.getLogger("trouvaille.web")


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


def code_digest(event: Event) -> str:
    # The session remembers which code opened the event: changing a leaked code
    # locks out everyone who got in with the old one.
    return hashlib.sha256(f"{event.pk}:{_normalised(event.access_code)}".encode()).hexdigest()


def event_is_unlocked(request: HttpRequest, event: Event) -> bool:
    return not event.access_code or request.session.get(_unlocked_key(event)) == code_digest(event)


def event_unlock(request: HttpRequest, event: Event) -> None:
    request.session[_unlocked_key(event)] = code_digest(event)


def _trusted_proxy(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.TRUSTED_PROXIES)


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or, when that is one of our TRUSTED_PROXIES,
    the last X-Forwarded-For hop that is not (what our nearest untrusted neighbour said).

    Hops further left were written by the client and are never believed: rotating
    them must not make a client look like many.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    if not _trusted_proxy(remote):
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted_proxy(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return remote  # a trusted proxy passed on something that is no address
        remote = hop
    return remote


# --- Counting attempts ----------------------------------------------------------
#
# Fixed windows counted in the cache (Redis in production), incremented BEFORE the
# work they limit: incr() is atomic, so 40 concurrent attempts get exactly `limit`
# through. When the cache is unreachable (Redis down) the counts go to this
# process's memory instead: limits keep holding per process and pages keep working.

_fallback_cache = LocMemCache("trouvaille-limits-fallback", {"MAX_ENTRIES": 100_000})


@contextlib.contextmanager
def _atomic(store: BaseCache) -> Iterator[None]:
    """Redis and local memory count atomically; the file cache (embedded setup, one
    machine) reads then writes, so its counts are serialised with a file lock."""
    if not isinstance(store, FileBasedCache):
        yield
        return
    Path(store._dir).mkdir(parents=True, exist_ok=True)
    with open(Path(store._dir) / "limits.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _incr(key: str, window: int, amount: int = 1) -> int:
    for store in (caches["default"], _fallback_cache):
        try:
            with _atomic(store):
                return _incr_in(store, key, window, amount)
        except Exception:  # any cache outage (Redis down): counted locally instead
            if store is _fallback_cache:
                raise
            logger.warning("rate-limit cache unreachable; counting in this process", exc_info=True)
    raise AssertionError("unreachable")


def _incr_in(store: BaseCache, key: str, window: int, amount: int) -> int:
    if amount < 0:  # giving back: only while the window lasts
        try:
            return store.incr(key, amount)
        except ValueError:
            return 0
    store.add(key, 0, timeout=window)
    try:
        return store.incr(key, amount)
    except ValueError:  # expired between add and incr
        store.set(key, amount, timeout=window)
        return amount


def _session_id(request: HttpRequest) -> str:
    # A session of its own for each visitor, so one person's wrong codes (or
    # selfies) never count against everyone behind the same address.
    if not request.session.session_key:
        request.session.save()
    return request.session.session_key or ""


@dataclass
class Attempt:
    """One counted attempt; `allowed` False when a limit is reached. `give_back` uncounts it."""

    keys: list[tuple[str, int]]
    allowed: bool

    def give_back(self) -> None:
        for key, window in self.keys:
            _incr(key, window, -1)


def _attempt(limits: list[tuple[str, int, int]]) -> Attempt:
    """Count one attempt against each (key, limit, window) in turn, stopping at the first
    limit reached: a visitor over its own limit does not use up its address's."""
    counted: list[tuple[str, int]] = []
    for key, limit, window in limits:
        counted.append((key, window))
        if _incr(key, window) > limit:
            return Attempt(keys=counted, allowed=False)
    return Attempt(keys=counted, allowed=True)


def code_attempt(request: HttpRequest, event: Event) -> Attempt:
    """Count an attempt at the event's code, per session and per address.

    A correct code is given back (Attempt.give_back), so only wrong ones add up.
    The session limit (CODE_ATTEMPTS) stops one visitor guessing; the larger
    address limit (CODE_ATTEMPTS_PER_ADDRESS) stops one that drops its cookies,
    without locking out a venue's Wi-Fi when a neighbour mistyped ten times.
    """
    window = settings.CODE_ATTEMPT_WINDOW
    return _attempt(
        [
            (f"code-attempts:{event.pk}:s:{_session_id(request)}", settings.CODE_ATTEMPTS, window),
            (f"code-attempts:{event.pk}:a:{client_ip(request)}", settings.CODE_ATTEMPTS_PER_ADDRESS, window),
        ]
    )


def selfie_upload_attempt(request: HttpRequest, event: Event) -> Attempt:
    """Count a selfie upload per session, per address and per event (SELFIE_UPLOADS_* settings)."""
    window = settings.SELFIE_UPLOAD_WINDOW
    return _attempt(
        [
            (f"selfie-uploads:{event.pk}:s:{_session_id(request)}", settings.SELFIE_UPLOADS_PER_CLIENT, window),
            (f"selfie-uploads:{event.pk}:a:{client_ip(request)}", settings.SELFIE_UPLOADS_PER_ADDRESS, window),
            (f"selfie-uploads:{event.pk}", settings.SELFIE_UPLOADS_PER_EVENT, window),
        ]
    )


# Each opt-in sends a message to an address the visitor typed: bounded, so that the
# site cannot be used to flood someone's mailbox.
EMAIL_OPTINS_PER_ATTENDEE = 3
EMAIL_OPTINS_PER_ADDRESS = 10
EMAIL_OPTIN_WINDOW = 24 * 60 * 60


def email_optin_attempt(request: HttpRequest, attendee: Attendee) -> Attempt:
    """Count an e-mail opt-in per attendee and per client address, over a day."""
    return _attempt(
        [
            (f"email-optins:{attendee.pk}", EMAIL_OPTINS_PER_ATTENDEE, EMAIL_OPTIN_WINDOW),
            (f"email-optins:a:{client_ip(request)}", EMAIL_OPTINS_PER_ADDRESS, EMAIL_OPTIN_WINDOW),
        ]
    )


def event_takes_selfies(event: Event) -> bool:
    """Selfies and opt-outs are taken until the event's retention period ends.

    From that day the purge deletes the event's attendee data (the same test,
    Event.retention_passed), so a new selfie would be a face kept past the
    retention promised on the privacy page, or deleted within the day.
    """
    return not event.retention_passed(timezone.localdate())


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

    The link stands for the event code it was made under (the code when its
    attendee last took a selfie), and for no other. It does not make the
    attendee this browser's own.
    """
    attendee = Attendee.objects.by_token(event=event, token=token).first()
    if attendee is not None:
        # Only while the code is the one the link was made under: a leaked link
        # must not outlive a leaked code. After the new code is entered, the
        # link shows its own photos again (README, "Private links").
        if attendee.code_digest == code_digest(event):
            event_unlock(request, event)
        attendee_remember(request, attendee, own=False)
    return attendee


def event_and_attendee_for_visitor(request: HttpRequest, slug: str) -> tuple[Event, Attendee]:
    """An event this visitor unlocked and the attendee whose photos they see there, or 404."""
    event = unlocked_event_for_attendee(request, slug)
    attendee = attendee_for_visitor(request, event)
    if attendee is None:
        raise Http404("No selfie yet.")
    return event, attendee


def matched_photo_for_attendee(request: HttpRequest, event: Event, photo_id: int) -> Photo:
    """A photo of the event in this visitor's gallery (matched, not marked "not me"), or 404."""
    attendee = attendee_for_visitor(request, event)
    if attendee is None:
        raise Http404("No such photo.")
    return get_object_or_404(attendee.photos(), pk=photo_id)


def gallery_photo_for_visitor(request: HttpRequest, slug: str, photo_id: int) -> Photo:
    """A photo in this visitor's gallery of an event they unlocked, or 404."""
    return matched_photo_for_attendee(request, unlocked_event_for_attendee(request, slug), photo_id)


# --- Organizers: the admin and management commands given --as ------------------
#
# Organizers are staff users who own events (Event.owners). They see and change
# only their events and what belongs to them; superusers see everything. Rows of
# another organizer's event are left out of every list and are a 404 when asked
# for by id, like the attendee side: nothing reveals that they exist.


def _is_organizer(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def organizer_events(user: AbstractBaseUser | AnonymousUser | None) -> QuerySet[Event]:
    """The events this user manages: all for a superuser, their own for other staff, none for anyone else."""
    if not _is_organizer(user):
        return Event.objects.none()
    if user.is_superuser:
        return Event.objects.all()
    return Event.objects.owned_by(user)


def organizer_rows(user: AbstractBaseUser | AnonymousUser | None, rows: QuerySet, *, event_path: str) -> QuerySet:
    """The rows (photos, faces, selfies, matches...) that belong to events this user manages.

    `event_path` is the lookup from a row to its event: "" for events themselves,
    "event" for photos, "photo__event" for faces. One subquery, not a join, so
    counts annotated on `rows` are not multiplied by the event's owners.
    """
    if _is_organizer(user) and user.is_superuser:
        return rows
    events = organizer_events(user).values("pk")
    return rows.filter(**{f"{event_path}__in" if event_path else "pk__in": events})


def organizer_manages(user: AbstractBaseUser | AnonymousUser | None, event: Event | None) -> bool:
    """May this user change this event and what belongs to it?"""
    return event is not None and organizer_events(user).filter(pk=event.pk).exists()


def event_for_organizer(request: HttpRequest, event_id: int) -> Event:
    """An event the signed-in organizer manages, or 404."""
    return get_object_or_404(organizer_events(request.user), pk=event_id)


def command_user(username: str | None) -> AbstractBaseUser | None:
    """The organizer a management command acts as (`--as USERNAME`); None without --as (the operator).

    Raises ValueError for an unknown, inactive or non-staff user: a typo must
    not silently run a command on every event.
    """
    if username is None:
        return None
    user = get_user_model().objects.filter(username=username).first()
    if not _is_organizer(user):
        raise ValueError(f"No active staff user {username!r}.")
    return user


def command_events(user: AbstractBaseUser | None) -> QuerySet[Event]:
    """The events a management command may touch: all for the operator (no --as), else the user's."""
    return Event.objects.all() if user is None else organizer_events(user)


def optout_for_link(request: HttpRequest, slug: str, token: str) -> Attendee:
    """The opt-out a private link names, on a published event, or 404.

    The link alone is the credential (as an attendee's private link): no event
    code, so a person can withdraw after the code changed. It opens no gallery.
    """
    optout = Attendee.objects.optout_by_token(event=event_for_attendee(request, slug), token=token).first()
    if optout is None:
        raise Http404("No such opt-out.")
    return optout


def client_tag(request: HttpRequest) -> str:
    """A short keyed hash of the client's address and the day, for the audit page.

    Organizers can see that one client hit the limits many times without ever
    seeing its address; the tag changes every day, so it tracks nobody for long.
    """
    day = timezone.now().date().isoformat()
    message = f"{day}:{client_ip(request)}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:12]
