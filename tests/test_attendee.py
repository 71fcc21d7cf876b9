"""The attendee's way through: code, consent, selfie, status, gallery, downloads, forgetting."""

from __future__ import annotations

import io

import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image

from gallery import services
from gallery.models import Attendee, Event, Match, Photo, Selfie
from tests.conftest import corrupt_jpeg, jpeg_bytes, upload

pytestmark = pytest.mark.django_db

RED, BLUE = (200, 40, 40), (40, 40, 200)


@pytest.fixture
def photos(event, run_jobs) -> dict[str, Photo]:
    """Three indexed photos: two of the 'red' attendee, one of the 'blue' one (fake engine)."""
    with run_jobs():
        for name, color, width in (("red1.jpg", RED, 80), ("red2.jpg", RED, 81), ("blue.jpg", BLUE, 80)):
            services.photo_import(event=event, name=name, fileobj=io.BytesIO(jpeg_bytes(color, size=(width, 60))))
    return {photo.original_name: photo for photo in Photo.objects.all()}


def post_selfie(client: Client, event: Event, data: bytes | None = None, consent: bool = True, name="me.jpg"):
    payload = {"image": upload(name, data if data is not None else jpeg_bytes(RED))}
    if consent:
        payload["consent"] = "on"
    return client.post(reverse("gallery:selfie_upload", args=[event.slug]), payload)


def test_selfie_finds_own_photos_and_page_shows_them(client, event, photos, run_jobs):
    page = client.get(reverse("gallery:event", args=[event.slug]))
    assert page.status_code == 200 and b"biometric" in page.content
    with run_jobs():
        response = post_selfie(client, event)
    assert response.status_code == 302 and response["Location"] == reverse("gallery:me", args=[event.slug])
    me = client.get(response["Location"])
    assert me.status_code == 200
    assert b"We found you in 2 photos" in me.content
    for name in ("red1.jpg", "red2.jpg"):
        thumb = client.get(reverse("gallery:photo_thumbnail", args=[event.slug, photos[name].pk]))
        assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    download = client.get(reverse("gallery:photo_download", args=[event.slug, photos["red1.jpg"].pk]))
    assert download.status_code == 200 and 'filename="red1.jpg"' in download["Content-Disposition"]
    assert client.get(reverse("gallery:me_status", args=[event.slug])).json() == {
        "state": "done",
        "matches": 2,
        "pending_photos": 0,
        "error": "",
    }


def test_selfie_post_answers_before_any_face_work(
    client, event, photos, monkeypatch, django_capture_on_commit_callbacks
):
    import matching.services

    # The name the face services really look up when they run (bound in their
    # module at import): the job below goes through it, the request must not.
    engine_loads = []
    real_get_engine = matching.services.get_engine

    def recording_get_engine(*args, **kwargs):
        engine_loads.append(args)
        return real_get_engine(*args, **kwargs)

    monkeypatch.setattr(matching.services, "get_engine", recording_get_engine)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = post_selfie(client, event)
    assert response.status_code == 302
    assert engine_loads == [], "the web request must not load or run a face engine"
    selfie = Selfie.objects.get()
    assert selfie.match_state == Selfie.State.PENDING and not selfie.embedding and not selfie.matches.exists()
    assert len(queued) == 1  # the matching job, sent only after commit
    me = client.get(reverse("gallery:me", args=[event.slug]))
    assert b"Looking for you" in me.content and b'http-equiv="refresh"' in me.content
    assert client.get(reverse("gallery:me_status", args=[event.slug])).json()["state"] == "pending"

    queued[0]()  # the job runs (inline here, in the qcluster in production)
    selfie.refresh_from_db()
    assert selfie.match_state == Selfie.State.DONE and selfie.matches.count() == 2
    assert engine_loads, "the job's face work goes through the patched name, so the check above can fail"


def test_selfie_is_stored_small_and_without_metadata(client, event, run_jobs):
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    with run_jobs():
        post_selfie(client, event, jpeg_bytes(RED, size=(3000, 2000), exif=exif.tobytes()))
    selfie = Selfie.objects.get()
    with selfie.image.open("rb") as handle:
        stored = Image.open(handle)
        assert max(stored.size) == 1024
        assert not stored.getexif()


