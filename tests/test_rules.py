"""The matching rules on hand-made embeddings: each rule, its ties and its limits."""

from __future__ import annotations

import numpy as np
import pytest

from matching import rules

DIMS = 8


def at(*coords: float) -> np.ndarray:
    """A point in embedding space: the given leading coordinates, zeros after."""
    vector = np.zeros(DIMS)
    vector[: len(coords)] = coords
    return vector


def stack(*vectors: np.ndarray) -> np.ndarray:
    return np.array(vectors, dtype=np.float32)


BASE = rules.Rules(
    tolerance=0.6,
    merge_distance=0.4,
    low_quality_tolerance=0.45,
    probe_distance=0.3,
    expansion_tolerance=0.35,
    min_face_size=40,
    min_sharpness=0.1,
)


def photos_of(result: list[dict[int, float]]) -> list[set[int]]:
    return [set(found) for found in result]


# --- Distances and the baseline --------------------------------------------------


def test_distances_are_euclidean_and_rounded():
    table = rules.distances(stack(at(0, 0), at(3, 4)), stack(at(0, 0), at(0, 0.1)))
    assert table.tolist() == [[0.0, 0.1], [5.0, 4.920366]]
    assert rules.distances(np.empty((0, DIMS)), stack(at(1))).shape == (0, 1)


def test_single_threshold_gives_a_face_to_every_selfie_within_tolerance():
    # One face between two selfies, 0.5 from each: the baseline shows it to both.
    faces = stack(at(0.5))
    selfies = stack(at(0), at(1))
    result = rules.single_threshold(faces=faces, face_photos=np.array([7]), selfies=selfies, tolerance=0.6)
    assert result == [{7: 0.5}, {7: 0.5}]


# --- One person per face ------------------------------------------------------------


def test_a_face_goes_to_its_nearest_person_only():
    faces = stack(at(0.45), at(0.55))  # photo 1 nearer the first selfie, photo 2 nearer the second
    selfies = stack(at(0), at(1))
    result = rules.selfie_photos(faces=faces, face_photos=np.array([1, 2]), selfies=selfies, rules=BASE)
    assert photos_of(result) == [{1}, {2}]
    assert result[0][1] == pytest.approx(0.45)


def test_an_exact_tie_goes_to_the_older_selfie_whatever_the_column_order():
    faces = stack(at(0.5))
    selfies = stack(at(0), at(1))  # oldest first
    result = rules.selfie_photos(faces=faces, face_photos=np.array([1]), selfies=selfies, rules=BASE)
    assert photos_of(result) == [{1}, set()]
    # The tie-break is by identity, not by the position a caller happens to use.
    owner, _ = rules.nearest_identity(np.array([[0.5, 0.5]]), np.array([1, 0]))
    assert owner.tolist() == [0]


def test_a_tie_is_not_broken_by_floating_point_noise():
    # The same distance computed two ways differs in the last bits; rounding keeps it a tie.
    face = stack(at(0.1, 0.2, 0.3))
    a, b = at(0.1, 0.2, 0.3 + 0.5), at(0.1, 0.2 + 0.5, 0.3)
    table = rules.distances(face, stack(a, b))
    assert table[0, 0] == table[0, 1]


def test_a_face_beyond_tolerance_of_its_nearest_person_belongs_to_nobody():
    faces = stack(at(0.7), at(-0.7))
    result = rules.selfie_photos(faces=faces, face_photos=np.array([1, 2]), selfies=stack(at(0)), rules=BASE)
    assert result == [{}]


def test_a_new_nearer_selfie_takes_a_face_over():
    faces = stack(at(0.5))
    before = rules.selfie_photos(faces=faces, face_photos=np.array([1]), selfies=stack(at(0)), rules=BASE)
    assert photos_of(before) == [{1}]
    after = rules.selfie_photos(faces=faces, face_photos=np.array([1]), selfies=stack(at(0), at(0.9)), rules=BASE)
    assert photos_of(after) == [set(), {1}]


def test_one_photo_can_show_several_people():
    faces = stack(at(0.1), at(1.05))
    result = rules.selfie_photos(faces=faces, face_photos=np.array([3, 3]), selfies=stack(at(0), at(1)), rules=BASE)
    assert photos_of(result) == [{3}, {3}]


# --- Identities -----------------------------------------------------------------------


