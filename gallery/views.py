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

STATUS_STATES = {
    Selfie.State.PENDING: "pending",
    Selfie.State.MATCHING: "matching",
    Selfie.State.DONE: "done",
    Selfie.State.FAILED: "failed",
}


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
            elif services.code_matches(event=event, code=form.cleaned_data["code"]):
                access.event_unlock(request, event)
                return redirect("gallery:event", slug=event.slug)
            else:
                access.code_attempt_failed(request, event)
                form.add_error("code", "That code is not right. Check the invitation and try again.")
        status = 400 if form.errors and status == 200 else status
        return render(request, "gallery/code.html", {"event": event, "form": form}, status=status)
    selfie = access.selfie_for_attendee(request, event)
    return render(request, "gallery/event.html", {"event": event, "form": SelfieForm(), "selfie": selfie})


@require_POST
def selfie_upload(request: HttpRequest, slug: str) -> HttpResponse:
    event = access.unlocked_event_for_attendee(request, slug)
    form = SelfieForm(request.POST, request.FILES)
    if form.is_valid():
        previous = access.own_selfie_for_attendee(request, event)
        try:
            selfie = services.selfie_create(
                event=event, upload=form.cleaned_data["image"], consent=True, replaces=previous
            )
        except ImageProblem as exc:
            form.add_error("image", str(exc))
        else:
            access.selfie_remember(request, selfie, own=True)
            return redirect("gallery:me", slug=event.slug)
    context = {"event": event, "form": form, "selfie": access.selfie_for_attendee(request, event)}
    return render(request, "gallery/event.html", context, status=400)


def _pending_photos(selfie: Selfie) -> int:
    return Photo.objects.filter(
        event_id=selfie.event_id, index_state__in=[Photo.State.PENDING, Photo.State.PROCESSING]
    ).count()


def _refresh_seconds(selfie: Selfie, *, working: bool, pending_photos: int) -> int:
    if working:
        return 2 if (timezone.now() - selfie.created_at).total_seconds() < 30 else 5
    return 15 if pending_photos else 0


@never_cache
def me(request: HttpRequest, slug: str) -> HttpResponse:
    event = access.event_for_attendee(request, slug)
    selfie = access.selfie_for_attendee(request, event) if access.event_is_unlocked(request, event) else None
    if selfie is None:
        # Not yet unlocked, or no selfie: the event page asks for what is missing.
        return redirect("gallery:event", slug=event.slug)
    photos = Photo.objects.filter(matches__selfie=selfie).order_by("taken_at", "original_name", "id")
    pending_photos = _pending_photos(selfie)
    working = selfie.match_state in (Selfie.State.PENDING, Selfie.State.MATCHING)
    context = {
        "event": event,
        "selfie": selfie,
        "photos": photos,
        "working": working,
        "pending_photos": pending_photos,
        "private_link": request.build_absolute_uri(reverse("gallery:me_resume", args=[event.slug, selfie.token])),
        # Refresh while matching runs (less often after 30 s, to leave CPU to the
        # workers when many wait at once) and while new photos are being indexed.
        "refresh_seconds": _refresh_seconds(selfie, working=working, pending_photos=pending_photos),
    }
    return render(request, "gallery/me.html", context)


@never_cache
@require_GET
def me_status(request: HttpRequest, slug: str) -> JsonResponse:
    event = access.unlocked_event_for_attendee(request, slug)
    selfie = access.selfie_for_attendee(request, event)
    if selfie is None:
        raise Http404("No selfie.")
    return JsonResponse(
        {
            "state": STATUS_STATES[selfie.match_state],
            "matches": selfie.matches.count(),
            "pending_photos": _pending_photos(selfie),
            "error": selfie.match_error if selfie.match_state == Selfie.State.FAILED else "",
        }
    )


@require_GET
def me_resume(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    """The attendee's private link: their photos again, on any device, without a new selfie."""
    event = access.event_for_attendee(request, slug)
    selfie = access.selfie_by_token(event, token)
    # The link stands for the code too: only someone who got past it was given one.
    access.event_unlock(request, event)
    access.selfie_remember(request, selfie, own=False)
    return redirect("gallery:me", slug=event.slug)


@require_POST
def me_forget(request: HttpRequest, slug: str) -> HttpResponse:
    event = access.unlocked_event_for_attendee(request, slug)
    selfie = access.selfie_for_attendee(request, event)
    if selfie is not None:
        services.selfie_delete(selfie=selfie)
    access.selfie_forget(request, event)
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
