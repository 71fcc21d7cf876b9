"""Attendee pages. Each view: access check, form, service call, render or redirect.

No view detects or matches faces: the selfie view stores the image and queues
a job, and the attendee's page shows the job's progress until it is done.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import TooManyFilesSent
from django.db.models.fields.files import FieldFile
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from gallery import access, emails, services
from gallery.forms import CameraSelfieForm, CodeForm, EmailForm, OptOutForm, SelfieForm
from gallery.images import ImageProblem
from gallery.links import public_url
from gallery.models import Event, Photo, Selfie
from gallery.serving import serve_file, zip_response

logger = logging.getLogger("trouvaille.web")


def _typed_slug(typed: str) -> str:
    """The event slug in what someone typed: a whole link, a path, or the slug itself."""
    found = re.search(r"/e/([^/?#]+)", urlsplit(typed).path if "/" in typed else "")
    return slugify(found.group(1) if found else typed)[:80]


def home(request: HttpRequest) -> HttpResponse:
    # Events are reached by their link; there is deliberately no public list, and
    # an unknown or unpublished event gets the same answer as a mistyped one.
    typed = request.GET.get("event", "").strip()[:300]
    error = ""
    if typed:
        slug = _typed_slug(typed)
        if slug and Event.objects.filter(slug=slug, published=True).exists():
            return redirect("gallery:event", slug=slug)
        error = _("We found no event with this link or name. Check it, or open the link you were sent.")
    return render(request, "gallery/home.html", {"typed": typed, "error": error}, status=404 if error else 200)


@require_GET
def privacy(request: HttpRequest, slug: str) -> HttpResponse:
    """What is kept about attendees of this event, for how long, and whom to ask."""
    return render(request, "gallery/privacy.html", {"event": access.event_for_attendee(request, slug)})


def event(request: HttpRequest, slug: str) -> HttpResponse:
    event = access.event_for_attendee(request, slug)
    if not access.event_takes_selfies(event):
        return _selfies_closed(request, event)  # before the code: entering it would lead nowhere
    if not access.event_is_unlocked(request, event):
        form = CodeForm(request.POST) if request.method == "POST" else CodeForm()
        status = 200
        if request.method == "POST" and form.is_valid():
            attempt = access.code_attempt(request, event)
            if not attempt.allowed:
                wait = settings.CODE_ATTEMPT_WINDOW // 60
                form.add_error(
                    "code",
                    ngettext(
                        "Too many wrong codes. Please wait %(wait)d minute, then try again.",
                        "Too many wrong codes. Please wait %(wait)d minutes, then try again.",
                        wait,
                    )
                    % {"wait": wait},
                )
                status = 429
            elif access.code_matches(event, form.cleaned_data["code"]):
                attempt.give_back()  # only wrong codes count
                access.event_unlock(request, event)
                return redirect("gallery:event", slug=event.slug)
            else:
                form.add_error("code", _("That code is not right. Check the invitation and try again."))
        status = 400 if form.errors and status == 200 else status
        return render(request, "gallery/code.html", {"event": event, "form": form}, status=status)
    attendee = access.attendee_for_visitor(request, event)
    adding = request.GET.get("add") == "1" and attendee is not None
    context = {"event": event, "form": _selfie_form_class(event)(), "attendee": attendee, "adding": adding}
    return render(request, "gallery/event.html", context)


def _selfie_form_class(event: Event) -> type[SelfieForm]:
    return CameraSelfieForm if event.camera_only else SelfieForm


@require_POST
def selfie_upload(request: HttpRequest, slug: str) -> HttpResponse:
    """A selfie from the event page (replaces this browser's own selfies) or "add another selfie"."""
    event = access.unlocked_event_for_attendee(request, slug)
    if not access.event_takes_selfies(event):
        return _selfies_closed(request, event)
    form = _selfie_form_class(event)(request.POST, request.FILES)
    adding = form.data.get("add") == "1"
    # Adding goes to the attendee shown (their private link is a full credential);
    # starting over only ever touches this browser's own attendee.
    own = access.own_attendee(request, event)
    attendee = access.attendee_for_visitor(request, event) if adding else own
    status, headers = 400, {}
    if form.is_valid() and not access.selfie_upload_attempt(request, event).allowed:
        status, headers = 429, _too_many_selfies(request, event, form)
    elif form.is_valid():
        try:
            selfie = services.selfie_create(
                event=event,
                upload=form.cleaned_data["image"],
                consent=True,
                attendee=attendee,
                replace=not adding,
                client=access.client_tag(request),
                turned=form.cleaned_data.get("turned"),
            )
        except (ImageProblem, services.SelfieLimit) as exc:
            form.add_error("image", str(exc))
        except services.SelfieNotStored:
            status, headers = _not_stored(
                form, _("We could not save your selfie just now. Please try again in a minute.")
            )
        else:
            access.attendee_remember(request, selfie.attendee, own=attendee is None or attendee == own)
            return redirect("gallery:me", slug=event.slug)
    context = {"event": event, "form": form, "attendee": access.attendee_for_visitor(request, event), "adding": adding}
    return _render_with(request, "gallery/event.html", context, status=status, headers=headers)


def _selfies_closed(request: HttpRequest, event: Event) -> HttpResponse:
    """The event's retention period is over: no new selfie or opt-out (410 Gone), whoever asks."""
    attendee = access.attendee_for_visitor(request, event) if access.event_is_unlocked(request, event) else None
    return render(request, "gallery/closed.html", {"event": event, "attendee": attendee}, status=410)


def _too_many_selfies(request: HttpRequest, event: Event, form: SelfieForm | OptOutForm) -> dict[str, str]:
    services.audit_limit_record(event=event, client=access.client_tag(request))
    form.add_error("image", _("Too many selfies in a short time. Please wait a few minutes, then try again."))
    return {"Retry-After": str(settings.SELFIE_UPLOAD_WINDOW)}


def _not_stored(form: SelfieForm | OptOutForm, message: str) -> tuple[int, dict[str, str]]:
    """The database refused the upload's row (its file is already removed): ask to retry soon."""
    logger.warning("face upload not stored: database busy or unreachable", exc_info=True)
    form.add_error("image", message)
    return 503, {"Retry-After": "60"}


def _render_with(
    request: HttpRequest, template: str, context: dict, *, status: int, headers: dict[str, str]
) -> HttpResponse:
    response = render(request, template, context, status=status)
    for header, value in headers.items():
        response[header] = value
    return response


def optout(request: HttpRequest, slug: str) -> HttpResponse:
    """ "Don't show me": one photo of the person, whose faces are then hidden from everyone."""
    event = access.unlocked_event_for_attendee(request, slug)
    if not access.event_takes_selfies(event):
        return _selfies_closed(request, event)
    form = OptOutForm(request.POST or None, request.FILES or None)
    status, headers = (400 if request.method == "POST" else 200), {}
    # The same limits as selfies: an opt-out is a face upload too.
    if form.is_valid() and not access.selfie_upload_attempt(request, event).allowed:
        status, headers = 429, _too_many_selfies(request, event, form)
    elif form.is_valid():
        try:
            created = services.optout_create(
                event=event, upload=form.cleaned_data["image"], consent=True, client=access.client_tag(request)
            )
        except ImageProblem as exc:
            form.add_error("image", str(exc))
        except services.SelfieNotStored:
            status, headers = _not_stored(
                form, _("We could not save your photo just now. Please try again in a minute.")
            )
        else:
            return redirect("gallery:optout_link", slug=event.slug, token=created.token)
    return _render_with(request, "gallery/optout.html", {"event": event, "form": form}, status=status, headers=headers)


@never_cache
def optout_link(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    """The opt-out's private link: its state, and the way to withdraw it."""
    optout = access.optout_for_link(request, slug, token)
    if request.method == "POST":
        services.optout_withdraw(optout=optout)
        return render(request, "gallery/optout_withdrawn.html", {"event": optout.event})
    selfie = optout.selfies.first()
    context = {"event": optout.event, "selfie": selfie, "link": public_url(request.path, request=request)}
    return render(request, "gallery/optout_link.html", context)


def _pending_photos(event_id: int) -> int:
    return Photo.objects.filter(event_id=event_id).in_progress().count()


def _refresh_seconds(selfies: list[Selfie], *, working: bool, pending_photos: int) -> int:
    if working:
        newest = max(selfie.created_at for selfie in selfies)
        return 2 if (timezone.now() - newest).total_seconds() < 30 else 5
    return 15 if pending_photos else 0


def _working(selfies: list[Selfie]) -> bool:
    return any(selfie.match_state in (Selfie.State.PENDING, Selfie.State.MATCHING) for selfie in selfies)


@never_cache
def me(request: HttpRequest, slug: str) -> HttpResponse:
    event = access.event_for_attendee(request, slug)
    attendee = access.attendee_for_visitor(request, event) if access.event_is_unlocked(request, event) else None
    selfies = list(attendee.selfies.order_by("created_at")) if attendee else []
    if not selfies:
        # Not yet unlocked, or no selfie: the event page asks for what is missing.
        return redirect("gallery:event", slug=event.slug)
    photos = list(attendee.photos())
    pending_photos = _pending_photos(event.pk)
    working = _working(selfies)
    usable = [selfie for selfie in selfies if selfie.match_state != Selfie.State.FAILED]
    context = {
        "event": event,
        "attendee": attendee,
        "selfies": selfies,
        "usable_selfies": usable,
        # The newest selfie, when matching could not use it: its message is shown.
        "failed_selfie": selfies[-1] if selfies[-1].match_state == Selfie.State.FAILED else None,
        "can_add": len(usable) < settings.ATTENDEE_MAX_SELFIES,
        "photos": photos,
        "working": working,
        "pending_photos": pending_photos,
        # Offered only once a selfie is usable: a link to nothing would only confuse.
        "private_link": public_url(reverse("gallery:me_resume", args=[event.slug, attendee.token]), request=request)
        if usable
        else "",
        # Refresh while matching runs (less often after 30 s, to leave CPU to the
        # workers when many wait at once) and while new photos are being indexed.
        "refresh_seconds": _refresh_seconds(selfies, working=working, pending_photos=pending_photos),
        "undo_photo": request.session.pop(_undo_key(event), None),
        "email_form": EmailForm() if usable and not attendee.email else None,
    }
    return render(request, "gallery/me.html", context)


@require_POST
def me_email(request: HttpRequest, slug: str) -> HttpResponse:
    """Opt in to e-mails: the private link now, news of new photos later (sent by jobs)."""
    event, attendee = access.event_and_attendee_for_visitor(request, slug)
    form = EmailForm(request.POST)
    status = 400
    if form.is_valid() and not access.email_optin_attempt(request, attendee).allowed:
        form.add_error("email", _("Too many e-mail requests today. Please try again tomorrow."))
        status = 429
    elif form.is_valid():
        services.attendee_email_set(
            attendee=attendee,
            email=form.cleaned_data["email"],
            language=translation.get_language(),
            site=request.build_absolute_uri("/").rstrip("/"),
        )
        messages.success(request, _("We sent your private link to %(email)s.") % {"email": form.cleaned_data["email"]})
        return redirect("gallery:me", slug=event.slug)
    return render(request, "gallery/email.html", {"event": event, "email_form": form}, status=status)


@require_POST
def me_email_stop(request: HttpRequest, slug: str) -> HttpResponse:
    event, attendee = access.event_and_attendee_for_visitor(request, slug)
    services.attendee_email_stop(attendee=attendee)
    messages.success(request, _("You will get no more e-mails about this event."))
    return redirect("gallery:me", slug=event.slug)


def unsubscribe(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    """The link in every e-mail: no login, no session; a confirmation page first (mail scanners follow links)."""
    event = access.event_for_attendee(request, slug)
    attendee = emails.attendee_for_unsubscribe(token)
    if attendee is None or attendee.event_id != event.pk:
        return render(request, "gallery/unsubscribe.html", {"event": event, "done": True})
    if request.method == "POST":
        services.attendee_email_stop(attendee=attendee)
        return render(request, "gallery/unsubscribe.html", {"event": event, "done": True})
    return render(request, "gallery/unsubscribe.html", {"event": event, "email": attendee.email})


@never_cache
@require_GET
def me_status(request: HttpRequest, slug: str) -> JsonResponse:
    event = access.unlocked_event_for_attendee(request, slug)
    attendee = access.attendee_for_visitor(request, event)
    selfies = list(attendee.selfies.order_by("created_at")) if attendee else []
    if not selfies:
        raise Http404("No selfie.")
    newest = selfies[-1]
    if _working(selfies):
        state = "matching" if any(s.match_state == Selfie.State.MATCHING for s in selfies) else "pending"
    else:
        state = newest.match_state
    return JsonResponse(
        {
            "state": state,
            "matches": attendee.photos().count(),
            "pending_photos": _pending_photos(event.pk),
            "error": newest.match_error if newest.match_state == Selfie.State.FAILED else "",
        }
    )


@require_GET
def me_resume(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    """The attendee's private link: their photos again, on any device, without a new selfie."""
    event = access.event_for_attendee(request, slug)
    if access.private_link_open(request, event, token) is None:
        # Deleted (or never existed): say so plainly rather than a bare "not found".
        return render(request, "gallery/link_gone.html", {"event": event}, status=404)
    return redirect("gallery:me", slug=event.slug)


def me_forget(request: HttpRequest, slug: str) -> HttpResponse:
    """Delete everything about the attendee shown, after a confirmation page (no JavaScript needed)."""
    event = access.unlocked_event_for_attendee(request, slug)
    attendee = access.attendee_for_visitor(request, event)
    if request.method != "POST":
        if attendee is None:
            return redirect("gallery:event", slug=event.slug)
        return render(request, "gallery/forget.html", {"event": event})
    if attendee is not None:
        services.attendee_delete(attendee=attendee, client=access.client_tag(request))
        messages.success(request, _("Your selfies and the list of your photos were deleted."))
    access.attendee_forget(request, event)
    return redirect("gallery:event", slug=event.slug)


def _undo_key(event: Event) -> str:
    return f"undo-not-me:{event.pk}"


@require_POST
def photo_reject(request: HttpRequest, slug: str, photo_id: int) -> HttpResponse:
    """ "Not me": the photo leaves the gallery for good (the next page offers an undo)."""
    event = access.unlocked_event_for_attendee(request, slug)
    photo = access.matched_photo_for_attendee(request, event, photo_id)
    services.photo_reject(attendee=access.attendee_for_visitor(request, event), photo=photo)
    request.session[_undo_key(event)] = photo.pk
    return redirect("gallery:me", slug=event.slug)


@require_POST
def photo_undo(request: HttpRequest, slug: str, photo_id: int) -> HttpResponse:
    event, attendee = access.event_and_attendee_for_visitor(request, slug)
    if not services.photo_unreject(attendee=attendee, photo_id=photo_id):
        raise Http404("Nothing to undo.")
    return redirect(reverse("gallery:me", args=[event.slug]) + f"#photo-{photo_id}")


def _download_name(photo: Photo) -> str:
    stem = photo.original_name.rsplit(".", 1)[0] or f"photo-{photo.pk}"
    return f"{stem}.jpg"


@require_GET
def photo_thumbnail(request: HttpRequest, slug: str, photo_id: int) -> HttpResponse:
    return serve_file(access.gallery_photo_for_visitor(request, slug, photo_id).thumbnail)


def _mixed(colour: str, other: tuple[int, int, int], share: float) -> str:
    """#rrggbb moved `share` of the way towards `other` (the hover and soft shades of the accent)."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (o - c) * share):02x}" for c, o in zip(rgb, other, strict=True))


@require_GET
def event_theme(request: HttpRequest, slug: str) -> HttpResponse:
    """The event's accent colour as a stylesheet: the CSP allows no inline style."""
    event = access.event_for_attendee(request, slug)
    css = ""
    # Validated as #rrggbb by the model; checked again since it is written into CSS.
    if re.fullmatch(r"#[0-9a-fA-F]{6}", event.accent_colour):
        colour = event.accent_colour.lower()
        css = (
            f":root {{ --accent: {colour}; --accent-dark: {_mixed(colour, (0, 0, 0), 0.2)}; "
            f"--accent-soft: {_mixed(colour, (255, 255, 255), 0.9)}; }}\n"
        )
    response = HttpResponse(css, content_type="text/css; charset=utf-8")
    # The page links it with the colour in its query string: a new colour is a new URL.
    response["Cache-Control"] = "public, max-age=86400" if event.published else "private, no-store"
    return response


@require_GET
def event_cover(request: HttpRequest, slug: str) -> HttpResponse:
    """The event's cover image (a metadata-free copy made when it was uploaded)."""
    return serve_file(access.event_for_attendee(request, slug).cover)


@require_GET
def photo_view(request: HttpRequest, slug: str, photo_id: int) -> HttpResponse:
    """The viewer: the photo full size, previous/next, download, back (plain links, so no JavaScript needed)."""
    event = access.unlocked_event_for_attendee(request, slug)
    photo = access.matched_photo_for_attendee(request, event, photo_id)
    ids = list(access.attendee_for_visitor(request, event).photos().values_list("id", flat=True))
    at = ids.index(photo.pk)
    context = {
        "event": event,
        "photo": photo,
        "position": at + 1,
        "total": len(ids),
        "previous": ids[at - 1] if at > 0 else None,
        "next": ids[at + 1] if at + 1 < len(ids) else None,
    }
    return render(request, "gallery/photo.html", context)


@require_GET
def photo_image(request: HttpRequest, slug: str, photo_id: int) -> HttpResponse:
    return serve_file(access.gallery_photo_for_visitor(request, slug, photo_id).display)


@require_GET
def photo_download(request: HttpRequest, slug: str, photo_id: int) -> HttpResponse:
    photo = access.gallery_photo_for_visitor(request, slug, photo_id)
    response = serve_file(photo.display, download_name=_download_name(photo))
    services.event_downloads_count(event_id=photo.event_id)  # after serve_file: a missing file is a 404, not a download
    return response


@require_GET
def photos_zip(request: HttpRequest, slug: str) -> HttpResponse:
    """All the attendee's photos in one zip, streamed as it is built."""
    event, attendee = access.event_and_attendee_for_visitor(request, slug)
    photos = attendee.photos().exclude(display="").only("id", "original_name", "display")
    services.event_downloads_count(event_id=event.pk, photos=photos.count(), zip_download=True)
    return zip_response(_zip_members(photos.iterator(chunk_size=200)), filename=f"{event.slug}-photos.zip")


def _zip_members(photos: Iterator[Photo]) -> Iterator[tuple[str, FieldFile]]:
    """Each photo under its download name; repeated names get a number."""
    used: set[str] = set()
    for photo in photos:
        name = _download_name(photo)
        stem, n = name[:-4], 1
        while name.casefold() in used:
            n += 1
            name = f"{stem}-{n}.jpg"
        used.add(name.casefold())
        yield name, photo.display


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """400 with a message a person can act on for the cases we know (handler400)."""
    message = ""
    if isinstance(exception, TooManyFilesSent):
        # Django refuses the whole request while parsing it, before any view runs
        # (CSRF reads the form first): the admin's upload page cannot answer itself.
        message = _(
            "More than %(count)s files in one upload. Upload the photos in several smaller batches, "
            "as a zip archive, or with `manage.py import_photos` on the server."
        ) % {"count": f"{settings.DATA_UPLOAD_MAX_NUMBER_FILES:,}"}
    return render(request, "400.html", {"message": message}, status=400)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Are the database, the job broker and media storage reachable? No secrets, no auth."""
    from gallery.health import checks

    results = checks()
    healthy = all(result == "ok" for result in results.values())
    return JsonResponse({"status": "ok" if healthy else "error", "checks": results}, status=200 if healthy else 503)
