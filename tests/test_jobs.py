"""Job semantics: claims, stale claims, duplicates, failures that must not lose work."""

from __future__ import annotations

import io
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from gallery import services
from gallery.models import Face, Match, Photo, Selfie
from matching import services as matching_services
from matching.engines import get_engine
from tests.conftest import jobs_inline, jpeg_bytes, selfie_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending_photo(event) -> Photo:
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
    selfie = selfie_row(event, image="x.jpg")
    engine = get_engine()
    Selfie.objects.filter(pk=selfie.pk).update(
        embedding=engine.detect(_image())[0].embedding.tobytes(), engine=engine.name, match_state="done"
    )

    def unavailable(**kwargs):
        raise ConnectionError("engine unavailable")

    monkeypatch.setattr(matching_services, "event_decide", unavailable)
    assert matching_services.photo_index(photo_id=pending_photo.pk) == "indexed-unmatched"
    assert Photo.objects.get().index_state == Photo.State.INDEXED and not selfie.matches.exists()
    monkeypatch.undo()
    with run_jobs():
        services.event_rematch(event=event)
    assert selfie.matches.count() == 1


def _image():
    from PIL import Image

    return Image.open(io.BytesIO(jpeg_bytes())).convert("RGB")


class RecordingEngine:
    """Stands in for a hosted engine's remote collection: records what it is told to forget."""

    name = "rekognition"

    def __init__(self) -> None:
        self.forgotten: list[tuple[int, list[str]]] = []
        self.events: list[int] = []

    def forget_faces(self, *, event_id: int, external_ids: list[str]) -> None:
        self.forgotten.append((event_id, sorted(external_ids)))

    def forget_event(self, *, event_id: int) -> None:
        self.events.append(event_id)


def test_remote_faces_are_forgotten_by_the_engine_that_stored_them(event, pending_photo, monkeypatch, run_jobs):
    import matching.engines

    remote = RecordingEngine()
    monkeypatch.setitem(matching.engines._engines, "rekognition", remote)
    Face.objects.create(photo=pending_photo, left=0, top=0, width=5, height=5, engine="rekognition", external_id="f-1")
    selfie = selfie_row(event, image="s.jpg", engine="rekognition", external_id="s-1")
    with run_jobs():  # the configured engine is the fake one; the faces are Rekognition's
        selfie.delete()
    assert remote.forgotten == [(event.pk, ["s-1"])]
    event_id = event.pk
    with run_jobs():
        event.delete()
    assert remote.events == [event_id]
    assert (event_id, ["f-1"]) in remote.forgotten


def test_a_failed_selfie_shows_attendees_no_internals(event, monkeypatch, run_jobs, client):
    from django.urls import reverse

    from tests.conftest import upload

    def broken(**kwargs):
        raise RuntimeError("secret internal detail arn:aws:iam::123456789012")

    monkeypatch.setattr(get_engine(), "enroll_selfie", broken)
    with run_jobs():
        client.post(
            reverse("gallery:selfie_upload", args=[event.slug]),
            {"image": upload("me.jpg", jpeg_bytes()), "consent": "on"},
        )
    status = client.get(reverse("gallery:me_status", args=[event.slug])).json()
    assert status["state"] == "failed" and status["error"].startswith("Something went wrong")
    assert b"123456789012" not in client.get(reverse("gallery:me", args=[event.slug])).content


def test_a_timed_out_job_is_recorded_not_left_processing(pending_photo, monkeypatch):
    from django_q.exceptions import TimeoutException

    from matching import tasks

    def too_slow(**kwargs):
        Photo.objects.filter(pk=pending_photo.pk).update(index_state=Photo.State.PROCESSING)
        raise TimeoutException("timed out")  # what django-q2 raises in the worker past Q_TIMEOUT

    monkeypatch.setattr(matching_services, "photo_index", too_slow)
    with pytest.raises(TimeoutException):
        tasks.photo_index_task(pending_photo.pk)
    pending_photo.refresh_from_db()
    assert pending_photo.index_state == Photo.State.FAILED and "Q_TIMEOUT" in pending_photo.index_error


def test_reindex_stuck_requeues_only_lost_jobs(event, pending_photo, settings, run_jobs, capsys):
    from django.core.management import call_command

    services.photo_import(event=event, name="b.jpg", fileobj=io.BytesIO(jpeg_bytes((1, 200, 1))))
    old = timezone.now() - timedelta(seconds=settings.Q_CLUSTER["retry"] + 5)
    Photo.objects.filter(pk=pending_photo.pk).update(created_at=old)  # queued long ago, never ran
    with run_jobs():
        call_command("reindex", event.slug, "--stuck")
    assert "Queued 1 stuck photos" in capsys.readouterr().out
    states = dict(Photo.objects.values_list("original_name", "index_state"))
    assert states == {"a.jpg": Photo.State.INDEXED, "b.jpg": Photo.State.PENDING}


