"""Organizer accounts: each organizer sees and changes only the events they own; superusers see all.

The permission matrix: organizer A, organizer B, a superuser and an anonymous
visitor against every admin list, object page, deletion, custom view and action,
and the management commands given --as.
"""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from gallery import services
from gallery.models import Event, Face, Match, Photo, Selfie
from tests.conftest import event_admin_form, jpeg_bytes, selfie_row

PASSWORD = "a-long-enough-pass-phrase-42"


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    # The production hasher's deliberate slowness adds seconds per test, and tests nothing here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(db, run_jobs):
    """Two organizers with an event each (a photo with a face, a selfie, a match), and a superuser."""
    a = services.organizer_create(username="alice", email="alice@example.org", password=PASSWORD)
    b = services.organizer_create(username="bob", email="bob@example.org", password=PASSWORD)
    root = get_user_model().objects.create_superuser("root", "root@example.org", PASSWORD)
    rows = {}
    for user, name in ((a, "Alice wedding"), (b, "Bob gala")):
        event = services.event_create(name=name, owner=user)
        with run_jobs():
            services.photo_import(event=event, name=f"{event.slug}.jpg", fileobj=io.BytesIO(jpeg_bytes()))
        photo = event.photos.get()
        face = Face.objects.create(photo=photo, left=1, top=1, width=10, height=10, engine="fake")
        selfie = selfie_row(event, image="s.jpg", match_state="done")
        match = Match.objects.create(selfie=selfie, photo=photo, distance=0.3)
        rows[user.username] = {"event": event, "photo": photo, "face": face, "selfie": selfie, "match": match}
    return {"alice": a, "bob": b, "root": root, "rows": rows}


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def changelist(model: str) -> str:
    return reverse(f"admin:gallery_{model}_changelist")


def change(obj) -> str:
    return reverse(f"admin:gallery_{obj._meta.model_name}_change", args=[obj.pk])


def delete(obj) -> str:
    return reverse(f"admin:gallery_{obj._meta.model_name}_delete", args=[obj.pk])


MODELS = ["event", "photo", "face", "selfie", "match"]


def _listed(page: str, obj) -> bool:
    return f"/admin/gallery/{obj._meta.model_name}/{obj.pk}/change/" in page


@pytest.mark.parametrize("model", MODELS)
def test_lists_show_only_the_users_own_rows(world, model):
    alice_row, bob_row = world["rows"]["alice"][model], world["rows"]["bob"][model]
    for who, sees, hidden in (("alice", alice_row, bob_row), ("bob", bob_row, alice_row)):
        page = client_for(world[who]).get(changelist(model)).content.decode()
        assert _listed(page, sees), (who, model)
        assert not _listed(page, hidden), (who, model)
    page = client_for(world["root"]).get(changelist(model)).content.decode()
    assert _listed(page, alice_row) and _listed(page, bob_row)
    anonymous = Client().get(changelist(model))
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]


def test_list_filters_name_only_the_users_events(world):
    page = client_for(world["bob"]).get(changelist("photo")).content.decode()
    assert "Bob gala" in page and "Alice wedding" not in page


@pytest.mark.parametrize("model", MODELS)
def test_object_pages_of_another_organizers_event_do_not_exist_for_them(world, model):
    obj = world["rows"]["alice"][model]
    assert client_for(world["alice"]).get(change(obj)).status_code == 200
    assert client_for(world["root"]).get(change(obj)).status_code == 200
    for url in (change(obj), delete(obj)):
        response = client_for(world["bob"]).get(url)
        # Django's answer for an object that does not exist: back to the index with a message
        # (or 403 where organizers may not do this at all, e.g. deleting a face).
        assert response.status_code == 403 or (
            response.status_code == 302 and response["Location"] == reverse("admin:index")
        ), url
        assert Client().get(url).status_code == 302


