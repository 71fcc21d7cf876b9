"""The organizer's audit page (issue #13): selfies per hour, clients that hit the limits,
selfies deleted soon after matching; no face, selfie or address on it; only for the
event's organizers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gallery import services
from gallery.models import AuditEntry, Selfie
from tests.conftest import jpeg_bytes, upload

pytestmark = pytest.mark.django_db

RED = (200, 40, 40)


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _selfie(client: Client, event, color=RED, **extra) -> int:
    data = {"image": upload("me.jpg", jpeg_bytes(color)), "consent": "on", **extra}
    return client.post(reverse("gallery:selfie_upload", args=[event.slug]), data, REMOTE_ADDR="203.0.113.7").status_code


def _audit(event) -> str:
    return reverse("admin:gallery_event_audit", args=[event.pk])


@pytest.fixture
def organizers(db):
    alice = services.organizer_create(username="alice", email="alice@example.org", password="a-long-pass-phrase-42")
    bob = services.organizer_create(username="bob", email="bob@example.org", password="a-long-pass-phrase-42")
    return alice, bob


def test_limit_hits_and_quick_deletions_are_on_the_audit_page_without_faces_or_addresses(
    organizers, run_jobs, settings
) -> None:
    alice, _ = organizers
    event = services.event_create(name="Gala", owner=alice)
    settings.SELFIE_UPLOADS_PER_CLIENT = 2
    searcher = Client()
    with run_jobs():
        assert _selfie(searcher, event) == 302
    with run_jobs():
        assert _selfie(searcher, event) == 302  # replaces the first, just matched: a quick deletion
    assert _selfie(searcher, event) == 429
    assert _selfie(searcher, event) == 429
    entries = AuditEntry.objects.filter(event=event)
    assert entries.filter(kind=AuditEntry.Kind.SELFIE).count() == 2
    assert entries.filter(kind=AuditEntry.Kind.LIMIT).count() == 2
    assert entries.get(kind=AuditEntry.Kind.QUICK_DELETE).count == 1
    tags = set(entries.values_list("client", flat=True))
    assert len(tags) == 1 and "203.0.113.7" not in tags.pop()

    # Deleting everything right after looking: a quick deletion too.
    searcher.post(reverse("gallery:me_forget", args=[event.slug]), REMOTE_ADDR="203.0.113.7")
    assert entries.filter(kind=AuditEntry.Kind.QUICK_DELETE).count() == 2

    client = Client()
    client.force_login(alice)
    page = client.get(_audit(event))
    assert page.status_code == 200
    html = page.content.decode()
    assert entries.first().client in html
    assert "203.0.113.7" not in html and "<img" not in html and "selfies/" not in html


def test_an_old_selfie_deleted_is_no_quick_deletion(event, run_jobs, settings) -> None:
    settings.AUDIT_QUICK_DELETE_MINUTES = 10
    client = Client()
    with run_jobs():
        assert _selfie(client, event) == 302
    Selfie.objects.update(matched_at=timezone.now() - timedelta(minutes=11))
    client.post(reverse("gallery:me_forget", args=[event.slug]))
    assert not AuditEntry.objects.filter(kind=AuditEntry.Kind.QUICK_DELETE).exists()


def test_the_audit_page_is_for_the_events_organizers_only(organizers, client) -> None:
    alice, bob = organizers
    event = services.event_create(name="Gala", owner=alice)
    assert client.get(_audit(event)).status_code == 302  # to the login page
    client.force_login(bob)
    assert client.get(_audit(event)).status_code == 404  # another organizer's event
    staff = get_user_model().objects.create_user("staff", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get(_audit(event)).status_code == 403  # no permission
    client.force_login(alice)
    assert client.get(_audit(event)).status_code == 200


def test_the_retention_purge_deletes_the_audit_entries(event, run_jobs) -> None:
    with run_jobs():
        _selfie(Client(), event)
    services.attendee_data_purge(event=event)
    assert not AuditEntry.objects.exists()
