"""Real dlib on real photos: each attendee finds exactly their photos, nobody else's."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image

from gallery import services
from gallery.models import Face, Match, Photo, Selfie
from matching.engines import get_engine
from tests.conftest import LABELS, PEOPLE, SAMPLES, files_with, sample, upload

pytestmark = [pytest.mark.django_db, pytest.mark.dlib]

# One photo per person to take the selfie from. A selfie is never indexed, nor
# is another shot of the same capture (obama2.jpg is edge/obama_rgba.png, and
# biden.jpg and obama3.jpg are crops of groups/two_people.jpg): recall measured
# on a photo matching itself would prove nothing. Lin has one photo only: his
# selfie must find nothing.
SELFIES = {
    "alex_lacamoire": "people/alex_lacamoire/alex1.jpg",
    "biden": "people/biden/biden2.jpg",
    "kit_harington": "people/kit_harington/kit2.jpg",
    "lin_manuel_miranda": "people/lin_manuel_miranda/lin1.png",
    "obama": "people/obama/obama4.jpg",
    "rose_leslie": "people/rose_leslie/rose1.jpg",
}


def _child_crop() -> bytes:
    """The unknown child in the background of obama_and_biden.jpg, as a selfie."""
    image = Image.open(sample("groups/obama_and_biden.jpg")).convert("RGB")
    faces = get_engine("dlib").detect(image)
    child = min(faces, key=lambda face: face.area)  # the two adults are much closer
    margin = child.width
    box = (
        child.left - margin,
        child.top - margin,
        child.left + child.width + margin,
        child.top + child.height + margin,
    )
    import io

    buffer = io.BytesIO()
    image.crop(box).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _selfie(client, event, data, name="selfie.jpg"):
    response = client.post(
        reverse("gallery:selfie_upload", args=[event.slug]), {"image": upload(name, data), "consent": "on"}
    )
    assert response.status_code == 302, response.content
    return Selfie.objects.get(attendee__token=client.session[f"selfie:{event.pk}"])


def test_every_person_finds_exactly_their_photos(dlib_engine, event, run_jobs, client):
    event_photos = [SAMPLES / name for name in LABELS if name not in SELFIES.values()]
    with run_jobs():
        summary = services.paths_import(event=event, paths=event_photos)
    assert len(summary.created) == len(LABELS) - len(SELFIES) and not summary.rejected
    for photo in Photo.objects.all():
        relative = str(Path(photo.original_name))
        entry = next(v for k, v in LABELS.items() if Path(k).name == relative)
        assert photo.index_state == Photo.State.INDEXED, (photo, photo.index_error)
        assert photo.face_count == len(entry["people"]) + entry["unknown_faces"], photo

    selfies = {}
    for person in PEOPLE:
        attendee = client.__class__()
        with run_jobs():
            selfies[person] = _selfie(attendee, event, sample(SELFIES[person]).read_bytes())
        selfie = selfies[person]
        selfie.refresh_from_db()
        assert selfie.match_state == Selfie.State.DONE
        found = set(Photo.objects.filter(matches__selfie=selfie).values_list("original_name", flat=True))
        assert found == files_with(person) - {Path(SELFIES[person]).name}, person
        page = attendee.get(reverse("gallery:me", args=[event.slug]))
        assert page.status_code == 200
        assert page.content.count(b'class="download"') == len(found)

    # The child is nobody's match: its face is far from every attendee's selfie...
    group = Photo.objects.get(original_name="obama_and_biden.jpg")
    child_face = min(group.faces.all(), key=lambda face: face.width * face.height)
    selfie_vectors = np.stack([s.vector() for s in Selfie.objects.all()])
    child_vector = np.frombuffer(child_face.embedding, dtype=np.float32)
    assert np.linalg.norm(selfie_vectors - child_vector, axis=1).min() > 0.6
    # ...and the child's own selfie finds only the photo the child is in. (The
    # child has no other photo: this selfie is a crop of it, so the check is that
    # nobody else's photo comes back, not that the child is recognised.)
    with run_jobs():
        child = _selfie(client.__class__(), event, _child_crop())
    assert set(child.matches.values_list("photo__original_name", flat=True)) == {"obama_and_biden.jpg"}


def test_rematching_finds_photos_imported_after_the_selfie(dlib_engine, event, run_jobs, client):
    with run_jobs():
        selfie = _selfie(client, event, sample(SELFIES["biden"]).read_bytes())
    selfie.refresh_from_db()
    assert selfie.match_state == Selfie.State.DONE and selfie.matches.count() == 0

    # Photos arrive later; the attendee does nothing. Biden is in two of them.
    later = [sample("groups/two_people.jpg"), sample("people/biden/biden.jpg"), sample("people/kit_harington/kit1.jpg")]
    with run_jobs():
        services.paths_import(event=event, paths=later)
    assert set(selfie.matches.values_list("photo__original_name", flat=True)) == {"two_people.jpg", "biden.jpg"}
    status = client.get(reverse("gallery:me_status", args=[event.slug])).json()
    assert status["state"] == "done" and status["matches"] == 2


def test_a_face_of_2_5_percent_of_a_4000px_photo_is_found(dlib_engine):
    source = Image.open(sample("people/obama/obama.jpg")).convert("RGB")
    face = get_engine("dlib").detect(source)[0]
    scale = 100 / face.width
    margin = int(face.width * 0.6)
    crop = source.crop(
        (face.left - margin, face.top - margin, face.left + face.width + margin, face.top + face.height + margin)
    )
    small = crop.resize((round(crop.width * scale), round(crop.height * scale)))
    canvas = Image.new("RGB", (4000, 3000), (120, 130, 140))
    canvas.paste(small, (2500, 1200))
    found = get_engine("dlib").detect(canvas)
    assert len(found) == 1
    assert abs(found[0].left - (2500 + margin * scale)) < 40 and 70 < found[0].width < 140


def test_idempotent_import_reindex_and_rematch(dlib_engine, event, run_jobs, client, capsys):
    from django.core.management import call_command

    paths = [str(sample("groups/two_people.jpg")), str(sample("people/obama/obama-240p.jpg"))]
    with run_jobs():
        call_command("import_photos", event.slug, *paths)
        _selfie(client, event, sample("people/obama/obama2.jpg").read_bytes())

    def counts() -> tuple[int, int, int]:
        return Photo.objects.count(), Face.objects.count(), Match.objects.count()

    before = counts()
    assert before == (2, 3, 2)
    with run_jobs():
        call_command("import_photos", event.slug, *paths)
    assert "0 imported, 2 duplicates skipped" in capsys.readouterr().out
    assert counts() == before
    with run_jobs():
        call_command("reindex", event.slug)
    assert counts() == before
    assert set(Photo.objects.values_list("index_state", flat=True)) == {Photo.State.INDEXED}
    with run_jobs():
        call_command("rematch", event.slug)
    assert counts() == before
    # Running a job again by hand (a duplicate delivery) changes nothing either.
    from matching import services as matching_services

    photo = Photo.objects.first()
    assert matching_services.photo_index(photo_id=photo.pk) == "skipped"
    assert counts() == before


def test_find_faces_lists_matching_photos_best_first(dlib_engine, event, run_jobs, capsys):
    import json

    from django.core.management import call_command

    # Searched with a photo that is not indexed (biden2.jpg).
    with run_jobs():
        services.paths_import(event=event, paths=[sample("people/biden/biden.jpg"), SAMPLES / "groups"])
    capsys.readouterr()
    call_command("find_faces", event.slug, str(sample(SELFIES["biden"])))
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split("\t")[0] for line in lines]
    assert set(names) == {"biden.jpg", "two_people.jpg", "obama_and_biden.jpg"}
    distances = [float(line.split("\t")[1]) for line in lines]
    assert distances == sorted(distances)  # the best match first

    # A tolerance between the best and the worst match keeps exactly the matches within it.
    cut = (distances[0] + distances[-1]) / 2
    call_command("find_faces", event.slug, str(sample(SELFIES["biden"])), "--json", "--tolerance", str(cut))
    result = json.loads(capsys.readouterr().out)
    assert [item["photo"] for item in result] == [name for name, d in zip(names, distances, strict=True) if d <= cut]
    assert 0 < len(result) < len(names)
    assert all(set(item) == {"photo", "distance"} for item in result)


def test_the_coarse_pyramid_finds_the_faces_of_dlibs_dense_pyramid(dlib_engine):
    # The engine's two-pass search (coarse candidates, each confirmed on a crop)
    # against dlib's own pyramid on the 1,600 px copy, as face_recognition's tool runs it.
    from matching.engines.dlib import _overlap

    engine = get_engine("dlib")
    assert engine._level is not None  # this dlib release is the one the coarse pass was written for
    for name in ["groups/obama_and_biden.jpg", "groups/two_people.jpg", "people/obama/obama3.jpg"]:
        image = Image.open(sample(name)).convert("RGB")
        dense = engine._locate_dense(image, engine.upsample)
        coarse = engine._locate(image, engine.upsample)
        assert len(coarse) == len(dense), name
        for box in dense:
            assert max(_overlap(box, other) for other in coarse) > 0.5, (name, box)


def test_face_boxes_are_stored_in_the_originals_pixels(dlib_engine, event, run_jobs, settings):
    # The engine searches the display copy; the boxes are scaled back to the original.
    settings.DISPLAY_MAX_SIDE = 1500
    with run_jobs():
        services.paths_import(event=event, paths=[sample("groups/obama_and_biden.jpg")])
    photo = Photo.objects.get()
    assert (photo.width, photo.height) == (2000, 1428)
    assert Image.open(photo.display.path).size == (1500, 1071)
    stored = sorted((face.left, face.top, face.width) for face in photo.faces.all())
    found = sorted(
        (f.left, f.top, f.width) for f in get_engine("dlib").detect(Image.open(sample("groups/obama_and_biden.jpg")))
    )
    assert len(stored) == len(found) == 3
    for (left, top, width), (left2, top2, width2) in zip(stored, found, strict=True):
        assert (
            abs(left - left2) < 0.1 * width2 and abs(top - top2) < 0.1 * width2 and abs(width - width2) < 0.2 * width2
        )


def test_another_dlib_serialization_falls_back_to_dlibs_own_pyramid():
    from matching.engines.dlib import _one_level

    class Detector:
        def save(self, path: str) -> None:
            Path(path).write_bytes(b"\x01\x03" + bytes(100))

    assert _one_level(Detector()) is None


def test_a_large_jpeg_decoded_at_half_scale_keeps_its_faces_in_original_pixels(dlib_engine, event, run_jobs, settings):
    """DCT-scaled decoding (DISPLAY_MAX_SIDE at most half the photo) changes no stored geometry."""
    settings.DISPLAY_MAX_SIDE = 1200
    small = Image.open(sample("people/obama/obama4.jpg")).convert("RGB")
    expected = get_engine("dlib").detect(small)
    assert len(expected) == 1
    # The same picture at 2.5 times its size, stored a quarter turn counter-clockwise
    # with EXIF orientation 6 saying so: both the draft scale and the swapped sides count.
    factor = 2.5
    large = small.resize((round(small.width * factor), round(small.height * factor)), Image.Resampling.BICUBIC)
    assert max(large.size) >= 2 * settings.DISPLAY_MAX_SIDE
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    large.rotate(90, expand=True).save(buffer, format="JPEG", quality=92, exif=exif)

    with run_jobs():
        summary = services.photo_import(event=event, name="large.jpg", fileobj=io.BytesIO(buffer.getvalue()))
    assert len(summary.created) == 1
    photo = Photo.objects.get()
    assert photo.index_state == Photo.State.INDEXED, photo.index_error
    assert (photo.width, photo.height) == large.size
    face = photo.faces.get()
    for side in ("left", "top", "width", "height"):
        # The box dlib finds in the small picture, scaled up: the same place in the large one.
        assert getattr(face, side) == pytest.approx(getattr(expected[0], side) * factor, abs=0.06 * large.width)
    assert face.sharpness > 0.05
