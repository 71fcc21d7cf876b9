"""Attendee pages. Each view: access check, form, service call, render or redirect.

No view detects or matches faces: the selfie view stores the image and queues
a job, and the attendee's page shows the job's progress until it is done.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from gallery import access, services
from gallery.forms import CodeForm, SelfieForm
from gallery.images import ImageProblem
from gallery.models import Photo, Selfie
from gallery.serving import serve_file

logger = logging.getLogger("trouvaille.web")


def home(request: HttpRequest) -> HttpResponse:
    # Events are reached by their link; there is deliberately no public list.
    return render(request, "gallery/home.html")


def event(request: HttpRequest, slug: str) -> HttpResponse:
    event = access.event_for_attendee(request, slug)
    if not access.event_is_unlocked(request, event):
        form = CodeForm(request.POST) if request.method == "POST" else CodeForm()
        status = 200
        if request.method == "POST" and form.is_valid():
            if access.code_attempts_exhausted(request, event):
                wait = settings.CODE_ATTEMPT_WINDOW // 60
                form.add_error("code", f"Too many wrong codes. Please wait {wait} minutes, then try again.")
                status = 429
            elif access.code_matches(event, form.cleaned_data["code"]):
                access.event_unlock(request, event)
                return redirect("gallery:event", slug=event.slug)
            else:
                access.code_attempt_failed(request, event)
                form.add_error("code", "That code is not right. Check the invitation and try again.")
        status = 400 if form.errors and status == 200 else status
        return render(request, "gallery/code.html", {"event": event, "form": form}, status=status)
    attendee = access.attendee_for_visitor(request, event)
    return render(request, "gallery/event.html", {"event": event, "form": SelfieForm(), "attendee": attendee})


@require_POST
def selfie_upload(request: HttpRequest, slug: str) -> HttpResponse:
    """A selfie from the event page (replaces this browser's own selfies) or "add another selfie"."""
    event = access.unlocked_event_for_attendee(request, slug)
    form = SelfieForm(request.POST, request.FILES)
    adding = form.data.get("add") == "1"
    # Adding goes to the attendee shown (their private link is a full credential);
    # starting over only ever touches this browser's own attendee.
    own = access.own_attendee(request, event)
    attendee = access.attendee_for_visitor(request, event) if adding else own
    if form.is_valid():
        try:
            selfie = services.selfie_create(
                event=event,
                upload=form.cleaned_data["image"],
                consent=True,
                attendee=attendee,
                replace=not adding,
            )
        except (ImageProblem, services.SelfieLimit) as exc:
            form.add_error("image", str(exc))
        else:
            access.attendee_remember(request, selfie.attendee, own=attendee is None or attendee == own)
            return redirect("gallery:me", slug=event.slug)
    context = {"event": event, "form": form, "attendee": access.attendee_for_visitor(request, event), "adding": adding}
    return render(request, "gallery/event.html", context, status=400)


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
        "max_selfies": settings.ATTENDEE_MAX_SELFIES,
        "consent_label": SelfieForm.base_fields["consent"].label,
        "photos": photos,
        "working": working,
        "pending_photos": pending_photos,
        # Offered only once a selfie is usable: a link to nothing would only confuse.
        "private_link": request.build_absolute_uri(reverse("gallery:me_resume", args=[event.slug, attendee.token]))
        if usable
        else "",
        # Refresh while matching runs (less often after 30 s, to leave CPU to the
        # workers when many wait at once) and while new photos are being indexed.
        "refresh_seconds": _refresh_seconds(selfies, working=working, pending_photos=pending_photos),
    }
    return render(request, "gallery/me.html", context)


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


@require_POST
def me_forget(request: HttpRequest, slug: str) -> HttpResponse:
    event = access.unlocked_event_for_attendee(request, slug)
    attendee = access.attendee_for_visitor(request, event)
    if attendee is not None:
        services.attendee_delete(attendee=attendee)
    access.attendee_forget(request, event)
    return redirect("gallery:event", slug=event.slug)


def _download_name(photo: Photo) -> str:
    stem = photo.original_name.rsplit(".", 1)[0] or f"photo-{photo.pk}"
    return f"{stem}.jpg"


@require_GET
def photo_thumbnail(request: HttpRequest, slug: str, photo_id: int) -> HttpResponse:
    event = access.unlocked_event_for_attendee(request, slug)
    return serve_file(access.matched_photo_for_attendee(request, event, photo_id).thumbnail)


@require_GET
def photo_view(request: HttpRequest, slug: str, photo_id: int) -> HttpResponse:
    event = access.unlocked_event_for_attendee(request, slug)
    return serve_file(access.matched_photo_for_attendee(request, event, photo_id).display)


@require_GET
def photo_download(request: HttpRequest, slug: str, photo_id: int) -> HttpResponse:
    event = access.unlocked_event_for_attendee(request, slug)
    photo = access.matched_photo_for_attendee(request, event, photo_id)
    return serve_file(photo.display, download_name=_download_name(photo))


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Are the database, the job broker and media storage reachable? No secrets, no auth."""
    from gallery.health import checks

    results = checks()
    healthy = all(result == "ok" for result in results.values())
    return JsonResponse({"status": "ok" if healthy else "error", "checks": results}, status=200 if healthy else 503)
