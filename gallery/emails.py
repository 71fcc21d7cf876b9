"""E-mails to attendees: their private link, and one message per batch of new photos.

Sent by jobs (matching.tasks), never in a request. Each message is written in
the language the attendee used when they asked for e-mails, carries absolute
links (SITE_URL, else the address they used the site at) and an unsubscribe
link that works without any login.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from gallery.models import Attendee, Photo

_SALT = "trouvaille.unsubscribe"


def unsubscribe_token(attendee: Attendee) -> str:
    """Names the attendee and the address: a link for an older address stops nothing new."""
    return signing.dumps([attendee.pk, attendee.email], salt=_SALT, compress=True)


def attendee_for_unsubscribe(token: str) -> Attendee | None:
    try:
        pk, email = signing.loads(token, salt=_SALT)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    return Attendee.objects.filter(pk=pk, email=email).exclude(email="").select_related("event").first()


def _absolute(attendee: Attendee, path: str) -> str:
    return (settings.SITE_URL or attendee.email_site.rstrip("/")) + path


def _send(attendee: Attendee, *, template: str, subject: str, **context: object) -> None:
    event = attendee.event
    context = {
        "event": event,
        "private_link": _absolute(attendee, reverse("gallery:me_resume", args=[event.slug, attendee.token])),
        "unsubscribe_link": _absolute(
            attendee, reverse("gallery:unsubscribe", args=[event.slug, unsubscribe_token(attendee)])
        ),
        **context,
    }
    send_mail(subject, render_to_string(template, context), None, [attendee.email])


def link_email_send(*, attendee_id: int) -> str:
    """The private link, once, right after the attendee asked for e-mails."""
    attendee = Attendee.objects.select_related("event").filter(pk=attendee_id).exclude(email="").first()
    if attendee is None:
        return "skipped"  # deleted, or unsubscribed meanwhile
    with translation.override(attendee.email_language or settings.LANGUAGE_CODE):
        subject = translation.gettext("Your photos of %(event)s") % {"event": attendee.event.name}
        _send(attendee, template="gallery/email/link.txt", subject=subject)
    return "sent"


def new_photos_notify(*, event_id: int) -> int:
    """One message to each subscribed attendee of the event with photos new since the last one.

    Called once a batch of photos is indexed (no photo of the event left waiting).
    Each attendee is claimed with a conditional update of `notified_at`, so two
    runs at once never send the same news twice. Returns how many were sent.
    """
    if Photo.objects.filter(event_id=event_id).in_progress().exists():
        return 0  # the batch is not over: its last photo job calls again
    sent = 0
    for attendee in Attendee.objects.filter(event_id=event_id).exclude(email="").select_related("event"):
        count = attendee.new_photos().count()
        if not count:
            continue
        now = timezone.now()
        claimed = Attendee.objects.filter(pk=attendee.pk, notified_at=attendee.notified_at).update(notified_at=now)
        if not claimed:
            continue  # another run took it
        with translation.override(attendee.email_language or settings.LANGUAGE_CODE):
            subject = translation.ngettext(
                "%(count)d new photo of you at %(event)s",
                "%(count)d new photos of you at %(event)s",
                count,
            ) % {"count": count, "event": attendee.event.name}
            try:
                _send(attendee, template="gallery/email/new_photos.txt", subject=subject, count=count)
            except Exception:
                # Not announced after all: the next batch (or a retry) tells them.
                Attendee.objects.filter(pk=attendee.pk, notified_at=now).update(notified_at=attendee.notified_at)
                raise
        sent += 1
    return sent