def test_selfies_closer_than_the_merge_distance_are_one_identity_and_share_faces():
    selfies = stack(at(0), at(0.3), at(2))  # two shots of one person, then somebody else
    assert rules.identities(selfies, merge_distance=0.4).tolist() == [0, 0, 2]
    # The face is nearer the second shot than the first: both selfies get it.
    faces = stack(at(0.8))
    result = rules.selfie_photos(faces=faces, face_photos=np.array([5]), selfies=selfies, rules=BASE)
    assert photos_of(result) == [{5}, {5}, set()]


def test_merging_is_transitive_and_strict():
    chain = stack(at(0), at(0.39), at(0.78), at(1.2))
    assert rules.identities(chain, merge_distance=0.4).tolist() == [0, 0, 0, 3]
    assert rules.identities(stack(at(0), at(0.4)), merge_distance=0.4).tolist() == [0, 1]


def test_selfies_of_the_same_attendee_are_one_identity_however_far_apart():
    selfies = stack(at(0), at(2), at(0.5, 2))
    same = rules.identities(selfies, merge_distance=0.4, same_person=["ann", None, "ann"])
    assert same.tolist() == [0, 1, 0]


def test_a_merged_identity_keeps_a_face_a_stranger_is_nearer_to_than_one_shot():
    # The face is 0.5 from shot A, 0.45 from a stranger, 0.2 from shot B of the same person.
    selfies = stack(at(0), at(0.95), at(0.3, 0.25))
    faces = stack(at(0.5))
    identity = rules.identities(selfies, merge_distance=0.4)
    assert identity.tolist() == [0, 1, 0]
    result = rules.selfie_photos(faces=faces, face_photos=np.array([1]), selfies=selfies, rules=BASE)
    assert photos_of(result) == [{1}, set(), {1}]


# --- Quality gate ------------------------------------------------------------------------


def test_a_low_quality_face_needs_the_stricter_tolerance():
    faces = stack(at(0.5), at(0, 0.5), at(0, 0, 0.4))
    sizes = np.array([30, 200, 30])  # tiny, fine, tiny
    sharpness = np.array([1.0, 0.05, 1.0])  # sharp, blurred, sharp
    low = rules.low_quality(sizes, sharpness, BASE)
    assert low.tolist() == [True, True, True]
    result = rules.selfie_photos(
        faces=faces, face_photos=np.array([1, 2, 3]), selfies=stack(at(0)), rules=BASE, face_low_quality=low
    )
    assert photos_of(result) == [{3}]  # only the face within 0.45
    ungated = rules.selfie_photos(
        faces=faces,
        face_photos=np.array([1, 2, 3]),
        selfies=stack(at(0)),
        rules=BASE.strategy("expansion"),
        face_low_quality=low,
    )
    assert photos_of(ungated) == [{1, 2, 3}]


def test_good_faces_are_not_low_quality():
    assert rules.low_quality(np.array([40, 41]), np.array([0.1, 0.5]), BASE).tolist() == [False, False]


# --- Query expansion -----------------------------------------------------------------


def test_expansion_reaches_a_face_beyond_tolerance_through_a_probe():
    selfie = stack(at(0))
    probe = at(0.28)  # a confident match (<= probe distance 0.3)
    side = at(0.6, 0.1)  # a side view: beyond tolerance of the selfie, near the probe
    faces = stack(probe, side)
    d_selfie = rules.distances(faces[1:], selfie)[0, 0]
    d_probe = rules.distances(faces[1:], faces[:1])[0, 0]
    assert d_selfie > 0.6 and d_probe <= 0.35, (d_selfie, d_probe)
    without = rules.selfie_photos(
        faces=faces, face_photos=np.array([1, 2]), selfies=selfie, rules=BASE.strategy("one-per-face")
    )
    assert photos_of(without) == [{1}]
    decision = rules.decide(
        faces=faces, face_photos=np.array([1, 2]), selfies=selfie, selfie_identity=np.array([0]), rules=BASE
    )
    assert decision.owner.tolist() == [0, 0] and decision.expanded.tolist() == [False, True]
    # The recorded distance is the face's own distance to the person, not to the probe.
    assert decision.distance[1] == pytest.approx(d_selfie)


