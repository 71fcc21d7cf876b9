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
from dataclasses import dataclass
from threading import Lock
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings
from django.db.models import Count, Max, Sum

from gallery.models import Face, Photo, Selfie
from matching import rules

if TYPE_CHECKING:
    from numpy.typing import NDArray

# (event, engine) -> (version, photo id per face, faces x dims matrix, squared norm per face,
# face size, face sharpness), least recently used first. Bounded by the bytes of its arrays (FACE_CACHE_MAX_BYTES), not
# by a count of events: one event of 300k faces weighs as much as 300 events of 1k faces.
_cache: OrderedDict[tuple[int, str], tuple] = OrderedDict()
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


@dataclass(frozen=True)
class EventFaces:
    """An event's indexed faces as arrays, one row per face."""

    photo_ids: NDArray[np.int64]
    matrix: NDArray[np.float32]  # faces x dims
    norms: NDArray[np.float32]  # squared norm per face
    # Face quality, -1 when not measured; 4 bytes each, as they stay in the cache too.
    sizes: NDArray[np.int32]  # shorter box side in px
    sharpness: NDArray[np.float32]  # matching.quality.face_sharpness

    def low_quality(self, chosen: rules.Rules) -> NDArray[np.bool_]:
        return rules.low_quality(self.sizes, self.sharpness, chosen)


def event_faces(event_id: int, engine: str) -> EventFaces:
    """The event's indexed faces with their quality, cached per process until its indexed photos change."""
    version = _event_version(event_id)
    key = (event_id, engine)
    with _cache_lock:
        cached = _cache.get(key)
        if cached and cached[0] == version:
            _cache.move_to_end(key)
            return EventFaces(*cached[1:])
    rows = list(_event_faces(event_id, engine).values_list("photo_id", "embedding", "size", "sharpness"))
    photo_ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    matrix = _matrix([row[1] for row in rows])
    faces = EventFaces(
        photo_ids=photo_ids,
        matrix=matrix,
        norms=np.einsum("ij,ij->i", matrix, matrix),
        sizes=np.fromiter((-1 if row[2] is None else row[2] for row in rows), dtype=np.int32, count=len(rows)),
        sharpness=np.fromiter((-1.0 if row[3] is None else row[3] for row in rows), dtype=np.float32, count=len(rows)),
    )
    _cache_store(key, (version, faces.photo_ids, faces.matrix, faces.norms, faces.sizes, faces.sharpness))
    return faces


def _event_index(event_id: int, engine: str) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]:
    """(photo id per face, faces x dims matrix, squared norm per face), cached per process."""
    faces = event_faces(event_id, engine)
    return faces.photo_ids, faces.matrix, faces.norms


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
    # Faces of people who opted out are nobody's: checked on the few hits only.
    hits = np.nonzero(distances <= tolerance)[0]
    if len(hits):
        hidden = opted_out_mask(matrix[hits], optout_templates(event_id, engine))
        distances[hits[hidden]] = np.inf
    return _best_per_key(photo_ids, distances, tolerance)


def selfies_near(*, photo: Photo, engine: str, tolerance: float | None = None) -> dict[int, float]:
    """Selfie id -> best distance, for the event's enrolled selfies seen in this photo."""
    tolerance = settings.FACE_TOLERANCE if tolerance is None else tolerance
    faces = _matrix(list(photo.faces.embedded(engine=engine).values_list("embedding", flat=True)))
    faces = faces[~opted_out_mask(faces, optout_templates(photo.event_id, engine))]
    selfies = list(
        Selfie.objects.filter(event_id=photo.event_id)
        .searching()
        .embedded(engine=engine)
        .values_list("id", "embedding")
    )
    if not len(faces) or not selfies:
        return {}
    selfie_ids = np.array([row[0] for row in selfies], dtype=np.int64)
    selfie_matrix = _matrix([row[1] for row in selfies])
    # faces x selfies distances, then the best face for each selfie.
    distances = np.linalg.norm(faces[:, None, :] - selfie_matrix[None, :, :], axis=2).min(axis=0)
    return _best_per_key(selfie_ids, distances, tolerance)


