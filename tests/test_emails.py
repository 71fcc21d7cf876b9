"""Optional e-mail: its own consent, sent by jobs, one message per batch of new photos, unsubscribe without login."""

from __future__ import annotations

import io
import re

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from gallery import emails, services
from gallery.models import Attendee, Photo
from tests.conftest import jpeg_bytes
from tests.test_attendee import BLUE, RED, post_selfie

pytestmark = pytest.mark.django_db


@pytest.fixture
def red(client, event, run_jobs) -> Client:
    """An attendee with one matched photo (fake engine: same colour, same person)."""
    with run_jobs():
        services.photo_import(event=event, name="red1.jpg", fileobj=io.BytesIO(jpeg_bytes(RED, size=(80, 60))))
        post_selfie(client, event)
    return client


def subscribe(client: Client, event, email="ana@example.org", consent=True, **headers):
    data = {"email": email, **({"consent": "on"} if consent else {})}
    return client.post(reverse("gallery:me_email", args=[event.slug]), data, **headers)


def import_red(event, *names: str) -> None:
    """New photos of the red attendee (distinct files: slightly different sizes)."""
    for name in names:
        width = 100 + Photo.objects.count()
        services.photo_import(event=event, name=name, fileobj=io.BytesIO(jpeg_bytes(RED, size=(width, 60))))


def test_the_link_is_e_mailed_by_a_job_never_in_the_request(red, event, django_capture_on_commit_callbacks, settings):
    assert b"Get your link by e-mail" in red.get(reverse("gallery:me", args=[event.slug])).content
    settings.ALLOWED_HOSTS = ["photos.test", "testserver"]
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = subscribe(red, event, HTTP_HOST="photos.test:8123")
    assert response.status_code == 302 and mail.outbox == []
    assert len(queued) == 1
    queued[0]()
    [message] = mail.outbox
    attendee = Attendee.objects.get()
    assert message.to == ["ana@example.org"] and "Summer party" in message.subject
    assert f"http://photos.test:8123/e/summer/me/{attendee.token}/" in message.body
    assert "http://photos.test:8123/e/summer/unsubscribe/" in message.body
    assert attendee.email_consent_at is not None


def test_e_mails_are_in_the_language_the_attendee_used(red, event, run_jobs, settings):
    settings.SITE_URL = "https://photos.example.org"
    with run_jobs():
        subscribe(red, event, HTTP_ACCEPT_LANGUAGE="fr")
    [message] = mail.outbox
    assert message.subject == "Vos photos de Summer party" and "Voici votre lien privé" in message.body
    assert "https://photos.example.org/e/summer/me/" in message.body


def test_e_mail_needs_its_own_consent_and_a_valid_address(red, event):
    refused = subscribe(red, event, consent=False)
    assert refused.status_code == 400 and b"Please agree to receive these e-mails" in refused.content
    wrong = subscribe(red, event, email="not-an-address")
    assert wrong.status_code == 400 and b"Enter a valid email address" in wrong.content
    assert Attendee.objects.get().email == "" and mail.outbox == []


def test_nobody_else_can_subscribe_or_stop_someone(red, event):
    stranger = Client()
    assert subscribe(stranger, event).status_code == 404
    assert stranger.post(reverse("gallery:me_email_stop", args=[event.slug])).status_code == 404
    assert Attendee.objects.get().email == ""


def test_one_message_per_batch_of_new_photos(red, event, run_jobs):
    with run_jobs():
        subscribe(red, event)
    mail.outbox.clear()
    with run_jobs():  # one batch: three photos of the attendee, one of someone else
        import_red(event, "new1.jpg", "new2.jpg", "new3.jpg")
        services.photo_import(event=event, name="blue.jpg", fileobj=io.BytesIO(jpeg_bytes(BLUE)))
    [message] = mail.outbox
    assert "3 new photos" in message.subject and "3 new photos of you at Summer party were found" in message.body
    mail.outbox.clear()
    with run_jobs():  # photos of someone else only: no news
        services.photo_import(event=event, name="blue2.jpg", fileobj=io.BytesIO(jpeg_bytes(BLUE, size=(70, 50))))
    with run_jobs():  # indexing everything again finds nothing new either
        services.event_reindex(event=event)
    assert mail.outbox == []
    with run_jobs():
        import_red(event, "later.jpg")
    assert len(mail.outbox) == 1 and "1 new photo of you" in mail.outbox[0].subject


