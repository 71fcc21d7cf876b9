"""Regression tests for the defects of issue #8, one (or a few) per item.

The hostile corpus through every entry point is in test_hostile.py, the access
table in test_access_table.py, killed workers in test_crash.py.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.test import Client, RequestFactory
from django.urls import reverse
from PIL import Image, ImageStat

from gallery import access, services
from gallery.images import ImageProblem, identify, jpeg_file, load_rgb
from gallery.models import Attendee, Event, Photo, Selfie
from tests.conftest import jpeg_bytes, upload
from tests.fixtures import hostile

pytestmark = pytest.mark.django_db


def post_selfie(client: Client, event: Event, data: bytes, name: str = "me.jpg"):
    return client.post(
        reverse("gallery:selfie_upload", args=[event.slug]), {"image": upload(name, data), "consent": "on"}
    )


def media_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


# --- 3. A malformed PNG (truncated IHDR) ----------------------------------------------------


def test_a_truncated_png_header_is_not_an_image_we_can_read():
    with pytest.raises(ImageProblem, match="not an image we can read"):
        identify(io.BytesIO(hostile.truncated_ihdr_png()))


def test_a_truncated_png_header_is_a_selfie_form_error(client, event):
    response = post_selfie(client, event, hostile.truncated_ihdr_png(), "bad.png")
    assert response.status_code == 400 and b"not an image we can read" in response.content


def test_a_truncated_png_header_stops_neither_an_import_nor_a_zip(event, run_jobs, tmp_path, capsys):
    (tmp_path / "a-bad.png").write_bytes(hostile.truncated_ihdr_png())
    (tmp_path / "b-good.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "c.zip").write_bytes(
        hostile._zip({"bad.png": hostile.truncated_ihdr_png(), "ok.jpg": jpeg_bytes((9, 9, 200))})
    )
    with run_jobs():
        call_command("import_photos", event.slug, str(tmp_path))
    err = capsys.readouterr().err
    assert "rejected a-bad.png: This file is not an image" in err and "rejected c.zip:bad.png" in err
    assert sorted(Photo.objects.values_list("original_name", flat=True)) == ["b-good.jpg", "ok.jpg"]


def test_find_faces_on_a_truncated_png_header_is_a_command_error(event, tmp_path):
    (tmp_path / "bad.png").write_bytes(hostile.truncated_ihdr_png())
    with pytest.raises(CommandError, match="not an image we can read"):
        call_command("find_faces", event.slug, str(tmp_path / "bad.png"))


# --- 4. Extreme aspect ratios ---------------------------------------------------------------


def test_a_one_pixel_wide_strip_resizes_to_one_pixel_not_zero():
    strip = load_rgb(io.BytesIO(hostile.tall_strip_png()))
    copy = Image.open(io.BytesIO(jpeg_file(strip, max_side=1024).read()))
    assert copy.size == (1, 1024)


def test_a_one_pixel_wide_strip_is_indexed_and_selfie_answered(client, event, run_jobs):
    with run_jobs():
        summary = services.photo_import(event=event, name="strip.png", fileobj=io.BytesIO(hostile.tall_strip_png()))
    photo = Photo.objects.get(pk=summary.created[0])
    assert photo.index_state == Photo.State.INDEXED, photo.index_error
    with run_jobs():
        assert post_selfie(client, event, hostile.tall_strip_png(), "strip.png").status_code == 302
    assert Selfie.objects.get().match_state in (Selfie.State.DONE, Selfie.State.FAILED)
    assert "Unexpected" not in Selfie.objects.get().match_error


# --- 10. 16-bit grayscale -------------------------------------------------------------------


def test_a_16_bit_grayscale_png_stays_grey(event, run_jobs):
    with run_jobs():
        services.photo_import(event=event, name="gray16.png", fileobj=io.BytesIO(hostile.gray16_png()))
    photo = Photo.objects.get()
    with photo.display.open("rb") as handle:
        mean = ImageStat.Stat(Image.open(handle).convert("L")).mean[0]
    assert 110 < mean < 125  # 30000 / 65535 of white, not white
    assert photo.face_count == 1  # the fake engine finds a "face" in anything not black or blank


# --- 5. No orphaned selfie files; 503 when the database refuses -------------------------------


def test_a_selfie_the_database_refuses_leaves_no_file_and_answers_503(client, event, settings, monkeypatch):
    def locked(*args, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(Selfie, "save", locked)
    response = post_selfie(client, event, jpeg_bytes())
    assert response.status_code == 503 and response["Retry-After"]
    assert b"Please try again in a minute" in response.content
    assert media_files(settings) == []


def test_a_selfie_deleted_while_its_copy_is_made_leaves_no_file(client, event, settings, monkeypatch, run_jobs):
    from matching import services as matching_services

    real = matching_services.selfie_copy_store

    def delete_first(*, selfie, image):
        Selfie.objects.filter(pk=selfie.pk).delete()
        return real(selfie=selfie, image=image)

    monkeypatch.setattr(matching_services, "selfie_copy_store", delete_first)
    with run_jobs():
        post_selfie(client, event, jpeg_bytes(size=(3000, 2000)))
    assert not Selfie.objects.exists() and media_files(settings) == []


# --- 7. Bounded memory and CPU per selfie request; rate limits ---------------------------------


def test_a_jpeg_claiming_too_many_pixels_is_refused_before_decoding(client, event, monkeypatch):
    def no_decoding(self, *args, **kwargs):
        raise AssertionError("decoded")

    data = hostile.jpeg_header_bomb(10_000, 10_000)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    response = post_selfie(client, event, data)
    assert response.status_code == 400 and b"too many pixels" in response.content


def test_the_selfie_request_decodes_nothing_and_the_job_makes_the_small_copy(client, event, monkeypatch, run_jobs):
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"
    data = jpeg_bytes(size=(3000, 2000), exif=exif.tobytes(), progressive=True)
    with monkeypatch.context() as patched:
        patched.setattr(Image.Image, "load", lambda self, *a, **k: pytest.fail("decoded in the request"))
        with run_jobs() as queued:
            assert post_selfie(client, event, data).status_code == 302
            assert "original-" in Selfie.objects.get().image.name  # stored as it came
            patched.undo()
    assert queued
    selfie = Selfie.objects.get()
    assert "original-" not in selfie.image.name
    with selfie.image.open("rb") as handle:
        stored = Image.open(handle)
        assert max(stored.size) == 1024 and not stored.getexif()


def test_selfie_uploads_are_limited_per_visitor_with_a_clear_429(client, event, settings, run_jobs):
    settings.SELFIE_UPLOADS_PER_CLIENT = 2
    with run_jobs():
        statuses = [post_selfie(client, event, jpeg_bytes()).status_code for _ in range(3)]
    assert statuses == [302, 302, 429]
    refused = post_selfie(client, event, jpeg_bytes())
    assert b"Too many selfies" in refused.content and int(refused["Retry-After"]) > 0
    assert post_selfie(Client(), event, jpeg_bytes()).status_code == 302  # someone else still can


def test_selfie_uploads_are_limited_per_address_and_per_event(event, settings):
    settings.SELFIE_UPLOADS_PER_ADDRESS = 2
    assert [post_selfie(Client(), event, jpeg_bytes()).status_code for _ in range(3)] == [302, 302, 429]
    assert post_selfie(Client(REMOTE_ADDR="10.0.0.9"), event, jpeg_bytes()).status_code == 302
    settings.SELFIE_UPLOADS_PER_ADDRESS = 100
    settings.SELFIE_UPLOADS_PER_EVENT = 4
    assert post_selfie(Client(REMOTE_ADDR="10.0.0.10"), event, jpeg_bytes()).status_code == 302
    assert post_selfie(Client(REMOTE_ADDR="10.0.0.11"), event, jpeg_bytes()).status_code == 429


# --- 6. Entering a code while Redis is down ----------------------------------------------------


@pytest.fixture
def redis_down(settings) -> None:
    """The cache is a Redis nobody listens on (port 9 on loopback: connection refused)."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }


def test_the_event_code_works_while_redis_is_down_and_still_limits(client, event, settings, redis_down):
    event.access_code = "Sunset-42"
    event.save()
    settings.CODE_ATTEMPTS = 2
    url = reverse("gallery:event", args=[event.slug])
    assert Client().post(url, {"code": "Sunset-42"}).status_code == 302
    statuses = [client.post(url, {"code": "wrong"}).status_code for _ in range(3)]
    assert statuses == [400, 400, 429]  # counted in the process meanwhile


def test_selfie_upload_works_while_redis_is_down(client, event, redis_down):
    assert post_selfie(client, event, jpeg_bytes()).status_code == 302


# --- 8. The wrong-code limiter: atomic, a right code gets through, trusted proxies -------------


def test_concurrent_wrong_codes_get_exactly_the_limit_evaluated(transactional_db, settings, monkeypatch):
    event = Event.objects.create(name="Gala", slug="gala", access_code="Sunset-42")
    settings.CODE_ATTEMPTS_PER_ADDRESS = 10
    evaluated, lock = [], threading.Lock()
    real = access.code_matches

    def counting(*args, **kwargs):
        with lock:
            evaluated.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(access, "code_matches", counting)
    url = reverse("gallery:event", args=[event.slug])
    barrier = threading.Barrier(8)

    def attempt(n: int) -> int:
        if n < 8:
            barrier.wait()
        return Client().post(url, {"code": f"guess-{n}"}).status_code  # a fresh session each time

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(attempt, range(40)))
    assert len(evaluated) == 10
    assert statuses.count(400) == 10 and statuses.count(429) == 30


