"""Matching quality on real faces (real dlib): the rules, the take-over with a real cluster,
the evaluate command and the hard-set generator. Selfies are never among the indexed photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from gallery import services
from gallery.models import Event, Match, Photo, Selfie
from tests.conftest import SAMPLES, sample, upload, wait_for
from tests.fixtures import make_hard_set

pytestmark = [pytest.mark.dlib]

# Obama's photos (his selfie, obama2.jpg, and its RGBA twin are not among them).
OBAMA_PHOTOS = [
    "people/obama/obama.jpg",
    "people/obama/obama_small.jpg",
    "people/obama/obama-240p.jpg",
    "edge/obama_partial_face.jpg",
    "edge/obama_partial_face2.jpg",
]


def _selfie(client: Client, event: Event, relative: str) -> None:
    response = client.post(
        reverse("gallery:selfie_upload", args=[event.slug]),
        {"image": upload(Path(relative).name, sample(relative).read_bytes()), "consent": "on"},
    )
    assert response.status_code == 302, response.content


def _gallery(client: Client, event: Event) -> tuple[dict, int]:
    """The attendee's status answer and the number of photos their page shows."""
    status = client.get(reverse("gallery:me_status", args=[event.slug])).json()
    page = client.get(reverse("gallery:me", args=[event.slug]))
    return status, page.content.count(b'class="download"')


@pytest.mark.cluster
def test_a_nearer_selfie_takes_faces_over_with_a_real_cluster(qcluster, dlib_engine):
    """At a loose event tolerance (0.75) Lin-Manuel Miranda's selfie is within reach of
    Obama's photos (0.65 to 0.74); Obama's own selfie, far nearer, takes them all over.
    Lin's page, status and recorded matches lose them together."""
    event = Event.objects.create(name="Look-alikes", slug="lookalikes", face_tolerance=0.75)
    qcluster()
    assert len(services.paths_import(event=event, paths=[sample(p) for p in OBAMA_PHOTOS]).created) == 5
    photos = Photo.objects.filter(event=event)
    wait_for(lambda: photos.filter(index_state=Photo.State.INDEXED).count() == 5, timeout=180, what="indexing")

    lin, obama = Client(), Client()
    _selfie(lin, event, "people/lin_manuel_miranda/lin1.png")
    wait_for(
        lambda: lin.get(reverse("gallery:me_status", args=[event.slug])).json()["state"] == "done",
        timeout=90,
        what="Lin's matching",
    )
    lin_selfie = Selfie.objects.get()
    taken = set(lin_selfie.matches.values_list("photo__original_name", flat=True))
    assert len(taken) >= 3, taken  # a stranger within the loose tolerance: wrong, but nobody nearer yet
    status, shown = _gallery(lin, event)
    assert status["matches"] == shown == len(taken)

    _selfie(obama, event, "people/obama/obama2.jpg")
    obama_done = lambda: obama.get(reverse("gallery:me_status", args=[event.slug])).json()["state"] == "done"  # noqa: E731
    wait_for(obama_done, timeout=90, what="Obama's matching")
    obama_selfie = Selfie.objects.exclude(pk=lin_selfie.pk).get()
    assert set(obama_selfie.matches.values_list("photo__original_name", flat=True)) == {
        Path(p).name for p in OBAMA_PHOTOS
    }
    assert not lin_selfie.matches.exists()
    status, shown = _gallery(lin, event)
    assert status["state"] == "done" and status["matches"] == shown == 0
    status, shown = _gallery(obama, event)
    assert status["state"] == "done" and status["matches"] == shown == 5
    # No pair lost or doubled: each photo belongs to exactly one attendee.
    assert Match.objects.count() == 5


