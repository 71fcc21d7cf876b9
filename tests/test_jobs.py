"""Job semantics: claims, stale claims, duplicates, failures that must not lose work."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.utils import timezone

from gallery import services
from gallery.models import Face, Photo, Selfie
from matching import services as matching_services
from matching.engines import get_engine
from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending_photo(event, settings) -> Photo:
    settings.JOBS_SYNC = True
    # Imported without running its job (no on-commit callbacks in this test transaction).
    services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    return Photo.objects.get()


def test_a_photo_being_indexed_is_not_taken_twice(pending_photo):
    Photo.objects.filter(pk=pending_photo.pk).update(index_state=Photo.State.PROCESSING, claimed_at=timezone.now())
    assert matching_services.photo_index(photo_id=pending_photo.pk) == "skipped"
    assert not Face.objects.exists()


def test_an_abandoned_claim_is_taken_over(pending_photo, settings):
    long_ago = timezone.now() - timedelta(seconds=settings.Q_CLUSTER["retry"] + 1)
    Photo.objects.filter(pk=pending_photo.pk).update(index_state=Photo.State.PROCESSING, claimed_at=long_ago)
    assert matching_services.photo_index(photo_id=pending_photo.pk) == "indexed"
    assert Face.objects.count() == 1


def test_a_deleted_photo_job_does_nothing(pending_photo):
    photo_id = pending_photo.pk
    pending_photo.delete()
    assert matching_services.photo_index(photo_id=photo_id) == "skipped"


def test_engine_errors_are_recorded_on_the_photo(pending_photo, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("model file missing")

    monkeypatch.setattr(get_engine(), "index_photo", broken)
    assert matching_services.photo_index(photo_id=pending_photo.pk) == "failed"
    pending_photo.refresh_from_db()
    assert pending_photo.index_state == Photo.State.FAILED
    assert pending_photo.index_error == "Unexpected error: RuntimeError: model file missing"


def test_a_failed_rematch_keeps_the_faces_and_rematch_repairs_it(event, pending_photo, monkeypatch, run_jobs):
    selfie = Selfie.objects.create(event=event, consent_at=timezone.now(), image="x.jpg")
    engine = get_engine()
    Selfie.objects.filter(pk=selfie.pk).update(
        embedding=engine.detect(_image())[0].embedding.tobytes(), engine=engine.name, match_state="done"
    )

    def unavailable(**kwargs):
        raise ConnectionError("engine unavailable")

    monkeypatch.setattr(engine, "match_photo", unavailable)
    assert matching_services.photo_index(photo_id=pending_photo.pk) == "indexed-unmatched"
    assert Photo.objects.get().index_state == Photo.State.INDEXED and not selfie.matches.exists()
    monkeypatch.undo()
    with run_jobs():
        matching_services.event_rematch(event=event)
    assert selfie.matches.count() == 1


def _image():
    from PIL import Image

    return Image.open(io.BytesIO(jpeg_bytes())).convert("RGB")