@pytest.mark.parametrize(
    ("data", "consent", "message"),
    [
        (b"%PDF-1.4 not a photo", True, b"not an image we can read"),
        (b"", True, b"That file is empty"),
        (jpeg_bytes(RED), False, b"Please agree"),
    ],
    ids=["not-an-image", "empty", "no-consent"],
)
def test_bad_selfies_get_a_clear_message_and_store_nothing(client, event, data, consent, message):
    response = post_selfie(client, event, data, consent=consent)
    assert response.status_code == 400
    assert message in response.content
    assert not Selfie.objects.exists()


def test_a_corrupt_selfie_is_a_recorded_failure_the_attendee_reads(client, event, run_jobs):
    # Only the header is read during the request; the job finds the broken pixels.
    with run_jobs():
        assert post_selfie(client, event, corrupt_jpeg()).status_code == 302
    status = client.get(reverse("gallery:me_status", args=[event.slug])).json()
    assert status["state"] == "failed" and status["error"] == "The image data is corrupt or truncated."


def test_selfie_without_a_face_is_a_recorded_failure(client, event, run_jobs):
    with run_jobs():
        post_selfie(client, event, jpeg_bytes((0, 0, 0)))  # the fake engine sees no face in black
    me = client.get(reverse("gallery:me", args=[event.slug]))
    assert b"could not find a face" in me.content and b"Take another selfie" in me.content
    assert client.get(reverse("gallery:me_status", args=[event.slug])).json()["state"] == "failed"


def test_new_selfie_replaces_the_old_one(client, event, photos, run_jobs):
    with run_jobs():
        post_selfie(client, event)
        post_selfie(client, event, jpeg_bytes(BLUE))
    selfie = Selfie.objects.get()
    assert list(selfie.matches.values_list("photo__original_name", flat=True)) == ["blue.jpg"]


def test_attendee_can_delete_their_selfie(client, event, photos, run_jobs):
    with run_jobs():
        post_selfie(client, event)
    image_name = Selfie.objects.get().image.name
    with run_jobs():
        response = client.post(reverse("gallery:me_forget", args=[event.slug]))
    assert response.status_code == 302
    assert not Selfie.objects.exists() and not Match.objects.exists()
    from django.core.files.storage import default_storage

    assert not default_storage.exists(image_name)
    assert client.get(reverse("gallery:me", args=[event.slug])).status_code == 302


# --- Access: the wrong person gets nothing ------------------------------------------


def test_another_attendee_never_sees_your_matches(client, event, photos, run_jobs):
    with run_jobs():
        post_selfie(client, event)
    stranger = Client()
    assert stranger.get(reverse("gallery:me", args=[event.slug])).status_code == 302
    assert stranger.get(reverse("gallery:me_status", args=[event.slug])).status_code == 404
    for view in ("photo_thumbnail", "photo_view", "photo_image", "photo_download"):
        assert stranger.get(reverse(f"gallery:{view}", args=[event.slug, photos["red1.jpg"].pk])).status_code == 404
    # With a selfie of their own, they see only their own photo.
    with run_jobs():
        post_selfie(stranger, event, jpeg_bytes(BLUE))
    me = stranger.get(reverse("gallery:me", args=[event.slug]))
    assert b"We found you in 1 photo." in me.content
    assert stranger.get(reverse("gallery:photo_view", args=[event.slug, photos["red1.jpg"].pk])).status_code == 404
    assert stranger.get(reverse("gallery:photo_view", args=[event.slug, photos["blue.jpg"].pk])).status_code == 200


def test_a_selfie_only_opens_photos_of_its_own_event(client, event, photos, run_jobs):
    other = Event.objects.create(name="Other", slug="other")
    with run_jobs():
        post_selfie(client, event)
        services.photo_import(event=other, name="red-other.jpg", fileobj=io.BytesIO(jpeg_bytes(RED, size=(90, 60))))
    other_photo = Photo.objects.get(event=other)
    assert client.get(reverse("gallery:photo_view", args=[event.slug, other_photo.pk])).status_code == 404
    assert client.get(reverse("gallery:photo_view", args=[other.slug, other_photo.pk])).status_code == 404


