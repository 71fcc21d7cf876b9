"""The attendee's gallery: viewer, zip, "not me", deletion, home, privacy, HEIC, errors; and what others get."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from PIL import Image

from gallery import dashboard, services
from gallery.models import Attendee, Event, Photo, Rejection, Selfie
from tests.conftest import jpeg_bytes
from tests.test_attendee import BLUE, RED, add_selfie, post_selfie

pytestmark = pytest.mark.django_db


@pytest.fixture
def photos(event, run_jobs) -> dict[str, Photo]:
    """Three red photos (the attendee), one blue (someone else), fake engine."""
    with run_jobs():
        for name, color, width in (
            ("a.jpg", RED, 80),
            ("b.jpg", RED, 81),
            ("c.jpg", RED, 82),
            ("blue.jpg", BLUE, 80),
        ):
            services.photo_import(event=event, name=name, fileobj=io.BytesIO(jpeg_bytes(color, size=(width, 60))))
    return {photo.original_name: photo for photo in Photo.objects.all()}


@pytest.fixture
def red(client, event, photos, run_jobs) -> Client:
    with run_jobs():
        post_selfie(client, event)
    return client


def url(name: str, event: Event, *args: object) -> str:
    return reverse(f"gallery:{name}", args=[event.slug, *args])


# --- Viewer -------------------------------------------------------------------------


def test_viewer_shows_the_photo_with_previous_next_download_and_back(red, event, photos):
    a, b, c = photos["a.jpg"], photos["b.jpg"], photos["c.jpg"]
    page = red.get(url("photo_view", event, b.pk)).content.decode()
    assert url("photo_image", event, b.pk) in page
    assert f'rel="prev" href="{url("photo_view", event, a.pk)}"' in page
    assert f'rel="next" href="{url("photo_view", event, c.pk)}"' in page
    assert url("photo_download", event, b.pk) in page and f"{url('me', event)}#photo-{b.pk}" in page
    assert "Photo 2 of 3" in page
    first = red.get(url("photo_view", event, a.pk)).content.decode()
    assert 'rel="prev"' not in first and 'rel="next"' in first
    image = red.get(url("photo_image", event, b.pk))
    assert image.status_code == 200 and image["Content-Type"] == "image/jpeg"


def test_the_viewer_is_only_for_ones_own_photos(red, event, photos):
    assert red.get(url("photo_view", event, photos["blue.jpg"].pk)).status_code == 404
    stranger = Client()
    for name in ("photo_view", "photo_image"):
        assert stranger.get(url(name, event, photos["a.jpg"].pk)).status_code == 404


# --- Download all -------------------------------------------------------------------


def test_download_all_is_a_zip_of_exactly_ones_photos(red, event, photos):
    response = red.get(url("photos_zip", event))
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/zip"
    assert 'filename="summer-photos.zip"' in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == ["a.jpg", "b.jpg", "c.jpg"]
    assert archive.testzip() is None
    with photos["a.jpg"].display.open("rb") as served:
        assert archive.read("a.jpg") == served.read()


def test_repeated_names_in_the_zip_get_a_number(client, event, run_jobs):
    with run_jobs():
        for color in ((200, 40, 41), (201, 40, 40)):
            services.photo_import(event=event, name="IMG_1.jpg", fileobj=io.BytesIO(jpeg_bytes(color, size=(70, 50))))
        post_selfie(client, event)
    archive = zipfile.ZipFile(io.BytesIO(b"".join(client.get(url("photos_zip", event)).streaming_content)))
    assert sorted(archive.namelist()) == ["IMG_1-2.jpg", "IMG_1.jpg"]


def test_nobody_else_downloads_the_zip(red, event, photos, run_jobs):
    assert Client().get(url("photos_zip", event)).status_code == 404
    blue = Client()
    with run_jobs():
        post_selfie(blue, event, jpeg_bytes(BLUE))
    archive = zipfile.ZipFile(io.BytesIO(b"".join(blue.get(url("photos_zip", event)).streaming_content)))
    assert archive.namelist() == ["blue.jpg"]
    other = Event.objects.create(name="Other", slug="other")
    assert red.get(url("photos_zip", other)).status_code == 404


# --- Downloads counted for the organizer's dashboard --------------------------------


def counted(event: Event) -> tuple[int, int]:
    """Photos downloaded (zips included) and zips, as the dashboard shows them."""
    status = dashboard.event_status(event.pk)
    return status["downloads"], status["zip_downloads"]


def test_a_photo_download_is_counted_on_the_dashboard(red, event, photos, admin_client):
    assert red.get(url("photo_download", event, photos["a.jpg"].pk)).status_code == 200
    assert red.get(url("photo_download", event, photos["b.jpg"].pk)).status_code == 200
    assert counted(event) == (2, 0)
    status = admin_client.get(reverse("admin:gallery_event_status", args=[event.pk])).json()
    assert (status["downloads"], status["zip_downloads"]) == (2, 0)
    page = admin_client.get(reverse("admin:gallery_event_change", args=[event.pk])).content.decode()
    assert 'data-count="downloads">2<' in page and "Photos downloaded" in page


def test_a_zip_download_counts_once_as_a_zip_and_adds_its_photos(red, event, photos):
    response = red.get(url("photos_zip", event))
    b"".join(response.streaming_content)
    assert counted(event) == (3, 1)


def test_a_refused_download_is_not_counted(red, event, photos):
    assert red.get(url("photo_download", event, photos["blue.jpg"].pk)).status_code == 404  # another attendee's
    assert Client().get(url("photo_download", event, photos["a.jpg"].pk)).status_code == 404
    assert Client().get(url("photos_zip", event)).status_code == 404
    assert counted(event) == (0, 0)


def test_the_organizers_own_views_are_not_counted(red, event, photos, admin_client):
    photo = photos["a.jpg"]
    assert admin_client.get(reverse("admin:gallery_photo_change", args=[photo.pk])).status_code == 200
    assert admin_client.get(reverse("admin:gallery_photo_thumbnail", args=[photo.pk])).status_code == 200
    assert counted(event) == (0, 0)


# --- Not me -------------------------------------------------------------------------


def test_not_me_removes_the_photo_and_offers_an_undo(red, event, photos):
    a = photos["a.jpg"]
    response = red.post(url("photo_reject", event, a.pk))
    assert response.status_code == 302 and response["Location"] == url("me", event)
    page = red.get(url("me", event)).content.decode()
    assert "We found you in 2 photos" in page and url("photo_undo", event, a.pk) in page
    assert url("photo_thumbnail", event, a.pk) not in page
    assert red.get(url("photo_view", event, a.pk)).status_code == 404
    zipped = zipfile.ZipFile(io.BytesIO(b"".join(red.get(url("photos_zip", event)).streaming_content)))
    assert "a.jpg" not in zipped.namelist()
    assert url("photo_undo", event, a.pk) not in red.get(url("me", event)).content.decode()  # offered once
    assert red.post(url("photo_undo", event, a.pk)).status_code == 302
    assert b"We found you in 3 photos" in red.get(url("me", event)).content


def test_a_rejected_photo_never_comes_back_through_rematching_or_reindexing(red, event, photos, run_jobs):
    red.post(url("photo_reject", event, photos["a.jpg"].pk))
    with run_jobs():
        services.event_rematch(event=event)
        services.event_reindex(event=event)
    assert Selfie.objects.get().matches.filter(photo=photos["a.jpg"]).exists()  # matching still finds it...
    assert b"We found you in 2 photos" in red.get(url("me", event)).content  # ...the gallery never shows it
    with run_jobs():
        add_selfie(red, event, jpeg_bytes(RED, size=(50, 50)))  # nor a new selfie of the same person
    assert b"We found you in 2 photos" in red.get(url("me", event)).content


def test_only_the_gallery_owner_can_reject_or_undo(red, event, photos, run_jobs):
    stranger = Client()
    assert stranger.post(url("photo_reject", event, photos["a.jpg"].pk)).status_code == 404
    blue = Client()
    with run_jobs():
        post_selfie(blue, event, jpeg_bytes(BLUE))
    assert blue.post(url("photo_reject", event, photos["a.jpg"].pk)).status_code == 404  # not in their gallery
    red.post(url("photo_reject", event, photos["a.jpg"].pk))
    assert blue.post(url("photo_undo", event, photos["a.jpg"].pk)).status_code == 404
    assert stranger.post(url("photo_undo", event, photos["a.jpg"].pk)).status_code == 404
    assert Rejection.objects.count() == 1


# --- Deleting, and what is shown afterwards ------------------------------------------


def test_delete_asks_first_then_confirms(red, event, photos, run_jobs):
    confirm = red.get(url("me_forget", event))
    assert confirm.status_code == 200 and b"Yes, delete everything" in confirm.content
    assert Selfie.objects.exists()  # asking deletes nothing
    with run_jobs():
        response = red.post(url("me_forget", event), follow=True)
    assert b"Your selfies and the list of your photos were deleted." in response.content
    assert not Attendee.objects.exists()
    assert Client().get(url("me_forget", event)).status_code == 302  # nothing to delete: back to the event


# --- Forms keep what they can --------------------------------------------------------


def test_consent_stays_ticked_after_a_file_error(client, event):
    response = post_selfie(client, event, b"%PDF not a photo")
    assert response.status_code == 400
    consent = response.content.decode().split('name="consent"')[1].split(">")[0]
    assert "checked" in consent
    unticked = post_selfie(client, event, b"%PDF not a photo", consent=False)
    assert "checked" not in unticked.content.decode().split('name="consent"')[1].split(">")[0]


def test_a_selfie_without_a_face_is_not_kept(client, event, run_jobs):
    with run_jobs():
        post_selfie(client, event, jpeg_bytes((0, 0, 0)))
    selfie = Selfie.objects.get()
    assert selfie.match_state == Selfie.State.FAILED and not selfie.image
    assert not list(default_storage.listdir(f"events/{event.pk}/selfies")[1])
    with run_jobs():
        assert services.event_rematch(event=event) == 0  # nothing left to match


def test_heic_selfies_are_accepted_upright(client, event, run_jobs):
    import pillow_heif  # noqa: F401 - registered by gallery.images

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° to show
    buffer = io.BytesIO()
    Image.new("RGB", (600, 400), RED).save(buffer, format="HEIF", exif=exif.tobytes())
    with run_jobs():
        response = post_selfie(client, event, buffer.getvalue(), name="IMG_0001.HEIC")
    assert response.status_code == 302
    with Selfie.objects.get().image.open("rb") as stored:
        assert Image.open(stored).size == (400, 600)


def test_the_selfie_page_uses_no_inline_script_or_style(client, event):
    page = client.get(url("event", event)).content.decode()
    assert "<script>" not in page and " style=" not in page and "onsubmit" not in page
    assert 'accept="image/*,.heic,.heif"' in page


# --- Home, privacy, errors -----------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    ["summer", "  Summer ", "http://photos.example.org/e/summer/", "/e/summer/me/", "photos.example.org/e/summer"],
)
def test_home_opens_an_event_from_its_link_or_name(client, event, typed):
    response = client.get(reverse("gallery:home"), {"event": typed})
    assert response.status_code == 302 and response["Location"] == url("event", event)


def test_home_says_so_when_nothing_matches_and_hides_unpublished_events(client, event):
    event.published = False
    event.save()
    for typed in ("summer", "nothing-here"):
        response = client.get(reverse("gallery:home"), {"event": typed})
        assert response.status_code == 404 and b"We found no event" in response.content
    assert b'name="event"' in client.get(reverse("gallery:home")).content


def test_privacy_page_tells_retention_and_contact(client, event):
    event.contact = "privacy@example.org"
    event.retention_days = 30
    event.save()
    page = client.get(url("privacy", event)).content.decode()
    assert "30 days after the event" in page and "privacy@example.org" in page
    assert url("privacy", event) in client.get(url("event", event)).content.decode()  # linked from the consent box
    event.published = False
    event.save()
    assert client.get(url("privacy", event)).status_code == 404


def test_unknown_pages_get_the_products_404(client):
    response = client.get("/e/nope/me/")
    assert response.status_code == 404 and b"exist or is private" in response.content
    assert b"Go to the home page" in response.content


def test_a_server_error_gets_the_products_500_page(client, settings):
    from django.template.loader import render_to_string

    page = render_to_string("500.html")
    assert "Something went wrong" in page and "Nothing you uploaded was lost" in page


# --- Links point where the site answers -----------------------------------------------


def test_links_and_qr_code_use_the_requests_host_and_port(admin_client, event, settings, red):
    settings.SITE_URL = ""
    settings.ALLOWED_HOSTS = ["photos.test", "testserver"]
    change = admin_client.get(reverse("admin:gallery_event_change", args=[event.pk]), HTTP_HOST="photos.test:8123")
    assert "http://photos.test:8123/e/summer/" in change.content.decode()
    me = red.get(url("me", event), HTTP_HOST="photos.test:8123").content.decode()
    assert f"http://photos.test:8123/e/summer/me/{Attendee.objects.get().token}/" in me


def test_site_url_wins_when_set(admin_client, event, settings, red):
    settings.SITE_URL = "https://photos.example.org"
    change = admin_client.get(reverse("admin:gallery_event_change", args=[event.pk]))
    assert "https://photos.example.org/e/summer/" in change.content.decode()
    assert "https://photos.example.org/e/summer/me/" in red.get(url("me", event)).content.decode()


def test_the_qr_code_encodes_the_real_address(admin_client, event, settings, monkeypatch):
    import gallery.admin

    encoded = []
    real = gallery.admin._qr_svg
    monkeypatch.setattr(gallery.admin, "_qr_svg", lambda data: encoded.append(data) or real(data))
    settings.SITE_URL = ""
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    admin_client.get(reverse("admin:gallery_event_change", args=[event.pk]), HTTP_HOST="127.0.0.1:8123")
    assert encoded == ["http://127.0.0.1:8123/e/summer/"]


def test_commands_print_site_url_or_a_bare_path(settings, db):
    from django.core.management import call_command

    out = io.StringIO()
    settings.SITE_URL = ""
    call_command("create_event", "Gala", stdout=out)
    assert "Attendee link: /e/gala/" in out.getvalue()
    settings.SITE_URL = "http://127.0.0.1:8123"
    call_command("create_event", "Gala two", stdout=out)
    assert "Attendee link: http://127.0.0.1:8123/e/gala-two/" in out.getvalue()


def test_make_run_prints_the_port_it_serves():
    from tests.conftest import ROOT

    makefile = (ROOT / "Makefile").read_text()
    assert "SITE_URL=$${SITE_URL:-http://$(HOST):$(PORT)} $(MANAGE) load_demo" in makefile
    assert "runserver --noreload $(HOST):$(PORT)" in makefile


@pytest.mark.s3
def test_download_all_streams_from_s3(s3_storage, client, event, run_jobs, monkeypatch):
    """From the bucket, object by object: never a temporary copy of a photo (django-storages' read())."""
    from storages.backends.s3 import S3File

    with run_jobs():
        for name, width in (("a.jpg", 80), ("b.jpg", 81)):
            services.photo_import(event=event, name=name, fileobj=io.BytesIO(jpeg_bytes(RED, size=(width, 60))))
        post_selfie(client, event)
    monkeypatch.setattr(S3File, "_get_file", lambda self: pytest.fail("a photo was spooled whole"))
    response = client.get(url("photos_zip", event))
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == ["a.jpg", "b.jpg"]
    monkeypatch.undo()
    with Photo.objects.get(original_name="a.jpg").display.open("rb") as served:
        assert archive.read("a.jpg") == served.read()


def test_an_unexpected_error_shows_the_products_500_page_in_the_visitors_language(client, event, monkeypatch):
    import gallery.views

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(gallery.views.access, "attendee_for_visitor", broken)
    client.raise_request_exception = False
    response = client.get(url("event", event), HTTP_ACCEPT_LANGUAGE="fr")
    assert response.status_code == 500
    page = response.content.decode()
    assert "Un problème est survenu" in page and "boom" not in page and "Traceback" not in page
