"""Nearest-face search over stored embeddings, one numpy matrix per event.

A selfie is compared with every indexed face of its event in one vectorised
distance computation. The matrix is cached per worker process and rebuilt when
the event's indexed photos change: a photo's faces are replaced in the same
transaction that sets its index state, face count and indexed_at, and reindexing
or deleting a photo changes the count, so (photos, faces, last indexed_at) read
from the Photo rows is a cheap change signal that never reads the Face rows.
indexed_at comes from the database's clock: a worker whose clock runs behind
cannot leave the last one unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings
from django.db.models import Count, Max, Sum

from gallery.models import Face, Photo, Selfie

if TYPE_CHECKING:
    from numpy.typing import NDArray

# (event, engine) -> (version, photo id per face, faces x dims matrix, squared norm per face),
# least recently used first. Bounded by the bytes of its arrays (FACE_CACHE_MAX_BYTES), not
# by a count of events: one event of 300k faces weighs as much as 300 events of 1k faces.
_cache: OrderedDict[tuple[int, str], tuple[tuple, NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]] = (
    OrderedDict()
)
_cache_lock = Lock()


def _entry_bytes(entry: tuple) -> int:
    return sum(array.nbytes for array in entry[1:])


def cache_bytes() -> int:
    """Bytes held by this process's face-matrix cache (the arrays, not Python overhead)."""
    with _cache_lock:
        return sum(_entry_bytes(entry) for entry in _cache.values())


def _cache_store(key: tuple[int, str], entry: tuple) -> None:
    """Keep entry, evicting the least recently used events until the cache fits its byte budget.

    An event larger than the whole budget is not kept (every search rebuilds it): the
    budget is a promise about the worker's memory, not a hint.
    """
    limit = settings.FACE_CACHE_MAX_BYTES
    with _cache_lock:
        _cache.pop(key, None)  # the stale version of this event, if any
        if _entry_bytes(entry) <= limit:
            _cache[key] = entry
        total = sum(_entry_bytes(cached) for cached in _cache.values())
        while total > limit:
            _, evicted = _cache.popitem(last=False)
            total -= _entry_bytes(evicted)


def _event_faces(event_id: int, engine: str):
    return Face.objects.filter(photo__event_id=event_id).of_indexed_photos().embedded(engine=engine)


def _matrix(embeddings: list[bytes]) -> NDArray[np.float32]:
    """Stored float32 embeddings as one rows x dims matrix.

    One copy of the joined bytes: several times faster than np.stack of one array per row.
    """
    if not embeddings:
        return np.empty((0, 128), dtype=np.float32)
    return np.frombuffer(b"".join(embeddings), dtype=np.float32).reshape(len(embeddings), -1)


def _event_version(event_id: int) -> tuple:
    # The (event, index_state) index of Photo answers this without touching the
    # Face rows, whose embeddings make a scan of them slow (~100 ms at 300k faces).
    photos = Photo.objects.filter(event_id=event_id).indexed()
    return tuple(photos.aggregate(n=Count("id"), faces=Sum("face_count"), last=Max("indexed_at")).values())


def _event_index(event_id: int, engine: str) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]:
    """(photo id per face, faces x dims matrix, squared norm per face), cached per process."""
    version = _event_version(event_id)
    key = (event_id, engine)
    with _cache_lock:
        cached = _cache.get(key)
        if cached and cached[0] == version:
            _cache.move_to_end(key)
            return cached[1], cached[2], cached[3]
    rows = list(_event_faces(event_id, engine).values_list("photo_id", "embedding"))
    photo_ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    matrix = _matrix([row[1] for row in rows])
    norms = np.einsum("ij,ij->i", matrix, matrix)
    _cache_store(key, (version, photo_ids, matrix, norms))
    return photo_ids, matrix, norms


def _best_per_key(keys: NDArray[np.int64], distances: NDArray[np.floating], tolerance: float) -> dict[int, float]:
    """Smallest distance per key, for distances within tolerance."""
    hits = distances <= tolerance
    best: dict[int, float] = {}
    # Only the hits are visited here, a handful per selfie.
    for key, distance in zip(keys[hits].tolist(), distances[hits].tolist(), strict=True):
        if key not in best or distance < best[key]:
            best[key] = round(distance, 6)
    return best


def photos_near(*, event_id: int, engine: str, probe: np.ndarray, tolerance: float | None = None) -> dict[int, float]:
    """Photo id -> best distance for every photo with a face near the probe."""
    tolerance = settings.FACE_TOLERANCE if tolerance is None else tolerance
    photo_ids, matrix, norms = _event_index(event_id, engine)
    if not len(photo_ids):
        return {}
    probe = probe.astype(np.float32)
    # |m - p|^2 = |m|^2 - 2 m.p + |p|^2: one matrix-vector product and no faces x dims
    # temporary (matrix - probe), ~10x faster than np.linalg.norm at 100k+ faces.
    squared = norms - 2 * (matrix @ probe) + probe.dot(probe)
    distances = np.sqrt(np.maximum(squared, 0, out=squared), out=squared)
    return _best_per_key(photo_ids, distances, tolerance)


def selfies_near(*, photo: Photo, engine: str, tolerance: float | None = None) -> dict[int, float]:
    """Selfie id -> best distance, for the event's enrolled selfies seen in this photo."""
    tolerance = settings.FACE_TOLERANCE if tolerance is None else tolerance
    faces = _matrix(list(photo.faces.embedded(engine=engine).values_list("embedding", flat=True)))
    selfies = list(
        Selfie.objects.filter(event_id=photo.event_id).embedded(engine=engine).values_list("id", "embedding")
    )
    if not len(faces) or not selfies:
        return {}
    selfie_ids = np.array([row[0] for row in selfies], dtype=np.int64)
    selfie_matrix = _matrix([row[1] for row in selfies])
    # faces x selfies distances, then the best face for each selfie.
    distances = np.linalg.norm(faces[:, None, :] - selfie_matrix[None, :, :], axis=2).min(axis=0)
    return _best_per_key(selfie_ids, distances, tolerance)