def test_each_person_finds_exactly_their_photos_with_the_rules(dlib_engine, event, run_jobs):
    """Selfies of people who are not in the photos find nothing; each face goes to one person."""
    with run_jobs():
        services.paths_import(
            event=event,
            paths=[sample(p) for p in OBAMA_PHOTOS]
            + [
                sample("groups/two_people.jpg"),
                sample("people/biden/biden.jpg"),
                sample("people/kit_harington/kit1.jpg"),
            ],
        )
    people = {
        "obama": "people/obama/obama2.jpg",
        "biden": "people/biden/biden2.jpg",
        "kit": "people/kit_harington/kit2.jpg",
        "lin": "people/lin_manuel_miranda/lin1.png",
        "rose": "people/rose_leslie/rose1.jpg",
    }
    found = {}
    for person, relative in people.items():
        client = Client()
        with run_jobs():
            _selfie(client, event, relative)
        status, shown = _gallery(client, event)
        assert status["state"] == "done"
        newest = Selfie.objects.order_by("-pk").first()
        found[person] = set(newest.matches.values_list("photo__original_name", flat=True))
        assert status["matches"] == shown == len(found[person])
    assert found["obama"] == {Path(p).name for p in OBAMA_PHOTOS} | {"two_people.jpg"}
    assert found["biden"] == {"two_people.jpg", "biden.jpg"}
    assert found["kit"] == {"kit1.jpg"}
    assert found["lin"] == found["rose"] == set()
    # Every face was measured for quality.
    assert not event.photos.filter(faces__size__isnull=True).exists()
    assert not event.photos.filter(faces__sharpness__isnull=True).exists()


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """The evaluate layout of a few sample photos: two enrolled people, one distractor."""
    folder = tmp_path / "set"
    for person, files in {
        "biden": ["people/biden/biden2.jpg", "people/biden/biden.jpg"],
        "kit_harington": ["people/kit_harington/kit2.jpg", "people/kit_harington/kit1.jpg"],
    }.items():
        (folder / person).mkdir(parents=True)
        for number, relative in enumerate(files):
            shutil.copyfile(sample(relative), folder / person / f"{number}-{Path(relative).name}")
    (folder / "groups").mkdir()
    for name in ("two_people.jpg", "kit_with_rose.jpg"):
        shutil.copyfile(sample(f"groups/{name}"), folder / "groups" / name)
    # Obama and Rose took no selfie: their faces are distractors.
    labels = {"two_people.jpg": ["obama", "biden"], "kit_with_rose.jpg": {"people": ["kit_harington", "rose_leslie"]}}
    (folder / "groups" / "labels.json").write_text(json.dumps(labels))
    return folder


def test_evaluate_measures_a_small_folder_and_leaves_nothing_behind(
    db, dlib_engine, small_folder, settings, capsys, run_jobs
):
    with run_jobs():  # the deletion's file jobs run after its commit
        call_command("evaluate", str(small_folder), "--tolerance", "0.6", "--tolerance", "0.75", "--json")
    result = json.loads(capsys.readouterr().out)
    assert (result["people"], result["photos"], result["pairs"]) == (2, 4, 4)
    assert result["recorded"] == {
        "precision": 1.0,
        "recall": 1.0,
        "false_matches": 0,
        "misses": 0,
        "tolerance": settings.FACE_TOLERANCE,
    }
    assert list(result["strategies"]) == ["single", "one-per-face", "expansion", "quality-gate"]
    for rows in result["strategies"].values():
        assert [row["tolerance"] for row in rows] == [0.6, 0.75]
        assert rows[0]["precision"] == rows[0]["recall"] == 1.0
    assert result["seconds"]["selfie_to_matches_median"] > 0
    # The throw-away event is gone, with its files.
    assert not Event.objects.exists() and not Photo.objects.exists() and not Selfie.objects.exists()
    media = Path(settings.MEDIA_ROOT)
    assert not media.exists() or not [p for p in media.rglob("*") if p.is_file()]


def test_evaluate_prints_a_table(db, dlib_engine, small_folder, capsys):
    call_command("evaluate", str(small_folder), "--tolerance", "0.6")
    out = capsys.readouterr().out
    assert "4 photos" in out and "precision" in out
    assert [line.split()[0] for line in out.splitlines() if line.split()[:1] and line.split()[1:2] == ["0.60"]] == [
        "single",
        "one-per-face",
        "expansion",
        "quality-gate",
    ]


