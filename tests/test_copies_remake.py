"""Making a photo's served copies again (to blur an opted-out face) is crash-safe: whatever
step fails, the row names copies that exist, and the next run leaves exactly the row's copies.

Fake engine: one face in the middle of the photo, marked opted out by hand.
"""

from __future__ import annotations

import io
import posixpath

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from gallery import jobs
from gallery import services as gallery_services
from gallery.models import Face, Photo
from matching import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def photo(event, run_jobs) -> Photo:
    noisy = Image.fromarray(np.random.default_rng(5).integers(60, 255, (300, 400, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    with run_jobs():
        gallery_services.photo_import(event=event, name="party.png", fileobj=io.BytesIO(buffer.getvalue()))
    photo = Photo.objects.get()
    assert photo.index_state == Photo.State.INDEXED and photo.display and photo.thumbnail
    Face.objects.update(opted_out=True)
    return photo


def stored(photo: Photo) -> set[str]:
    """The photo's served copies in the storage, whoever names them."""
    folder = posixpath.dirname(photo.display.name)
    _, files = default_storage.listdir(folder)
    return {posixpath.join(folder, name) for name in files if name.startswith(f"{photo.content_hash}-")}


def named(photo: Photo) -> set[str]:
    """The copies the photo's row names (read again from the database)."""
    return set(Photo.objects.filter(pk=photo.pk).values_list("display", "thumbnail").get())


def remake(photo: Photo) -> bool:
    return services.photo_copies_remake(photo=Photo.objects.get(pk=photo.pk))


@pytest.mark.parametrize("step", ["display", "thumb", "switch"])
def test_a_failure_at_any_step_keeps_the_row_on_existing_copies_and_leaves_nothing(
    photo, step, monkeypatch, run_jobs
) -> None:
    before = named(photo)
    assert stored(photo) == before
    failing = True
    if step == "switch":
        # The row is updated, then the old copies' deletion is queued: a failure there
        # rolls the update back.
        queue = jobs.enqueue_files_delete

        def enqueue(names: list[str]) -> None:
            if failing:
                raise OSError("broker gone")
            queue(names)

        monkeypatch.setattr(jobs, "enqueue_files_delete", enqueue)
    else:
        save = default_storage.save

        def storage_save(name: str, content: object, max_length: int | None = None) -> str:
            if failing and name.endswith(f"-{step}.jpg"):
                raise OSError("disk full")
            return save(name, content, max_length=max_length)

        monkeypatch.setattr(default_storage, "save", storage_save)

    with run_jobs(), pytest.raises(OSError):
        remake(photo)
    assert named(photo) == before == stored(photo)  # nothing lost, nothing left over

    failing = False
    with run_jobs():
        assert remake(photo)
    after = named(photo)
    assert after.isdisjoint(before) and stored(photo) == after


def test_the_run_after_a_killed_one_deletes_the_copies_it_left(photo, monkeypatch, run_jobs) -> None:
    before = named(photo)
    # Killed after the switch committed, before the old copies' deletion was queued.
    queue = jobs.enqueue_files_delete
    monkeypatch.setattr(jobs, "enqueue_files_delete", lambda names: None)
    with run_jobs():
        assert remake(photo)
    monkeypatch.setattr(jobs, "enqueue_files_delete", queue)
    switched = named(photo)
    assert stored(photo) == before | switched
    # Killed after writing new copies, before the switch: copies nobody names.
    folder = posixpath.dirname(photo.display.name)
    for suffix in ("display", "thumb"):
        default_storage.save(posixpath.join(folder, f"{photo.content_hash}-dead0000-{suffix}.jpg"), ContentFile(b"x"))
    assert len(stored(photo)) == 6

    with run_jobs():
        assert remake(photo)
    assert stored(photo) == named(photo) and named(photo).isdisjoint(before | switched)


def test_a_run_on_stale_copies_writes_nothing(photo, run_jobs) -> None:
    stale = Photo.objects.get(pk=photo.pk)
    with run_jobs():
        assert remake(photo)  # another run switched the copies meanwhile
    current = named(photo)
    assert not services.photo_copies_remake(photo=stale)
    assert named(photo) == current == stored(photo)
