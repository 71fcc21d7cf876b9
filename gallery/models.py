"""Events, their photos and faces, attendees' selfies and the matches between them."""

from __future__ import annotations

import secrets
from datetime import date, datetime, timedelta
from typing import ClassVar, Self

import numpy as np
from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


def _new_token() -> str:
    return secrets.token_urlsafe(32)


def photo_original_path(photo: Photo, filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else "img"
    return f"events/{photo.event_id}/originals/{photo.content_hash[:2]}/{photo.content_hash}.{suffix}"


def photo_derived_path(photo: Photo, filename: str) -> str:
    return f"events/{photo.event_id}/derived/{photo.content_hash[:2]}/{filename}"


# A selfie is first stored as uploaded ("original-..."), then replaced by the
# matching job with a small metadata-free JPEG.
ORIGINAL_PREFIX = "original-"


def event_cover_path(event: Event, filename: str) -> str:
    # A fresh random name per cover: a browser's cached copy of the old one is never shown again.
    return f"events/covers/{secrets.token_hex(8)}.jpg"


def event_logo_path(event: Event, filename: str) -> str:
    return f"events/logos/{secrets.token_hex(8)}.png"


# The accent colour is written into a stylesheet: only #rrggbb, so nothing else can ever reach the CSS.
accent_colour_validator = RegexValidator(
    r"^#[0-9a-fA-F]{6}\Z", _("Enter a colour as # and six hexadecimal digits, such as #2a55e0.")
)


def selfie_path(selfie: Selfie, filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else "jpg"
    prefix = ORIGINAL_PREFIX if filename.startswith("original.") else ""
    return f"events/{selfie.event_id}/selfies/{prefix}{secrets.token_hex(16)}.{suffix}"


# How long past Q_TIMEOUT a claim may still belong to a running job: django-q2's
# guard stops a job within a cycle (0.5 s) of its timeout; the rest is for clocks.
CLAIM_GRACE_SECONDS = 2


def claims_expire_before() -> datetime:
    """Claims older than this were abandoned: their worker died.

    A job claims its row after django-q2 started its timeout clock, and is
    stopped once Q_TIMEOUT has passed; so a claim older than Q_TIMEOUT (plus a
    grace) has no running job behind it. Not Q_RETRY: the broker's retry clock
    starts when the job is fetched, before the claim, so a job delivered again
    after Q_RETRY would find the claim of its dead first delivery a little too
    young and skip itself, leaving the row claimed for ever (issue #8).
    """
    return timezone.now() - timedelta(seconds=settings.Q_CLUSTER["timeout"] + CLAIM_GRACE_SECONDS)


class EventQuerySet(models.QuerySet):
    def owned_by(self, user: object) -> EventQuerySet:
        """The events this staff user is an owner of (not all events, even for a superuser)."""
        return self.filter(owners=user)

    def retention_expired(self, *, today: date) -> list[Event]:
        """Events past their retention period that still hold attendee data.

        Compared in Python: adding a per-row number of days to a date has no
        portable SQL (SQLite and PostgreSQL differ), and events are few.
        """
        holding = self.filter(attendees__isnull=False).distinct()
        return [event for event in holding if event.retention_passed(today)]


class Event(models.Model):
    name = models.CharField(_("name"), max_length=200)
    slug = models.SlugField(_("link name"), max_length=80, unique=True)
    date = models.DateField(_("date"), default=timezone.localdate)
    access_code = models.CharField(
        _("access code"),
        max_length=64,
        blank=True,
        help_text=_("Attendees must enter this code to open the event. Leave empty for none."),
    )
    published = models.BooleanField(
        _("published"), default=True, help_text=_("Unpublished events are invisible to attendees.")
    )
    # Shown on the event's privacy page.
    contact = models.CharField(
        _("contact"),
        max_length=200,
        blank=True,
        help_text=_("Whom attendees contact about their data (e-mail, name); on the privacy page."),
    )
    # Shown on the privacy page too; purged by the daily job and `purge_expired`.
    retention_days = models.PositiveIntegerField(
        _("retention (days)"),
        default=30,
        help_text=_(
            "Attendees' selfies, face data, matches and e-mail addresses are deleted this many days "
            "after the event's date."
        ),
    )

    class WatermarkPosition(models.TextChoices):
        BOTTOM_RIGHT = "bottom-right", _("Bottom right")
        BOTTOM_LEFT = "bottom-left", _("Bottom left")
        TOP_RIGHT = "top-right", _("Top right")
        TOP_LEFT = "top-left", _("Top left")
        CENTER = "center", _("Centre")

    watermark_text = models.CharField(
        _("watermark"),
        max_length=100,
        blank=True,
        help_text=_("Text drawn on the photos attendees view and download (never on your originals). Empty: none."),
    )
    watermark_position = models.CharField(
        _("watermark position"),
        max_length=12,
        choices=WatermarkPosition.choices,
        default=WatermarkPosition.BOTTOM_RIGHT,
    )
    watermark_opacity = models.PositiveSmallIntegerField(
        _("watermark opacity (%)"), default=60, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    watermark_logo = models.FileField(
        _("watermark logo"),
        upload_to=event_logo_path,
        max_length=300,
        blank=True,
        help_text=_(
            "A PNG image, transparent where the photo should show through (at most 2 MB), drawn on the photos "
            "attendees view and download, with the watermark text below it if there is one."
        ),
    )
    # Raised when the watermark changes: photos whose copies_version is lower get new
    # copies from the copies job (gallery.services.event_copies_remake).
    copies_version = models.PositiveIntegerField(default=0, editable=False)
    # Branding, on every attendee page of the event (before the code too: like its name and date).
    cover = models.FileField(
        _("cover image"),
        upload_to=event_cover_path,
        max_length=300,
        blank=True,
        help_text=_(
            "Shown at the top of the event's pages to anyone with the event link, before the code is entered. "
            "Stored as a JPEG without its metadata."
        ),
    )
    accent_colour = models.CharField(
        _("accent colour"),
        max_length=7,
        blank=True,
        validators=[accent_colour_validator],
        help_text=_("Colour of the buttons and links on the attendee pages, such as #2a55e0. Empty: the default."),
    )
    # Organizers (staff users) who manage the event in the admin; superusers manage every event.
    owners = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="owned_events",
        verbose_name=_("owners"),
        help_text=_("Organizers who see and manage this event in the admin."),
    )
    face_tolerance = models.FloatField(
        _("face tolerance"),
        null=True,
        blank=True,
        validators=[MinValueValidator(0.3), MaxValueValidator(0.8)],
        help_text=_(
            "Largest face distance that counts as the same person (dlib; lower is stricter). "
            "Empty: the server's FACE_TOLERANCE. Changing it matches every selfie again."
        ),
    )
    # The hosted engine's threshold: Rekognition answers with a similarity, not a dlib distance.
    face_similarity = models.FloatField(
        _("face similarity"),
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text=_(
            "Smallest similarity (0-100) that counts as the same person with AWS Rekognition (higher is "
            "stricter). Empty: the server's AWS_REKOGNITION_SIMILARITY. Changing it matches every selfie again."
        ),
    )
    # Against using someone else's photo as a selfie (docs/privacy.md, "Camera-only mode").
    camera_only = models.BooleanField(
        _("camera only"),
        default=False,
        help_text=_(
            "Selfies only from the front camera on the event page, with a short pose check (facing, then head "
            "turned), instead of any photo: a photo of someone else is then refused in most cases. Opt-outs are "
            "not concerned."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = EventQuerySet.as_manager()

    class Meta:
        ordering = ["-date", "name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("gallery:event", args=[self.slug])

    def retention_ends(self) -> date:
        """The day the attendees' data of this event expires (is purged from then on)."""
        return self.date + timedelta(days=self.retention_days)

    def retention_passed(self, today: date) -> bool:
        """From its retention end on, the event's attendee data is purged (and no more is taken)."""
        return self.retention_ends() <= today


class JobQuerySet(models.QuerySet):
    """Rows that one job at a time works on: pending -> claimed (the working state) -> final.

    Each model's QuerySet names its state and error fields and its working state
    once, as Django's user model names its USERNAME_FIELD.
    """

    state_field: ClassVar[str]
    error_field: ClassVar[str]
    working_state: ClassVar[str]
    # Shared by the State choices of every model with jobs.
    PENDING, FAILED = "pending", "failed"

    def _in(self, *states: str, **more: object) -> Q:
        return Q(**{f"{self.state_field}__in": states}, **more)

    def pending(self) -> Self:
        """Waiting for their job (queued, not claimed yet)."""
        return self.filter(self._in(self.PENDING))

    def failed(self) -> Self:
        return self.filter(self._in(self.FAILED))

    def claimed(self) -> Self:
        """Claimed by a job: the job that ends one checks it still is."""
        return self.filter(self._in(self.working_state))

    def claimable(self) -> Self:
        """Pending, or claimed by a job that was abandoned."""
        return self.filter(self._in(self.PENDING) | self._in(self.working_state, claimed_at__lt=claims_expire_before()))

    def claim(self, *, pk: int) -> bool:
        """Take the row for this job with one conditional UPDATE: of two workers
        given the same job, exactly one wins."""
        working = {self.state_field: self.working_state, self.error_field: ""}
        return bool(self.claimable().filter(pk=pk).update(**working, claimed_at=timezone.now()))

    def reset(self) -> int:
        """Back to pending, without error or claim, before their jobs are queued again."""
        return self.update(**{self.state_field: self.PENDING, self.error_field: ""}, claimed_at=None)

    def stuck(self, *, queue_empty: bool) -> Self:
        """Rows whose job was lost: claimed longer than Q_TIMEOUT ago, or pending that
        long while the queue is empty (while jobs still wait, a pending row is just queued)."""
        before = claims_expire_before()
        stuck = self._in(self.working_state, claimed_at__lt=before)
        if queue_empty:
            stuck |= self._in(self.PENDING, created_at__lt=before)
        return self.filter(stuck)


class PhotoQuerySet(JobQuerySet):
    """Photos go pending -> processing (claimed by one index job) -> indexed or failed."""

    state_field, error_field, working_state = "index_state", "index_error", "processing"

    def indexed(self) -> PhotoQuerySet:
        return self.filter(index_state=Photo.State.INDEXED)

    def finished(self) -> PhotoQuerySet:
        """Indexed or failed: no job will change them unless they are queued again."""
        return self.filter(index_state__in=[Photo.State.INDEXED, Photo.State.FAILED])

    def in_progress(self) -> PhotoQuerySet:
        """Queued or being indexed."""
        return self.filter(index_state__in=[Photo.State.PENDING, Photo.State.PROCESSING])


class Photo(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        PROCESSING = "processing", _("Processing")
        INDEXED = "indexed", _("Indexed")
        FAILED = "failed", _("Failed")

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="photos")
    original = models.FileField(upload_to=photo_original_path, max_length=300)
    original_name = models.CharField(max_length=255)
    content_hash = models.CharField(max_length=64, help_text=_("SHA-256 of the original file."))
    # Served copies, EXIF stripped and orientation applied; made by the index job.
    display = models.FileField(upload_to=photo_derived_path, max_length=300, blank=True)
    thumbnail = models.FileField(upload_to=photo_derived_path, max_length=300, blank=True)
    # The event's copies_version these copies were last made again for.
    copies_version = models.PositiveIntegerField(default=0, editable=False)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    taken_at = models.DateTimeField(null=True, blank=True, help_text=_("Capture time from EXIF."))
    index_state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING, db_index=True)
    index_error = models.TextField(blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    face_count = models.PositiveIntegerField(default=0)
    # Faces the engine saw but did not keep (Rekognition: more than 100, too small, low quality).
    faces_left_out = models.PositiveIntegerField(
        default=0, help_text=_("Faces the face engine saw in this photo but left out: nobody can be found in them.")
    )
    faces_left_out_reasons = models.JSONField(
        default=dict, blank=True, help_text=_("Left-out faces by the engine's reason.")
    )
    indexed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PhotoQuerySet.as_manager()

    class Meta:
        ordering = ["taken_at", "original_name", "id"]
        constraints = [models.UniqueConstraint(fields=["event", "content_hash"], name="photo_unique_hash_per_event")]
        indexes = [models.Index(fields=["event", "index_state"])]

    def __str__(self) -> str:
        return self.original_name


class EngineFacesQuerySet(models.QuerySet):
    """Rows holding a face found by an engine (photo faces, enrolled selfies)."""

    def embedded(self, *, engine: str) -> Self:
        """With a vector from this embedding engine."""
        return self.filter(engine=engine).exclude(embedding=b"")

    def remote(self, *, engine: str | None = None) -> Self:
        """Kept by a hosted engine (under its own id for the face); of one engine, or of any."""
        rows = self.exclude(external_id="")
        return rows if engine is None else rows.filter(engine=engine)


class FaceQuerySet(EngineFacesQuerySet):
    def of_indexed_photos(self) -> FaceQuerySet:
        return self.filter(photo__index_state=Photo.State.INDEXED)

    def shown(self) -> FaceQuerySet:
        """Faces of no opted-out person: the only ones that may match an attendee."""
        return self.filter(opted_out=False)


class Face(models.Model):
    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="faces")
    # Bounding box in pixels of the original photo, after EXIF orientation.
    left = models.PositiveIntegerField()
    top = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    # float32 vector (128-d for dlib); empty for engines that keep faces remotely.
    embedding = models.BinaryField(blank=True, default=b"")
    engine = models.CharField(max_length=20)
    # The engine's own id for this face (Rekognition FaceId), if any.
    external_id = models.CharField(max_length=64, blank=True, db_index=True)
    # Quality (matching.quality): tiny or blurred faces match only with a stricter
    # tolerance. Empty for faces indexed before it was measured.
    size = models.PositiveIntegerField(null=True, blank=True, help_text=_("Shorter side of the face, in pixels."))
    sharpness = models.FloatField(null=True, blank=True, help_text=_("Detail relative to contrast (0 = flat)."))
    # The face of a person who opted out of the event (matching.optout decides):
    # blurred in every served copy, never in anyone's results.
    opted_out = models.BooleanField(
        default=False, help_text=_("This person opted out: blurred in served copies, shown to no attendee.")
    )

    objects = FaceQuerySet.as_manager()

    def __str__(self) -> str:
        return f"Face {self.pk} in {self.photo_id}"

    def is_low_quality(self) -> bool:
        """Too small or too blurred for the normal tolerance (matching.rules.low_quality)."""
        return (self.size is not None and self.size < settings.FACE_MIN_QUALITY_SIZE) or (
            self.sharpness is not None and self.sharpness < settings.FACE_MIN_SHARPNESS
        )


class AttendeeQuerySet(models.QuerySet):
    def by_token(self, *, event: Event, token: str) -> AttendeeQuerySet:
        """The attendee a private link names. Never an opt-out: their link only withdraws it."""
        return self.filter(event=event, token=token, opted_out=False)

    def optout_by_token(self, *, event: Event, token: str) -> AttendeeQuerySet:
        return self.filter(event=event, token=token, opted_out=True)


class Attendee(models.Model):
    """One person at one event: their selfies (up to ATTENDEE_MAX_SELFIES), one private link.

    Their gallery is the union of their selfies' matches, minus the photos they
    marked "not me".
    """

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="attendees")
    # The private link's secret: whoever holds it sees, and may delete, this attendee's photos.
    token = models.CharField(max_length=64, unique=True, default=_new_token, editable=False)
    # Which event code this attendee last took a selfie under (gallery.access.code_digest):
    # their private link opens the event only while that code is still the code.
    code_digest = models.CharField(max_length=64, blank=True, editable=False)
    consent_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    # Optional e-mail, with its own consent: the private link, then one message per
    # batch of new photos. Cleared by the unsubscribe link.
    email = models.EmailField(blank=True)
    email_consent_at = models.DateTimeField(null=True, blank=True)
    email_language = models.CharField(max_length=10, blank=True)
    # The address the attendee used the site at, for links in e-mails when SITE_URL is unset.
    email_site = models.CharField(max_length=200, blank=True)
    # Photos matched before this were already announced (or seen).
    notified_at = models.DateTimeField(null=True, blank=True)
    # An opt-out ("don't show me"): one selfie whose template is used only to find
    # this person's faces and hide them from everyone else. Its private link withdraws it.
    opted_out = models.BooleanField(
        default=False, help_text=_("Not an attendee: a person who asked never to be shown in this event's photos.")
    )

    objects = AttendeeQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Attendee {self.pk} ({self.event})"

    def new_photos(self) -> models.QuerySet[Photo]:
        """Photos in the gallery that no selfie of the attendee had matched before `notified_at`."""
        mine = models.Q(matches__selfie__attendee=self)
        return (
            self.photos()
            .annotate(first_match=models.Min("matches__created_at", filter=mine))
            .filter(first_match__gt=self.notified_at)
        )

    def photos(self) -> models.QuerySet[Photo]:
        """The photos any of this attendee's selfies matched, minus those marked "not me"."""
        return (
            Photo.objects.filter(event_id=self.event_id, matches__selfie__attendee=self)
            .exclude(rejections__attendee=self)
            .distinct()
            .order_by("taken_at", "original_name", "id")
        )


class SelfieQuerySet(JobQuerySet, EngineFacesQuerySet):
    """Selfies go pending -> matching (claimed by one match job) -> done or failed."""

    state_field, error_field, working_state = "match_state", "match_error", "matching"

    def searching(self) -> Self:
        """Attendees' selfies, which find photos (not opt-outs, which only hide faces)."""
        return self.filter(attendee__opted_out=False)

    def optouts(self) -> Self:
        return self.filter(attendee__opted_out=True)


class Selfie(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        MATCHING = "matching", _("Matching")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="selfies")
    attendee = models.ForeignKey(Attendee, on_delete=models.CASCADE, related_name="selfies")
    # Emptied when matching finds no face: an unusable selfie is not kept.
    image = models.FileField(upload_to=selfie_path, max_length=300, blank=True)
    # Camera-only events: the second picture (head turned), kept only until the job's pose check has run.
    turned_image = models.FileField(upload_to=selfie_path, max_length=300, blank=True, editable=False)
    consent_at = models.DateTimeField()
    match_state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING, db_index=True)
    match_error = models.TextField(blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    embedding = models.BinaryField(blank=True, default=b"")
    engine = models.CharField(max_length=20, blank=True)
    external_id = models.CharField(max_length=64, blank=True)
    # Rekognition's SearchFaces returns at most 4,096 faces and cannot page.
    search_limit_reached = models.BooleanField(
        default=False,
        help_text=_("The face engine's search returned its maximum number of faces: weaker matches may be missing."),
    )
    matched_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SelfieQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Selfie {self.pk} ({self.event})"

    def vector(self) -> np.ndarray:
        return np.frombuffer(self.embedding, dtype=np.float32)


class Match(models.Model):
    selfie = models.ForeignKey(Selfie, on_delete=models.CASCADE, related_name="matches")
    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="matches")
    distance = models.FloatField(help_text=_("Best (smallest) face distance between the selfie and the photo."))
    # The database's clock, not the worker's: re-matching compares it with the
    # start of a search (matching.services), and workers' clocks may drift apart.
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name_plural = "matches"
        ordering = ["distance"]
        constraints = [models.UniqueConstraint(fields=["selfie", "photo"], name="match_unique_selfie_photo")]

    def __str__(self) -> str:
        return f"{self.selfie_id} ↔ {self.photo_id} ({self.distance:.3f})"


class Rejection(models.Model):
    """An attendee said "not me" about a photo: it stays out of their gallery, whatever matching says."""

    attendee = models.ForeignKey(Attendee, on_delete=models.CASCADE, related_name="rejections")
    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="rejections")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["attendee", "photo"], name="rejection_unique_attendee_photo")]

    def __str__(self) -> str:
        return f"{self.attendee_id} ✗ {self.photo_id}"