def test_switching_engines_forgets_the_old_remote_selfie_face(event, monkeypatch, run_jobs):
    import matching.engines
    from tests.conftest import upload

    remote = RecordingEngine()
    monkeypatch.setitem(matching.engines._engines, "rekognition", remote)
    selfie = services.selfie_create(event=event, upload=upload("me.jpg", jpeg_bytes()), consent=True)
    Selfie.objects.filter(pk=selfie.pk).update(engine="rekognition", external_id="old-face")
    with run_jobs():
        assert matching_services.selfie_match(selfie_id=selfie.pk) == "done"  # now enrolled with the fake engine
    selfie.refresh_from_db()
    assert (selfie.engine, selfie.external_id) == ("fake", "") and selfie.embedding
    assert remote.forgotten == [(event.pk, ["old-face"])]


def test_rematch_stuck_requeues_only_lost_selfie_jobs(event, settings, run_jobs, capsys):
    from django.core.management import call_command

    from tests.conftest import upload

    lost = services.selfie_create(event=event, upload=upload("a.jpg", jpeg_bytes()), consent=True)
    fresh = services.selfie_create(event=event, upload=upload("b.jpg", jpeg_bytes((1, 1, 200))), consent=True)
    old = timezone.now() - timedelta(seconds=settings.Q_CLUSTER["retry"] + 5)
    Selfie.objects.filter(pk=lost.pk).update(match_state=Selfie.State.MATCHING, claimed_at=old)
    with run_jobs():
        call_command("rematch", event.slug, "--stuck")
    assert "Queued 1 stuck selfies" in capsys.readouterr().out
    states = dict(Selfie.objects.values_list("pk", "match_state"))
    assert states == {lost.pk: Selfie.State.DONE, fresh.pk: Selfie.State.PENDING}


def test_a_broker_outage_does_not_break_the_upload(transactional_db, settings, monkeypatch, client, caplog):
    import django_q.tasks
    from django.urls import reverse

    from gallery.models import Event
    from tests.conftest import upload

    # transactional_db: the request commits for real, so the queueing callback runs in it.
    event = Event.objects.create(name="Outage", slug="outage")
    jobs_inline(settings, False)

    def broker_down(*args, **kwargs):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(django_q.tasks, "async_task", broker_down)
    with caplog.at_level(logging.ERROR):
        response = client.post(
            reverse("gallery:selfie_upload", args=[event.slug]),
            {"image": upload("me.jpg", jpeg_bytes()), "consent": "on"},
        )
    assert response.status_code == 302
    assert Selfie.objects.get().match_state == Selfie.State.PENDING  # kept; `rematch --stuck` requeues it
    assert any("Redis is down" in str(r.exc_info) for r in caplog.records if r.exc_info)


def test_pending_photos_are_not_stuck_while_jobs_still_wait(event, pending_photo, settings, monkeypatch):
    from gallery import jobs

    old = timezone.now() - timedelta(seconds=settings.Q_CLUSTER["retry"] + 5)
    Photo.objects.filter(pk=pending_photo.pk).update(created_at=old)
    monkeypatch.setattr(jobs, "waiting", lambda: 250)  # a big import is still being worked through
    assert services.event_reindex(event=event, stuck_only=True) == 0
    monkeypatch.setattr(jobs, "waiting", lambda: 0)
    assert services.event_reindex(event=event, stuck_only=True) == 1


def test_waiting_counts_the_real_broker_queue(transactional_db, settings):
    from django_q.brokers import get_broker

    from gallery import jobs

    jobs_inline(settings, False)
    broker = get_broker()
    broker.purge_queue()
    before = jobs.waiting()
    jobs.enqueue_photo_index(123456, event_id=1)  # autocommit: queued at once
    try:
        assert jobs.waiting() == before + 1
    finally:
        broker.purge_queue()


def test_a_photo_indexed_while_a_selfie_is_enrolled_is_matched(event, pending_photo, monkeypatch):
    from tests.conftest import upload

    selfie = services.selfie_create(event=event, upload=upload("me.jpg", jpeg_bytes()), consent=True)
    decide = matching_services.event_decide

    def photo_first(**kwargs):
        # Between the selfie's enrollment (committed) and its decision, a worker indexes
        # the photo: the photo job sees the enrolled selfie and records the pair...
        if kwargs.get("selfie_id") is not None:
            assert matching_services.photo_index(photo_id=pending_photo.pk) == "indexed"
            assert selfie.matches.count() == 1
        return decide(**kwargs)

    monkeypatch.setattr(matching_services, "event_decide", photo_first)
    assert matching_services.selfie_match(selfie_id=selfie.pk) == "done"
    # ...and the selfie's own decision, which then sees the photo, keeps it.
    assert list(selfie.matches.values_list("photo_id", flat=True)) == [pending_photo.pk]


