"""Branding (#10): an event's cover image and accent colour, set in its admin page, on the attendee pages."""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from PIL import Image

from gallery.models import Event
from tests.conftest import event_admin_form, jpeg_bytes, upload

pytestmark = pytest.mark.django_db


def _photo_with_exif() -> bytes:
    """A JPEG carrying a camera model and GPS coordinates in its EXIF."""
    image = Image.new("RGB", (2400, 900), (30, 120, 200))
    exif = Image.Exif()
    exif[0x0110] = "Secret Camera 3000"  # Model
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 7.0)}  # GPSInfo
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert b"Secret Camera" in buffer.getvalue()
    return buffer.getvalue()


@pytest.mark.parametrize("bad", ["red", "#12345", "#1234567", "#gg0000", "123456", "#123456;}body{x:y", "#12345\n"])
def test_a_bad_accent_colour_is_refused_and_nothing_changes(event, admin_client, bad):
    url = reverse("admin:gallery_event_change", args=[event.pk])
    response = admin_client.post(url, event_admin_form(event, accent_colour=bad))
    assert response.status_code == 200
    assert "accent_colour" in response.context_data["adminform"].form.errors
    event.refresh_from_db()
    assert event.accent_colour == ""


def test_the_accent_colour_is_served_as_a_stylesheet_linked_from_the_event_pages(event, admin_client, client):
    url = reverse("admin:gallery_event_change", args=[event.pk])
    response = admin_client.post(url, event_admin_form(event, accent_colour="#AA3300"))
    assert response.status_code == 302, response.context_data["adminform"].form.errors
    theme = reverse("gallery:event_theme", args=[event.slug])
    page = client.get(reverse("gallery:event", args=[event.slug])).content.decode()
    assert f'href="{theme}?v=AA3300"' in page
    assert "style=" not in page  # the CSP allows no inline style
    css = client.get(theme)
    assert css.status_code == 200 and css["Content-Type"].startswith("text/css")
    assert "--accent: #aa3300;" in css.content.decode() and "max-age" in css["Cache-Control"]


def test_without_an_accent_colour_no_theme_is_linked(event, client):
    page = client.get(reverse("gallery:event", args=[event.slug])).content.decode()
    assert "theme.css" not in page
    assert client.get(reverse("gallery:event_theme", args=[event.slug])).content == b""


def test_the_cover_is_shown_on_the_event_pages_and_its_stored_copy_has_no_exif(event, admin_client, client, settings):
    url = reverse("admin:gallery_event_change", args=[event.pk])
    response = admin_client.post(url, {**event_admin_form(event), "cover": upload("cover.jpg", _photo_with_exif())})
    assert response.status_code == 302, response.context_data["adminform"].form.errors
    event.refresh_from_db()
    with event.cover.open("rb") as stored:
        data = stored.read()
    assert b"Secret Camera" not in data
    copy = Image.open(io.BytesIO(data))
    assert copy.format == "JPEG" and not copy.getexif() and max(copy.size) == 1600
    cover = reverse("gallery:event_cover", args=[event.slug])
    for page in ("gallery:event", "gallery:privacy"):
        assert (
            f'<img class="event-cover" src="{cover}?v=' in client.get(reverse(page, args=[event.slug])).content.decode()
        )
    served = client.get(cover)
    assert served.status_code == 200 and b"".join(served.streaming_content) == data
    # The admin names the stored cover without linking to MEDIA_URL, which nothing serves.
    admin_page = admin_client.get(url).content.decode()
    assert event.cover.name in admin_page and settings.MEDIA_URL not in admin_page


def test_a_file_that_is_no_image_is_refused_as_a_cover(event, admin_client):
    url = reverse("admin:gallery_event_change", args=[event.pk])
    response = admin_client.post(url, {**event_admin_form(event), "cover": upload("cover.jpg", b"not an image at all")})
    assert response.status_code == 200
    assert "cover" in response.context_data["adminform"].form.errors
    event.refresh_from_db()
    assert not event.cover


def test_an_unpublished_events_branding_is_not_found(event, client):
    event.accent_colour = "#aa3300"
    event.cover.save("cover.jpg", io.BytesIO(jpeg_bytes()), save=False)
    event.published = False
    event.save()
    assert client.get(reverse("gallery:event_theme", args=[event.slug])).status_code == 404
    assert client.get(reverse("gallery:event_cover", args=[event.slug])).status_code == 404
    assert client.get(reverse("gallery:event_cover", args=["no-such-event"])).status_code == 404


def test_a_code_locked_events_branding_shows_on_its_code_form_and_opens_nothing_else(event, client):
    """Branding is as public as the event's name and date: the code form wears it; the photos stay locked."""
    event.access_code = "Sunset-42"
    event.accent_colour = "#aa3300"
    event.cover.save("cover.jpg", io.BytesIO(jpeg_bytes()), save=False)
    event.save()
    page = client.get(reverse("gallery:event", args=[event.slug])).content.decode()
    assert 'name="code"' in page and "theme.css" in page and "event-cover" in page
    assert client.get(reverse("gallery:event_cover", args=[event.slug])).status_code == 200
    assert client.get(reverse("gallery:event_theme", args=[event.slug])).status_code == 200
    assert client.get(reverse("gallery:me", args=[event.slug])).status_code == 302  # back to the code form


def test_a_replaced_cover_and_a_deleted_events_cover_leave_no_file_behind(event, admin_client, run_jobs):
    url = reverse("admin:gallery_event_change", args=[event.pk])
    with run_jobs():
        admin_client.post(url, {**event_admin_form(event), "cover": upload("a.jpg", jpeg_bytes())})
        first = Event.objects.get().cover.name
        admin_client.post(url, {**event_admin_form(event), "cover": upload("b.jpg", jpeg_bytes((1, 2, 3)))})
    event.refresh_from_db()
    storage = event.cover.storage
    assert first != event.cover.name and not storage.exists(first) and storage.exists(event.cover.name)
    second = event.cover.name
    with run_jobs():
        event.delete()
    assert not storage.exists(second)