# --- Event-level decisions (matching.rules) on the stored embeddings ------------------

# Candidate faces are picked with float32 distances, then decided by matching.rules
# in float64: this margin keeps a face at the edge of a threshold among the candidates.
_SLACK = 1e-3


@dataclass(frozen=True)
class EventSelfies:
    """An event's enrolled selfies, oldest first, with the identity each belongs to."""

    ids: NDArray[np.int64]
    matrix: NDArray[np.float32]
    identity: NDArray[np.int64]  # per selfie: the position of its identity's oldest selfie
    # The event's opt-out templates: not identities, but every face near one is nobody's.
    optouts: NDArray[np.float32]

    def label_of(self, selfie_id: int) -> int:
        return int(self.identity[np.searchsorted(self.ids, selfie_id)])

    def members(self, label: int) -> list[int]:
        return self.ids[self.identity == label].tolist()


# (event, engine) -> the selfies of this process's last decision: merge distance, ids,
# a fingerprint of each embedding, attendees, identities. A decision then compares only
# the new selfies with the others, not every selfie with every other (1.2 s at 5,000
# selfies on this 2-core machine, see docs/accuracy.md).
_identities: OrderedDict[tuple[int, str], tuple] = OrderedDict()
_IDENTITIES_KEPT = 64


def _event_identities(
    key: tuple[int, str], ids: NDArray[np.int64], matrix: NDArray[np.float32], attendees: list[int], merge: float
) -> NDArray[np.int64]:
    """rules.identities of the event's selfies (oldest first), from the last answer when it still holds.

    It holds for the selfies still there when every group it had either stayed whole
    or was deleted whole (an attendee forgetting all their selfies): deleting part of
    a group may split it, and then all is computed again. New selfies (ids above the
    old ones) are then compared with the others.
    """
    fingerprint = matrix.sum(axis=1, dtype=np.float64)
    people = np.array(attendees, dtype=np.int64)
    with _cache_lock:
        cached = _identities.get(key)
    known = None
    if cached is not None and cached[0] == merge:
        _, old_ids, old_fingerprint, old_people, old_identity = cached
        kept = np.isin(old_ids, ids)
        count = int(kept.sum())
        if (
            np.array_equal(old_ids[kept], ids[:count])  # no selfie came in between the old ones
            and np.array_equal(old_fingerprint[kept], fingerprint[:count])  # ids are never reused: a check
            and np.array_equal(old_people[kept], people[:count])
            and not np.isin(old_identity[kept], old_identity[~kept]).any()  # groups gone whole
        ):
            # The labels (positions of each group's oldest selfie) in the new positions.
            known = np.searchsorted(ids, old_ids[old_identity[kept]])
    identity = rules.identities(matrix, merge_distance=merge, same_person=attendees, known=known)
    with _cache_lock:
        _identities[key] = (merge, ids, fingerprint, people, identity)
        _identities.move_to_end(key)
        while len(_identities) > _IDENTITIES_KEPT:
            _identities.popitem(last=False)
    return identity


def event_selfies(event_id: int, engine: str, chosen: rules.Rules) -> EventSelfies:
    rows = list(
        Selfie.objects.filter(event_id=event_id)
        .searching()  # an opt-out is no identity that finds photos: it only takes faces away
        .embedded(engine=engine)
        .order_by("id")
        .values_list("id", "embedding", "attendee_id")
    )
    ids = np.array([row[0] for row in rows], dtype=np.int64)
    matrix = _matrix([row[1] for row in rows])
    # One attendee's selfies are one identity, as are selfies of one face taken twice.
    attendees = [row[2] for row in rows]
    return EventSelfies(
        ids=ids,
        matrix=matrix,
        identity=_event_identities((event_id, engine), ids, matrix, attendees, chosen.merge_distance),
        optouts=optout_templates(event_id, engine),
    )


def _face_distances(faces: EventFaces, probes: NDArray[np.floating]) -> NDArray[np.float32]:
    """faces x probes distances, by the same expansion as photos_near."""
    probes = np.asarray(probes, dtype=np.float32)
    squared = faces.norms[:, None] - 2 * (faces.matrix @ probes.T) + np.einsum("ij,ij->i", probes, probes)[None, :]
    return np.sqrt(np.maximum(squared, 0, out=squared), out=squared)


