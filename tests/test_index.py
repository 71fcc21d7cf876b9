"""The per-process face matrix: searched as one matrix, rebuilt when the event's photos change."""

from __future__ import annotations

import io

import numpy as np
import pytest

from gallery import services
from gallery.models import Photo
from matching import index
from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.django_db

RED = (200, 40, 40)


def _probe() -> np.ndarray:
    from PIL import Image

    from matching.engines import get_engine

    return get_engine().detect(Image.open(io.BytesIO(jpeg_bytes(RED))).convert("RGB"))[0].embedding


def test_the_cached_matrix_follows_imports_reindexing_and_deletions(event, run_jobs):
    def near() -> set[str]:
        found = index.photos_near(event_id=event.pk, engine="fake", probe=_probe())
        return set(Photo.objects.filter(pk__in=found).values_list("original_name", flat=True))

    with run_jobs():
        services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes(RED, size=(60, 40))))
    assert near() == {"a.jpg"}
    with run_jobs():
        services.photo_import(event=event, name="b.jpg", fileobj=io.BytesIO(jpeg_bytes(RED, size=(61, 40))))
    assert near() == {"a.jpg", "b.jpg"}  # a new photo invalidates the cache
    Photo.objects.filter(original_name="a.jpg").update(index_state=Photo.State.PENDING)
    assert near() == {"b.jpg"}  # being reindexed: not searchable meanwhile
    with run_jobs():
        Photo.objects.get(original_name="b.jpg").delete()
    assert near() == set()


def test_distances_are_the_euclidean_best_per_photo(event):
    from gallery.models import Face

    rng = np.random.default_rng(7)
    vectors = (rng.normal(size=(40, 128)) * 0.05).astype(np.float32)
    photos = [
        Photo.objects.create(event=event, original_name=f"{n}.jpg", content_hash=f"{n:064d}", index_state="indexed")
        for n in range(10)
    ]
    Face.objects.bulk_create(
        Face(photo=photos[n % 10], left=0, top=0, width=1, height=1, embedding=v.tobytes(), engine="fake")
        for n, v in enumerate(vectors)
    )
    probe = vectors[3] + 0.01
    found = index.photos_near(event_id=event.pk, engine="fake", probe=probe, tolerance=10)
    plain = np.linalg.norm(vectors - probe, axis=1)
    expected = {photos[p].pk: min(plain[n] for n in range(40) if n % 10 == p) for p in range(10)}
    assert found.keys() == expected.keys()
    for pk, distance in found.items():
        assert distance == pytest.approx(expected[pk], abs=1e-4)
    tight = index.photos_near(event_id=event.pk, engine="fake", probe=probe, tolerance=0.2)
    assert set(tight) == {pk for pk, d in expected.items() if d <= 0.2} and photos[3].pk in tight


def _event_with_faces(name: str, faces: int) -> tuple[int, np.ndarray]:
    from gallery.models import Event, Face

    event = Event.objects.create(name=name, slug=name)
    photo = Photo.objects.create(event=event, original_name=f"{name}.jpg", content_hash=name.ljust(64, "0"))
    vectors = np.random.default_rng(len(name)).normal(size=(faces, 128)).astype(np.float32)
    Face.objects.bulk_create(
        Face(photo=photo, left=0, top=0, width=1, height=1, embedding=v.tobytes(), engine="fake") for v in vectors
    )
    # Indexed only now, as the index job does: its faces and state change together.
    Photo.objects.filter(pk=photo.pk).update(index_state="indexed", face_count=faces)
    return event.pk, vectors[0]


def test_the_cache_is_bounded_by_bytes_least_recently_searched_first(settings):
    per_face = 128 * 4 + 8 + 4 + 4 + 4  # embedding, photo id, squared norm, face size and sharpness
    small = [_event_with_faces(f"small{n}", 10) for n in range(3)]
    big_id, big_probe = _event_with_faces("big", 40)
    settings.FACE_CACHE_MAX_BYTES = 25 * per_face  # two small events, never the big one
    index._cache.clear()

    def search(event_id: int, probe: np.ndarray) -> None:
        assert index.photos_near(event_id=event_id, engine="fake", probe=probe, tolerance=0.01)

    search(*small[0])
    search(*small[1])
    assert index.cache_bytes() == 20 * per_face
    search(*small[0])  # now the most recently used
    search(*small[2])  # over budget: small1, the least recently used, goes
    assert {key[0] for key in index._cache} == {small[0][0], small[2][0]}
    assert index.cache_bytes() == 20 * per_face

    search(big_id, big_probe)  # larger than the whole budget: answered, not kept
    assert big_id not in {key[0] for key in index._cache}
    assert index.cache_bytes() <= settings.FACE_CACHE_MAX_BYTES

    settings.FACE_CACHE_MAX_BYTES = 0
    search(*small[1])
    assert index.cache_bytes() == 0  # a lowered budget applies at the next search