def test_event_code_is_required_before_anything(client, event, photos, run_jobs):
    event.access_code = "Sunset-42"
    event.save()
    page = client.get(reverse("gallery:event", args=[event.slug]))
    assert b"Enter the code" in page.content and b"biometric" not in page.content
    assert post_selfie(client, event).status_code == 404
    assert client.get(reverse("gallery:me", args=[event.slug]))["Location"] == f"/e/{event.slug}/"
    assert client.get(reverse("gallery:me_status", args=[event.slug])).status_code == 404
    wrong = client.post(reverse("gallery:event", args=[event.slug]), {"code": "nope"})
    assert wrong.status_code == 400 and b"not right" in wrong.content
    right = client.post(reverse("gallery:event", args=[event.slug]), {"code": " sunset-42 "})
    assert right.status_code == 302
    with run_jobs():
        assert post_selfie(client, event).status_code == 302


def test_unpublished_and_unknown_events_are_404(client, event, admin_client):
    event.published = False
    event.save()
    assert client.get(reverse("gallery:event", args=[event.slug])).status_code == 404
    assert post_selfie(client, event).status_code == 404
    missing = client.get(reverse("gallery:event", args=["nope"]))
    assert missing.status_code == 404 and b"doesn't exist or is private" in missing.content
    assert admin_client.get(reverse("gallery:event", args=[event.slug])).status_code == 200  # staff preview


def test_a_failed_photo_is_never_matched_nor_served(client, event, run_jobs):
    with run_jobs():
        services.photo_import(event=event, name="broken.jpg", fileobj=io.BytesIO(corrupt_jpeg()))
        post_selfie(client, event)
    photo = Photo.objects.get()
    assert photo.index_state == Photo.State.FAILED and not Match.objects.exists()
    assert client.get(reverse("gallery:photo_view", args=[event.slug, photo.pk])).status_code == 404


def test_wrong_methods_are_refused(client, event):
    assert client.get(reverse("gallery:selfie_upload", args=[event.slug])).status_code == 405
    for view in ("photo_reject", "photo_undo"):
        assert client.get(reverse(f"gallery:{view}", args=[event.slug, 1])).status_code == 405


def test_home_page(client):
    assert client.get("/").status_code == 200


def test_the_private_link_brings_an_attendee_back_on_another_device(client, event, photos, run_jobs):
    event.access_code = "Sunset-42"
    event.save()
    client.post(reverse("gallery:event", args=[event.slug]), {"code": "Sunset-42"})
    with run_jobs():
        post_selfie(client, event)
    page = client.get(reverse("gallery:me", args=[event.slug])).content.decode()
    selfie = Selfie.objects.get()
    link = reverse("gallery:me_resume", args=[event.slug, selfie.attendee.token])
    assert link in page

    other_device = Client()
    response = other_device.get(link)
    assert response.status_code == 302 and response["Location"] == reverse("gallery:me", args=[event.slug])
    assert b"We found you in 2 photos" in other_device.get(response["Location"]).content

    # A wrong token, or the right token under another event, opens nothing.
    other = Event.objects.create(name="Other", slug="other")
    stranger = Client()
    assert stranger.get(reverse("gallery:me_resume", args=[event.slug, "x" * 43])).status_code == 404
    assert stranger.get(reverse("gallery:me_resume", args=[other.slug, selfie.attendee.token])).status_code == 404
    assert stranger.get(reverse("gallery:me", args=[event.slug]))["Location"] == f"/e/{event.slug}/"


def test_a_huge_png_selfie_is_refused_before_decoding(client, event, settings):
    settings.SELFIE_MAX_PIXELS = 1_000_000
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 1000), "white").save(buffer, format="PNG")
    response = post_selfie(client, event, buffer.getvalue(), name="big.png")
    assert response.status_code == 400 and b"too many pixels" in response.content
    assert not Selfie.objects.exists()


def test_opening_someone_elses_link_never_costs_them_their_selfie(client, event, photos, run_jobs):
    owner, friend = Client(), Client()
    with run_jobs():
        post_selfie(owner, event)  # red: 2 photos
        post_selfie(friend, event, jpeg_bytes(BLUE))  # blue: 1 photo
    owner_selfie = Selfie.objects.get(matches__photo__original_name="red1.jpg")
    friend_selfie = Selfie.objects.exclude(pk=owner_selfie.pk).get()

    friend.get(reverse("gallery:me_resume", args=[event.slug, owner_selfie.attendee.token]))
    assert b"We found you in 2 photos" in friend.get(reverse("gallery:me", args=[event.slug])).content
    with run_jobs():  # the friend then takes a new selfie of their own
        post_selfie(friend, event, jpeg_bytes(BLUE, size=(70, 50)))
    assert Selfie.objects.filter(pk=owner_selfie.pk).exists()  # the owner's selfie is untouched
    assert not Selfie.objects.filter(pk=friend_selfie.pk).exists()  # the friend's old one was replaced
    assert Selfie.objects.count() == 2


