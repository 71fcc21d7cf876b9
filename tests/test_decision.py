"""The event-level decision on stored rows: what the jobs record is what matching.rules decides."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from gallery import jobs
from gallery import services as gallery_services
from gallery.models import Attendee, Event, Face, Match, Photo, Selfie
from matching import index, rules, services
from tests.conftest import event_admin_form, selfie_row

pytestmark = pytest.mark.django_db

DIMS = 128


def vector(*coords: float) -> np.ndarray:
    out = np.zeros(DIMS, dtype=np.float32)
    out[: len(coords)] = coords
    return out


def photo_with(event: Event, *faces: np.ndarray, name: str = "", size: int = 200, sharpness: float = 0.5) -> Photo:
    photo = Photo.objects.create(
        event=event,
        original_name=name or f"p{Photo.objects.count()}.jpg",
        content_hash=f"{Photo.objects.count():064d}",
        index_state=Photo.State.INDEXED,
        face_count=len(faces),
        indexed_at=timezone.now(),
    )
    Face.objects.bulk_create(
        Face(
            photo=photo,
            left=0,
            top=0,
            width=size,
            height=size,
            embedding=face.astype(np.float32).tobytes(),
            engine="fake",
            size=size,
            sharpness=sharpness,
        )
        for face in faces
    )
    return photo


def enrolled(event: Event, embedding: np.ndarray, attendee: Attendee | None = None) -> Selfie:
    if attendee is None:
        selfie = selfie_row(event, image="s.jpg")
    else:
        selfie = Selfie.objects.create(event=event, attendee=attendee, consent_at=timezone.now(), image="s.jpg")
    Selfie.objects.filter(pk=selfie.pk).update(
        embedding=embedding.astype(np.float32).tobytes(), engine="fake", match_state=Selfie.State.DONE
    )
    selfie.refresh_from_db()
    return selfie


def decide(event: Event, **change: int) -> None:
    with transaction.atomic():
        services.event_decide(event=Event.objects.get(pk=event.pk), engine="fake", **change)


def shown(selfie: Selfie) -> set[str]:
    return set(Match.objects.filter(selfie=selfie).values_list("photo__original_name", flat=True))


def test_a_nearer_selfie_takes_the_face_over_and_the_other_attendee_loses_the_photo(event, client):
    photo = photo_with(event, vector(0.5), name="shared.jpg")
    first = enrolled(event, vector(0))
    decide(event, selfie_id=first.pk)
    assert shown(first) == {"shared.jpg"}

    second = enrolled(event, vector(0.9))  # 0.4 from the face: nearer than the first (0.5)
    decide(event, selfie_id=second.pk)
    assert shown(second) == {"shared.jpg"} and shown(first) == set()
    assert Match.objects.get(selfie=second, photo=photo).distance == pytest.approx(0.4, abs=1e-5)


def test_a_tie_keeps_the_face_with_the_older_selfie(event):
    photo_with(event, vector(0.5), name="between.jpg")
    first = enrolled(event, vector(0))
    decide(event, selfie_id=first.pk)
    second = enrolled(event, vector(1))  # exactly as far
    decide(event, selfie_id=second.pk)
    assert shown(first) == {"between.jpg"} and shown(second) == set()


def test_a_new_photo_goes_to_the_nearest_attendee_only(event):
    near, far = enrolled(event, vector(0)), enrolled(event, vector(1))
    photo = photo_with(event, vector(0.45), name="new.jpg")
    decide(event, photo_id=photo.pk)
    assert shown(near) == {"new.jpg"} and shown(far) == set()


def test_selfies_of_one_attendee_share_their_faces(event):
    attendee = Attendee.objects.create(event=event, consent_at=timezone.now())
    front = enrolled(event, vector(0), attendee)
    side = enrolled(event, vector(0, 1.5), attendee)  # far from the front shot: merged only as one attendee
    photo_with(event, vector(0, 1.2), name="profile.jpg")
    photo_with(event, vector(0.1), name="portrait.jpg")
    decide(event, selfie_id=side.pk)
    assert shown(front) == shown(side) == {"profile.jpg", "portrait.jpg"}


def test_the_event_tolerance_overrides_the_setting(event, settings):
    settings.FACE_TOLERANCE = 0.6
    selfie = enrolled(event, vector(0))
    photo_with(event, vector(0.55), name="edge.jpg")
    decide(event, selfie_id=selfie.pk)
    assert shown(selfie) == {"edge.jpg"}
    Event.objects.filter(pk=event.pk).update(face_tolerance=0.5)
    decide(event, selfie_id=selfie.pk)
    assert shown(selfie) == set()


def test_a_low_quality_face_needs_the_stricter_tolerance(event, settings):
    settings.FACE_TOLERANCE, settings.FACE_LOW_QUALITY_TOLERANCE = 0.6, 0.5
    settings.FACE_MIN_QUALITY_SIZE, settings.FACE_MIN_SHARPNESS = 40, 0.05
    selfie = enrolled(event, vector(0))
    photo_with(event, vector(0.55), name="sharp.jpg")
    photo_with(event, vector(0, 0.55), name="blurred.jpg", sharpness=0.01)
    photo_with(event, vector(0, 0, 0.55), name="tiny.jpg", size=30)
    photo_with(event, vector(0, 0, 0, 0.45), name="tiny-but-close.jpg", size=30)
    decide(event, selfie_id=selfie.pk)
    assert shown(selfie) == {"sharp.jpg", "tiny-but-close.jpg"}


def test_what_the_jobs_record_is_what_the_rules_decide_on_the_whole_event(event, settings):
    """The selfie and photo jobs decide on the few faces that concern them; the result must
    equal matching.rules on the whole event, whatever order things arrive in."""
    settings.FACE_TOLERANCE, settings.FACE_PROBE_DISTANCE, settings.FACE_EXPANSION_TOLERANCE = 0.6, 0.45, 0.45
    settings.FACE_LOW_QUALITY_TOLERANCE, settings.FACE_MIN_SHARPNESS = 0.5, 0.05
    rng = np.random.default_rng(3)
    people = rng.normal(0, 0.3, (8, DIMS)).astype(np.float32)  # strangers: far apart
    for twin, of in ((1, 0), (3, 2)):  # two pairs of look-alikes, ~0.4 apart
        people[twin] = people[of] + rng.normal(0, 0.035, DIMS)
    # Each person's "side view" direction: half-turned faces are confident matches,
    # fully turned ones are beyond tolerance, within reach of the half-turned ones.
    turn = rng.normal(0, 1, (8, DIMS))
    turn = 0.55 * turn / np.linalg.norm(turn, axis=1, keepdims=True)
    photos_faces = []
    for _ in range(40):
        who = rng.choice(8, rng.integers(1, 4), replace=False)
        photos_faces.append([people[p] + turn[p] * rng.choice([0, 0.5, 1]) + rng.normal(0, 0.02, DIMS) for p in who])
    selfie_vectors = [people[p] + rng.normal(0, 0.02, DIMS) for p in range(7)]  # person 7 never enrols
    order = rng.permutation(len(photos_faces) + len(selfie_vectors))
    selfies: list[Selfie] = []
    for step in order.tolist():
        if step < len(photos_faces):
            photo = photo_with(event, *photos_faces[step], sharpness=0.01 if step % 5 == 0 else 0.5)
            decide(event, photo_id=photo.pk)
        else:
            selfie = enrolled(event, selfie_vectors[step - len(photos_faces)])
            selfies.append(selfie)
            decide(event, selfie_id=selfie.pk)
    recorded = {(m.selfie_id, m.photo_id) for m in Match.objects.all()}

    chosen = services.event_rules(event)
    faces = index.event_faces(event.pk, "fake")
    ordered = sorted(selfies, key=lambda s: s.pk)
    expected_per_selfie = rules.selfie_photos(
        faces=faces.matrix,
        face_photos=faces.photo_ids,
        selfies=np.array([s.vector() for s in ordered]),
        rules=chosen,
        face_low_quality=faces.low_quality(chosen),
        same_person=[s.attendee_id for s in ordered],
    )
    expected = {(s.pk, p) for s, found in zip(ordered, expected_per_selfie, strict=True) for p in found}
    assert recorded == expected
    assert len(expected) > 20  # the set is not trivially empty
    identity = rules.identities(np.array([s.vector() for s in ordered]), merge_distance=chosen.merge_distance)
    decision = rules.decide(
        faces=faces.matrix,
        face_photos=faces.photo_ids,
        selfies=np.array([s.vector() for s in ordered]),
        selfie_identity=identity,
        rules=chosen,
        face_low_quality=faces.low_quality(chosen),
    )
    assert decision.expanded.any() and faces.low_quality(chosen).any()  # every rule took part
    single = rules.selfie_photos(
        faces=faces.matrix,
        face_photos=faces.photo_ids,
        selfies=np.array([s.vector() for s in ordered]),
        rules=chosen.strategy("single"),
    )
    assert {(s.pk, p) for s, found in zip(ordered, single, strict=True) for p in found} != expected  # rules matter


def test_changing_the_event_tolerance_in_the_admin_matches_its_selfies_again(event, admin_client, run_jobs):
    selfie = enrolled(event, vector(0))
    photo_with(event, vector(0.55), name="edge.jpg")
    decide(event, selfie_id=selfie.pk)
    assert shown(selfie) == {"edge.jpg"}
    url = reverse("admin:gallery_event_change", args=[event.pk])
    # The watermark unchanged: a watermark change would make the photos' copies again.
    form = event_admin_form(event, face_tolerance="0.5")
    with run_jobs():
        response = admin_client.post(url, form)
    assert response.status_code == 302, response.context_data["adminform"].form.errors
    selfie.refresh_from_db()
    assert Event.objects.get().face_tolerance == 0.5 and selfie.match_state == Selfie.State.DONE
    assert shown(selfie) == set()


def test_the_admin_shows_each_faces_quality(event, admin_client, settings):
    settings.FACE_MIN_SHARPNESS = 0.05
    photo = photo_with(event, vector(0.1), name="q.jpg", size=180, sharpness=0.01)
    # The preview draws the face boxes with their quality.
    Photo.objects.filter(pk=photo.pk).update(width=400, height=300, thumbnail="t.jpg")
    page = admin_client.get(reverse("admin:gallery_photo_change", args=[photo.pk])).content.decode()
    assert "low quality" in page
    listing = admin_client.get(reverse("admin:gallery_face_changelist")).content.decode()
    assert "180" in listing and "0.01" in listing and "low quality" in listing


def test_matches_of_photos_being_indexed_again_stay_until_their_own_job_decides(event):
    selfie = enrolled(event, vector(0))
    first, second = photo_with(event, vector(0.1), name="a.jpg"), photo_with(event, vector(0.2), name="b.jpg")
    decide(event, selfie_id=selfie.pk)
    before = dict(Match.objects.values_list("photo_id", "created_at"))
    assert set(before) == {first.pk, second.pk}
    Photo.objects.filter(pk__in=[first.pk, second.pk]).update(index_state=Photo.State.PENDING)  # reindex
    Photo.objects.filter(pk=first.pk).update(index_state=Photo.State.INDEXED, indexed_at=timezone.now())
    decide(event, photo_id=first.pk)  # the second photo is still waiting for its job
    assert dict(Match.objects.values_list("photo_id", "created_at")) == before  # kept, not re-created


def test_a_decision_writes_only_the_matches_that_change(event):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for n in range(3):
        photo_with(event, vector(0.1 * n), name=f"{n}.jpg")
    first = enrolled(event, vector(0))
    decide(event, selfie_id=first.pk)
    assert shown(first) == {"0.jpg", "1.jpg", "2.jpg"}
    created = dict(Match.objects.values_list("photo_id", "created_at"))

    # Deciding again with nothing new writes nothing.
    with CaptureQueriesContext(connection) as queries:
        decide(event, selfie_id=first.pk)
    writes = [q["sql"] for q in queries if q["sql"].startswith(("INSERT", "UPDATE")) and "gallery_match" in q["sql"]]
    assert writes == []

    # The same person's second selfie (merged into one identity) shows the same photos;
    # the first one's rows are kept (they are not news), not deleted and made again.
    second = enrolled(event, vector(0.01))
    decide(event, selfie_id=second.pk)
    assert shown(second) == shown(first) == {"0.jpg", "1.jpg", "2.jpg"}
    assert dict(Match.objects.filter(selfie=first).values_list("photo_id", "created_at")) == created


def test_deleting_a_selfie_hands_its_faces_to_the_next_nearest_attendee_at_once(event, run_jobs):
    photo_with(event, vector(0.5), name="shared.jpg")
    photo_with(event, vector(1.3), name="only-near.jpg")  # 0.4 from the nearer selfie, 1.3 from the other
    far = enrolled(event, vector(0))
    decide(event, selfie_id=far.pk)
    near = enrolled(event, vector(0.9))
    decide(event, selfie_id=near.pk)
    assert shown(near) == {"shared.jpg", "only-near.jpg"} and shown(far) == set()

    with run_jobs():
        gallery_services.attendee_delete(attendee=near.attendee)
    # Without a rematch: the face goes to the next nearest within tolerance, the other to nobody.
    assert shown(far) == {"shared.jpg"}
    assert Match.objects.get(selfie=far).distance == pytest.approx(0.5, abs=1e-5)


def test_deleting_one_selfie_of_an_attendee_keeps_only_what_their_other_selfies_find(event, run_jobs):
    attendee = Attendee.objects.create(event=event, consent_at=timezone.now())
    front = enrolled(event, vector(0), attendee)
    side = enrolled(event, vector(0, 1.5), attendee)
    photo_with(event, vector(0.1), name="portrait.jpg")
    photo_with(event, vector(0, 1.2), name="profile.jpg")  # 0.3 from the side selfie
    other = enrolled(event, vector(0.5, 1.0))  # 0.54 from the profile: second nearest
    decide(event, selfie_id=side.pk)
    assert shown(front) == {"portrait.jpg", "profile.jpg"} and shown(other) == set()

    with run_jobs():
        side.delete()  # as the admin does
    assert shown(front) == {"portrait.jpg"} and shown(other) == {"profile.jpg"}


def test_whole_event_deletions_queue_no_decision(event, monkeypatch, django_capture_on_commit_callbacks):
    queued: list[tuple] = []
    monkeypatch.setattr(jobs, "enqueue_photos_decide", lambda *args: queued.append(args))
    photo = photo_with(event, vector(0.1), name="a.jpg")
    selfies = [enrolled(event, vector(0)) for _ in range(2)]
    for selfie in selfies:
        decide(event, selfie_id=selfie.pk)
    gallery_services.attendee_delete(attendee=selfies[0].attendee)
    assert queued == [(event.pk, [photo.pk])]  # one attendee going: their photos are decided again

    queued.clear()
    gallery_services.attendee_data_purge(event=event)  # retention: everyone goes
    assert queued == [] and not Match.objects.exists()
    decide(event, selfie_id=enrolled(event, vector(0)).pk)
    assert Match.objects.exists()
    event.delete()
    assert queued == []


def test_decisions_after_selfies_come_and_go_equal_the_rules_on_the_whole_event(event, run_jobs, monkeypatch):
    """Each decision reuses the identities of the last one when they still hold (selfies
    only added, or groups deleted whole): what it records must be what the rules decide."""
    reused: list[int] = []
    identities = rules.identities

    def spy(*args: object, known: np.ndarray | None = None, **kwargs: object) -> np.ndarray:
        reused.append(-1 if known is None else len(known))
        return identities(*args, known=known, **kwargs)

    monkeypatch.setattr(rules, "identities", spy)
    index._identities.clear()  # this process's decisions of earlier tests (event ids are reused)
    rng = np.random.default_rng(5)
    people = rng.normal(0, 0.3, (12, DIMS)).astype(np.float32)
    for _ in range(30):
        photo_with(event, *(people[p] + rng.normal(0, 0.02, DIMS) for p in rng.choice(12, 2, replace=False)))
    selfies: list[Selfie] = []
    attendee = Attendee.objects.create(event=event, consent_at=timezone.now())
    for person in range(10):
        # Person 3 has two selfies as one attendee; person 5 two retakes (merged by distance).
        owner = attendee if person in (3, 4) else None
        selfies.append(enrolled(event, people[person] + rng.normal(0, 0.02, DIMS), owner))
        if person == 5:
            selfies.append(enrolled(event, people[person] + rng.normal(0, 0.02, DIMS)))
        decide(event, selfie_id=selfies[-1].pk)
    assert reused == [-1, *range(1, 6), *range(7, 11)]  # each decision after the first reused the last
    with run_jobs():
        gallery_services.attendee_delete(attendee=attendee)  # a whole group goes: reused
    assert reused[-2:] == [9, 9]  # one hand-over job per deleted selfie
    with run_jobs():
        Selfie.objects.filter(pk=selfies[6].pk).delete()  # one of person 5's retakes: their group may split
    assert reused[-1] == -1
    for person in (10, 11):
        selfies.append(enrolled(event, people[person] + rng.normal(0, 0.02, DIMS)))
        decide(event, selfie_id=selfies[-1].pk)
    assert reused[-2:] == [8, 9]

    left = list(Selfie.objects.order_by("pk"))
    chosen = services.event_rules(event)
    faces = index.event_faces(event.pk, "fake")
    expected = rules.selfie_photos(
        faces=faces.matrix,
        face_photos=faces.photo_ids,
        selfies=np.array([s.vector() for s in left]),
        rules=chosen,
        face_low_quality=faces.low_quality(chosen),
        same_person=[s.attendee_id for s in left],
    )
    assert {(m.selfie_id, m.photo_id) for m in Match.objects.all()} == {
        (s.pk, p) for s, found in zip(left, expected, strict=True) for p in found
    }
    assert len(left) == 10 and Match.objects.count() > 10
