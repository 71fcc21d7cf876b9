"""The hostile corpus (tests/fixtures/hostile.py) through every entry point.

Each input either works or gets a clear message: a form error or 4xx for a
selfie, a rejection with its reason or a photo recorded as failed with one for
imports, a CommandError for commands. Never a 500, never a traceback, never a
file left in storage without the row that owns it, and the rest of a batch is
imported.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from PIL import Image, ImageStat

from gallery.models import Photo, Selfie
from tests.conftest import upload
from tests.fixtures import hostile

pytestmark = pytest.mark.django_db

READABLE = re.compile(r"^[A-Z][^\n]{8,}")  # a sentence, not an exception repr
CASES = {case.name: case for case in hostile.CASES}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    hostile.write_corpus(folder)
    return folder


def stored_files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def referenced_files() -> set[str]:
    names = set()
    for photo in Photo.objects.all():
        names |= {field.name for field in (photo.original, photo.display, photo.thumbnail) if field}
    names |= {selfie.image.name for selfie in Selfie.objects.all() if selfie.image}
    return names


def assert_every_file_is_owned(settings) -> None:
    """Nothing in storage that no row would ever delete (a face, above all)."""
    assert stored_files(Path(settings.MEDIA_ROOT)) == referenced_files()


def assert_photo_outcomes(rejected: dict[str, str]) -> None:
    states = dict(Photo.objects.values_list("original_name", "index_state"))
    errors = dict(Photo.objects.values_list("original_name", "index_error"))
    for case in hostile.CASES:
        outcome = "rejected" if case.name in rejected else states.get(case.name, "missing")
        allowed = {"either": {"rejected", "failed"}}.get(case.photo, {case.photo})
        assert outcome in allowed, f"{case.name}: {outcome}, expected {case.photo}"
        if outcome == "rejected":
            assert READABLE.match(rejected[case.name]) or rejected[case.name] == "empty file", rejected[case.name]
        if outcome == "failed":
            assert READABLE.match(errors[case.name]) and "Unexpected error" not in errors[case.name]
    for name, (_, imported) in hostile.ARCHIVES.items():
        assert imported <= set(states), f"{name}: {imported - set(states)} not imported"
    assert "smuggled.jpg" not in states and "inner.jpg" not in states  # no nested archive read
    for label in ("bomb.zip:bomb.jpg", "nested.zip:inner.zip", "encrypted.zip:secret.jpg", "mixed.zip:bad-in-zip.png"):
        assert label in rejected, label
    for name in ("truncated-holding-zip.zip", "not-a-zip.zip"):
        assert rejected[name].startswith("not a valid zip archive")


def assert_gray16_stays_grey() -> None:
    photo = Photo.objects.get(original_name="gray16.png")
    with photo.display.open("rb") as handle:
        assert 100 < ImageStat.Stat(Image.open(handle).convert("L")).mean[0] < 135  # 30000/65535 of white


def test_import_photos_survives_the_corpus(corpus, event, run_jobs, capsys, settings):
    with run_jobs():
        call_command("import_photos", event.slug, str(corpus))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    rejected = dict(re.findall(r"^  rejected (\S+): (.+)$", err, re.MULTILINE))
    assert_photo_outcomes(rejected)
    assert_gray16_stays_grey()
    assert_every_file_is_owned(settings)


def test_admin_upload_survives_the_corpus(corpus, admin_client, event, run_jobs, settings):
    files = [upload(path.name, path.read_bytes(), "application/octet-stream") for path in sorted(corpus.iterdir())]
    url = reverse("admin:gallery_event_upload", args=[event.pk])
    with run_jobs():
        response = admin_client.post(url, {"files": files}, follow=True)
    assert response.status_code == 200
    text = response.content.decode()
    assert re.search(r"\d+ imported, 0 duplicates skipped, \d+ rejected", text)
    # The admin shows the first 20 reasons; the states of what was imported say the rest.
    states = dict(Photo.objects.values_list("original_name", "index_state"))
    for case in hostile.CASES:
        if case.photo == "indexed":
            assert states.get(case.name) == "indexed", case.name
        elif case.photo == "failed":
            assert states.get(case.name) == "failed", case.name
        elif case.photo == "rejected":
            assert case.name not in states, case.name
    assert {"good-in-zip.jpg", "escape1.jpg", "escape2.jpg", "escape3.jpg"} <= set(states)
    assert_every_file_is_owned(settings)


@pytest.mark.parametrize("case", hostile.CASES, ids=lambda case: case.name)
def test_selfie_form_survives_the_corpus(case, event, run_jobs, settings):
    client = Client()
    with run_jobs():
        response = client.post(
            reverse("gallery:selfie_upload", args=[event.slug]),
            {"image": upload(case.name, case.make(), "application/octet-stream"), "consent": "on"},
        )
    assert response.status_code in (302, 400), response.status_code
    if response.status_code == 400:
        assert case.selfie in ("refused", "either"), f"{case.name} was refused"
        message = re.search(rb'role="alert"[^>]*>([^<]+)<', response.content).group(1).decode()
        assert READABLE.match(message), message
        assert not Selfie.objects.exists()
    else:
        assert case.selfie in ("accepted", "either"), f"{case.name} was accepted"
        status = client.get(reverse("gallery:me_status", args=[event.slug])).json()
        assert status["state"] in ("done", "failed")
        if status["state"] == "failed":
            assert READABLE.match(status["error"]), status["error"]
        if status["state"] == "done":  # the upload as it came was replaced by the small copy
            assert "original-" not in Selfie.objects.get().image.name
    assert_every_file_is_owned(settings)


@pytest.mark.parametrize("case", hostile.CASES, ids=lambda case: case.name)
def test_find_faces_survives_the_corpus(case, corpus, event, capsys):
    try:
        call_command("find_faces", event.slug, str(corpus / case.name))
    except CommandError as exc:
        assert case.photo != "indexed", f"{case.name}: {exc}"
        assert READABLE.match(str(exc).split(": ", 1)[-1]), str(exc)
    else:
        assert case.photo in ("indexed", "either"), f"{case.name} was searched"
