"""Organizer tools: events with their link and QR code, photo uploads, indexing state.

Organizers are staff users who own events; every list, object page, custom view
and action below is limited to the events the signed-in user manages
(gallery.access.organizer_rows / event_for_organizer). Superusers manage all.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminFileWidget
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce, TruncHour
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, path, reverse
from django.utils.functional import Promise
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from gallery import access, branding, dashboard, poster, services
from gallery.forms import OptOutRegisterForm, PhotoUploadForm
from gallery.images import ImageProblem, jpeg_file, load_rgb
from gallery.links import current_request, public_url
from gallery.models import Attendee, AuditEntry, Event, Face, Match, Photo, Selfie, Upload
from gallery.rejections import rejection_text
from gallery.serving import serve_file


def _qr_svg(url: str) -> str:
    import qrcode
    import qrcode.image.svg

    return qrcode.make(url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8).to_string(encoding="unicode")


def _count(rows: QuerySet) -> Coalesce:
    """COUNT(*) of an event's rows, as a correlated subquery."""
    per_event = rows.filter(event=OuterRef("pk")).order_by().values("event")
    return Coalesce(Subquery(per_event.annotate(n=Count("pk")).values("n")), 0)


def _count_column(annotation: str, description: str | Promise) -> Callable[[admin.ModelAdmin, Event], int]:
    """A changelist column showing one of the counts get_queryset annotates, sortable by it."""

    @admin.display(description=description, ordering=annotation)
    def column(self: admin.ModelAdmin, obj: Event) -> int:
        return getattr(obj, annotation)

    return column