def identity_photos(*, faces: EventFaces, selfies: EventSelfies, label: int, chosen: rules.Rules) -> dict[int, float]:
    """Photo id -> distance for one identity: what matching.rules decides on the whole
    event, computed on the few faces that can concern it.

    Only faces within tolerance of the identity can be its own; expansion reaches
    faces within expansion_tolerance of a probe, itself within probe_distance, so
    (triangle inequality) never beyond their sum. Those candidates are then decided
    against every selfie of the event.
    """
    if not len(faces.photo_ids):
        return {}
    near = _face_distances(faces, selfies.matrix[selfies.identity == label]).min(axis=1)
    candidates = near <= chosen.tolerance + _SLACK
    if chosen.expansion:
        probe_like = np.nonzero(near <= chosen.probe_distance + _SLACK)[0]
        reach = chosen.probe_distance + chosen.expansion_tolerance + _SLACK
        far = np.nonzero(~candidates & (near <= reach))[0]
        if len(probe_like) and len(far):
            close = rules.distances(faces.matrix[far], faces.matrix[probe_like]).min(axis=1)
            candidates[far[close <= chosen.expansion_tolerance + _SLACK]] = True
    # An opt-out wins its faces: they are nobody's, not even a probe for expansion.
    candidates[candidates] &= ~opted_out_mask(faces.matrix[candidates], selfies.optouts, tolerance=chosen.tolerance)
    subset = np.nonzero(candidates)[0]
    decision = rules.decide(
        faces=faces.matrix[subset],
        face_photos=faces.photo_ids[subset],
        selfies=selfies.matrix,
        selfie_identity=selfies.identity,
        rules=chosen,
        face_low_quality=faces.low_quality(chosen)[subset],
    )
    return decision.photos(label, faces.photo_ids[subset])


def photo_owners(*, photo_id: int, engine: str, selfies: EventSelfies, chosen: rules.Rules) -> set[int]:
    """Identities that may own a face of this photo: each face's nearest, if close enough to matter."""
    faces = _matrix(
        list(Face.objects.filter(photo_id=photo_id).embedded(engine=engine).values_list("embedding", flat=True))
    )
    faces = faces[~opted_out_mask(faces, selfies.optouts, tolerance=chosen.tolerance)]
    if not len(faces) or not len(selfies.ids):
        return set()
    nearest, distance = rules.nearest_identity(rules.distances(faces, selfies.matrix), selfies.identity)
    # An expanded face lies within probe_distance + expansion_tolerance of its identity.
    reach = max(chosen.tolerance, chosen.probe_distance + chosen.expansion_tolerance if chosen.expansion else 0)
    return {int(label) for label, d in zip(nearest, distance, strict=True) if d <= reach + _SLACK}


# --- Opt-outs: an opted-out person's faces are nobody's ---------------------------


def optout_templates(event_id: int, engine: str) -> NDArray[np.float32]:
    """The event's opt-out templates (one row per opted-out person), used for nothing else."""
    rows = Selfie.objects.filter(event_id=event_id).optouts().embedded(engine=engine)
    return _matrix(list(rows.values_list("embedding", flat=True)))


def opted_out_mask(
    faces: NDArray[np.floating], templates: NDArray[np.floating], *, tolerance: float | None = None
) -> NDArray[np.bool_]:
    """Per face: does it belong to an opted-out person?

    An opt-out wins its faces: any face within tolerance of a template (the event's
    or FACE_TOLERANCE, whichever is larger) is theirs, even when an attendee's selfie is nearer (otherwise a selfie made
    from the photo itself would take the face back). A look-alike attendee may
    lose a photo: the price of never showing someone who said no.
    """
    if not len(faces) or not len(templates):
        return np.zeros(len(faces), dtype=bool)
    # The larger of the event's tolerance and the server's: a stricter event never shows more.
    tolerance = max(settings.FACE_TOLERANCE, tolerance or 0)
    distances = np.linalg.norm(faces[:, None, :] - templates[None, :, :], axis=2).min(axis=1)
    return distances <= tolerance
