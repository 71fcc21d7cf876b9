"""Past its retention period an event takes no new selfie nor opt-out: the day the
purge starts deleting its attendee data, the attendee pages stop accepting faces."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from gallery.models import Event, Selfie
from tests.conftest import jpeg_bytes, upload


def event_ending(days_from_today: int, **fields: object) -> Event:
    """An event whose retention period ends `days_from_today` days from today (0: today)."""
    retention = 30
    start = timezone.localdate() + timedelta(days=days_from_today - retention)
    return Event.objects.create(name="Old party", slug="old", date=start, retention_days=retention, **fields)


def post_selfie(client, event: Event, route: str = "gallery:selfie_upload"):
    return client.post(reverse(route, args=[event.slug]), {"image": upload("me.jpg", jpeg_bytes()), "consent": "on"})


@pytest.mark.parametrize(
    "language, message", [("en", "no longer takes selfies"), ("fr", "n\u2019accepte plus de selfies")]
)
def test_on_the_day_retention_ends_selfies_and_opt_outs_are_refused(client, db, language, message):
    event = event_ending(0)
    assert Event.objects.filter(pk=event.pk).get().retention_passed(timezone.localdate())  # what the purge decides
    client.cookies["django_language"] = language
    for response in (
        client.get(reverse("gallery:event", args=[event.slug])),
        post_selfie(client, event),
        client.get(reverse("gallery:optout", args=[event.slug])),
        post_selfie(client, event, "gallery:optout"),
    ):
        assert response.status_code == 410
        assert message in response.content.decode()
    assert not Selfie.objects.exists()


def test_the_day_before_retention_ends_selfies_are_still_taken(client, db, run_jobs):
    event = event_ending(1)
    assert client.get(reverse("gallery:event", args=[event.slug])).status_code == 200
    assert client.get(reverse("gallery:optout", args=[event.slug])).status_code == 200
    with run_jobs():
        response = post_selfie(client, event)
    assert response.status_code == 302 and Selfie.objects.count() == 1


def test_a_closed_event_with_a_code_says_so_without_asking_for_the_code(client, db):
    event = event_ending(-10, access_code="secret")
    response = client.get(reverse("gallery:event", args=[event.slug]))
    assert response.status_code == 410 and "no longer takes selfies" in response.content.decode()
    # Posting still needs the code first: nothing about the event opens without it.
    assert post_selfie(client, event).status_code == 404
    assert client.get(reverse("gallery:optout", args=[event.slug])).status_code == 404


def test_an_unpublished_closed_event_stays_not_found(client, db):
    event = event_ending(-1, published=False)
    assert client.get(reverse("gallery:event", args=[event.slug])).status_code == 404