def test_no_news_while_the_batch_is_still_being_indexed(red, event, run_jobs, django_capture_on_commit_callbacks):
    with run_jobs():
        subscribe(red, event)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=False) as queued:
        import_red(event, "n1.jpg", "n2.jpg")
    queued[0]()  # the first photo's job: the second is still waiting
    assert mail.outbox == []
    with run_jobs():
        queued[1]()  # the batch's last photo: one message for both
    assert len(mail.outbox) == 1 and "2 new photos" in mail.outbox[0].subject


def test_photos_marked_not_me_are_not_news(red, event, run_jobs, django_capture_on_commit_callbacks):
    with run_jobs():
        subscribe(red, event)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=False) as photo_jobs:
        import_red(event, "n1.jpg")
    with django_capture_on_commit_callbacks(execute=False) as notify_jobs:
        photo_jobs[0]()  # indexed and matched; the news is queued...
    assert len(notify_jobs) == 1
    red.post(reverse("gallery:photo_reject", args=[event.slug, Photo.objects.get(original_name="n1.jpg").pk]))
    notify_jobs[0]()  # ...and runs after the attendee said "not me"
    assert mail.outbox == []


def test_unsubscribe_link_works_without_login_after_a_confirmation(red, event, run_jobs):
    with run_jobs():
        subscribe(red, event)
    link = re.search(r"http://testserver(/e/summer/unsubscribe/[^/]+/)", mail.outbox[0].body).group(1)
    visitor = Client()  # no session: straight from the mailbox
    page = visitor.get(link)
    assert page.status_code == 200 and b"ana@example.org" in page.content
    assert Attendee.objects.get().email == "ana@example.org"  # a link scanner's GET changes nothing
    done = visitor.post(link)
    assert b"No more e-mails" in done.content and Attendee.objects.get().email == ""
    mail.outbox.clear()
    with run_jobs():
        import_red(event, "n1.jpg")
    assert mail.outbox == []
    assert b"ana@example.org" not in visitor.get(link).content  # spent


def test_a_forged_or_foreign_unsubscribe_link_stops_nothing(red, event, run_jobs):
    with run_jobs():
        subscribe(red, event)
    token = emails.unsubscribe_token(Attendee.objects.get())
    other = services.event_create(name="Other", slug="other")
    for url in (
        reverse("gallery:unsubscribe", args=[event.slug, token[:-2] + "xx"]),
        reverse("gallery:unsubscribe", args=[other.slug, token]),
    ):
        assert Client().post(url).status_code == 200
    assert Attendee.objects.get().email == "ana@example.org"


def test_the_attendee_can_stop_e_mails_from_their_page(red, event, run_jobs):
    with run_jobs():
        subscribe(red, event)
    page = red.get(reverse("gallery:me", args=[event.slug])).content
    assert b"We e-mail ana@example.org" in page
    red.post(reverse("gallery:me_email_stop", args=[event.slug]))
    assert Attendee.objects.get().email == "" and Attendee.objects.get().email_consent_at is None


def test_no_e_mail_job_for_events_without_subscribers(event, run_jobs, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as ran:
        import_red(event, "a.jpg")
    assert not any("notify" in repr(callback) for callback in ran)
    assert mail.outbox == []


def test_opt_ins_are_limited_so_nobody_floods_a_mailbox(red, event, run_jobs):
    statuses = []
    for n in range(4):
        with run_jobs():
            statuses.append(subscribe(red, event, email=f"victim{n}@example.org").status_code)
        red.post(reverse("gallery:me_email_stop", args=[event.slug]))
    assert statuses == [302, 302, 302, 429]
    assert len(mail.outbox) == 3