def test_the_right_code_gets_through_when_a_neighbour_is_limited(event, settings):
    event.access_code = "Sunset-42"
    event.save()
    settings.CODE_ATTEMPTS = 3
    url = reverse("gallery:event", args=[event.slug])
    guesser = Client()
    assert [guesser.post(url, {"code": f"g{n}"}).status_code for n in range(4)] == [400, 400, 400, 429]
    # Same address (a venue's Wi-Fi), another person: the code works.
    assert Client().post(url, {"code": "Sunset-42"}).status_code == 302


def test_right_codes_do_not_count(event, settings):
    event.access_code = "Sunset-42"
    event.save()
    settings.CODE_ATTEMPTS_PER_ADDRESS = 3
    url = reverse("gallery:event", args=[event.slug])
    assert [Client().post(url, {"code": "Sunset-42"}).status_code for _ in range(6)] == [302] * 6


def test_rotating_x_forwarded_for_from_an_untrusted_address_is_one_client(event, settings):
    event.access_code = "Sunset-42"
    event.save()
    settings.TRUSTED_PROXIES = []
    settings.CODE_ATTEMPTS_PER_ADDRESS = 3
    url = reverse("gallery:event", args=[event.slug])
    statuses = [
        Client(HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").post(url, {"code": f"g{n}"}).status_code for n in range(5)
    ]
    assert statuses == [400, 400, 400, 429, 429]


@pytest.mark.parametrize(
    ("remote", "forwarded", "client"),
    [
        ("198.51.100.7", "203.0.113.1", "198.51.100.7"),  # not from a proxy: header ignored
        ("127.0.0.1", "203.0.113.1", "203.0.113.1"),  # from our proxy: the hop it appended
        ("127.0.0.1", "6.6.6.6, 203.0.113.1", "203.0.113.1"),  # a client-written hop is never believed
        ("127.0.0.1", "203.0.113.1, 10.0.0.2", "203.0.113.1"),  # through two trusted proxies
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", "not-an-address", "127.0.0.1"),
    ],
)
def test_client_address_behind_trusted_proxies(settings, remote, forwarded, client):
    import ipaddress

    settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert access.client_ip(request) == client


def test_behind_proxy_is_refused_with_a_pointer_to_its_replacement():
    import subprocess
    import sys

    env = {**os.environ, "BEHIND_PROXY": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup()",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode != 0 and "replaced by TRUSTED_PROXIES" in result.stderr


# --- 2. A private link after the event code changed ------------------------------------------


def test_an_old_private_link_does_not_unlock_the_event_under_a_new_code(event, run_jobs):
    event.access_code = "Sunset-42"
    event.save()
    owner = Client()
    owner.post(reverse("gallery:event", args=[event.slug]), {"code": "Sunset-42"})
    with run_jobs():
        post_selfie(owner, event, jpeg_bytes())
    token = Attendee.objects.get().token
    event.access_code = "Moonrise-7"
    event.save()

    holder = Client()
    response = holder.get(reverse("gallery:me_resume", args=[event.slug, token]))
    assert holder.get(response["Location"], follow=True).redirect_chain[-1][0] == f"/e/{event.slug}/"
    assert post_selfie(holder, event, jpeg_bytes()).status_code == 404  # cannot upload any face
    assert holder.get(reverse("gallery:me_status", args=[event.slug])).status_code == 404
    # With the new code, the link's own photos show again (README, "Private links").
    holder.post(reverse("gallery:event", args=[event.slug]), {"code": "Moonrise-7"})
    assert holder.get(reverse("gallery:me_status", args=[event.slug])).json()["state"] == "done"


def test_a_private_link_made_under_the_current_code_still_opens_the_event(event, run_jobs):
    event.access_code = "Sunset-42"
    event.save()
    owner = Client()
    owner.post(reverse("gallery:event", args=[event.slug]), {"code": "Sunset-42"})
    with run_jobs():
        post_selfie(owner, event, jpeg_bytes())
    other_device = Client()
    other_device.get(reverse("gallery:me_resume", args=[event.slug, Attendee.objects.get().token]))
    assert other_device.get(reverse("gallery:me", args=[event.slug])).status_code == 200


# --- 11. Smaller ones -------------------------------------------------------------------------


def test_too_many_files_in_one_admin_upload_is_a_clear_message(admin_client, event, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    files = [upload(f"{n}.jpg", jpeg_bytes((n, n, n))) for n in range(4)]
    response = admin_client.post(reverse("admin:gallery_event_upload", args=[event.pk]), {"files": files})
    assert response.status_code == 400
    assert b"More than 3 files in one upload" in response.content and b"import_photos" in response.content


def test_a_truncated_zip_is_not_read_as_the_zip_stored_inside_it(event):
    data = hostile.zip_truncated_holding_a_zip()
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["smuggled.jpg"]  # what zipfile alone sees
    summary = services.upload_import(event=event, name="cut.zip", fileobj=io.BytesIO(data))
    assert [(name, str(reason)) for name, reason in summary.rejected] == [
        ("cut.zip", "not a valid zip archive (truncated, or not a zip from its start)")
    ]
    assert not Photo.objects.exists()


def test_import_photos_on_a_fifo_is_a_rejection_not_a_hang(event, tmp_path, capsys):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)

    def hung(*args):
        raise AssertionError("import_photos blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        call_command("import_photos", event.slug, str(fifo))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "pipe.jpg: not a regular file" in capsys.readouterr().err


def test_zip_members_with_windows_traversal_names_are_imported_by_their_base_name(event, run_jobs):
    data = hostile._zip({"..\\..\\evil.jpg": jpeg_bytes((9, 200, 9)), "..\\.hidden.jpg": jpeg_bytes((1, 2, 250))})
    with run_jobs():
        summary = services.upload_import(event=event, name="win.zip", fileobj=io.BytesIO(data))
    assert list(Photo.objects.values_list("original_name", flat=True)) == ["evil.jpg"]
    assert summary.seen == 1  # the hidden file is junk, as "../.hidden.jpg" would be


# --- 1. A killed worker's photo or selfie never stays claimed ---------------------------------


def test_a_job_delivered_again_after_q_retry_finishes_its_dead_deliverys_work(event, settings, run_jobs):
    """The ORM broker delivers an unanswered job again Q_RETRY after it FETCHED it; the
    dead delivery claimed the row a moment later, so the claim is slightly younger."""
    from datetime import timedelta

    from django.utils import timezone

    from matching import services as matching_services

    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 300, "retry": 360}
    services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    photo = Photo.objects.get()
    claimed = timezone.now() - timedelta(seconds=360 - 1.3)
    Photo.objects.filter(pk=photo.pk).update(index_state=Photo.State.PROCESSING, claimed_at=claimed)
    assert matching_services.photo_index(photo_id=photo.pk) == "indexed"

    selfie = services.selfie_create(event=event, upload=upload("me.jpg", jpeg_bytes()), consent=True)
    Selfie.objects.filter(pk=selfie.pk).update(match_state=Selfie.State.MATCHING, claimed_at=claimed)
    assert matching_services.selfie_match(selfie_id=selfie.pk) == "done"


def test_a_running_job_keeps_its_claim(event, settings):
    from datetime import timedelta

    from django.utils import timezone

    from matching import services as matching_services

    services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    photo = Photo.objects.get()
    recent = timezone.now() - timedelta(seconds=settings.Q_CLUSTER["timeout"] - 5)
    Photo.objects.filter(pk=photo.pk).update(index_state=Photo.State.PROCESSING, claimed_at=recent)
    assert matching_services.photo_index(photo_id=photo.pk) == "skipped"


def test_the_sweeper_is_scheduled_in_django_q(settings):
    from django_q.models import Schedule

    schedule = Schedule.objects.get(func="matching.tasks.stuck_requeue_task")
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == settings.Q_SWEEP_MINUTES
    assert schedule.repeats < 0  # for ever


def test_the_sweeper_finishes_what_killed_workers_left(event, settings, run_jobs):
    from datetime import timedelta

    from django.utils import timezone

    from matching.tasks import stuck_requeue_task

    services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    selfie = services.selfie_create(event=event, upload=upload("me.jpg", jpeg_bytes()), consent=True)
    dead = timezone.now() - timedelta(seconds=settings.Q_CLUSTER["timeout"] + 10)
    Photo.objects.update(index_state=Photo.State.PROCESSING, claimed_at=dead)
    Selfie.objects.update(match_state=Selfie.State.MATCHING, claimed_at=dead)
    with run_jobs():
        assert stuck_requeue_task() == "requeued 1 photos, 1 selfies, 0 uploads, copies of 0 events"
    assert Photo.objects.get().index_state == Photo.State.INDEXED
    selfie.refresh_from_db()
    assert selfie.match_state == Selfie.State.DONE and selfie.matches.count() == 1


def test_production_refuses_a_retry_not_longer_than_the_timeout():
    import subprocess
    import sys

    env = {
        **os.environ,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "x" * 50,
        "DJANGO_ALLOWED_HOSTS": "example.org",
        "Q_TIMEOUT": "300",
        "Q_RETRY": "300",
    }
    code = "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup()"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent
    )
    assert result.returncode != 0 and "Q_RETRY must exceed Q_TIMEOUT" in result.stderr
