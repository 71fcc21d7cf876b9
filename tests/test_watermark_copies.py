"""Changing an event's watermark makes its served copies again, and nothing else:
faces (real dlib faces), their embeddings and the attendees' matches stay as they were."""

from __future__ import annotations

import pytest
from django.urls import reverse
from PIL import Image, ImageChops

from gallery import services
from gallery.models import Face, Match, Photo
from matching import tasks
from matching.engines import dlib as dlib_engine
from tests.conftest import BIDEN_SELFIE, BIDEN_TWICE_AND_KIT, event_admin_form, sample_upload


def _faces_and_matches() -> tuple[list[tuple], list[tuple]]:
    faces = list(
        Face.objects.order_by("pk").values_list("pk", "photo_id", "left", "top", "width", "height", "embedding")
    )
    matches = list(Match.objects.order_by("pk").values_list("pk", "selfie_id", "photo_id", "distance", "created_at"))
    return faces, matches


def _pixels(field) -> Image.Image:
    with field.open("rb") as handle:
        return Image.open(handle).convert("RGB")


def _bytes(field) -> bytes:
    with field.open("rb") as handle:
        return handle.read()


def _change_watermark(admin_client, event, run_jobs, **fields: str):
    watermark = {"watermark_text": "", "watermark_position": "bottom-right", "watermark_opacity": "80"}
    data = event_admin_form(event, **{**watermark, **fields})
    with run_jobs():
        return admin_client.post(reverse("admin:gallery_event_change", args=[event.pk]), data, follow=True)


@pytest.fixture
def indexed(event, dlib_engine, run_jobs):
    """The sample photos indexed by dlib, and Biden's selfie matched to his two photos."""
    with run_jobs():
        services.paths_import(event=event, paths=BIDEN_TWICE_AND_KIT)
        services.selfie_create(event=event, upload=sample_upload(f"people/biden/{BIDEN_SELFIE.name}"), consent=True)
    assert Face.objects.count() >= 3 and Match.objects.exists()
    return event


def test_a_new_watermark_remakes_the_copies_and_touches_no_face_nor_match(indexed, admin_client, run_jobs, monkeypatch):
    event = indexed
    before = _faces_and_matches()
    photos = {photo.pk: (_pixels(photo.display), _pixels(photo.thumbnail)) for photo in Photo.objects.all()}
    originals = {photo.pk: _bytes(photo.original) for photo in Photo.objects.all()}

    def no_face_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a watermark change must not run the face engine")

    monkeypatch.setattr(dlib_engine.DlibEngine, "index_photo", no_face_work)
    response = _change_watermark(admin_client, event, run_jobs, watermark_text="© Studio Lumière")
    assert "Watermark changed: 3 photos are being copied again" in response.content.decode()

    assert _faces_and_matches() == before
    for photo in Photo.objects.all():
        assert photo.index_state == Photo.State.INDEXED and photo.copies_version == 1
        display, thumbnail = photos[photo.pk]
        box = ImageChops.difference(display, _pixels(photo.display)).getbbox()
        # Bottom right: the changes reach the right edge's margin and stay in the lower half.
        assert box is not None and box[2] > display.width * 3 // 4 and box[1] > display.height // 2
        assert ImageChops.difference(thumbnail, _pixels(photo.thumbnail)).getbbox() is not None
        assert _bytes(photo.original) == originals[photo.pk]


def test_the_copies_job_is_idempotent_and_resumes_in_batches(indexed, run_jobs, monkeypatch):
    """A small batch size: each job makes a batch and queues the next; a job delivered
    again (a killed worker's, or a duplicate) finds nothing left and makes nothing twice."""
    event = indexed
    monkeypatch.setattr(tasks, "COPIES_BATCH", 2)
    event.watermark_text = "ACME"
    event.save()
    made: list[int] = []
    remake = tasks.services.photo_copies_remake

    def counting(*, photo: Photo, **kwargs: object) -> bool:
        made.append(photo.pk)
        return remake(photo=photo, **kwargs)

    monkeypatch.setattr(tasks.services, "photo_copies_remake", counting)
    # A job killed after its first photo: that photo's copies are new and recorded.
    services.event_copies_remake(event=event)  # not run: we play the jobs by hand
    first = Photo.objects.order_by("pk").first()
    tasks.services.photo_copies_remake(photo=first)
    services.photo_copies_current(photo_id=first.pk, version=1)
    made.clear()
    with run_jobs():
        assert tasks.event_copies_task(event.pk) == "2 photos"  # the rest, then nothing left
    assert sorted(made) == sorted(Photo.objects.exclude(pk=first.pk).values_list("pk", flat=True))
    assert set(Photo.objects.values_list("copies_version", flat=True)) == {1}
    made.clear()
    assert tasks.event_copies_task(event.pk) == "0 photos" and not made  # delivered again: nothing to do
    assert services.copies_stuck_requeue() == 0  # nothing outdated: the sweeper queues nothing


def test_the_sweeper_queues_a_lost_copies_job_again(indexed, run_jobs):
    event = indexed
    services.event_copies_remake(event=event)  # its job is lost (never run)
    with run_jobs():
        assert services.copies_stuck_requeue() == 1
    assert set(Photo.objects.values_list("copies_version", flat=True)) == {1}