def test_leaving_a_viewed_link_returns_to_ones_own_photos(client, event, photos, run_jobs):
    owner, friend = Client(), Client()
    with run_jobs():
        post_selfie(owner, event)
        post_selfie(friend, event, jpeg_bytes(BLUE))
    owner_selfie = Selfie.objects.get(matches__photo__original_name="red1.jpg")
    friend.get(reverse("gallery:me_resume", args=[event.slug, owner_selfie.attendee.token]))
    with run_jobs():  # the link is a full credential: deleting from it deletes the owner's selfie
        friend.post(reverse("gallery:me_forget", args=[event.slug]))
    assert not Selfie.objects.filter(pk=owner_selfie.pk).exists()
    assert b"We found you in 1 photo." in friend.get(reverse("gallery:me", args=[event.slug])).content


def test_guessing_the_event_code_is_limited(client, event, settings):
    event.access_code = "Sunset-42"
    event.save()
    settings.CODE_ATTEMPTS = 3
    url = reverse("gallery:event", args=[event.slug])
    statuses = [client.post(url, {"code": f"guess-{n}"}).status_code for n in range(4)]
    assert statuses == [400, 400, 400, 429]
    refused = client.post(url, {"code": "Sunset-42"})  # even the right code, until the window passes
    assert refused.status_code == 429 and b"Too many wrong codes" in refused.content
    assert Client(REMOTE_ADDR="10.1.2.3").post(url, {"code": "Sunset-42"}).status_code == 302  # others unaffected


def test_changing_a_leaked_code_locks_out_everyone_who_used_it(client, event, run_jobs):
    event.access_code = "Sunset-42"
    event.save()
    client.post(reverse("gallery:event", args=[event.slug]), {"code": "Sunset-42"})
    assert b"biometric" in client.get(reverse("gallery:event", args=[event.slug])).content
    event.access_code = "Moonrise-7"
    event.save()
    assert b"Enter the code" in client.get(reverse("gallery:event", args=[event.slug])).content
    assert post_selfie(client, event).status_code == 404


def test_a_selfie_over_the_byte_limit_is_refused(client, event, settings):
    settings.SELFIE_MAX_BYTES = 1000
    response = post_selfie(client, event, jpeg_bytes(RED, size=(400, 300)))
    assert response.status_code == 400 and b"This photo is too large; the limit is 1000" in response.content
    assert not Selfie.objects.exists()


# --- One attendee, several selfies, one private link -------------------------------


def add_selfie(client: Client, event: Event, data: bytes, name="more.jpg"):
    payload = {"image": upload(name, data), "consent": "on", "add": "1"}
    return client.post(reverse("gallery:selfie_upload", args=[event.slug]), payload)


def test_another_selfie_joins_the_same_gallery_and_link(client, event, photos, run_jobs):
    with run_jobs():
        post_selfie(client, event)  # red: 2 photos
    attendee = Attendee.objects.get()
    link = reverse("gallery:me_resume", args=[event.slug, attendee.token])
    me = client.get(reverse("gallery:me", args=[event.slug])).content.decode()
    assert "Add another selfie" in me and link in me
    with run_jobs():
        response = add_selfie(client, event, jpeg_bytes(BLUE))  # blue: 1 more photo
    assert response.status_code == 302
    assert Attendee.objects.get() == attendee and attendee.selfies.count() == 2
    me = client.get(reverse("gallery:me", args=[event.slug])).content.decode()
    assert "We found you in 3 photos" in me and link in me  # one gallery, still one link
    assert client.get(reverse("gallery:me_status", args=[event.slug])).json()["matches"] == 3
    assert client.get(reverse("gallery:photo_view", args=[event.slug, photos["blue.jpg"].pk])).status_code == 200
    # On another device, the one link opens the union too.
    other_device = Client()
    other_device.get(link)
    assert b"We found you in 3 photos" in other_device.get(reverse("gallery:me", args=[event.slug])).content


