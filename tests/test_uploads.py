"""Browser uploads in chunks: stored chunk by chunk, resumed after an interruption,
assembled and imported by a job that records what it did; only the event's organizers."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gallery import services
from gallery.models import Photo, Upload, UploadChunk
from tests.conftest import BIDEN_TWICE_AND_KIT, corrupt_jpeg, jpeg_bytes, sample, upload

PASSWORD = "a-long-enough-pass-phrase-42"
CHUNK = 64 * 1024


@pytest.fixture(autouse=True)
def _small_chunks(settings) -> None:
    settings.UPLOAD_CHUNK_BYTES = CHUNK
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def people(db):
    alice = services.organizer_create(username="alice", email="alice@example.org", password=PASSWORD)
    bob = services.organizer_create(username="bob", email="bob@example.org", password=PASSWORD)
    event = services.event_create(name="Alice wedding", owner=alice)
    clients = {}
    for user in (alice, bob):
        clients[user.username] = Client()
        clients[user.username].force_login(user)
    return {"event": event, **clients}


def start(client: Client, event, name: str, data: bytes) -> dict:
    response = client.post(
        reverse("admin:gallery_event_upload_create", args=[event.pk]),
        json.dumps({"name": name, "size": len(data)}),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def put(client: Client, status: dict, index: int, data: bytes, **headers: str):
    piece = data[index * status["chunk_size"] : (index + 1) * status["chunk_size"]]
    return client.put(f"{status['chunk_url']}{index}/", piece, content_type="application/octet-stream", headers=headers)


def send(client: Client, status: dict, data: bytes, run_jobs) -> dict:
    for index in range(status["chunk_count"]):
        assert put(client, status, index, data).status_code == 200
    with run_jobs():
        response = client.post(status["finish_url"])
    assert response.status_code == 200, response.content
    return client.get(status["status_url"]).json()


def zip_of(paths) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n, path in enumerate(paths):
            archive.write(path, f"photos/{n}/{path.name}")
        archive.writestr("photos/notes.txt", "not a photo")
    return buffer.getvalue()


def test_a_zip_of_real_photos_is_imported_by_the_job_with_counts(people, run_jobs):
    data = zip_of([*BIDEN_TWICE_AND_KIT, BIDEN_TWICE_AND_KIT[0]])  # one photo twice
    status = start(people["alice"], people["event"], "party.zip", data)
    assert status["chunk_count"] == -(-len(data) // CHUNK) > 3 and status["received"] == []
    done = send(people["alice"], status, data, run_jobs)
    assert (done["state"], done["imported"], done["duplicates"], done["rejected"]) == ("done", 3, 1, 1)
    assert done["rejections"][0][0] == "party.zip:notes.txt"
    assert set(people["event"].photos.values_list("original_name", flat=True)) == {p.name for p in BIDEN_TWICE_AND_KIT}
    assert not UploadChunk.objects.exists()  # the chunks are gone once imported
    page = people["alice"].get(status["page_url"]).content.decode()
    assert "party.zip:notes.txt" in page


def test_a_folder_of_loose_files_one_upload_each(people, run_jobs):
    states = []
    for path in BIDEN_TWICE_AND_KIT:
        data = path.read_bytes()
        states.append(
            send(people["alice"], start(people["alice"], people["event"], f"folder/{path.name}", data), data, run_jobs)
        )
    broken = corrupt_jpeg()
    states.append(
        send(people["alice"], start(people["alice"], people["event"], "broken.jpg", broken), broken, run_jobs)
    )
    assert [(s["state"], s["imported"]) for s in states] == [("done", 1)] * 4
    assert people["event"].photos.count() == 4
    # The broken photo is imported and fails at indexing, with its reason, like any other.
    assert Photo.objects.get(original_name="broken.jpg").index_state == Photo.State.FAILED


def test_an_interrupted_upload_resumes_from_what_arrived(people, run_jobs):
    data = sample("groups/two_people.jpg").read_bytes() + b""  # several chunks
    status = start(people["alice"], people["event"], "two_people.jpg", data)
    assert status["chunk_count"] >= 3
    for index in (0, 2):  # then the connection drops
        assert put(people["alice"], status, index, data).status_code == 200
    response = people["alice"].post(status["finish_url"])
    assert response.status_code == 409 and "have not arrived" in response.json()["error"]
    # The page is opened again (a new session even): the server says what it has.
    resumed = people["alice"].get(status["status_url"]).json()
    assert resumed["state"] == "receiving" and resumed["received"] == [0, 2]
    for index in range(resumed["chunk_count"]):
        if index not in resumed["received"]:
            assert put(people["alice"], status, index, data).status_code == 200
    assert put(people["alice"], status, 0, data).status_code == 200  # a chunk sent twice is harmless
    with run_jobs():
        assert people["alice"].post(status["finish_url"]).status_code == 200
    photo = people["event"].photos.get()
    with photo.original.open("rb") as stored:
        assert hashlib.sha256(stored.read()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_damaged_chunk_is_refused_and_nothing_else_is_lost(people, run_jobs):
    data = sample("groups/two_people.jpg").read_bytes()
    status = start(people["alice"], people["event"], "two_people.jpg", data)
    assert put(people["alice"], status, 0, data).status_code == 200
    piece = data[CHUNK : 2 * CHUNK]
    short = people["alice"].put(f"{status['chunk_url']}1/", piece[:-10], content_type="application/octet-stream")
    assert short.status_code == 400 and "send it again" in short.json()["error"]
    flipped = bytes([piece[0] ^ 0xFF]) + piece[1:]
    wrong = people["alice"].put(
        f"{status['chunk_url']}1/",
        flipped,
        content_type="application/octet-stream",
        headers={"X-Chunk-SHA256": hashlib.sha256(piece).hexdigest()},
    )
    assert wrong.status_code == 400 and "damaged" in wrong.json()["error"]
    assert people["alice"].get(status["status_url"]).json()["received"] == [0]
    assert people["alice"].put(f"{status['chunk_url']}99/", b"x").status_code == 400
    done = send(people["alice"], status, data, run_jobs)
    assert (done["state"], done["imported"]) == ("done", 1)


def test_a_corrupt_archive_is_reported_on_its_upload(people, run_jobs):
    data = zip_of(BIDEN_TWICE_AND_KIT)[:-200]  # the central directory is cut off
    done = send(people["alice"], start(people["alice"], people["event"], "cut.zip", data), data, run_jobs)
    assert (done["state"], done["imported"], done["rejected"]) == ("done", 0, 1)
    assert done["rejections"] == [["cut.zip", "not a valid zip archive"]]
    assert people["event"].photos.count() == 0


def test_the_import_job_is_taken_over_after_its_worker_died(people, run_jobs):
    data = jpeg_bytes()
    status = start(people["alice"], people["event"], "a.jpg", data)
    assert put(people["alice"], status, 0, data).status_code == 200
    Upload.objects.filter(pk=status["id"]).update(state=Upload.State.PENDING)
    upload = Upload.objects.get(pk=status["id"])
    assert Upload.objects.claim(pk=upload.pk)  # a worker took it, then died
    assert services.upload_process(upload_id=upload.pk) == "skipped"  # not while its claim is fresh
    Upload.objects.filter(pk=upload.pk).update(claimed_at=timezone.now() - timezone.timedelta(days=1))
    with run_jobs():
        assert services.upload_process(upload_id=upload.pk) == "done"
    assert services.upload_process(upload_id=upload.pk) == "skipped"  # and only once
    assert people["event"].photos.count() == 1


def test_the_sweeper_requeues_a_stale_upload_and_leaves_a_fresh_one(people, run_jobs, settings):
    from matching.tasks import stuck_requeue_task

    data = jpeg_bytes()
    uploads = []
    for name in ("stale.jpg", "fresh.jpg"):
        status = start(people["alice"], people["event"], name, data)
        assert put(people["alice"], status, 0, data).status_code == 200
        Upload.objects.filter(pk=status["id"]).update(state=Upload.State.PENDING)
        assert Upload.objects.claim(pk=status["id"])  # a worker took each, then was killed
        uploads.append(Upload.objects.get(pk=status["id"]))
    stale, fresh = uploads
    dead = timezone.now() - timezone.timedelta(seconds=settings.Q_CLUSTER["timeout"] + 10)
    Upload.objects.filter(pk=stale.pk).update(claimed_at=dead)
    with run_jobs():
        assert stuck_requeue_task() == "requeued 0 photos, 0 selfies, 1 uploads, copies of 0 events"
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.state, stale.imported) == (Upload.State.DONE, 1)
    assert fresh.state == Upload.State.IMPORTING  # its claim may still belong to a running job
    assert people["event"].photos.count() == 1


def test_only_the_events_organizers_may_upload(people, run_jobs):
    event = people["event"]
    data = jpeg_bytes()
    bob, anonymous = people["bob"], Client()
    create = reverse("admin:gallery_event_upload_create", args=[event.pk])
    body = json.dumps({"name": "x.jpg", "size": len(data)})
    assert bob.post(create, body, content_type="application/json").status_code == 404
    assert anonymous.post(create, body, content_type="application/json").status_code == 302
    status = start(people["alice"], event, "a.jpg", data)
    for client in (bob, anonymous):
        expected = 404 if client is bob else 302
        assert put(client, status, 0, data).status_code == expected
        assert client.get(status["status_url"]).status_code == expected
        assert client.post(status["finish_url"]).status_code == expected
        listing = client.get(reverse("admin:gallery_upload_changelist")).content.decode()
        assert "a.jpg" not in listing
    assert not UploadChunk.objects.exists()
    assert people["alice"].get(reverse("admin:gallery_upload_changelist")).content.decode().count("a.jpg") >= 1
    bad = people["alice"].post(create, "{not json", content_type="application/json")
    assert bad.status_code == 400
    huge = json.dumps({"name": "huge.zip", "size": 10**15})
    assert people["alice"].post(create, huge, content_type="application/json").status_code == 400


def test_deleting_an_event_removes_its_half_uploaded_chunks(people, run_jobs, settings):
    data = sample("groups/two_people.jpg").read_bytes()
    status = start(people["alice"], people["event"], "two_people.jpg", data)
    assert put(people["alice"], status, 0, data).status_code == 200
    stored = settings.MEDIA_ROOT / UploadChunk.objects.get().name
    assert stored.exists()
    with run_jobs():
        people["event"].delete()
    assert not stored.exists() and not Upload.objects.exists()


def test_an_uploads_reasons_are_read_in_the_organizers_language(people, run_jobs, settings):
    """The job records codes, not sentences: the same record reads in French or English."""
    settings.PHOTO_MAX_BYTES = 300_000
    data = make_zip_of_members(
        {
            "notes.txt": b"not a photo",
            "empty.jpg": b"",
            "big.jpg": b"\xff" * 400_000,
            "inner.zip": b"PK",
        }
    )
    done = send(people["alice"], start(people["alice"], people["event"], "mix.zip", data), data, run_jobs)
    assert (done["state"], done["rejected"]) == ("done", 4)
    stored = Upload.objects.get(pk=done["id"]).rejections
    assert {code for _, code, _ in stored} == {"not-image", "empty", "too-large", "nested-archive"}

    page_url = done["page_url"]
    french = people["alice"].get(page_url, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "mix.zip:notes.txt: Ce fichier n\u2019est pas une image" in french
    assert "mix.zip:empty.jpg: fichier vide" in french
    assert "mix.zip:inner.zip: les archives dans une archive ne sont pas importées" in french
    assert "mix.zip:big.jpg: plus de 293,0\xa0Kio" in french
    english = people["alice"].get(page_url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "mix.zip:empty.jpg: empty file" in english and "fichier vide" not in english
    status = people["alice"].get(done["status_url"], HTTP_ACCEPT_LANGUAGE="fr").json()
    assert ["mix.zip:empty.jpg", "fichier vide"] in status["rejections"]


def test_a_record_from_before_reason_codes_still_shows(people):
    record = services.upload_create(event=people["event"], name="old.zip", size=10)
    Upload.objects.filter(pk=record.pk).update(rejections=[["old.zip:a.txt", "empty file"]], rejected=1)
    page = people["alice"].get(reverse("admin:gallery_upload_change", args=[record.pk])).content.decode()
    assert "old.zip:a.txt: empty file" in page


def test_the_upload_form_without_javascript_speaks_french(people, run_jobs):
    url = reverse("admin:gallery_event_upload", args=[people["event"].pk])
    page = people["alice"].get(url, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Photos ou archives zip" in page and "Ou un dossier entier" in page
    assert "Choisissez des photos" in people["alice"].post(url, {}, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    files = [
        upload("a.jpg", jpeg_bytes((200, 0, 0))),
        upload("empty.jpg", b""),
    ]
    with run_jobs():
        response = people["alice"].post(url, {"files": files}, HTTP_ACCEPT_LANGUAGE="fr", follow=True)
    text = response.content.decode()
    assert "1 importées, 0 doublons ignorés, 1 refusées" in text
    assert "Refusé empty.jpg : fichier vide" in text


def make_zip_of_members(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()