def test_expansion_never_gives_a_face_to_someone_who_is_not_its_nearest_person():
    # The side view is within expansion reach of A's probe, but B's selfie is nearer.
    probe = at(0.28)
    side = at(0.6, 0.1)
    b_selfie = side + at(0, 0, 0, 0, 0.605)  # 0.605 from the face: beyond tolerance, but nearer than A
    selfies = stack(at(0), b_selfie)
    faces = stack(probe, side)
    table = rules.distances(faces, selfies)
    assert table[1, 1] < table[1, 0]
    result = rules.selfie_photos(faces=faces, face_photos=np.array([1, 2]), selfies=selfies, rules=BASE)
    assert photos_of(result) == [{1}, set()]


def test_expansion_never_takes_a_face_someone_owns():
    # A's probe is near a face that B owns directly: B keeps it.
    probe = at(0.28)
    face_b = at(0.6, 0.1)
    selfies = stack(at(0), face_b + at(0, 0, 0, 0, 0.1))
    result = rules.selfie_photos(faces=stack(probe, face_b), face_photos=np.array([1, 2]), selfies=selfies, rules=BASE)
    assert photos_of(result) == [{1}, {2}]


def test_expansion_skips_other_faces_of_the_probes_own_photo_and_low_quality_probes():
    probe = at(0.28)
    side = at(0.6, 0.1)
    selfie = stack(at(0))
    # Same photo: another face there is somebody else, whatever it looks like.
    same_photo = rules.decide(
        faces=stack(probe, side),
        face_photos=np.array([1, 1]),
        selfies=selfie,
        selfie_identity=np.array([0]),
        rules=BASE,
    )
    assert same_photo.owner.tolist() == [0, -1]
    # A low-quality face is never a probe.
    weak_probe = rules.decide(
        faces=stack(probe, side),
        face_photos=np.array([1, 2]),
        selfies=selfie,
        selfie_identity=np.array([0]),
        rules=BASE,
        face_low_quality=np.array([True, False]),
    )
    assert weak_probe.owner.tolist() == [0, -1]


def test_expansion_runs_once_not_in_chains():
    selfie = stack(at(0))
    probe = at(0.28)
    hop1 = at(0.6, 0.1)  # found through the probe
    hop2 = hop1 + at(0, 0.2, 0, 0.2)  # near hop1 only
    faces = stack(probe, hop1, hop2)
    assert rules.distances(faces[2:], faces[:1])[0, 0] > BASE.expansion_tolerance
    decision = rules.decide(
        faces=faces, face_photos=np.array([1, 2, 3]), selfies=selfie, selfie_identity=np.array([0]), rules=BASE
    )
    assert decision.owner.tolist() == [0, 0, -1]


def test_strategies_are_cumulative():
    assert [
        (r.one_per_face, r.expansion, r.quality_gate) for r in (BASE.strategy(name) for name in rules.STRATEGIES)
    ] == [(False, False, False), (True, False, False), (True, True, False), (True, True, True)]
    with pytest.raises(ValueError):
        BASE.strategy("magic")


def test_no_faces_or_no_selfies_decide_nothing():
    empty = rules.selfie_photos(
        faces=np.empty((0, DIMS)), face_photos=np.array([], dtype=np.int64), selfies=stack(at(0)), rules=BASE
    )
    assert empty == [{}]
    assert (
        rules.selfie_photos(faces=stack(at(0)), face_photos=np.array([1]), selfies=np.empty((0, DIMS)), rules=BASE)
        == []
    )


def test_identities_from_a_known_prefix_equal_identities_from_scratch():
    """The decision caches the identities of an event's selfies and, when selfies were only
    added, compares the new ones alone: the answer must be the one computed from scratch."""
    rng = np.random.default_rng(11)
    people = rng.normal(0, 0.3, (40, 128))
    # Retakes and chains (merged), attendees with several selfies (same_person), strangers.
    selfies = np.concatenate([people, people[:15] + rng.normal(0, 0.02, (15, 128))])[rng.permutation(55)]
    attendees = [int(key) if key < 20 else None for key in rng.integers(0, 60, 55)]
    whole = rules.identities(selfies, merge_distance=0.4, same_person=attendees)
    assert len(set(whole.tolist())) < 55  # some selfies were merged: the test can fail
    for done in (0, 1, 20, 54, 55):
        known = rules.identities(selfies[:done], merge_distance=0.4, same_person=attendees[:done])
        again = rules.identities(selfies, merge_distance=0.4, same_person=attendees, known=known)
        assert again.tolist() == whole.tolist(), done