def test_a_photo_deleted_while_its_copies_are_made_leaves_no_files(pending_photo, monkeypatch, settings):
    from gallery import images

    real_jpeg_file, engine = images.jpeg_file, get_engine()

    def jpeg_then_delete(*args, **kwargs):
        Photo.objects.filter(pk=pending_photo.pk).delete()  # the organizer deletes it meanwhile
        return real_jpeg_file(*args, **kwargs)

    monkeypatch.setattr(matching_services, "jpeg_file", jpeg_then_delete)
    monkeypatch.setattr(engine, "index_photo", lambda **kwargs: pytest.fail("no engine call for a deleted photo"))
    assert matching_services.photo_index(photo_id=pending_photo.pk) == "superseded"
    derived = [p for p in (settings.MEDIA_ROOT / "events").rglob("*") if "derived" in p.parts and p.is_file()]
    assert derived == []


class WorkerClock:
    """This worker's idea of the time (django.utils.timezone.now), off by `skew` from the database's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.skew = timedelta(0)
        real_now = timezone.now
        monkeypatch.setattr(timezone, "now", lambda: real_now() + self.skew)


def test_a_stale_match_goes_even_when_the_workers_clock_is_behind(event, monkeypatch):
    from tests.conftest import upload

    services.photo_import(event=event, name="blue.jpg", fileobj=io.BytesIO(jpeg_bytes((40, 40, 200))))
    blue = Photo.objects.get()
    assert matching_services.photo_index(photo_id=blue.pk) == "indexed"
    selfie = services.selfie_create(event=event, upload=upload("me.jpg", jpeg_bytes()), consent=True)
    # Recorded ten minutes ago by an earlier search; the selfie (red) does not show in the blue photo.
    Match.objects.create(selfie=selfie, photo=blue, distance=0.3)
    Match.objects.update(created_at=timezone.now() - timedelta(minutes=10))

    WorkerClock(monkeypatch).skew = timedelta(hours=-1)
    assert matching_services.selfie_match(selfie_id=selfie.pk) == "done"

    assert not selfie.matches.exists()


def test_a_match_recorded_during_a_search_survives_a_worker_clock_ahead(event, pending_photo, monkeypatch):
    from tests.conftest import upload

    clock = WorkerClock(monkeypatch)
    selfie = services.selfie_create(event=event, upload=upload("me.jpg", jpeg_bytes()), consent=True)
    decide = matching_services.event_decide

    def photo_first(**kwargs):
        if kwargs.get("selfie_id") is not None:
            # Meanwhile a worker whose clock is right indexes the photo and matches the selfie.
            clock.skew = timedelta(0)
            assert matching_services.photo_index(photo_id=pending_photo.pk) == "indexed"
            clock.skew = timedelta(hours=1)
        return decide(**kwargs)

    # Embedding engines decide under the event's lock: no clock is compared at all.
    monkeypatch.setattr(matching_services, "event_decide", photo_first)
    clock.skew = timedelta(hours=1)  # the selfie's worker runs an hour ahead
    assert matching_services.selfie_match(selfie_id=selfie.pk) == "done"
    assert list(selfie.matches.values_list("photo_id", flat=True)) == [pending_photo.pk]


@pytest.mark.parametrize("model", [Photo, Selfie])
def test_job_querysets_name_the_models_real_fields_and_states(model):
    queryset = model.objects.all()
    states = model._meta.get_field(queryset.state_field).choices
    assert {queryset.PENDING, queryset.FAILED, queryset.working_state} <= {value for value, _ in states}
    model._meta.get_field(queryset.error_field)


def test_a_photo_reindexed_by_a_worker_whose_clock_is_behind_refreshes_the_cached_matrix(event, monkeypatch):
    from matching import index
    from matching.engines import get_engine

    for name, color in (("a.jpg", (200, 40, 40)), ("b.jpg", (40, 40, 200))):
        services.photo_import(event=event, name=name, fileobj=io.BytesIO(jpeg_bytes(color)))
    photos = {photo.original_name: photo for photo in Photo.objects.all()}
    for photo in photos.values():
        assert matching_services.photo_index(photo_id=photo.pk) == "indexed"
    engine = get_engine()
    green = engine.detect(_image_of((40, 200, 40)))[0]
    assert index.photos_near(event_id=event.pk, engine=engine.name, probe=green.embedding) == {}  # cached now

    # a.jpg is replaced by a (green) copy and indexed again, on a worker an hour behind.
    services.photos_reindex(photo_ids=[photos["a.jpg"].pk])
    monkeypatch.setattr(engine, "detect", lambda image: [green])
    WorkerClock(monkeypatch).skew = timedelta(hours=-1)
    assert matching_services.photo_index(photo_id=photos["a.jpg"].pk) == "indexed"

    assert set(index.photos_near(event_id=event.pk, engine=engine.name, probe=green.embedding)) == {photos["a.jpg"].pk}


def _image_of(color: tuple[int, int, int]):
    from PIL import Image

    return Image.open(io.BytesIO(jpeg_bytes(color))).convert("RGB")


def test_a_photo_indexed_during_a_take_over_goes_to_the_nearer_selfie_only(event, pending_photo, monkeypatch):
    from tests.conftest import upload

    # The fake engine's embedding is the image's colour: the photo is (200, 60, 60).
    far = services.selfie_create(event=event, upload=upload("a.jpg", jpeg_bytes((130, 60, 60))), consent=True)
    assert matching_services.selfie_match(selfie_id=far.pk) == "done"
    near = services.selfie_create(event=event, upload=upload("b.jpg", jpeg_bytes((190, 60, 60))), consent=True)
    decide = matching_services.event_decide

    def photo_meanwhile(**kwargs):
        if kwargs.get("selfie_id") == near.pk:
            # The photo job decides between the new selfie's enrollment and its decision:
            # it already sees the nearer selfie, so the farther one never gets the photo.
            assert matching_services.photo_index(photo_id=pending_photo.pk) == "indexed"
            assert list(near.matches.values_list("photo_id", flat=True)) == [pending_photo.pk]
            assert not far.matches.exists()
        return decide(**kwargs)

    monkeypatch.setattr(matching_services, "event_decide", photo_meanwhile)
    assert matching_services.selfie_match(selfie_id=near.pk) == "done"
    assert list(near.matches.values_list("photo_id", flat=True)) == [pending_photo.pk]
    assert not far.matches.exists()
    # Without the nearer selfie the farther one would have had it: the rule decided, not the tolerance.
    Selfie.objects.filter(pk=near.pk).delete()
    matching_services.photo_match(photo=Photo.objects.get(pk=pending_photo.pk))
    assert list(far.matches.values_list("photo_id", flat=True)) == [pending_photo.pk]


def test_copies_left_by_a_killed_run_are_replaced_not_orphaned(pending_photo, settings):
    # A worker killed after writing the served copies, before recording them on the row.
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    derived = f"events/{pending_photo.event_id}/derived/{pending_photo.content_hash[:2]}/{pending_photo.content_hash}"
    for suffix in ("display", "thumb"):
        default_storage.save(f"{derived}-{suffix}.jpg", ContentFile(b"left by a killed run"))

    assert matching_services.photo_index(photo_id=pending_photo.pk) == "indexed"
    pending_photo.refresh_from_db()
    assert (pending_photo.display.name, pending_photo.thumbnail.name) == (
        f"{derived}-display.jpg",
        f"{derived}-thumb.jpg",
    )
    stored = {
        str(p.relative_to(settings.MEDIA_ROOT)) for p in (settings.MEDIA_ROOT / "events").rglob("*") if p.is_file()
    }
    assert stored == {pending_photo.original.name, pending_photo.display.name, pending_photo.thumbnail.name}
    assert pending_photo.display.read() != b"left by a killed run"


def test_a_worker_about_to_index_a_photo_first_matches_the_waiting_selfies(event, pending_photo, monkeypatch):
    from matching import tasks
    from tests.conftest import upload

    monkeypatch.setattr(tasks, "SELFIES_BEFORE_A_PHOTO", 2)
    # Three attendees' selfies queued (their jobs not run: no on-commit callbacks here).
    waiting = [
        services.selfie_create(event=event, upload=upload(f"{n}.jpg", jpeg_bytes(colour)), consent=True)
        for n, colour in enumerate([(200, 60, 60), (20, 200, 60), (30, 60, 200)])
    ]
    assert tasks.photo_index_task(pending_photo.pk) == "indexed"
    states = list(Selfie.objects.order_by("pk").values_list("match_state", flat=True))
    # The two oldest first, then the photo; the third waits for the next photo or its own job.
    assert states == [Selfie.State.DONE, Selfie.State.DONE, Selfie.State.PENDING]
    assert Match.objects.filter(selfie=waiting[0], photo=pending_photo).exists()  # the fake engine: the photo's colour
    # Their own jobs, delivered later, find them done and leave them alone.
    assert tasks.selfie_match_task(waiting[0].pk) == "skipped"
    assert tasks.selfie_match_task(waiting[2].pk) == "done"