def test_evaluate_refuses_a_folder_it_cannot_read(tmp_path, db):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="not a folder"):
        call_command("evaluate", str(tmp_path / "missing"))
    (tmp_path / "groups").mkdir()
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.jpg").write_bytes(sample("people/biden/biden.jpg").read_bytes())
    with pytest.raises(CommandError, match=r"no labels\.json"):
        call_command("evaluate", str(tmp_path))
    with pytest.raises(CommandError, match="between 0 and 2"):
        (tmp_path / "groups" / "labels.json").write_text("{}")
        call_command("evaluate", str(tmp_path), "--tolerance", "3")
    assert not Event.objects.exists()


def test_the_generator_lays_out_the_shared_faces_for_evaluate(tmp_path):
    out = tmp_path / "plain"
    assert make_hard_set.main([str(SAMPLES), str(out), "--plain"]) == 0
    people = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "groups")
    assert people == ["alex_lacamoire", "biden", "kit_harington", "lin_manuel_miranda", "obama", "rose_leslie"]
    obama = sorted(p.name for p in (out / "obama").iterdir())
    assert obama[0] == "00-selfie-obama2.jpg"
    # Neither the selfie nor its RGBA twin is among the photos.
    assert not any("obama2" in name or "rgba" in name for name in obama[1:])
    labels = json.loads((out / "groups" / "labels.json").read_text())
    assert labels["groups-obama_and_biden.jpg"] == {"people": ["obama", "biden"], "unknown_faces": 1}


def test_the_hard_set_is_deterministic_and_labelled(tmp_path, dlib_engine):
    source = tmp_path / "source"
    labels = {}
    for relative in [
        "people/biden/biden.jpg",
        "people/biden/biden2.jpg",
        "people/kit_harington/kit1.jpg",
        "people/kit_harington/kit2.jpg",
        "people/lin_manuel_miranda/lin1.png",
    ]:
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample(relative), source / relative)
        labels[relative] = {"people": [relative.split("/")[1]], "unknown_faces": 0}
    (source / "labels.json").write_text(json.dumps(labels))
    first, second = tmp_path / "a", tmp_path / "b"
    assert make_hard_set.main([str(source), str(first), "--seed", "3"]) == 0
    assert make_hard_set.main([str(source), str(second), "--seed", "3"]) == 0
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    # Lin has a single photo: a distractor, never enrolled.
    assert sorted(p.name for p in first.iterdir() if p.is_dir()) == ["biden", "groups", "kit_harington"]
    assert sorted(p.name for p in (first / "biden").iterdir())[0] == "00-selfie-biden2.jpg"
    assert len(list((first / "biden").iterdir())) == 1 + make_hard_set.VARIANTS_PER_PHOTO
    composites = json.loads((first / "groups" / "labels.json").read_text())
    assert len(composites) == make_hard_set.COMPOSITES
    assert all(set(e["people"]) <= {"biden", "kit_harington"} and e["unknown_faces"] >= 1 for e in composites.values())


@pytest.mark.django_db
def test_deleting_the_nearer_selfie_gives_its_photos_to_the_other_attendee(dlib_engine, run_jobs):
    """The fixture of the take-over test, the other way round: at a loose event tolerance
    (0.75) Obama's selfie holds his photos and Lin-Manuel Miranda's finds none. When Obama
    deletes his data, Lin's page and status show the photos his selfie now wins, without
    a rematch."""
    event = Event.objects.create(name="Look-alikes", slug="lookalikes", face_tolerance=0.75)
    with run_jobs():
        assert len(services.paths_import(event=event, paths=[sample(p) for p in OBAMA_PHOTOS]).created) == 5
    lin, obama = Client(), Client()
    with run_jobs():
        _selfie(lin, event, "people/lin_manuel_miranda/lin1.png")
        _selfie(obama, event, "people/obama/obama2.jpg")
    status, shown = _gallery(obama, event)
    assert status["state"] == "done" and status["matches"] == shown == 5
    status, shown = _gallery(lin, event)
    assert status["state"] == "done" and status["matches"] == shown == 0

    with run_jobs():
        assert obama.post(reverse("gallery:me_forget", args=[event.slug])).status_code == 302
    assert Selfie.objects.count() == 1
    status, shown = _gallery(lin, event)
    assert status["matches"] == shown >= 3  # Lin is the nearest selfie left within 0.75
    assert Match.objects.count() == shown  # each photo belongs to one attendee
