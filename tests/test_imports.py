"""Imports from files, folders and zip archives, through the command and the admin; bad input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from gallery import services
from gallery.models import Event, Photo
from tests.conftest import corrupt_jpeg, jobs_inline, jpeg_bytes, selfie_row, upload
from tests.pages import table_rows

pytestmark = pytest.mark.django_db


def texts(summary: services.ImportSummary) -> list[tuple[str, str]]:
    """The summary's rejections as the organizer reads them (in the active language)."""
    return [(name, str(reason)) for name, reason in summary.rejected]


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Good photos next to a corrupt one, a text file and an empty file."""
    folder = tmp_path / "shoot"
    (folder / "day2").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(jpeg_bytes((200, 0, 0)))
    (folder / "day2" / "b.png").write_bytes(_png((0, 200, 0)))
    (folder / "corrupt.jpg").write_bytes(corrupt_jpeg())
    (folder / "notes.txt").write_text("not a photo")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / ".hidden.jpg").write_bytes(jpeg_bytes((1, 2, 3)))
    return folder


def _png(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (40, 40), (*color, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_import_command_reports_each_kind_of_file(event, mixed_folder, run_jobs, capsys):
    with run_jobs():
        call_command("import_photos", event.slug, str(mixed_folder))
    out, err = capsys.readouterr()
    assert "3 imported, 0 duplicates skipped, 2 rejected" in out
    assert "notes.txt: This file is not an image" in err and "empty.jpg: empty file" in err
    states = dict(Photo.objects.values_list("original_name", "index_state"))
    assert states == {"a.jpg": "indexed", "b.png": "indexed", "corrupt.jpg": "failed"}
    corrupt = Photo.objects.get(original_name="corrupt.jpg")
    assert corrupt.index_error == "The image data is corrupt or truncated." and corrupt.face_count == 0


def test_zip_archives_are_imported_and_hostile_members_refused(event, run_jobs, settings, tmp_path):
    settings.PHOTO_MAX_BYTES = 200_000
    archive = tmp_path / "photos.zip"
    archive.write_bytes(
        make_zip(
            {
                "album/one.jpg": jpeg_bytes((10, 200, 10)),
                "../../../etc/evil.jpg": jpeg_bytes((10, 10, 200)),
                "__MACOSX/album/._one.jpg": b"junk",
                "bomb.jpg": b"\0" * 5_000_000,  # compresses to a few KB
                "inner.zip": make_zip({"x.jpg": jpeg_bytes()}),
            }
        )
    )
    with run_jobs():
        summary = services.paths_import(event=event, paths=[archive])
    assert sorted(Photo.objects.values_list("original_name", flat=True)) == ["evil.jpg", "one.jpg"]
    reasons = {name: str(reason) for name, reason in summary.rejected}
    assert reasons["photos.zip:bomb.jpg"].startswith("larger than")
    assert reasons["photos.zip:inner.zip"] == "archives inside archives are not imported"
    assert not (tmp_path.parent / "etc").exists()
    # Stored under content-addressed names, never under the member's path.
    assert all(p.original.name.startswith(f"events/{event.pk}/originals/") for p in Photo.objects.all())


def test_a_lying_zip_header_yields_an_unreadable_member_not_a_photo(event, settings):
    data = bytearray(make_zip({"big.jpg": b"\xff" * 300_000}))
    # Claim a tiny uncompressed size in the central directory: zipfile stops there
    # and the CRC check fails, so the member is refused as unreadable.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    summary = services.archive_import(event=event, fileobj=io.BytesIO(bytes(data)), name="liar.zip")
    assert not summary.created
    assert summary.rejected[0][0] == "liar.zip:big.jpg" and "Bad CRC-32" in str(summary.rejected[0][1])
    assert not Photo.objects.exists()


def test_size_is_enforced_on_the_bytes_actually_read(event, settings):
    # Whatever a header claims, the import counts what it reads.
    settings.PHOTO_MAX_BYTES = 1000
    summary = services.photo_import(event=event, name="x.jpg", fileobj=io.BytesIO(b"\xff" * 5000))
    assert texts(summary) == [("x.jpg", "larger than 1000\xa0bytes")]
    assert not Photo.objects.exists()


def test_not_a_zip_is_one_clear_rejection(event):
    summary = services.upload_import(event=event, name="photos.zip", fileobj=io.BytesIO(b"definitely not a zip"))
    assert texts(summary) == [("photos.zip", "not a valid zip archive")]


def test_too_many_members_is_refused(event, settings):
    settings.ARCHIVE_MAX_MEMBERS = 3
    data = make_zip({f"{n}.jpg": jpeg_bytes((n, n, n)) for n in range(5)})
    summary = services.archive_import(event=event, fileobj=io.BytesIO(data), name="many.zip")
    assert texts(summary) == [("many.zip", "more than 3 files in one archive")] and not Photo.objects.exists()


def test_huge_pixel_counts_are_refused_before_decoding(event, settings):
    settings.PHOTO_MAX_PIXELS = 1000
    summary = services.photo_import(event=event, name="huge.jpg", fileobj=io.BytesIO(jpeg_bytes(size=(100, 100))))
    assert "too large" in str(summary.rejected[0][1]) and not Photo.objects.exists()


def test_import_command_errors_are_readable(event, tmp_path):
    with pytest.raises(CommandError, match="No event with the slug 'nope'"):
        call_command("import_photos", "nope", str(tmp_path))
    with pytest.raises(CommandError, match="No such file or folder"):
        call_command("import_photos", event.slug, str(tmp_path / "missing"))


def test_import_wait_says_when_no_cluster_is_consuming(event, settings, tmp_path, capsys):
    jobs_inline(settings, False)
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(CommandError, match="No job cluster is running"):
        call_command("import_photos", event.slug, str(tmp_path), "--wait", "--stall-timeout", "1")
    assert "No job cluster seems to be running" in capsys.readouterr().err
    assert Photo.objects.get().index_state == Photo.State.PENDING  # kept, still queued


def test_import_wait_reports_results(transactional_db, event, tmp_path, capsys):
    # Autocommit: each job runs (inline) as soon as its photo is committed.
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "bad.jpg").write_bytes(corrupt_jpeg())
    call_command("import_photos", event.slug, str(tmp_path), "--wait", "--stall-timeout", "5")
    out = capsys.readouterr()
    assert "Indexed 1 photos (1 faces), 1 failed." in out.out and "bad.jpg: The image data is corrupt" in out.err


def test_create_event_command(db, capsys):
    call_command("create_event", "Gala Night 2026", "--code", "stars")
    event = Event.objects.get()
    assert (event.slug, event.access_code) == ("gala-night-2026", "stars")
    assert "/e/gala-night-2026/" in capsys.readouterr().out
    call_command("create_event", "Gala Night 2026")
    assert Event.objects.filter(slug="gala-night-2026-2").exists()
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_event", "Again", "--slug", "gala-night-2026")
    with pytest.raises(CommandError, match="not a valid slug"):
        call_command("create_event", "Bad", "--slug", "Not A Slug")
    with pytest.raises(CommandError, match="name: Ensure this value has at most 200 characters"):
        call_command("create_event", "x" * 300)
    with pytest.raises(CommandError, match="access_code: Ensure this value has at most 64"):
        call_command("create_event", "Fine", "--code", "c" * 100)


def test_find_faces_errors_are_readable(event, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CommandError, match="No such file"):
        call_command("find_faces", event.slug, str(tmp_path / "missing.jpg"))
    with pytest.raises(CommandError, match="not an image"):
        call_command("find_faces", event.slug, str(tmp_path / "notes.txt"))
    with pytest.raises(CommandError, match="No event"):
        call_command("find_faces", "nope", str(tmp_path / "notes.txt"))


def test_reindex_failed_only_touches_failed_photos(event, run_jobs, capsys):
    with run_jobs():
        services.photo_import(event=event, name="ok.jpg", fileobj=io.BytesIO(jpeg_bytes()))
        services.photo_import(event=event, name="bad.jpg", fileobj=io.BytesIO(corrupt_jpeg()))
    with run_jobs():
        call_command("reindex", event.slug, "--failed")
    assert "Queued 1 failed photos of event summer" in capsys.readouterr().out
    assert Photo.objects.get(original_name="bad.jpg").index_state == Photo.State.FAILED  # failed again
    with pytest.raises(CommandError):
        call_command("rematch", "nope")


# --- Admin --------------------------------------------------------------------------


def test_admin_upload_accepts_files_and_zips_and_reports_rejections(admin_client, event, run_jobs):
    url = reverse("admin:gallery_event_upload", args=[event.pk])
    assert admin_client.get(url).status_code == 200
    files = [
        upload("a.jpg", jpeg_bytes((200, 0, 0))),
        upload("bad.jpg", corrupt_jpeg()),
        upload("empty.jpg", b""),
        upload("notes.txt", b"hello", "text/plain"),
        upload("more.zip", make_zip({"z.jpg": jpeg_bytes((0, 0, 200))}), "application/zip"),
    ]
    with run_jobs():
        response = admin_client.post(url, {"files": files}, follow=True)
    assert response.status_code == 200
    text = response.content.decode()
    assert "3 imported, 0 duplicates skipped, 2 rejected" in text
    assert "Rejected notes.txt" in text and "Rejected empty.jpg: empty file" in text
    assert dict(Photo.objects.values_list("original_name", "index_state")) == {
        "a.jpg": "indexed",
        "bad.jpg": "failed",
        "z.jpg": "indexed",
    }
    # Submitting nothing is a form error, not a 500.
    assert b"Choose photos" in admin_client.post(url, {}).content


def test_admin_pages_render(admin_client, event, run_jobs):
    with run_jobs():
        services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    photo = Photo.objects.get()
    for url in (
        reverse("admin:gallery_event_changelist"),
        reverse("admin:gallery_event_change", args=[event.pk]),
        reverse("admin:gallery_photo_changelist"),
        reverse("admin:gallery_photo_change", args=[photo.pk]),
        reverse("admin:gallery_selfie_changelist"),
        reverse("admin:gallery_match_changelist"),
        reverse("admin:gallery_face_changelist"),
        reverse("admin:django_q_failure_changelist"),
    ):
        assert admin_client.get(url).status_code == 200, url
    change = admin_client.get(reverse("admin:gallery_event_change", args=[event.pk])).content
    assert b"<svg" in change and b"/e/summer/" in change
    assert admin_client.get(reverse("admin:gallery_photo_thumbnail", args=[photo.pk])).status_code == 200


def test_admin_actions_run_their_jobs(admin_client, event, run_jobs):

    from gallery.models import Selfie

    with run_jobs():
        services.photo_import(event=event, name="ok.jpg", fileobj=io.BytesIO(jpeg_bytes()))
        services.photo_import(event=event, name="bad.jpg", fileobj=io.BytesIO(corrupt_jpeg()))
    ok = Photo.objects.get(original_name="ok.jpg")
    first_indexed_at = ok.indexed_at

    def act(changelist: str, action: str, ids: list[int]) -> bytes:
        with run_jobs():
            url = reverse(f"admin:gallery_{changelist}_changelist")
            return admin_client.post(url, {"action": action, "_selected_action": ids}, follow=True).content

    assert b"1 photos queued for indexing" in act("photo", "reindex", [ok.pk])
    ok.refresh_from_db()
    assert ok.index_state == Photo.State.INDEXED and ok.indexed_at > first_indexed_at  # indexed again

    Photo.objects.filter(original_name="bad.jpg").update(index_error="old error")
    assert b"1 photos queued for indexing again" in act("event", "reindex_failed", [event.pk])
    assert Photo.objects.get(original_name="bad.jpg").index_error == "The image data is corrupt or truncated."

    selfie = selfie_row(event, image="s.jpg", match_state="failed")
    assert b"1 selfies queued for matching" in act("event", "rematch", [event.pk])
    selfie.refresh_from_db()
    # It ran: the selfie's image does not exist here, so matching failed and said so.
    assert selfie.match_state == Selfie.State.FAILED and selfie.match_error.startswith("Something went wrong")


def test_non_staff_get_nothing_from_the_admin(client, django_user_model, event):
    url = reverse("admin:gallery_event_upload", args=[event.pk])
    assert client.get(url).status_code == 302  # to the login page
    user = django_user_model.objects.create_user("visitor", password="pw-123456789")
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    staff = django_user_model.objects.create_user("helper", password="pw-123456789", is_staff=True)
    client.force_login(staff)  # staff without the change permission
    assert client.get(url).status_code == 403
    assert client.get(reverse("admin:gallery_photo_thumbnail", args=[1])).status_code == 403


def test_served_copies_are_upright_and_carry_no_metadata(event, run_jobs):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}  # GPS position
    exif[0x0132] = "2026:06:21 18:30:00"
    buffer = io.BytesIO()
    Image.new("RGB", (400, 200), (90, 140, 200)).save(buffer, format="JPEG", exif=exif.tobytes())
    with run_jobs():
        services.photo_import(event=event, name="phone.jpg", fileobj=io.BytesIO(buffer.getvalue()))
    photo = Photo.objects.get()
    assert (photo.width, photo.height) == (200, 400)  # upright
    assert photo.taken_at.isoformat().startswith("2026-06-21T18:30")
    for served in (photo.display, photo.thumbnail):
        with served.open("rb") as handle:
            image = Image.open(handle)
            assert image.height > image.width
            assert not image.getexif() and "exif" not in image.info
    with photo.original.open("rb") as handle:  # the organizer's original is kept as uploaded
        assert Image.open(handle).getexif()[0x010F] == "PhoneMaker"


def test_deleting_an_event_removes_its_files(event, run_jobs):
    from django.core.files.storage import default_storage

    with run_jobs():
        services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    photo = Photo.objects.get()
    names = [photo.original.name, photo.display.name, photo.thumbnail.name]
    assert all(default_storage.exists(name) for name in names)
    with run_jobs():
        event.delete()
    assert not any(default_storage.exists(name) for name in names)


def test_one_failed_file_delete_neither_fails_nor_skips_the_others(event, run_jobs, monkeypatch):
    from django.core.files.storage import FileSystemStorage, default_storage

    with run_jobs():
        services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    photo = Photo.objects.get()
    names = [photo.original.name, photo.display.name, photo.thumbnail.name]
    real_delete, calls = FileSystemStorage.delete, []

    def flaky_delete(self, name):
        calls.append(name)
        if len(calls) == 1:
            raise OSError("storage hiccup")
        real_delete(self, name)

    monkeypatch.setattr(FileSystemStorage, "delete", flaky_delete)
    with run_jobs():
        photo.delete()
    assert len(calls) == 3
    assert [default_storage.exists(name) for name in names] == [True, False, False]


def test_no_metadata_travels_into_served_copies_not_even_a_jpeg_comment(event, run_jobs):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 120, 60)).save(buffer, format="JPEG", comment=b"Jane Doe +33 6 12 34 56 78")
    with run_jobs():
        services.photo_import(event=event, name="c.jpg", fileobj=io.BytesIO(buffer.getvalue()))
    photo = Photo.objects.get()
    for served in (photo.display, photo.thumbnail):
        with served.open("rb") as handle:
            data = handle.read()
        assert b"Jane Doe" not in data and "comment" not in Image.open(io.BytesIO(data)).info


def test_a_corrupt_compressed_member_is_one_rejection(event):
    good = jpeg_bytes((3, 4, 5))
    data = bytearray(make_zip({"ok.jpg": good, "bad.jpg": jpeg_bytes((200, 200, 0), size=(300, 300))}))
    start = data.find(b"bad.jpg") + len("bad.jpg")  # the local header's name; data follows
    for i in range(start + 20, start + 60):
        data[i] ^= 0x5A  # scramble the deflate stream
    summary = services.archive_import(event=event, fileobj=io.BytesIO(bytes(data)), name="scrambled.zip")
    assert [name for name, _ in summary.rejected] == ["scrambled.zip:bad.jpg"]
    assert "unreadable in the archive" in str(summary.rejected[0][1])
    assert list(Photo.objects.values_list("original_name", flat=True)) == ["ok.jpg"]


def test_an_absurd_file_name_never_reaches_the_storage(admin_client, event, run_jobs):
    name = "IMG_0001." + "x" * 200
    with run_jobs():
        response = admin_client.post(
            reverse("admin:gallery_event_upload", args=[event.pk]), {"files": [upload(name, jpeg_bytes())]}
        )
    assert response.status_code == 302
    photo = Photo.objects.get()
    assert photo.original.name.endswith(f"{photo.content_hash}.jpg") and photo.index_state == Photo.State.INDEXED


def test_event_list_counts_photos_and_selfies_separately(admin_client, event, run_jobs):

    with run_jobs():
        services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
        services.photo_import(event=event, name="bad.jpg", fileobj=io.BytesIO(corrupt_jpeg()))
    for n in range(3):
        selfie_row(event, image=f"{n}.jpg")
    Event.objects.create(name="Empty", slug="empty")
    page = admin_client.get(reverse("admin:gallery_event_changelist")).content.decode()
    rows = {row[1]: row for row in table_rows(page) if len(row) > 1}  # keyed by the name column
    assert rows["Summer party"][-4:] == ["2", "1", "1", "3"]  # photos, indexed, failed, selfies: not multiplied
    assert rows["Empty"][-4:] == ["0", "0", "0", "0"]