class OrganizerAdmin(admin.ModelAdmin):
    """Rows of the events the signed-in user manages, and nothing else.

    Lists, object pages (another organizer's row is "not found"), deletions and
    actions all go through get_queryset; the object checks repeat the decision
    for code that asks about an object directly.
    """

    # The lookup from a row to its event ("" for events themselves).
    event_path = "event"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return access.organizer_rows(request.user, super().get_queryset(request), event_path=self.event_path)

    def _event_of(self, obj: object) -> Event | None:
        for part in filter(None, self.event_path.split("__")):
            obj = getattr(obj, part)
        return obj  # type: ignore[return-value]

    def _manages(self, request: HttpRequest, obj: object | None) -> bool:
        return obj is None or access.organizer_manages(request.user, self._event_of(obj))

    def has_view_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return super().has_view_permission(request, obj) and self._manages(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._manages(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._manages(request, obj)

    def _page(self, name: str, route: str, func: Callable[..., HttpResponse]) -> URLPattern:
        """One of this model's own pages, behind the admin login, named like the admin's (gallery_<model>_<name>)."""
        return path(route, self.admin_site.admin_view(func), name=f"gallery_{self.opts.model_name}_{name}")

    def _check_may_change(self, request: HttpRequest) -> None:
        """403 unless this user may change rows of this model at all; which row is theirs is checked after."""
        if not self.has_change_permission(request):
            raise PermissionDenied


# Wide enough for a banner across a large screen, small enough for a phone to load quickly.
COVER_MAX_SIDE = 1600


class StoredFileInput(AdminFileWidget):
    """The stored file by name, without the admin's link to it: media is never served at
    MEDIA_URL (attendees get files through views that check access), so the link would be a 404."""

    template_name = "admin/gallery/stored_file_input.html"


class EventForm(forms.ModelForm):
    add_owner = forms.CharField(
        label=_("Add an owner"),
        required=False,
        help_text=_("Username or e-mail address of another organizer who may manage this event."),
    )

    class Meta:
        model = Event
        fields = "__all__"  # noqa: DJ007 - EventAdmin.get_fields picks them per user
        widgets = {"cover": StoredFileInput, "watermark_logo": StoredFileInput}

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # Left out of a form (a script, an older page), they keep their defaults.
        for name in ("watermark_position", "watermark_opacity"):
            if name in self.fields:
                self.fields[name].required = False

    def clean_watermark_position(self) -> str:
        return self.cleaned_data.get("watermark_position") or Event.WatermarkPosition.BOTTOM_RIGHT

    def clean_watermark_opacity(self) -> int:
        value = self.cleaned_data.get("watermark_opacity")
        return Event._meta.get_field("watermark_opacity").default if value is None else value

    def clean_cover(self) -> object:
        """A new cover is decoded and stored re-encoded: bounded in size, with no EXIF/GPS or other metadata."""
        cover = self.cleaned_data.get("cover")
        if not isinstance(cover, UploadedFile):
            return cover  # unchanged (a stored FieldFile), or cleared (False/None)
        try:
            image = load_rgb(cover, draft_side=COVER_MAX_SIDE, max_pixels=settings.PHOTO_MAX_PIXELS)
        except ImageProblem as exc:
            raise forms.ValidationError(str(exc)) from exc
        copy = jpeg_file(image, max_side=COVER_MAX_SIDE, quality=85)
        copy.name = "cover.jpg"
        return copy

    def clean_watermark_logo(self) -> object:
        """A new logo must be a PNG (checked, bounded) and is stored re-encoded."""
        logo = self.cleaned_data.get("watermark_logo")
        if not isinstance(logo, UploadedFile):
            return logo  # unchanged, or cleared
        try:
            stored = ContentFile(branding.logo_png(logo), name="logo.png")
        except ImageProblem as exc:
            raise forms.ValidationError(str(exc)) from exc
        return stored

    def clean_add_owner(self) -> object:
        wanted = self.cleaned_data["add_owner"].strip()
        if not wanted:
            return None
        users = get_user_model().objects.filter(is_active=True, is_staff=True)
        user = users.filter(username=wanted).first() or users.filter(email__iexact=wanted).first()
        if user is None:
            raise forms.ValidationError(gettext("No organizer with this username or e-mail address."))
        return user


@admin.register(Event)
class EventAdmin(OrganizerAdmin):
    event_path = ""
    form = EventForm
    list_display = ["name", "date", "published", "photo_total", "photo_indexed", "photo_failed", "selfie_total"]
    list_filter = ["published"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["attendee_link", "qr_code", "owner_list"]
    filter_horizontal = ["owners"]
    actions = ["reindex_failed", "rematch"]
    change_form_template = "admin/gallery/event/change_form.html"

    class Media:
        css = {"all": ["css/organizer-admin.css"]}
        js = ["js/event-dashboard.js"]

    def get_fields(self, request: HttpRequest, obj: Event | None = None) -> list[str]:
        placed = ["owners", "owner_list", "add_owner", "attendee_link", "qr_code"]
        fields = [name for name in super().get_fields(request, obj) if name not in placed]
        # Superusers pick owners among all users; an organizer adds one by name,
        # without being shown every account.
        fields += ["owners"] if request.user.is_superuser else ["owner_list", "add_owner"]
        return [*fields, "attendee_link", "qr_code"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Event]:
        # One subquery per count: joining photos and selfies in one query would
        # multiply their rows (5,000 photos x 2,000 selfies = 10 million).
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_photos=_count(Photo.objects.all()),
                n_indexed=_count(Photo.objects.indexed()),
                n_failed=_count(Photo.objects.failed()),
                n_selfies=_count(Selfie.objects.all()),
            )
        )

    def save_model(self, request: HttpRequest, obj: Event, form: EventForm, change: bool) -> None:
        old_cover, old_logo = form.initial.get("cover"), form.initial.get("watermark_logo")
        super().save_model(request, obj, form, change)
        if change and "cover" in form.changed_data and old_cover and old_cover.name != obj.cover.name:
            services.event_cover_discard(name=old_cover.name)
        if change and "watermark_logo" in form.changed_data and old_logo and old_logo.name != obj.watermark_logo.name:
            services.event_cover_discard(name=old_logo.name)
        if not change and not request.user.is_superuser:
            services.event_owner_add(event=obj, user=request.user)  # whoever creates an event manages it
        watermark = {"watermark_text", "watermark_logo", "watermark_position", "watermark_opacity"}
        if change and watermark & set(form.changed_data):
            count = services.event_copies_remake(event=obj)
            self.message_user(
                request,
                gettext("Watermark changed: %(count)s photos are being copied again with it.") % {"count": count},
            )
        if form.cleaned_data.get("add_owner"):
            services.event_owner_add(event=obj, user=form.cleaned_data["add_owner"])
            self.message_user(
                request, gettext("%(user)s now manages this event.") % {"user": form.cleaned_data["add_owner"]}
            )
        if change and {"face_tolerance", "face_similarity"} & set(form.changed_data):
            # Every selfie is decided again under the new threshold (queued after commit).
            count = services.event_rematch(event=obj)
            self.message_user(
                request,
                gettext("Matching threshold changed: %(count)d selfies queued for matching again.") % {"count": count},
            )

    photo_total = _count_column("n_photos", _("Photos"))
    photo_indexed = _count_column("n_indexed", _("Indexed"))
    photo_failed = _count_column("n_failed", _("Failed"))
    selfie_total = _count_column("n_selfies", _("Selfies"))

    @admin.display(description=_("Owners"))
    def owner_list(self, obj: Event) -> str:
        if not obj.pk:
            return gettext("You, once saved.")
        return ", ".join(user.get_username() for user in obj.owners.all()) or "—"

    def _public_url(self, obj: Event, request: HttpRequest | None = None) -> str:
        return public_url(obj.get_absolute_url(), request=request)

    def changeform_view(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        # The link and QR code fields need the request's host (when SITE_URL is unset).
        token = current_request.set(request)
        try:
            response = super().changeform_view(request, *args, **kwargs)
            if hasattr(response, "render"):
                response.render()  # now, while the request is known, not after this returns
            return response
        finally:
            current_request.reset(token)

    @admin.display(description=_("Attendee link"))
    def attendee_link(self, obj: Event) -> str:
        if not obj.pk:
            return gettext("Save the event first.")
        url = self._public_url(obj)
        upload = reverse("admin:gallery_event_upload", args=[obj.pk])
        optouts = reverse("admin:gallery_event_optouts", args=[obj.pk])
        return format_html(
            '<a href="{}">{}</a><br><a class="button organizer-upload" href="{}">{}</a> '
            '<a class="button" href="{}">{}</a> <a class="button" href="{}">{}</a>',
            url,
            url,
            upload,
            gettext("Upload photos"),
            optouts,
            gettext("Opt-outs"),
            reverse("admin:gallery_event_audit", args=[obj.pk]),
            gettext("Audit"),
        )

    @admin.display(description=_("QR code"))
    def qr_code(self, obj: Event) -> str:
        if not obj.pk:
            return "-"
        download = reverse("admin:gallery_event_qr", args=[obj.pk])
        # The SVG is generated by qrcode from our own URL; it holds no user input.
        svg = mark_safe(_qr_svg(self._public_url(obj)))  # noqa: S308
        return format_html(
            '<div class="qr-code">{}</div><p class="qr-downloads"><a class="button" href="{}" download>{}</a> '
            '<a class="button" href="{}" download>{}</a> <a class="button" href="{}" download>{}</a></p>',
            svg,
            download,
            gettext("QR code (SVG)"),
            reverse("admin:gallery_event_poster_svg", args=[obj.pk]),
            gettext("A4 poster (SVG)"),
            reverse("admin:gallery_event_poster_png", args=[obj.pk]),
            gettext("A4 poster (PNG)"),
        )

    def get_urls(self):
        def view(name: str, route: str, func: Callable[..., HttpResponse]) -> URLPattern:
            return self._page(name, f"<int:event_id>/{route}", func)

        return [
            view("upload", "upload/", self.upload_view),
            view("upload_create", "uploads/", self.upload_create_view),
            view("qr", "qr.svg", self.qr_view),
            view("poster_svg", "poster.svg", self.poster_svg_view),
            view("poster_png", "poster.png", self.poster_png_view),
            view("status", "status.json", self.status_view),
            view("retry_failed", "retry-failed/", self.retry_failed_view),
            view("reindex", "reindex/", self.reindex_view),
            view("rematch", "rematch/", self.rematch_view),
            view("purge", "purge/", self.purge_view),
            view("optouts", "opt-outs/", self.optouts_view),
            view("audit", "audit/", self.audit_view),
            *super().get_urls(),
        ]

    def _event_for_change(self, request: HttpRequest, event_id: int) -> Event:
        """The event, if this user may change it: 403 without the permission, 404 if it is not theirs."""
        self._check_may_change(request)
        return access.event_for_organizer(request, event_id)

    def audit_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        """Signs of abuse, without a face: selfies per hour, clients that hit the limits, quick deletions."""
        event = self._event_for_change(request, event_id)
        entries = AuditEntry.objects.filter(event=event)
        per_hour = (
            entries.filter(kind__in=[AuditEntry.Kind.SELFIE, AuditEntry.Kind.OPTOUT])
            .annotate(hour=TruncHour("created_at"))
            .values("hour")
            .annotate(
                selfies=Count("pk", filter=Q(kind=AuditEntry.Kind.SELFIE)),
                optouts=Count("pk", filter=Q(kind=AuditEntry.Kind.OPTOUT)),
            )
            .order_by("-hour")[:72]
        )
        limited = (
            entries.filter(kind=AuditEntry.Kind.LIMIT)
            .values("client")
            .annotate(hits=Count("pk"), last=Max("created_at"))
            .order_by("-hits", "-last")[:100]
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "event": event,
            "per_hour": per_hour,
            "limited": limited,
            "quick_deletes": entries.filter(kind=AuditEntry.Kind.QUICK_DELETE)[:100],
            "quick_minutes": settings.AUDIT_QUICK_DELETE_MINUTES,
            "title": gettext("Audit of %(event)s") % {"event": event.name},
        }
        return render(request, "admin/gallery/event/audit.html", context)

    def optouts_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        """The event's opt-outs (no faces shown), registering new ones (one photo each), withdrawing one."""
        event = self._event_for_change(request, event_id)
        optouts = Attendee.objects.filter(event=event, opted_out=True).prefetch_related("selfies")
        form = OptOutRegisterForm()
        if request.method == "POST" and "withdraw" in request.POST:
            optout = get_object_or_404(optouts, pk=request.POST["withdraw"])
            services.optout_withdraw(optout=optout)
            self.message_user(request, gettext("Opt-out withdrawn: its faces are shown again."))
            return redirect(request.path)
        if request.method == "POST":
            form = OptOutRegisterForm(request.POST, request.FILES)
            if form.is_valid():
                for upload in form.cleaned_data["files"]:
                    try:
                        services.optout_create(event=event, upload=upload, consent=True)
                    except (ImageProblem, services.SelfieNotStored) as exc:
                        self.message_user(request, f"{upload.name}: {exc}", messages.WARNING)
                    else:
                        self.message_user(request, gettext("%(name)s: opt-out registered.") % {"name": upload.name})
                return redirect(request.path)
        links = [
            (optout, optout.selfies.all(), public_url(reverse("gallery:optout_link", args=[event.slug, optout.token])))
            for optout in optouts
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "event": event,
            "form": form,
            "optouts": links,
            "title": gettext("Opt-outs of %(event)s") % {"event": event.name},
        }
        return render(request, "admin/gallery/event/optouts.html", context)

    def upload_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        event = self._event_for_change(request, event_id)
        form = PhotoUploadForm(request.POST, request.FILES) if request.method == "POST" else PhotoUploadForm()
        if request.method == "POST" and form.is_valid():
            summary = services.ImportSummary()
            for upload in form.cleaned_data["files"] + form.cleaned_data["folder"]:
                summary.merge(services.upload_import(event=event, name=upload.name, fileobj=upload))
            level = messages.WARNING if summary.rejected else messages.SUCCESS
            message = gettext("%(event)s: %(summary)s. Indexing runs in the background.")
            self.message_user(request, message % {"event": event.name, "summary": summary.describe()}, level)
            for name, reason in summary.rejected[:20]:
                message = gettext("Rejected %(name)s: %(reason)s") % {"name": name, "reason": reason}
                self.message_user(request, message, messages.WARNING)
            return redirect(reverse("admin:gallery_photo_changelist") + f"?event__id__exact={event.pk}")
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "event": event, "form": form}
        context["title"] = gettext("Upload photos to %(event)s") % {"event": event.name}
        context["create_url"] = reverse("admin:gallery_event_upload_create", args=[event.pk])
        context["media"] = self.media + forms.Media(js=["js/chunked-upload.js"])
        return render(request, "admin/gallery/event/upload.html", context)

    def upload_create_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        """Start a chunked upload of one file: JSON {"name", "size"} in, the upload's status out."""
        event = self._event_for_change(request, event_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            payload = json.loads(request.body or b"{}")
            name, size = str(payload["name"]), int(payload["size"])
        except (ValueError, KeyError, TypeError):
            return JsonResponse({"error": gettext("Send the file's name and size.")}, status=400)
        try:
            upload = services.upload_create(event=event, name=name, size=size, user=request.user)
        except services.UploadProblem as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        return JsonResponse(_upload_status(upload), status=201)

    def qr_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        event = self._event_for_view(request, event_id)
        response = HttpResponse(_qr_svg(self._public_url(event, request)), content_type="image/svg+xml")
        response["Content-Disposition"] = f'attachment; filename="{event.slug}-qr.svg"'
        return response

    def _event_for_view(self, request: HttpRequest, event_id: int) -> Event:
        if not super().has_view_permission(request):
            raise PermissionDenied
        return access.event_for_organizer(request, event_id)

    def poster_svg_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        event = self._event_for_view(request, event_id)
        response = HttpResponse(
            poster.poster_svg(event, self._public_url(event, request)), content_type="image/svg+xml"
        )
        response["Content-Disposition"] = f'attachment; filename="{event.slug}-poster.svg"'
        return response

    def poster_png_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        event = self._event_for_view(request, event_id)
        response = HttpResponse(poster.poster_png(event, self._public_url(event, request)), content_type="image/png")
        response["Content-Disposition"] = f'attachment; filename="{event.slug}-poster.png"'
        return response

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        # The dashboard sits above the form (its buttons are forms of their own).
        event = self.get_object(request, object_id)
        if event is not None:
            extra_context = {
                **(extra_context or {}),
                "status": dashboard.event_status(event.pk),
                "failures": dashboard.event_failures(event.pk),
                "status_url": reverse("admin:gallery_event_status", args=[event.pk]),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def status_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        """The dashboard's numbers, polled by static/js/event-dashboard.js while indexing runs."""
        if not super().has_view_permission(request):
            raise PermissionDenied
        event = access.event_for_organizer(request, event_id)
        response = JsonResponse(dashboard.event_status(event.pk))
        response["Cache-Control"] = "no-store"
        return response

    def _queue_view(self, request: HttpRequest, event_id: int, queue: Callable[[Event], int], message: str):
        """A dashboard button: POST only, on an event this user may change."""
        event = self._event_for_change(request, event_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self.message_user(request, message % {"count": queue(event)})
        return redirect(reverse("admin:gallery_event_change", args=[event.pk]))

    def retry_failed_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        def queue(event: Event) -> int:
            return services.event_reindex(event=event, failed_only=True)

        return self._queue_view(request, event_id, queue, gettext("%(count)s failed photos queued for indexing again."))

    def reindex_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        def queue(event: Event) -> int:
            return services.event_reindex(event=event)

        return self._queue_view(request, event_id, queue, gettext("%(count)s photos queued for indexing again."))

    def rematch_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        def queue(event: Event) -> int:
            return services.event_rematch(event=event)

        return self._queue_view(request, event_id, queue, gettext("%(count)s selfies queued for matching again."))

    def purge_view(self, request: HttpRequest, event_id: int) -> HttpResponse:
        """ "Purge attendee data now": what would go, then a confirmation (POST) that deletes it."""
        event = self._event_for_change(request, event_id)
        if request.method == "POST":
            counts = services.attendee_data_purge(event=event)
            self.message_user(
                request,
                gettext("Deleted %(attendees)s attendees, %(selfies)s selfies and %(matches)s matches.")
                % {"attendees": counts.attendees, "selfies": counts.selfies, "matches": counts.matches},
            )
            return redirect(reverse("admin:gallery_event_change", args=[event.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "event": event,
            "counts": services.attendee_data_purge(event=event, dry_run=True),
            "title": gettext("Purge the attendee data of %(event)s?") % {"event": event.name},
        }
        return render(request, "admin/gallery/event/purge_confirm.html", context)

    @admin.action(description=_("Retry failed photos of the selected events"))
    def reindex_failed(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        count = sum(services.event_reindex(event=event, failed_only=True) for event in queryset)
        self.message_user(request, gettext("%(count)s photos queued for indexing again.") % {"count": count})

    @admin.action(description=_("Match all selfies of the selected events again"))
    def rematch(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        count = sum(services.event_rematch(event=event) for event in queryset)
        self.message_user(request, gettext("%(count)s selfies queued for matching again.") % {"count": count})


class HasFacesFilter(admin.SimpleListFilter):
    title = _("faces")
    parameter_name = "has_faces"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", gettext("With faces")), ("no", gettext("No face found"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Photo]) -> QuerySet[Photo]:
        # Only indexed photos have a face count: a pending photo has no face "yet", not "none".
        if self.value() == "yes":
            return queryset.indexed().filter(face_count__gt=0)
        if self.value() == "no":
            return queryset.indexed().filter(face_count=0)
        return queryset


def _face_label(face: Face) -> str:
    """The face's quality where measured: a low-quality face matches only at a stricter tolerance."""
    if face.size is None and face.sharpness is None:
        return ""
    return gettext("low quality") if face.is_low_quality() else gettext("good")


@admin.register(Photo)
class PhotoAdmin(OrganizerAdmin):
    # Capture time first: the list is sorted by it, then by name (Photo.Meta.ordering),
    # and the header's sort markers read left to right.
    list_display = ["preview", "taken_at", "original_name", "event", "index_state", "faces", "short_error"]
    list_filter = ["index_state", HasFacesFilter, ("event", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["original_name", "content_hash"]
    list_select_related = ["event"]
    readonly_fields = [
        "preview_large",
        "attendees",
        "event",
        "original",
        "original_name",
        "content_hash",
        "width",
        "height",
        "taken_at",
        "index_state",
        "index_error",
        "face_count",
        "opted_out_faces",
        "faces_left_out",
        "left_out_reasons",
        "indexed_at",
        "created_at",
    ]
    exclude = ["display", "thumbnail", "claimed_at", "faces_left_out_reasons"]
    actions = ["reindex"]

    class Media:
        css = {"all": ["css/organizer-admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # photos come in through the event's upload page or import_photos

    @admin.display(description=_("Faces"), ordering="face_count")
    def faces(self, obj: Photo) -> str:
        # Not indexed yet: no count, so "0" never reads as "no faces found".
        if obj.index_state != Photo.State.INDEXED:
            return "—"
        if obj.faces_left_out:
            counts = {"kept": obj.face_count, "left_out": obj.faces_left_out}
            return gettext("%(kept)s (+%(left_out)s left out)") % counts
        return str(obj.face_count)

    @admin.display(description=_("Error"), ordering="index_error")
    def short_error(self, obj: Photo) -> str:
        if not obj.index_error:
            return ""
        text = obj.index_error if len(obj.index_error) <= 60 else obj.index_error[:59] + "…"
        return format_html('<span title="{}">{}</span>', obj.index_error, text)

    @admin.display(description=_("Opted-out faces"))
    def opted_out_faces(self, obj: Photo) -> str:
        # Blurred in every served copy (and in the preview above); the original is untouched.
        count = obj.faces.filter(opted_out=True).count()
        return gettext("%(count)d, blurred in every copy served") % {"count": count} if count else "-"

    @admin.display(description=_("Why faces were left out"))
    def left_out_reasons(self, obj: Photo) -> str:
        reasons = sorted(obj.faces_left_out_reasons.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{reason}: {count}" for reason, count in reasons) or "-"

    @admin.display(description="")
    def preview(self, obj: Photo) -> str:
        if not obj.thumbnail:
            return "-"
        url = reverse("admin:gallery_photo_thumbnail", args=[obj.pk])
        return format_html('<img src="{}" class="photo-preview" alt="">', url)

    @admin.display(description=_("Preview"))
    def preview_large(self, obj: Photo) -> str:
        if not obj.thumbnail:
            return gettext("Not indexed yet.")
        url = reverse("admin:gallery_photo_thumbnail", args=[obj.pk])
        if not (obj.width and obj.height):
            return format_html('<img src="{}" class="photo-preview-large" alt="">', url)
        scale = max(obj.width, obj.height) // 120 or 1  # line width and text size, in the photo's pixels
        # Face boxes are in the original's pixels (upright); the viewBox scales them
        # with the thumbnail. SVG attributes, not style="": the CSP forbids inline styles.
        boxes = format_html_join(
            "",
            '<g class="face-box"><rect x="{}" y="{}" width="{}" height="{}" stroke-width="{}"></rect>'
            '<text x="{}" y="{}" font-size="{}">{}</text><title>{}</title></g>',
            (
                (
                    face.left,
                    face.top,
                    face.width,
                    face.height,
                    scale / 4,
                    face.left,
                    max(face.top - scale, scale * 3),
                    scale * 3,
                    label,
                    gettext("Face %(id)s %(quality)s") % {"id": face.pk, "quality": label},
                )
                for face in obj.faces.order_by("pk")
                for label in [_face_label(face)]
            ),
        )
        return format_html(
            '<svg class="photo-preview-large" viewBox="0 0 {} {}" role="img" aria-label="{}">'
            '<image href="{}" x="0" y="0" width="{}" height="{}"></image>{}</svg>',
            obj.width,
            obj.height,
            gettext("The photo with its detected faces"),
            url,
            obj.width,
            obj.height,
            boxes,
        )

    @admin.display(description=_("Attendees found in it"))
    def attendees(self, obj: Photo) -> str:
        selfies = Selfie.objects.filter(matches__photo=obj).order_by("attendee_id", "pk").distinct()
        links = format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            (
                (
                    reverse("admin:gallery_selfie_change", args=[s.pk]),
                    gettext("attendee %(id)s") % {"id": s.attendee_id},
                )
                for s in selfies
            ),
        )
        return links or "—"

    def get_urls(self):
        view = self.admin_site.admin_view(self.thumbnail_view)
        return [path("<int:photo_id>/thumbnail.jpg", view, name="gallery_photo_thumbnail"), *super().get_urls()]

    def thumbnail_view(self, request: HttpRequest, photo_id: int) -> HttpResponse:
        if not super().has_view_permission(request):
            raise PermissionDenied
        return serve_file(get_object_or_404(self.get_queryset(request), pk=photo_id).thumbnail)

    @admin.action(description=_("Index the selected photos again"))
    def reindex(self, request: HttpRequest, queryset: QuerySet[Photo]) -> None:
        count = services.photos_reindex(photo_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, gettext("%(count)s photos queued for indexing again.") % {"count": count})


@admin.register(Selfie)
class SelfieAdmin(OrganizerAdmin):
    list_display = ["id", "event", "match_state", "match_count", "search_limit_reached", "consent_at", "matched_at"]
    list_filter = [
        "match_state",
        "search_limit_reached",
        "attendee__opted_out",
        ("event", admin.RelatedOnlyFieldListFilter),
    ]
    readonly_fields = [
        "event",
        "attendee",
        "consent_at",
        "match_state",
        "match_error",
        "engine",
        "search_limit_reached",
        "matched_at",
        "created_at",
    ]
    exclude = ["embedding", "external_id", "claimed_at", "image"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Selfie]:
        return super().get_queryset(request).select_related("event").annotate(n_matches=Count("matches"))

    @admin.display(description=_("Matches"), ordering="n_matches")
    def match_count(self, obj: Selfie) -> int:
        return obj.n_matches


@admin.register(Match)
class MatchAdmin(OrganizerAdmin):
    event_path = "selfie__event"
    list_display = ["selfie", "photo", "distance", "created_at"]
    list_filter = [("selfie__event", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["selfie__event", "photo"]
    readonly_fields = ["selfie", "photo", "distance", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Face)
class FaceAdmin(OrganizerAdmin):
    event_path = "photo__event"
    list_display = ["id", "photo", "engine", "width", "height", "size", "sharpness", "quality", "opted_out"]
    list_filter = ["engine", "opted_out"]
    list_select_related = ["photo"]
    readonly_fields = [
        "photo",
        "engine",
        "left",
        "top",
        "width",
        "height",
        "size",
        "sharpness",
        "quality",
        "external_id",
        "opted_out",
    ]
    exclude = ["embedding"]

    @admin.display(description=_("Quality"))
    def quality(self, obj: Face) -> str:
        return _face_label(obj) or gettext("not measured")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


def _upload_status(upload: Upload) -> dict[str, object]:
    """What the browser's uploader and the upload's page need to know about it."""
    messages_by_state = {
        Upload.State.RECEIVING: gettext("receiving"),
        Upload.State.PENDING: gettext("waiting to be imported"),
        Upload.State.IMPORTING: gettext("importing"),
        Upload.State.FAILED: gettext(upload.error) if upload.error else "",
        Upload.State.DONE: gettext("%(imported)s imported, %(duplicates)s duplicates skipped, %(rejected)s rejected")
        % {"imported": upload.imported, "duplicates": upload.duplicates, "rejected": upload.rejected},
    }
    message = messages_by_state[upload.state]
    if upload.members_total and upload.state in (Upload.State.PENDING, Upload.State.IMPORTING):
        # A large archive is imported batch by batch, waiting between two.
        counts = {"done": upload.members_done, "total": upload.members_total}
        message = gettext("importing: %(done)s of %(total)s files") % counts
    return {
        "id": upload.pk,
        "name": upload.file_name,
        "size": upload.size,
        "state": upload.state,
        "message": message,
        "chunk_size": upload.chunk_size,
        "chunk_count": upload.chunk_count,
        "received": sorted(upload.chunks.values_list("index", flat=True)),
        "imported": upload.imported,
        "duplicates": upload.duplicates,
        "rejected": upload.rejected,
        "members_done": upload.members_done,
        "members_total": upload.members_total,
        "rejections": [rejection_text(entry) for entry in upload.rejections],
        "status_url": reverse("admin:gallery_upload_status", args=[upload.pk]),
        "chunk_url": reverse("admin:gallery_upload_chunk", args=[upload.pk, 0])[:-2],
        "finish_url": reverse("admin:gallery_upload_finish", args=[upload.pk]),
        "page_url": reverse("admin:gallery_upload_change", args=[upload.pk]),
    }


@admin.register(Upload)
class UploadAdmin(OrganizerAdmin):
    """Files sent from the browser in chunks, with what their import did."""

    list_display = ["file_name", "event", "state", "imported", "duplicates", "rejected", "created_at"]
    list_filter = ["state", ("event", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["file_name"]
    list_select_related = ["event"]
    readonly_fields = [
        "event",
        "file_name",
        "size",
        "state",
        "imported",
        "duplicates",
        "rejected",
        "members_done",
        "members_total",
        "rejection_list",
        "error_text",
        "created_by",
        "created_at",
        "finished_at",
    ]
    exclude = ["rejections", "error", "chunk_size", "claimed_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # made by the event's upload page

    @admin.display(description=_("Error"))
    def error_text(self, obj: Upload) -> str:
        # Stored as a message id (gallery.services.UPLOAD_UNREADABLE): worded in the reader's language.
        return gettext(obj.error) if obj.error else "—"

    @admin.display(description=_("Rejected files"))
    def rejection_list(self, obj: Upload) -> str:
        return format_html_join(mark_safe("<br>"), "{}: {}", map(rejection_text, obj.rejections)) or "—"

    def get_urls(self):
        view = self._page
        return [
            view("status", "<int:upload_id>/status.json", self.status_view),
            view("chunk", "<int:upload_id>/chunk/<int:index>/", self.chunk_view),
            view("finish", "<int:upload_id>/finish/", self.finish_view),
            *super().get_urls(),
        ]

    def _upload(self, request: HttpRequest, upload_id: int) -> Upload:
        """An upload of an event this user may change: 403 without the permission, 404 if not theirs."""
        self._check_may_change(request)
        return get_object_or_404(self.get_queryset(request), pk=upload_id)

    def status_view(self, request: HttpRequest, upload_id: int) -> HttpResponse:
        response = JsonResponse(_upload_status(self._upload(request, upload_id)))
        response["Cache-Control"] = "no-store"
        return response

    def chunk_view(self, request: HttpRequest, upload_id: int, index: int) -> HttpResponse:
        upload = self._upload(request, upload_id)
        if request.method not in ("PUT", "POST"):
            return HttpResponseNotAllowed(["PUT", "POST"])
        # Read from the stream, bounded: request.body would refuse more than
        # DATA_UPLOAD_MAX_MEMORY_SIZE, and a chunk is larger.
        data = request.read(upload.chunk_size + 1)
        try:
            services.upload_chunk_store(
                upload=upload, index=index, data=data, sha256=request.headers.get("X-Chunk-SHA256", "")
            )
        except services.UploadProblem as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        return JsonResponse({"index": index, "stored": True})

    def finish_view(self, request: HttpRequest, upload_id: int) -> HttpResponse:
        upload = self._upload(request, upload_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            upload = services.upload_finish(upload=upload)
        except services.UploadProblem as exc:
            return JsonResponse({"error": str(exc)}, status=409)
        return JsonResponse(_upload_status(upload))