def test_a_photo_found_by_two_selfies_is_listed_once(client, event, photos, run_jobs):
    with run_jobs():
        post_selfie(client, event)
        add_selfie(client, event, jpeg_bytes(RED, size=(50, 50)))
    assert Match.objects.count() == 4
    assert b"We found you in 2 photos" in client.get(reverse("gallery:me", args=[event.slug])).content


def test_selfies_per_attendee_are_limited(client, event, photos, run_jobs, settings):
    settings.ATTENDEE_MAX_SELFIES = 2
    with run_jobs():
        post_selfie(client, event)
        add_selfie(client, event, jpeg_bytes(BLUE))
    assert b"Add another selfie" not in client.get(reverse("gallery:me", args=[event.slug])).content
    refused = add_selfie(client, event, jpeg_bytes(RED, size=(50, 50)))
    assert refused.status_code == 400 and b"You already have 2 selfies" in refused.content
    assert Selfie.objects.count() == 2


def test_starting_over_replaces_every_selfie_but_keeps_the_link(client, event, photos, run_jobs):
    with run_jobs():
        post_selfie(client, event)
        add_selfie(client, event, jpeg_bytes(BLUE))
    token = Attendee.objects.get().token
    with run_jobs():
        post_selfie(client, event, jpeg_bytes(BLUE, size=(70, 50)))  # from the event page: start over
    assert Selfie.objects.count() == 1 and Attendee.objects.get().token == token
    assert b"We found you in 1 photo." in client.get(reverse("gallery:me", args=[event.slug])).content


def test_adding_needs_consent_and_a_selfie_of_ones_own(client, event, photos, run_jobs):
    with run_jobs():
        post_selfie(client, event)
    payload = {"image": upload("x.jpg", jpeg_bytes(BLUE)), "add": "1"}
    assert client.post(reverse("gallery:selfie_upload", args=[event.slug]), payload).status_code == 400
    # A stranger "adding" gets an attendee of their own, never joins someone else's.
    stranger = Client()
    with run_jobs():
        assert add_selfie(stranger, event, jpeg_bytes(BLUE)).status_code == 302
    assert Attendee.objects.count() == 2
    assert b"We found you in 1 photo." in stranger.get(reverse("gallery:me", args=[event.slug])).content
    assert b"We found you in 2 photos" in client.get(reverse("gallery:me", args=[event.slug])).content


def test_deleting_removes_the_attendee_and_all_their_selfies(client, event, photos, run_jobs):
    with run_jobs():
        post_selfie(client, event)
        add_selfie(client, event, jpeg_bytes(BLUE))
    token = Attendee.objects.get().token
    with run_jobs():
        client.post(reverse("gallery:me_forget", args=[event.slug]))
    assert not Attendee.objects.exists() and not Selfie.objects.exists() and not Match.objects.exists()
    gone = Client().get(reverse("gallery:me_resume", args=[event.slug, token]))
    assert gone.status_code == 404 and b"This link no longer works" in gone.content


def test_a_selfie_without_a_face_offers_no_private_link(client, event, photos, run_jobs):
    with run_jobs():
        post_selfie(client, event, jpeg_bytes((0, 0, 0)))
    attendee = Attendee.objects.get()
    page = client.get(reverse("gallery:me", args=[event.slug])).content.decode()
    assert "could not find a face" in page and attendee.token not in page
    # A good selfie next replaces the failed one.
    with run_jobs():
        add_selfie(client, event, jpeg_bytes(RED))
    assert list(attendee.selfies.values_list("match_state", flat=True)) == [Selfie.State.DONE]
    assert attendee.token in client.get(reverse("gallery:me", args=[event.slug])).content.decode()


def test_existing_selfies_become_attendees_keeping_their_links(transactional_db):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    from django.utils import timezone

    executor = MigrationExecutor(connection)
    executor.migrate([("gallery", "0001_initial")])
    old = executor.loader.project_state([("gallery", "0001_initial")]).apps
    event = old.get_model("gallery", "Event").objects.create(name="Old", slug="old")
    OldSelfie = old.get_model("gallery", "Selfie")
    tokens = [OldSelfie.objects.create(event=event, consent_at=timezone.now(), image=f"{n}.jpg").token for n in "ab"]

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    for token in tokens:
        attendee = Attendee.objects.get(token=token)
        assert attendee.selfies.count() == 1 and attendee.event.slug == "old"
    assert Client().get(reverse("gallery:me_resume", args=["old", tokens[0]])).status_code == 302