class UploadQuerySet(JobQuerySet):
    """Uploads go receiving (chunks arrive) -> pending (queued) -> importing (claimed by one job) -> done or failed."""

    state_field, error_field, working_state = "state", "error", "importing"


class Upload(models.Model):
    """One file (a photo or a zip archive) sent from the browser in chunks, imported by a job."""

    class State(models.TextChoices):
        RECEIVING = "receiving", _("Receiving")
        PENDING = "pending", _("Waiting to be imported")
        IMPORTING = "importing", _("Importing")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="uploads")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    file_name = models.CharField(_("file name"), max_length=255)
    size = models.PositiveBigIntegerField(_("size (bytes)"))
    chunk_size = models.PositiveIntegerField()
    state = models.CharField(max_length=12, choices=State.choices, default=State.RECEIVING, db_index=True)
    imported = models.PositiveIntegerField(_("imported"), default=0)
    duplicates = models.PositiveIntegerField(_("duplicates"), default=0)
    rejected = models.PositiveIntegerField(_("rejected"), default=0)
    # [name, code, values] (gallery.rejections), the first few hundred (gallery.services.UPLOAD_REJECTIONS_KEPT).
    rejections = models.JSONField(default=list, blank=True)
    # A zip archive is imported UPLOAD_IMPORT_BATCH files per job: how many of its files
    # the finished batches went through, and how many it has.
    members_done = models.PositiveIntegerField(_("archive files processed"), default=0)
    members_total = models.PositiveIntegerField(_("files in the archive"), null=True, blank=True)
    error = models.TextField(blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = UploadQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.file_name

    @property
    def chunk_count(self) -> int:
        return max(1, -(-self.size // self.chunk_size))

    def chunk_length(self, index: int) -> int:
        """The exact length chunk `index` must have: full ones, then the rest."""
        return min(self.chunk_size, self.size - index * self.chunk_size) if self.size else 0

    def chunk_name(self, index: int) -> str:
        return f"uploads/{self.event_id}/{self.pk}/{index:06d}.part"


class UploadChunk(models.Model):
    """A chunk stored and acknowledged: a row exists only once its bytes are in the storage."""

    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    # Where the storage put it (it may pick another name than asked for).
    name = models.CharField(max_length=300)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["upload", "index"], name="upload_chunk_unique_index")]

    def __str__(self) -> str:
        return f"{self.upload_id}#{self.index}"


class AuditEntry(models.Model):
    """A sign of abuse for the organizer's audit page: never a face, an image or an address.

    `client` is a keyed hash of the client's address (gallery.access.client_tag): the
    same client shows as the same tag for a day, and the tag tells nobody its address.
    """

    class Kind(models.TextChoices):
        SELFIE = "selfie", _("Selfie")
        OPTOUT = "optout", _("Opt-out")
        LIMIT = "limit", _("Selfie limit reached")
        QUICK_DELETE = "quick-delete", _("Selfies deleted soon after matching")

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="audit_entries")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    client = models.CharField(max_length=16, blank=True)
    # Selfies concerned (deleted ones); 1 for the others.
    count = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.kind} {self.client} ({self.event_id})"


class Download(models.Model):
    """One download by an attendee (a photo, or a zip of `photos` photos), for the event's dashboard.

    A row per download rather than counters on the event: an UPDATE of the event
    row would wait for the matching jobs, which lock it while they decide
    (matching.services._event_lock), and the attendee would wait with it. An
    INSERT only needs the event to exist. Nothing here says who downloaded.
    """

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="downloads")
    photos = models.PositiveIntegerField(default=1)
    zip = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.photos} ({self.event_id})"
