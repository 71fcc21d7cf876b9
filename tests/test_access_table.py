"""One access table: every attendee and admin URL x every kind of visitor, with the answer.

To add a URL: one line in ROUTES (how to build it) and one row in TABLE (the
answer for each visitor, in the order of the header). Answers:

    200    the page (or file)                code   the event-code form (200)
    404    not found (anything private)      403    forbidden (admin, no permission)
    login  redirect to the admin login       >event redirect to the event page
    >me    redirect to the attendee's page

The world: event "gala" had the code "Old-Code" when "ex" took a selfie
(matching photo green.jpg); the organizer then changed it to "Sunset-42"; "owner"
(red1.jpg, red2.jpg) and "another" (blue.jpg) entered the new code and took
selfies. Visitors: anonymous (no session), no_code (opened the event page, no
code), with_code (entered the code, no selfie), owner, another, old_link (opened
ex's private link, made under the old code), staff (is_staff, no permission),
superuser (who never entered the code: the admin, not the attendee pages, is
theirs).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import reverse

from gallery import services
from gallery.models import Attendee, Event, Photo, Selfie
from tests.conftest import jpeg_bytes, upload

pytestmark = pytest.mark.django_db

RED, BLUE, GREEN = (200, 40, 40), (40, 40, 200), (40, 200, 40)
ACTORS = ["anonymous", "no_code", "with_code", "owner", "another", "old_link", "staff", "superuser"]

TABLE = """
route                   anonymous no_code with_code owner another old_link staff superuser
event                   code      code    200       200   200     code     code  code
privacy                 200       200     200       200   200     200      200   200
event_theme             200       200     200       200   200     200      200   200
event_cover             200       200     200       200   200     200      200   200
code_right              >event    >event  200       200   200     >event   >event >event
selfie_upload           404       404     >me       >me   >me     404      404   404
me                      >event    >event  >event    200   200     >event   >event >event
me_status               404       404     404       200   200     404      404   404
me_forget               404       404     >event    >event >event 404      404   404
me_resume_owner         >me       >me     >me       >me   >me     >me      >me   >me
me_resume_old           >me       >me     >me       >me   >me     >me      >me   >me
after_resume_old        >event    >event  200       200   200     >event   >event >event
photo_owner             404       404     404       200   404     404      404   404
photo_owner_thumbnail   404       404     404       200   404     404      404   404
photo_owner_download    404       404     404       200   404     404      404   404
photo_owner_image       404       404     404       200   404     404      404   404
photo_owner_not_me      404       404     404       >me   404     404      404   404
photo_owner_undo        404       404     404       >me   404     404      404   404
photos_zip              404       404     404       200   200     404      404   404
me_email                404       404     404       >me   >me     404      404   404
me_email_stop           404       404     404       >me   >me     404      404   404
unsubscribe             200       200     200       200   200     200      200   200
photo_old_link          404       404     404       404   404     404      404   404
optout                  404       404     200       200   200     404      404   404
optout_link             200       200     200       200   200     200      200   200
optout_link_attendee    404       404     404       404   404     404      404   404
optout_as_gallery_link  404       404     404       404   404     404      404   404
admin_index             login     login   login     login login   login    200   200
admin_events            login     login   login     login login   login    403   200
admin_event_change      login     login   login     login login   login    403   200
admin_event_upload      login     login   login     login login   login    403   200
admin_event_optouts     login     login   login     login login   login    403   200
admin_event_audit       login     login   login     login login   login    403   200
admin_photos            login     login   login     login login   login    403   200
admin_photo_thumbnail   login     login   login     login login   login    403   200
admin_selfies           login     login   login     login login   login    403   200
admin_matches           login     login   login     login login   login    403   200
admin_faces             login     login   login     login login   login    403   200
"""


@dataclass
class World:
    event: Event
    clients: dict[str, Client]
    photos: dict[str, Photo]
    owner: Attendee
    ex: Attendee


def _selfie(client: Client, event: Event, color: tuple[int, int, int]) -> None:
    client.post(
        reverse("gallery:selfie_upload", args=[event.slug]),
        {"image": upload("me.jpg", jpeg_bytes(color)), "consent": "on"},
    )


@pytest.fixture
def world(run_jobs, django_user_model) -> World:
    event = Event.objects.create(name="Gala", slug="gala", access_code="Old-Code")
    with run_jobs():
        for name, color, width in (("red1.jpg", RED, 80), ("red2.jpg", RED, 81), ("blue.jpg", BLUE, 80)):
            services.photo_import(event=event, name=name, fileobj=io.BytesIO(jpeg_bytes(color, size=(width, 60))))
        services.photo_import(event=event, name="green.jpg", fileobj=io.BytesIO(jpeg_bytes(GREEN, size=(80, 60))))
    event_url = reverse("gallery:event", args=[event.slug])
    ex = Client()
    ex.post(event_url, {"code": "Old-Code"})
    with run_jobs():
        _selfie(ex, event, GREEN)
    ex_attendee = Attendee.objects.get()
    event.access_code = "Sunset-42"
    event.accent_colour = "#aa3300"
    event.cover.save("cover.jpg", io.BytesIO(jpeg_bytes(GREEN)), save=False)
    event.save()

    clients = {actor: Client() for actor in ACTORS}
    clients["no_code"].get(event_url)
    for actor in ("with_code", "owner", "another"):
        clients[actor].post(event_url, {"code": "Sunset-42"})
    with run_jobs():
        _selfie(clients["owner"], event, RED)
        _selfie(clients["another"], event, BLUE)
    owner = Attendee.objects.get(selfies__matches__photo__original_name="red1.jpg")
    clients["old_link"].get(reverse("gallery:me_resume", args=[event.slug, ex_attendee.token]))
    # No passwords: hashing one costs more than the rest of the world.
    clients["staff"].force_login(django_user_model.objects.create(username="staff", is_staff=True))
    clients["superuser"].force_login(
        django_user_model.objects.create(username="root", is_staff=True, is_superuser=True)
    )
    assert Selfie.objects.filter(match_state=Selfie.State.DONE).count() == 3
    photos = {photo.original_name: photo for photo in Photo.objects.all()}
    return World(event=event, clients=clients, photos=photos, owner=owner, ex=ex_attendee)


@dataclass
class Route:
    method: str
    url: Callable[[World], str]
    data: Callable[[World], dict] = lambda world: {}
    # What the same visitor did first (e.g. open a link), answers not checked.
    before: Callable[[World, Client], object] | None = None


def _event(name: str, *extra: object) -> Callable[[World], str]:
    return lambda world: reverse(name, args=[world.event.slug, *extra])


def _photo(name: str, photo: str) -> Callable[[World], str]:
    return lambda world: reverse(name, args=[world.event.slug, world.photos[photo].pk])


ROUTES: dict[str, Route] = {
    "event": Route("get", _event("gallery:event")),
    "privacy": Route("get", _event("gallery:privacy")),
    # Branding is as public as the event's name: the code form wears it too.
    "event_theme": Route("get", _event("gallery:event_theme")),
    "event_cover": Route("get", _event("gallery:event_cover")),
    "code_right": Route("post", _event("gallery:event"), lambda world: {"code": "Sunset-42"}),
    "selfie_upload": Route(
        "post",
        _event("gallery:selfie_upload"),
        lambda world: {"image": upload("me.jpg", jpeg_bytes((90, 90, 20))), "consent": "on"},
    ),
    "me": Route("get", _event("gallery:me")),
    "me_status": Route("get", _event("gallery:me_status")),
    "me_forget": Route("post", _event("gallery:me_forget")),
    "me_resume_owner": Route("get", lambda w: reverse("gallery:me_resume", args=[w.event.slug, w.owner.token])),
    "me_resume_old": Route("get", lambda w: reverse("gallery:me_resume", args=[w.event.slug, w.ex.token])),
    # What an old link opens: the attendee page right after following it.
    "after_resume_old": Route(
        "get",
        _event("gallery:me"),
        before=lambda w, client: client.get(reverse("gallery:me_resume", args=[w.event.slug, w.ex.token])),
    ),
    "photo_owner": Route("get", _photo("gallery:photo_view", "red1.jpg")),
    "photo_owner_thumbnail": Route("get", _photo("gallery:photo_thumbnail", "red1.jpg")),
    "photo_owner_download": Route("get", _photo("gallery:photo_download", "red1.jpg")),
    "photo_owner_image": Route("get", _photo("gallery:photo_image", "red1.jpg")),
    "photo_owner_not_me": Route("post", _photo("gallery:photo_reject", "red1.jpg")),
    # Undoing a "not me" the visitor just said.
    "photo_owner_undo": Route(
        "post",
        _photo("gallery:photo_undo", "red1.jpg"),
        before=lambda w, client: client.post(_photo("gallery:photo_reject", "red1.jpg")(w)),
    ),
    "photos_zip": Route("get", _event("gallery:photos_zip")),
    "me_email": Route("post", _event("gallery:me_email"), lambda world: {"email": "a@example.org", "consent": "on"}),
    "me_email_stop": Route("post", _event("gallery:me_email_stop")),
    # The link in an e-mail: it needs no session, and only asks for a confirmation.
    "unsubscribe": Route("get", lambda w: reverse("gallery:unsubscribe", args=[w.event.slug, _unsubscribe_token(w)])),
    "photo_old_link": Route("get", _photo("gallery:photo_view", "green.jpg")),
    # An opt-out's private link shows it and withdraws it (the link is the credential)...
    "optout": Route("get", _event("gallery:optout")),
    "optout_link": Route("get", lambda w: reverse("gallery:optout_link", args=[w.event.slug, _optout_token(w)])),
    # ...an attendee's private link is no opt-out link, and an opt-out's opens no gallery.
    "optout_link_attendee": Route("get", lambda w: reverse("gallery:optout_link", args=[w.event.slug, w.owner.token])),
    "optout_as_gallery_link": Route(
        "get", lambda w: reverse("gallery:me_resume", args=[w.event.slug, _optout_token(w)])
    ),
    "admin_index": Route("get", lambda w: reverse("admin:index")),
    "admin_events": Route("get", lambda w: reverse("admin:gallery_event_changelist")),
    "admin_event_change": Route("get", lambda w: reverse("admin:gallery_event_change", args=[w.event.pk])),
    "admin_event_upload": Route("get", lambda w: reverse("admin:gallery_event_upload", args=[w.event.pk])),
    "admin_event_optouts": Route("get", lambda w: reverse("admin:gallery_event_optouts", args=[w.event.pk])),
    "admin_event_audit": Route("get", lambda w: reverse("admin:gallery_event_audit", args=[w.event.pk])),
    "admin_photos": Route("get", lambda w: reverse("admin:gallery_photo_changelist")),
    "admin_photo_thumbnail": Route(
        "get", lambda w: reverse("admin:gallery_photo_thumbnail", args=[w.photos["red1.jpg"].pk])
    ),
    "admin_selfies": Route("get", lambda w: reverse("admin:gallery_selfie_changelist")),
    "admin_matches": Route("get", lambda w: reverse("admin:gallery_match_changelist")),
    "admin_faces": Route("get", lambda w: reverse("admin:gallery_face_changelist")),
}


def _optout_token(world: World) -> str:
    """An opt-out of the event (a row only: no template, so it hides nobody here)."""
    optout = Attendee.objects.filter(event=world.event, opted_out=True).first()
    return (
        optout or Attendee.objects.create(event=world.event, consent_at=world.owner.consent_at, opted_out=True)
    ).token


def _unsubscribe_token(world: World) -> str:
    from gallery import emails

    Attendee.objects.filter(pk=world.owner.pk).update(email="owner@example.org")
    world.owner.refresh_from_db()
    return emails.unsubscribe_token(world.owner)


def _parse(table: str) -> list[tuple[str, str, str]]:
    lines = [line.split() for line in table.strip().splitlines()]
    header, rows = lines[0][1:], lines[1:]
    assert header == ACTORS
    return [(row[0], actor, answer) for row in rows for actor, answer in zip(header, row[1:], strict=True)]


CELLS = _parse(TABLE)


def test_every_route_has_a_row_and_every_row_a_route():
    assert {route for route, _, _ in CELLS} == set(ROUTES)


def test_every_attendee_url_is_in_the_table():
    # A new attendee view must be added here, with its answers for every visitor.
    from gallery.urls import urlpatterns

    covered = {"home", "event", "privacy", "selfie_upload", "me", "me_status", "me_forget", "me_resume"}
    covered |= {"photo_view", "photo_image", "photo_thumbnail", "photo_download", "photo_reject", "photo_undo"}
    covered |= {"photos_zip", "me_email", "me_email_stop", "unsubscribe", "optout", "optout_link"}
    covered |= {"event_theme", "event_cover"}
    assert {pattern.name for pattern in urlpatterns} <= covered


def _answer(response, world: World) -> str:
    if response.status_code == 302:
        location = response["Location"]
        if location.startswith(reverse("admin:login")):
            return "login"
        return {
            reverse("gallery:event", args=[world.event.slug]): ">event",
            reverse("gallery:me", args=[world.event.slug]): ">me",
        }.get(location.split("#")[0], f"302 {location}")
    if response.status_code == 200 and not response.streaming and b'name="code"' in response.content:
        return "code"
    return str(response.status_code)


@pytest.mark.parametrize("route", list(ROUTES))
def test_access(world, route):
    """One row of the table: every visitor, each with their own session, in one world."""
    spec = ROUTES[route]
    answers = {}
    for actor in ACTORS:
        client = world.clients[actor]
        if spec.before:
            spec.before(world, client)
        answers[actor] = _answer(getattr(client, spec.method)(spec.url(world), spec.data(world)), world)
    assert answers == {actor: answer for row, actor, answer in CELLS if row == route}
