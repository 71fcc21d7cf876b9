"""A large zip is imported in batches of UPLOAD_IMPORT_BATCH files, one job each, read
from its chunks; a worker killed mid-batch loses no file and duplicates no photo."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from gallery import services
from gallery.models import Photo, Upload, UploadChunk

PHOTOS = 12
CHUNK = 64 * 1024


class Killed(BaseException):
    """The worker's process dies: nothing after this line of the job runs."""


@pytest.fixture(autouse=True)
def _small_batches(settings) -> None:
    settings.UPLOAD_CHUNK_BYTES = CHUNK
    settings.UPLOAD_IMPORT_BATCH = 5


def noisy_jpeg(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """Noise compresses badly: a few photos span several chunks."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def many_photos_zip() -> bytes:
    """PHOTOS small distinct photos and a text file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for n in range(PHOTOS):
            archive.writestr(f"party/{n:02d}.jpg", noisy_jpeg(n))
            if n == 6:
                archive.writestr("party/notes.txt", "not a photo")
    return buffer.getvalue()


def received(event, data: bytes) -> Upload:
    """An upload whose chunks have all arrived, its import queued (the job not run)."""
    upload = services.upload_create(event=event, name="big.zip", size=len(data))
    for index in range(upload.chunk_count):
        services.upload_chunk_store(upload=upload, index=index, data=data[index * CHUNK : (index + 1) * CHUNK])
    assert upload.chunk_count > 2
    return services.upload_finish(upload=upload)


def test_each_job_imports_one_batch_and_queues_the_next(event, run_jobs):
    data = many_photos_zip()
    upload = received(event, data)
    assert services.upload_process(upload_id=upload.pk) == "5 of 13 files"
    upload.refresh_from_db()
    assert (upload.state, upload.members_done, upload.members_total, upload.imported) == ("pending", 5, 13, 5)
    assert UploadChunk.objects.filter(upload=upload).count() == upload.chunk_count  # kept for the next batches
    with run_jobs():
        assert services.upload_process(upload_id=upload.pk) == "10 of 13 files"  # queues the last batch
    upload.refresh_from_db()
    assert (upload.state, upload.imported, upload.duplicates, upload.rejected) == ("done", PHOTOS, 0, 1)
    assert upload.rejections == [["big.zip:notes.txt", "not-image", {}]]
    assert Photo.objects.count() == PHOTOS and not UploadChunk.objects.exists()
    assert services.upload_process(upload_id=upload.pk) == "skipped"  # delivered again: nothing to do


def test_a_worker_killed_mid_batch_is_resumed_by_the_sweeper_without_loss_or_duplicate(event, run_jobs, monkeypatch):
    data = many_photos_zip()
    upload = received(event, data)
    services.upload_process(upload_id=upload.pk)  # the first batch: files 0-4

    imported = services.photo_import
    calls = []

    def dies_on_the_third(**kwargs: object) -> services.ImportSummary:
        calls.append(kwargs["name"])
        if len(calls) == 3:
            raise Killed
        return imported(**kwargs)

    monkeypatch.setattr(services, "photo_import", dies_on_the_third)
    with pytest.raises(Killed):
        services.upload_process(upload_id=upload.pk)  # files 5-9: two imported, then the worker dies
    monkeypatch.setattr(services, "photo_import", imported)
    upload.refresh_from_db()
    assert (upload.state, upload.members_done) == ("importing", 5) and Photo.objects.count() == 7

    # Later than Q_TIMEOUT: the sweeper finds it and queues it again.
    Upload.objects.filter(pk=upload.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
    with run_jobs():
        assert services.uploads_stuck_requeue() == 1
    upload.refresh_from_db()
    assert upload.state == "done" and upload.members_done == upload.members_total == 13
    names = sorted(Photo.objects.values_list("original_name", flat=True))
    assert names == [f"{n:02d}.jpg" for n in range(PHOTOS)]  # each photo once, none lost
    # The two the dead job had imported count as duplicates when their batch runs again.
    assert (upload.imported, upload.duplicates, upload.rejected) == (PHOTOS - 2, 2, 1)


def test_a_single_photo_upload_is_read_from_its_chunks(event, run_jobs):
    data = noisy_jpeg(99, size=(400, 300))
    upload = services.upload_create(event=event, name="one.jpg", size=len(data))
    for index in range(upload.chunk_count):
        services.upload_chunk_store(upload=upload, index=index, data=data[index * CHUNK : (index + 1) * CHUNK])
    with run_jobs():
        services.upload_finish(upload=upload)
    upload.refresh_from_db()
    assert (upload.state, upload.imported) == ("done", 1)
    with Photo.objects.get().original.open("rb") as stored:
        assert stored.read() == data  # byte for byte, across its chunks


def test_an_upload_that_cannot_be_read_back_fails_with_a_message_in_the_readers_language(event, admin_client):
    data = many_photos_zip()
    upload = received(event, data)
    UploadChunk.objects.filter(upload=upload, index=1).delete()  # its bytes are gone from the storage
    assert services.upload_process(upload_id=upload.pk) == "failed"
    upload.refresh_from_db()
    assert (upload.state, upload.rejected) == ("failed", 0)  # not the file's fault: no member is rejected for it
    url = reverse("admin:gallery_upload_change", args=[upload.pk])
    assert "could not be read back" in admin_client.get(url).content.decode()
    french = admin_client.get(url, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "n\u2019a pas pu être relu" in french
    status = admin_client.get(reverse("admin:gallery_upload_status", args=[upload.pk]), HTTP_ACCEPT_LANGUAGE="fr")
    assert "n\u2019a pas pu être relu" in status.json()["message"]
