"""Which attendee owns which photo face: pure decisions on embeddings (numpy, no database).

One fixed threshold on selfie-to-face distances shows a stranger's photo as soon
as two people's distances overlap (on real sets they do: true pairs up to ~0.61,
false pairs from ~0.56). The event knows more than one selfie does, so the
decision is made at the event level, with four rules:

1. **Identities.** Selfies of the same attendee, or closer to each other than
   `merge_distance` (two devices, a retake), are one identity: they share faces.
2. **One person per face.** A face goes to its nearest identity only, never to
   every selfie within tolerance. Exact ties go to the older identity (the one
   whose first selfie came first), so a new selfie takes a face over only when it
   is strictly nearer.
3. **Quality gate.** Tiny or blurred faces give noisy embeddings: they are still
   indexed, but accepted only within the stricter `low_quality_tolerance`.
4. **Query expansion.** An identity's faces matched within `probe_distance` (and
   of good quality) become extra probes: a face of another photo close to one of
   them (`expansion_tolerance`) is accepted too, which finds side views and
   glasses through the attendee's own photos. Expansion only relaxes the
   threshold for a face's *nearest* identity, so it never gives a face to anyone
   rule 2 would not; it runs once (no chains of probes).

Everything here works on arrays indexed by position; callers map positions to
database ids. Selfies must be given oldest first (rule 2's tie-break).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

# Distances are compared after rounding, so that two computations of the same
# distance (matrix product vs. difference norm) never break a tie differently.
DECIMALS = 6
# Cumulative: each strategy adds one rule to the one before.
_BLOCK = 1024
STRATEGIES = ("single", "one-per-face", "expansion", "quality-gate")


@dataclass(frozen=True)
class Rules:
    """The thresholds of one decision; `strategy` names a cumulative set of rules."""

    tolerance: float = 0.6
    # Selfies closer than this are one identity (same person, another shot).
    merge_distance: float = 0.4
    # Faces smaller than this (shorter box side, pixels of the photo) or less sharp
    # than this are "low quality" and need low_quality_tolerance.
    min_face_size: int = 0
    min_sharpness: float = 0.0
    low_quality_tolerance: float = 0.5
    # Matched faces this close to the identity's selfie become probes...
    probe_distance: float = 0.4
    # ...and faces this close to a probe are matched as well.
    expansion_tolerance: float = 0.4
    # At most this many probes per identity (the most confident), bounding the cost.
    max_probes: int = 32
    one_per_face: bool = True
    expansion: bool = True
    quality_gate: bool = True

    def strategy(self, name: str) -> Rules:
        """These thresholds with the rules of a named strategy (each adds one rule)."""
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}")
        level = STRATEGIES.index(name)
        return replace(self, one_per_face=level >= 1, expansion=level >= 2, quality_gate=level >= 3)


def distances(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Euclidean distances, len(a) x len(b), rounded to DECIMALS."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    squared = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return np.round(np.sqrt(np.maximum(squared, 0)), DECIMALS)


def identities(
    selfies: NDArray[np.floating],
    *,
    merge_distance: float,
    same_person: list[object] | None = None,
    known: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """Identity of each selfie: the position of the oldest selfie of its group.

    Selfies closer than merge_distance, or sharing a non-None `same_person` key
    (one attendee's selfies), are one identity; groups are transitive.

    `known`: what this function answered for the first len(known) of these same
    selfies (same merge distance). Only the pairs with a later selfie are then
    compared: the groups of the earlier ones can only grow by those pairs.
    """
    count = len(selfies)
    done = 0 if known is None else len(known)
    # A known label is its group's root (the group's oldest selfie).
    parent = (known.tolist() if known is not None else []) + list(range(done, count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)  # the oldest selfie names the identity

    if merge_distance > 0 and count > 1:
        # In blocks of rows: memory stays bounded at thousands of selfies.
        for start in range(done, count, _BLOCK):
            close = distances(selfies[start : start + _BLOCK], selfies) < merge_distance
            for i, j in zip(*np.nonzero(close), strict=True):
                # Each pair once: from its later selfie when that one is new.
                if start + i < j or j < done:
                    union(int(start + i), int(j))
    if same_person is not None:
        first: dict[object, int] = {}
        for i, key in enumerate(same_person):
            if key is not None:
                union(first.setdefault(key, i), i)
    return np.array([root(i) for i in range(count)], dtype=np.int64)


def low_quality(sizes: NDArray[np.integer], sharpness: NDArray[np.floating], rules: Rules) -> NDArray[np.bool_]:
    """Faces too small or too blurred to be trusted at the normal tolerance.

    A negative value means "not measured" (faces indexed before quality was
    recorded): such faces count as good, as they always did.
    """
    sizes = np.asarray(sizes)
    sharpness = np.asarray(sharpness, dtype=np.float64)
    return ((sizes >= 0) & (sizes < rules.min_face_size)) | ((sharpness >= 0) & (sharpness < rules.min_sharpness))


@dataclass(frozen=True)
class Decision:
    """Per face: owning identity (-1 for nobody), its distance, and whether expansion found it."""

    owner: NDArray[np.int64]
    distance: NDArray[np.float64]
    expanded: NDArray[np.bool_]

    def photos(self, identity: int, face_photos: NDArray[np.int64]) -> dict[int, float]:
        """Photo -> smallest distance of the faces this identity owns in it."""
        best: dict[int, float] = {}
        for i in np.nonzero(self.owner == identity)[0].tolist():
            photo, d = int(face_photos[i]), float(self.distance[i])
            if photo not in best or d < best[photo]:
                best[photo] = d
        return best


def decide(
    *,
    faces: NDArray[np.floating],
    face_photos: NDArray[np.int64],
    selfies: NDArray[np.floating],
    selfie_identity: NDArray[np.int64],
    rules: Rules,
    face_low_quality: NDArray[np.bool_] | None = None,
) -> Decision:
    """Who owns each face, with rules one-per-face, quality gate and expansion as configured.

    With `one_per_face` off (the single-threshold baseline) a face can belong to
    several identities; use `single_threshold` for that case instead.
    """
    count = len(faces)
    owner = np.full(count, -1, dtype=np.int64)
    distance = np.full(count, np.inf)
    expanded = np.zeros(count, dtype=bool)
    if not count or not len(selfies):
        return Decision(owner, distance, expanded)
    weak = np.zeros(count, dtype=bool) if face_low_quality is None or not rules.quality_gate else face_low_quality
    nearest, nearest_distance = nearest_identity(distances(faces, selfies), selfie_identity)
    tolerance = np.where(weak, min(rules.low_quality_tolerance, rules.tolerance), rules.tolerance)
    direct = nearest_distance <= tolerance
    owner[direct] = nearest[direct]
    distance[direct] = nearest_distance[direct]
    if rules.expansion:
        _expand(
            faces=faces,
            face_photos=face_photos,
            nearest=nearest,
            nearest_distance=nearest_distance,
            weak=weak,
            rules=rules,
            owner=owner,
            distance=distance,
            expanded=expanded,
        )
    return Decision(owner, distance, expanded)


def nearest_identity(
    face_selfie: NDArray[np.float64], selfie_identity: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Per face (row): the nearest identity and its distance; ties go to the smaller identity."""
    # Columns in identity order: argmin takes the first of equal minima, i.e. the older identity.
    order = np.argsort(selfie_identity, kind="stable")
    best = np.argmin(face_selfie[:, order], axis=1)
    rows = np.arange(len(face_selfie))
    return selfie_identity[order][best], face_selfie[:, order][rows, best]


def _expand(
    *,
    faces: NDArray[np.floating],
    face_photos: NDArray[np.int64],
    nearest: NDArray[np.int64],
    nearest_distance: NDArray[np.float64],
    weak: NDArray[np.bool_],
    rules: Rules,
    owner: NDArray[np.int64],
    distance: NDArray[np.float64],
    expanded: NDArray[np.bool_],
) -> None:
    """Rule 4, in place: accept unowned faces close to a probe of their nearest identity."""
    direct_owner = owner.copy()
    for identity in np.unique(direct_owner[direct_owner >= 0]).tolist():
        mine = direct_owner == identity
        probes = np.nonzero(mine & (nearest_distance <= rules.probe_distance) & ~weak)[0]
        if not len(probes):
            continue
        probes = probes[np.argsort(nearest_distance[probes], kind="stable")[: rules.max_probes]]
        # The identity's own photos gain nothing, and another face in one of them is
        # somebody else (a person appears once per photo).
        owned_photos = np.unique(face_photos[mine])
        candidates = np.nonzero((direct_owner < 0) & (nearest == identity) & ~np.isin(face_photos, owned_photos))[0]
        if not len(candidates):
            continue
        reach = distances(faces[candidates], faces[probes]).min(axis=1)
        limit = np.where(
            weak[candidates], min(rules.expansion_tolerance, rules.low_quality_tolerance), rules.expansion_tolerance
        )
        accepted = candidates[reach <= limit]
        owner[accepted] = identity
        # The face's own distance to the identity is what a person reads; the
        # probe distance only decided it.
        distance[accepted] = nearest_distance[accepted]
        expanded[accepted] = True


def single_threshold(
    *, faces: NDArray[np.floating], face_photos: NDArray[np.int64], selfies: NDArray[np.floating], tolerance: float
) -> list[dict[int, float]]:
    """The baseline: per selfie, every photo with a face within tolerance (photo -> best distance)."""
    result: list[dict[int, float]] = [{} for _ in range(len(selfies))]
    if not len(faces) or not len(selfies):
        return result
    table = distances(faces, selfies)
    for face, selfie in zip(*np.nonzero(table <= tolerance), strict=True):
        photo, d = int(face_photos[face]), float(table[face, selfie])
        if photo not in result[selfie] or d < result[selfie][photo]:
            result[selfie][photo] = d
    return result


def selfie_photos(
    *,
    faces: NDArray[np.floating],
    face_photos: NDArray[np.int64],
    selfies: NDArray[np.floating],
    rules: Rules,
    face_low_quality: NDArray[np.bool_] | None = None,
    same_person: list[object] | None = None,
) -> list[dict[int, float]]:
    """Per selfie (oldest first): photo -> distance, under `rules`. The whole event at once."""
    if not rules.one_per_face:
        return single_threshold(faces=faces, face_photos=face_photos, selfies=selfies, tolerance=rules.tolerance)
    identity = identities(selfies, merge_distance=rules.merge_distance, same_person=same_person)
    decision = decide(
        faces=faces,
        face_photos=face_photos,
        selfies=selfies,
        selfie_identity=identity,
        rules=rules,
        face_low_quality=face_low_quality,
    )
    per_identity = {i: decision.photos(i, face_photos) for i in np.unique(identity).tolist()}
    return [per_identity[int(i)] for i in identity]