@pytest.mark.parametrize("model", MODELS)
def test_another_organizer_cannot_delete_or_change(world, model):
    obj = world["rows"]["alice"][model]
    bob = client_for(world["bob"])
    bob.post(delete(obj), {"post": "yes"})
    assert type(obj).objects.filter(pk=obj.pk).exists()
    if model == "event":
        bob.post(change(obj), {"name": "Hijacked", "slug": "hijacked", "date": "2026-01-01", "access_code": ""})
        obj.refresh_from_db()
        assert obj.name == "Alice wedding"
    # The bulk delete action runs on the user's rows only.
    bob.post(changelist(model), {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"})
    assert type(obj).objects.filter(pk=obj.pk).exists()


@pytest.mark.parametrize("model", ["event", "photo", "selfie", "match"])
def test_the_owner_can_delete(world, model):
    obj = world["rows"]["alice"][model]
    response = client_for(world["alice"]).post(delete(obj), {"post": "yes"})
    assert response.status_code == 302
    assert not type(obj).objects.filter(pk=obj.pk).exists()


def test_custom_views_answer_only_the_owner_and_superusers(world):
    photo = world["rows"]["alice"]["photo"]
    event = world["rows"]["alice"]["event"]
    urls = [
        reverse("admin:gallery_event_upload", args=[event.pk]),
        reverse("admin:gallery_event_qr", args=[event.pk]),
        reverse("admin:gallery_event_poster_svg", args=[event.pk]),
        reverse("admin:gallery_event_poster_png", args=[event.pk]),
        reverse("admin:gallery_photo_thumbnail", args=[photo.pk]),
    ]
    for url in urls:
        assert client_for(world["alice"]).get(url).status_code == 200, url
        assert client_for(world["root"]).get(url).status_code == 200, url
        assert client_for(world["bob"]).get(url).status_code == 404, url
        anonymous = Client().get(url)
        assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"], url
    # An upload into someone else's event stores nothing.
    response = client_for(world["bob"]).post(urls[0], {"files": [io.BytesIO(jpeg_bytes((1, 2, 3)))]})
    assert response.status_code == 404 and event.photos.count() == 1


def test_actions_touch_only_the_users_rows(world, run_jobs):
    alice_photo = world["rows"]["alice"]["photo"]
    alice_event = world["rows"]["alice"]["event"]
    Photo.objects.filter(pk=alice_photo.pk).update(index_state=Photo.State.FAILED, index_error="kept")
    Selfie.objects.filter(event=alice_event).update(match_state=Selfie.State.FAILED, match_error="kept")
    bob = client_for(world["bob"])
    with run_jobs():
        for model, action, pk in (
            ("photo", "reindex", alice_photo.pk),
            ("event", "reindex_failed", alice_event.pk),
            ("event", "rematch", alice_event.pk),
        ):
            bob.post(changelist(model), {"action": action, "_selected_action": [pk]})
    alice_photo.refresh_from_db()
    assert (alice_photo.index_state, alice_photo.index_error) == ("failed", "kept")
    assert Selfie.objects.get(event=alice_event).match_error == "kept"
    with run_jobs():
        client_for(world["alice"]).post(
            changelist("event"), {"action": "reindex_failed", "_selected_action": [alice_event.pk]}
        )
    alice_photo.refresh_from_db()
    assert alice_photo.index_state == Photo.State.INDEXED


def test_an_event_created_in_the_admin_belongs_to_its_creator(world):
    alice = client_for(world["alice"])
    response = alice.post(
        reverse("admin:gallery_event_add"),
        {
            "name": "Alice party",
            "slug": "alice-party",
            "date": "2026-07-01",
            "access_code": "",
            "published": "on",
            "retention_days": "30",
            "watermark_position": "bottom-right",
            "watermark_opacity": "60",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    event = Event.objects.get(slug="alice-party")
    assert list(event.owners.all()) == [world["alice"]]
    assert "Alice party" not in client_for(world["bob"]).get(changelist("event")).content.decode()


def test_an_owner_adds_another_organizer(world):
    event = world["rows"]["alice"]["event"]
    alice = client_for(world["alice"])
    data = event_admin_form(event)
    page = alice.post(change(event), {**data, "add_owner": "nobody"}).content.decode()
    assert "No organizer with this username" in page
    assert alice.post(change(event), {**data, "add_owner": "bob@example.org"}).status_code == 302
    assert set(event.owners.all()) == {world["alice"], world["bob"]}
    assert client_for(world["bob"]).get(change(event)).status_code == 200


def test_organizers_see_no_users_or_job_admin(world):
    bob = client_for(world["bob"])
    for url in (reverse("admin:auth_user_changelist"), reverse("admin:django_q_failure_changelist")):
        assert bob.get(url).status_code == 403, url


# --- Commands -------------------------------------------------------------------------


def test_create_organizer_prints_a_one_time_link_that_signs_in(db, client, settings):
    settings.SITE_URL = "https://photos.example.org"
    out = io.StringIO()
    call_command("create_organizer", "carol", "carol@example.org", stdout=out)
    link = next(line for line in out.getvalue().splitlines() if "/admin/welcome/" in line)
    user = get_user_model().objects.get(username="carol")
    assert user.is_staff and not user.is_superuser and not user.has_usable_password()
    path = link.split("://", 1)[1].split("/", 1)[1]
    form = client.get("/" + path, follow=True)
    assert form.status_code == 200 and b"new_password1" in form.content
    done = client.post(form.redirect_chain[-1][0], {"new_password1": PASSWORD, "new_password2": PASSWORD})
    assert done.status_code == 302 and done["Location"] == reverse("admin:index")
    assert client.get(reverse("admin:gallery_event_changelist")).status_code == 200  # signed in
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    client.logout()
    assert b"new_password1" not in client.get("/" + path, follow=True).content  # used once


def test_create_organizer_with_password_on_stdin(db, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    out = io.StringIO()
    call_command("create_organizer", "dave", "dave@example.org", "--password-stdin", stdout=out)
    assert get_user_model().objects.get(username="dave").check_password(PASSWORD)
    assert PASSWORD not in out.getvalue()
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    with pytest.raises(CommandError):
        call_command("create_organizer", "erin", "erin@example.org", "--password-stdin")
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_organizer", "dave", "other@example.org")


def test_create_event_with_an_owner(world):
    call_command("create_event", "Bob brunch", "--owner", "bob", stdout=io.StringIO())
    assert list(Event.objects.get(name="Bob brunch").owners.all()) == [world["bob"]]
    with pytest.raises(CommandError, match="No active staff user"):
        call_command("create_event", "Nobody's", "--owner", "nobody")
    assert not Event.objects.filter(name="Nobody's").exists()


def test_commands_given_as_touch_only_the_organizers_events(world, run_jobs, tmp_path):
    alice_event, bob_event = world["rows"]["alice"]["event"], world["rows"]["bob"]["event"]
    Photo.objects.update(index_state=Photo.State.FAILED, index_error="kept")
    # Another organizer's event does not exist for them, whatever the command.
    photo_file = tmp_path / "new.jpg"
    photo_file.write_bytes(jpeg_bytes((9, 9, 9)))
    for command in (
        ["import_photos", alice_event.slug, str(photo_file)],
        ["reindex", alice_event.slug],
        ["rematch", alice_event.slug],
        ["find_faces", alice_event.slug, str(photo_file)],
    ):
        with pytest.raises(CommandError, match="No event with the slug"):
            call_command(*command, "--as", "bob", stdout=io.StringIO(), stderr=io.StringIO())
    assert alice_event.photos.count() == 1
    # Without a slug: all of their events and only theirs.
    out = io.StringIO()
    with run_jobs():
        call_command("reindex", "--failed", "--as", "bob", stdout=out)
    assert "Queued 1 failed photos of the events of bob" in out.getvalue()
    assert bob_event.photos.get().index_state == Photo.State.INDEXED
    assert alice_event.photos.get().index_error == "kept"
    out = io.StringIO()
    call_command("rematch", "--as", "bob", stdout=out)
    assert "Queued 1 selfies of the events of bob" in out.getvalue()
    # Their own event works; an unknown --as never falls back to every event.
    with run_jobs():
        call_command("import_photos", bob_event.slug, str(photo_file), "--as", "bob", stdout=io.StringIO())
    assert bob_event.photos.count() == 2
    with pytest.raises(CommandError, match="No active staff user"):
        call_command("reindex", "--as", "nobody")
    # The superuser given with --as, or no --as (the operator): every event.
    out = io.StringIO()
    call_command("rematch", "--as", "root", stdout=out)
    assert "Queued 2 selfies" in out.getvalue()


# --- Event dashboard --------------------------------------------------------------------


def test_dashboard_counts_and_status_endpoint(world):
    event = world["rows"]["alice"]["event"]
    Photo.objects.create(event=event, original="x.jpg", original_name="waiting.jpg", content_hash="1" * 64)
    Photo.objects.create(
        event=event,
        original="y.jpg",
        original_name="broken.jpg",
        content_hash="2" * 64,
        index_state=Photo.State.FAILED,
        index_error="The image data is corrupt or truncated.",
    )
    alice = client_for(world["alice"])
    status = alice.get(reverse("admin:gallery_event_status", args=[event.pk])).json()
    assert status == {
        "photos": 3,
        "pending": 1,
        "processing": 0,
        "indexed": 1,
        "failed": 1,
        "finished": 2,
        "percent": 67,
        "running": True,
        "faces": 2,  # one found by the (fake) engine, one made by the fixture
        "selfies": 1,
        "selfies_failed": 0,
        "attendees_found": 1,
        "downloads": 0,
        "zip_downloads": 0,
    }
    page = alice.get(change(event)).content.decode()
    assert 'id="event-dashboard"' in page and "js/event-dashboard.js" in page
    assert '<dd data-count="failed">1</dd>' in page and '<dd data-count="attendees_found">1</dd>' in page
    assert "broken.jpg</a>: The image data is corrupt or truncated." in page
    assert "<script>" not in page.split('id="event-dashboard"')[1]  # no inline script (CSP)


def test_dashboard_buttons_queue_work_for_the_owner_only(world, run_jobs):
    event = world["rows"]["alice"]["event"]
    photo = world["rows"]["alice"]["photo"]
    Photo.objects.filter(pk=photo.pk).update(index_state=Photo.State.FAILED, index_error="kept")
    urls = {
        name: reverse(f"admin:gallery_event_{name}", args=[event.pk]) for name in ("retry_failed", "reindex", "rematch")
    }
    bob = client_for(world["bob"])
    for url in [*urls.values(), reverse("admin:gallery_event_status", args=[event.pk])]:
        assert bob.post(url).status_code == 404 and bob.get(url).status_code == 404
        assert Client().post(url).status_code == 302  # to the login page
    photo.refresh_from_db()
    assert photo.index_error == "kept"
    alice = client_for(world["alice"])
    assert alice.get(urls["retry_failed"]).status_code == 405  # a GET changes nothing
    with run_jobs():
        response = alice.post(urls["retry_failed"], follow=True)
    assert "1 failed photos queued for indexing again." in response.content.decode()
    photo.refresh_from_db()
    assert photo.index_state == Photo.State.INDEXED
    with run_jobs():
        assert "1 photos queued" in alice.post(urls["reindex"], follow=True).content.decode()
        assert "1 selfies queued" in alice.post(urls["rematch"], follow=True).content.decode()


# --- Photo admin --------------------------------------------------------------------------


def test_photo_page_draws_faces_and_names_matched_attendees(world):
    photo = world["rows"]["alice"]["photo"]
    selfie = world["rows"]["alice"]["selfie"]
    page = client_for(world["alice"]).get(change(photo)).content.decode()
    assert f'viewBox="0 0 {photo.width} {photo.height}"' in page
    assert page.count('<g class="face-box">') == photo.faces.count() == 2
    assert '<rect x="1" y="1" width="10" height="10"' in page
    assert f"/admin/gallery/selfie/{selfie.pk}/change/" in page and f"attendee {selfie.attendee_id}" in page


def test_photo_list_filters_and_face_counts(world):
    event = world["rows"]["alice"]["event"]
    indexed = world["rows"]["alice"]["photo"]
    pending = Photo.objects.create(event=event, original="x.jpg", original_name="waiting.jpg", content_hash="1" * 64)
    faceless = Photo.objects.create(
        event=event, original="y.jpg", original_name="empty-hall.jpg", content_hash="2" * 64, index_state="indexed"
    )
    alice = client_for(world["alice"])

    def listed(query: str) -> set[int]:
        page = alice.get(changelist("photo") + query).content.decode()
        return {p.pk for p in (indexed, pending, faceless) if _listed(page, p)}

    assert listed("?has_faces=yes") == {indexed.pk}
    assert listed("?has_faces=no") == {faceless.pk}  # not the pending one: its faces are not known yet
    assert listed("?q=hall") == {faceless.pk}
    assert listed("?index_state__exact=pending") == {pending.pk}
    page = alice.get(changelist("photo")).content.decode()
    row = page[page.index("waiting.jpg") :].split("</tr>")[0]
    assert '<td class="field-faces">—</td>' in row
    # The header's first sort marker is on the capture time, the order rows come in.
    header = page[page.index("<thead>") :].split("</thead>")[0]
    assert header.index("column-taken_at") < header.index("column-original_name")
    assert "Sorting priority: 1" in header.split("column-taken_at")[1].split("</th>")[0]


def test_deleting_a_photo_in_the_admin_takes_its_faces_and_matches(world, run_jobs, settings):
    photo = world["rows"]["alice"]["photo"]
    stored = [photo.original.name, photo.thumbnail.name]
    with run_jobs():
        client_for(world["alice"]).post(delete(photo), {"post": "yes"})
    assert not Face.objects.filter(photo_id=photo.pk).exists() and not Match.objects.filter(photo_id=photo.pk).exists()
    assert not any((settings.MEDIA_ROOT / name).exists() for name in stored)


# --- Poster ---------------------------------------------------------------------------------


def test_poster_is_an_a4_page_with_name_date_qr_code_and_instructions(world, settings):
    settings.SITE_URL = "https://photos.example.org"
    from PIL import Image

    event = world["rows"]["alice"]["event"]
    Event.objects.filter(pk=event.pk).update(name="Gala <des> Élèves & co", access_code="ROSE")
    alice = client_for(world["alice"])
    svg = alice.get(reverse("admin:gallery_event_poster_svg", args=[event.pk]))
    assert svg["Content-Type"] == "image/svg+xml" and "attachment" in svg["Content-Disposition"]
    text = svg.content.decode()
    assert 'width="210mm" height="297mm"' in text
    assert "Gala &lt;des&gt; Élèves &amp; co" in text  # escaped: a name is never markup
    assert "Scannez le code" in text and "Scan the code" in text and "ROSE" in text
    assert f"/e/{event.slug}/" in text
    assert f"Don't show me: https://photos.example.org/e/{event.slug}/opt-out/" in text  # issue #13
    png = alice.get(reverse("admin:gallery_event_poster_png", args=[event.pk]))
    image = Image.open(io.BytesIO(png.content))
    assert image.format == "PNG" and image.size == (1240, 1754)
    # The printed QR code is the attendee link's, module for module.
    import qrcode

    qr = qrcode.QRCode(border=0, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(settings.SITE_URL + event.get_absolute_url())
    qr.make(fit=True)
    n, side, left, top = qr.modules_count, 768, (1240 - 768) // 2, 384
    gray = image.convert("L")
    printed = [
        [gray.getpixel((int(left + (x + 0.5) * side / n), int(top + (y + 0.5) * side / n))) < 128 for x in range(n)]
        for y in range(n)
    ]
    assert printed == qr.modules


# --- Retention ---------------------------------------------------------------------------


def _attendee_data(event: Event) -> tuple[int, int, int]:
    from gallery.models import Attendee

    return (
        Attendee.objects.filter(event=event).count(),
        Selfie.objects.filter(event=event).count(),
        Match.objects.filter(selfie__event=event).count(),
    )


@pytest.fixture
def ages(world):
    """Alice's event ended 31 days ago (30 days' retention: expired); Bob's 29 days ago (kept);
    a third ended 31 days ago with 60 days' retention (kept)."""
    from datetime import timedelta

    from django.utils import timezone

    today = timezone.localdate()
    alice_event, bob_event = world["rows"]["alice"]["event"], world["rows"]["bob"]["event"]
    Event.objects.filter(pk=alice_event.pk).update(date=today - timedelta(days=31))
    Event.objects.filter(pk=bob_event.pk).update(date=today - timedelta(days=29))
    long = services.event_create(name="Long kept", event_date=today - timedelta(days=31))
    Event.objects.filter(pk=long.pk).update(retention_days=60)
    selfie_row(long, image="l.jpg")
    return {"expired": alice_event, "kept": [bob_event, long]}


def test_purge_expired_deletes_exactly_the_expired_attendee_data(world, ages, run_jobs, settings):
    expired = ages["expired"]
    selfie = world["rows"]["alice"]["selfie"]
    stored = settings.MEDIA_ROOT / "s.jpg"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(b"selfie")
    kept_before = [_attendee_data(event) for event in ages["kept"]]
    photos_before = Photo.objects.count(), Face.objects.count()

    out = io.StringIO()
    call_command("purge_expired", "--dry-run", stdout=out)
    assert f"Would delete {expired.slug}: 1 attendees, 1 selfies, 1 matches" in out.getvalue()
    assert "1 events past their retention period" in out.getvalue()
    assert _attendee_data(expired) == (1, 1, 1) and stored.exists()

    out = io.StringIO()
    with run_jobs():
        call_command("purge_expired", stdout=out)
    assert f"Deleted {expired.slug}: 1 attendees, 1 selfies, 1 matches" in out.getvalue()
    assert _attendee_data(expired) == (0, 0, 0)
    assert not Selfie.objects.filter(pk=selfie.pk).exists() and not stored.exists()  # the file went too
    assert [_attendee_data(event) for event in ages["kept"]] == kept_before  # nothing else
    assert (Photo.objects.count(), Face.objects.count()) == photos_before  # photos and their faces stay
    out = io.StringIO()
    call_command("purge_expired", stdout=out)
    assert "0 events past their retention period" in out.getvalue()


def test_purge_expired_as_an_organizer_touches_only_their_events(world, ages):
    call_command("purge_expired", "--as", "bob", stdout=io.StringIO())
    assert _attendee_data(ages["expired"]) == (1, 1, 1)
    call_command("purge_expired", "--as", "alice", stdout=io.StringIO())
    assert _attendee_data(ages["expired"]) == (0, 0, 0)


def test_the_daily_job_is_scheduled_and_purges(world, ages, run_jobs):
    from django.utils.module_loading import import_string
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="Purge expired attendee data")
    assert schedule.schedule_type == Schedule.DAILY and schedule.repeats < 0
    with run_jobs():
        assert import_string(schedule.func)() == "purged 1 events"
    assert _attendee_data(ages["expired"]) == (0, 0, 0)
    assert all(_attendee_data(event)[0] == 1 for event in ages["kept"])


def test_purge_now_asks_first_and_only_the_owner_may(world):
    event = world["rows"]["bob"]["event"]  # not expired: purging now is the organizer's choice
    url = reverse("admin:gallery_event_purge", args=[event.pk])
    alice = client_for(world["alice"])
    assert alice.get(url).status_code == 404 and alice.post(url).status_code == 404
    assert _attendee_data(event) == (1, 1, 1)
    bob = client_for(world["bob"])
    page = bob.get(url).content.decode()
    assert "This deletes 1 attendees with their 1 selfies" in page and _attendee_data(event) == (1, 1, 1)
    response = bob.post(url, follow=True)
    assert "Deleted 1 attendees, 1 selfies and 1 matches." in response.content.decode()
    assert _attendee_data(event) == (0, 0, 0) and event.photos.count() == 1


def test_migrate_keeps_the_organizers_group_complete(db):
    from django.contrib.auth.models import Group

    group = Group.objects.get(name=services.ORGANIZERS_GROUP)  # made by the test database's migrate
    group.permissions.clear()  # as after an upgrade that added a model
    call_command("migrate", verbosity=0)
    codenames = set(group.permissions.values_list("codename", flat=True))
    assert {"view_event", "change_event", "view_upload", "delete_selfie"} <= codenames
    assert "add_photo" not in codenames and "view_user" not in codenames


# --- Watermark ------------------------------------------------------------------------------


def test_the_watermark_is_on_the_served_copies_never_on_the_original(world, run_jobs):
    import hashlib

    from PIL import Image, ImageChops

    from tests.conftest import sample

    event = world["rows"]["alice"]["event"]
    with run_jobs():
        services.paths_import(event=event, paths=[sample("people/kit_harington/kit1.jpg")])
    photo = event.photos.get(original_name="kit1.jpg")
    with photo.display.open("rb") as handle:
        plain = Image.open(handle).convert("RGB")

    alice = client_for(world["alice"])
    data = event_admin_form(event, watermark_text="© Studio Lumière", watermark_opacity="80")
    with run_jobs():
        response = alice.post(change(event), data, follow=True)
    assert "Watermark changed: 2 photos are being copied again" in response.content.decode()
    photo.refresh_from_db()
    with photo.display.open("rb") as handle:
        marked = Image.open(handle).convert("RGB")
    assert marked.size == plain.size
    box = ImageChops.difference(plain, marked).getbbox()
    assert box is not None and box[0] > plain.width // 2 and box[1] > plain.height // 2  # bottom right only
    with photo.original.open("rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == photo.content_hash  # the original is untouched
    assert photo.index_state == Photo.State.INDEXED
