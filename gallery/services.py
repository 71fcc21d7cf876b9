"""Business writes for events, photos and selfies.

Views, admin actions and commands call these; none of them detects faces:
indexing and matching are queued as jobs (gallery.jobs) after commit.
"""

from __future__ import annotations

import hashlib
import io
import logging
import lzma
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, IntegrityError, models, transaction
from django.db.models import F, Max
from django.db.models.functions import Greatest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from PIL import Image

from gallery import access, jobs
from gallery.images import ImageProblem, exif_datetime, file_suffix, identify, jpeg_file
from gallery.links import public_url
from gallery.models import (
    ORIGINAL_PREFIX,
    Attendee,
    AuditEntry,
    Download,
    Event,
    Match,
    Photo,
    Rejection,
    Selfie,
    Upload,
    UploadChunk,
)
from gallery.rejections import Reason, rejection_json

logger = logging.getLogger("trouvaille.jobs")

_CHUNK = 1024 * 1024
_SKIPPED_NAMES = ("__MACOSX/", "Thumbs.db", ".DS_Store")


@dataclass
class ImportSummary:
    """What an import did, file by file: created, duplicate or rejected (with why)."""

    created: list[int] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[tuple[str, Reason]] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return len(self.created) + len(self.duplicates) + len(self.rejected)

    def merge(self, other: ImportSummary) -> None:
        self.created += other.created
        self.duplicates += other.duplicates
        self.rejected += other.rejected

    def describe(self) -> str:
        counts = {"imported": len(self.created), "duplicates": len(self.duplicates), "rejected": len(self.rejected)}
        return _("%(imported)s imported, %(duplicates)s duplicates skipped, %(rejected)s rejected") % counts


# --- Events -------------------------------------------------------------------


def event_create(
    *,
    name: str,
    slug: str | None = None,
    code: str = "",
    event_date: date | None = None,
    owner: AbstractBaseUser | None = None,
) -> Event:
    """A new published event, managed by `owner` if given. A given slug must be free; a derived one is made unique."""
    name = name.strip()
    if not name:
        raise ValueError("An event needs a name.")
    if slug:
        if slug != slugify(slug):
            raise ValueError(f"{slug!r} is not a valid slug: use lowercase letters, digits and hyphens.")
        if Event.objects.filter(slug=slug).exists():
            raise ValueError(f"An event with the slug {slug!r} already exists.")
    else:
        base = slugify(name)[:70] or "event"
        slug, n = base, 1
        while Event.objects.filter(slug=slug).exists():
            n += 1
            slug = f"{base}-{n}"
    event = Event(name=name, slug=slug, access_code=code.strip(), date=event_date or timezone.localdate())
    try:
        event.full_clean()  # lengths and formats: a readable message, not a database error
    except ValidationError as exc:
        raise ValueError(
            " ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
        ) from exc
    with transaction.atomic():
        event.save()
        if owner is not None:
            event_owner_add(event=event, user=owner)
    return event


def event_owner_add(*, event: Event, user: AbstractBaseUser) -> None:
    """Let a staff user manage the event. Adding an owner twice is harmless."""
    if not (user.is_active and user.is_staff):
        raise ValueError(f"{user} is not an active staff user: only organizers can own events.")
    event.owners.add(user)


def event_cover_discard(*, name: str) -> None:
    """Delete a replaced or cleared cover's (or watermark logo's) file, once the event row
    no longer names it (after commit)."""
    jobs.enqueue_files_delete([name] if name else [])


ORGANIZERS_GROUP = "Organizers"
# What organizers may do in the admin; which rows they may do it to is decided by
# gallery.access (their own events only).
_ORGANIZER_PERMISSIONS = {
    "event": ("add", "change", "delete", "view"),
    "photo": ("change", "delete", "view"),
    "face": ("delete", "view"),
    "rejection": ("delete",),
    "selfie": ("delete", "view"),
    "match": ("delete", "view"),
    "attendee": ("delete", "view"),
    "upload": ("change", "view"),
}


def organizers_group() -> Group:
    """The group holding the organizers' model permissions, made (or completed) on first use."""
    group, _ = Group.objects.get_or_create(name=ORGANIZERS_GROUP)
    codenames = [f"{action}_{model}" for model, actions in _ORGANIZER_PERMISSIONS.items() for action in actions]
    group.permissions.add(*Permission.objects.filter(content_type__app_label="gallery", codename__in=codenames))
    return group


def organizer_create(*, username: str, email: str, password: str | None = None) -> AbstractBaseUser:
    """A staff user in the Organizers group: sees only the events they own.

    Without a password the account has an unusable one until they set theirs
    through a one-time link (see organizer_login_link).
    """
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        raise ValueError(f"A user named {username!r} already exists.")
    user = User(username=username, email=email, is_staff=True)
    try:
        user.full_clean(exclude=["password"])
        if password is not None:
            password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise ValueError(" ".join(exc.messages)) from exc
    if password is None:
        user.set_unusable_password()
    else:
        user.set_password(password)
    with transaction.atomic():
        user.save()
        user.groups.add(organizers_group())
    return user


def organizer_login_link(*, user: AbstractBaseUser) -> str:
    """A link to choose a password, usable once (Django's password-reset token)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return public_url(reverse("organizer_welcome", args=[uid, token]))


# --- Photos -------------------------------------------------------------------


def photo_import(*, event: Event, name: str, fileobj: IO[bytes]) -> ImportSummary:
    """Store one photo and queue it for indexing; identical content is skipped.

    The file is copied to a temporary spool while hashing, so nothing is stored
    until we know it is an image of acceptable size that the event lacks.
    """
    summary = ImportSummary()
    name = PurePosixPath(name.replace("\\", "/")).name[:255] or "photo"
    with tempfile.SpooledTemporaryFile(max_size=8 * _CHUNK) as spool:
        digest = hashlib.sha256()
        size = 0
        while chunk := fileobj.read(_CHUNK):
            size += len(chunk)
            if size > settings.PHOTO_MAX_BYTES:
                summary.rejected.append((name, Reason("too-large", {"size": settings.PHOTO_MAX_BYTES})))
                return summary
            digest.update(chunk)
            spool.write(chunk)
        if size == 0:
            summary.rejected.append((name, Reason("empty")))
            return summary
        content_hash = digest.hexdigest()
        if Photo.objects.filter(event=event, content_hash=content_hash).exists():
            summary.duplicates.append(name)
            return summary
        spool.seek(0)
        try:
            image = identify(spool)
        except ImageProblem as exc:
            summary.rejected.append((name, Reason.of_image_problem(exc)))
            return summary
        taken_at = _parse_exif_time(exif_datetime(image))
        spool.seek(0)
        photo = Photo(event=event, original_name=name, content_hash=content_hash, taken_at=taken_at)
        # Stored under the content hash with the detected format's extension: an
        # uploaded name (its length, its characters) never reaches the storage.
        stored_name = f"photo.{file_suffix(image)}"
        photo.original.save(stored_name, File(spool, name=stored_name), save=False)
    try:
        with transaction.atomic():
            photo.save()
            jobs.enqueue_photo_index(photo.pk, event_id=event.pk)
    except IntegrityError:
        # The same file arrived concurrently; the other copy won.
        photo.original.storage.delete(photo.original.name)
        summary.duplicates.append(name)
        return summary
    summary.created.append(photo.pk)
    return summary


def _parse_exif_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.strptime(value[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return timezone.make_aware(parsed) if settings.USE_TZ else parsed


def archive_import(*, event: Event, fileobj: IO[bytes], name: str = "archive.zip") -> ImportSummary:
    """Import every image in a zip archive, in one go (see archive_batch_import)."""
    return archive_batch_import(event=event, fileobj=fileobj, name=name).summary


@dataclass
class ArchiveBatch:
    """What one batch of an archive did, and how far it got: files gone through from
    the archive's start, of how many (0 of 0 when the archive itself was refused)."""

    summary: ImportSummary
    done: int
    total: int


def archive_batch_import(
    *, event: Event, fileobj: IO[bytes], name: str = "archive.zip", start: int = 0, limit: int | None = None
) -> ArchiveBatch:
    """Import the archive's images from its `start`-th file on, `limit` of them (all without
    a limit), read member by member, never extracted to disk.

    Hostile archives are contained: member names are never used as paths, sizes
    are enforced on the bytes actually read (headers can lie), nested archives
    and encrypted members are refused, and the member count is bounded.
    """
    summary = ImportSummary()
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError):
        summary.rejected.append((name, Reason("bad-zip")))
        return ArchiveBatch(summary, 0, 0)
    with archive:
        if archive.infolist() and min(info.header_offset for info in archive.infolist()) != 0:
            # A whole zip starts with its first member. Otherwise zipfile found a
            # central directory further in: a truncated archive whose last
            # readable directory is that of a zip stored inside it, or data
            # prepended to an archive. Either way, not what the organizer meant.
            summary.rejected.append((name, Reason("truncated-zip")))
            return ArchiveBatch(summary, 0, 0)
        # The same order for every batch: a batch's start means the same file each time.
        members = [info for info in archive.infolist() if not info.is_dir() and not _is_junk(info.filename)]
        if len(members) > settings.ARCHIVE_MAX_MEMBERS:
            summary.rejected.append((name, Reason("too-many-members", {"count": settings.ARCHIVE_MAX_MEMBERS})))
            return ArchiveBatch(summary, 0, 0)
        end = len(members) if limit is None else min(len(members), start + limit)
        for info in members[start:end]:
            label = f"{name}:{info.filename}"
            if info.flag_bits & 0x1:
                summary.rejected.append((label, Reason("encrypted")))
            elif info.filename.lower().endswith(".zip"):
                summary.rejected.append((label, Reason("nested-archive")))
            elif info.file_size > settings.PHOTO_MAX_BYTES:
                summary.rejected.append((label, Reason("too-large", {"size": settings.PHOTO_MAX_BYTES})))
            else:
                try:
                    with archive.open(info) as member:
                        result = photo_import(event=event, name=info.filename, fileobj=member)
                except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, zlib.error, lzma.LZMAError) as exc:
                    summary.rejected.append((label, Reason("unreadable-member", {"detail": str(exc)})))
                    continue
                result.rejected = [(f"{name}:{n}", why) for n, why in result.rejected]
                summary.merge(result)
    return ArchiveBatch(summary, end, len(members))


def _is_junk(member: str) -> bool:
    # Windows archivers write "\\" separators: "..\\x.jpg" is the photo x.jpg (its
    # name is never used as a path), not a hidden file.
    member = member.replace("\\", "/")
    base = PurePosixPath(member).name
    return member.startswith(_SKIPPED_NAMES) or base.startswith(".") or base in _SKIPPED_NAMES


def upload_import(*, event: Event, name: str, fileobj: IO[bytes]) -> ImportSummary:
    """One uploaded or found file: a zip archive or a single photo."""
    if name.lower().endswith(".zip"):
        return archive_import(event=event, fileobj=fileobj, name=name)
    return photo_import(event=event, name=name, fileobj=fileobj)


def expand_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named directly, and every visible file below named folders, in order."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path).parts
                if child.is_file() and not any(part.startswith(".") for part in relative):
                    yield child
        else:
            yield path


def paths_import(
    *, event: Event, paths: Iterable[Path], on_file: Callable[[Path, ImportSummary], None] | None = None
) -> ImportSummary:
    """Import files, folders (recursively) and zip archives from the filesystem."""
    summary = ImportSummary()
    for path in expand_paths(paths):
        if not path.exists():
            result = ImportSummary(rejected=[(str(path), Reason("missing"))])
        elif not path.is_file():
            # Opening a FIFO would wait forever for a writer; devices and sockets are no photos.
            result = ImportSummary(rejected=[(str(path), Reason("not-regular"))])
        else:
            try:
                with path.open("rb") as handle:
                    result = upload_import(event=event, name=path.name, fileobj=handle)
            except OSError as exc:
                detail = {"detail": exc.strerror or str(exc)}
                result = ImportSummary(rejected=[(str(path), Reason("unreadable", detail))])
        summary.merge(result)
        if on_file:
            on_file(path, result)
    return summary


# --- Selfies ------------------------------------------------------------------


class SelfieLimit(ValueError):
    """The attendee already has as many selfies as allowed."""


class SelfieNotStored(Exception):
    """The database or storage refused the selfie for now (busy, unreachable); nothing was kept."""


def selfie_create(
    *,
    event: Event,
    upload: IO[bytes],
    consent: bool,
    attendee: Attendee | None = None,
    replace: bool = False,
    opted_out: bool = False,
    client: str = "",
    turned: IO[bytes] | None = None,
) -> Selfie:
    """Store the selfie as it came and queue its matching; the job makes the small copy.

    Only the header is read here (format, size, pixel count): decoding, resizing
    and stripping metadata cost memory and CPU that a web request must not spend
    (a 10000x10000 progressive JPEG needs ~600 MB to decode), so the matching job
    does them, replacing this file with a small metadata-free JPEG.

    Without `attendee`, the selfie starts a new attendee (a new private link).
    With one, it is added to their selfies (at most ATTENDEE_MAX_SELFIES that
    are not failed; SelfieLimit past that), or, with `replace`, it replaces
    all of them, keeping the attendee and their private link. Failed selfies of
    the attendee go either way: they never found anything.

    With `opted_out` (and no attendee) the new attendee is an opt-out: see optout_create.

    `turned` is the second picture of a camera-only event's selfie (head turned),
    which the job's pose check compares with the first before enrolling it
    (matching.pose), then deletes.

    Raises ImageProblem (with a message for the attendee) for unusable images, and
    SelfieNotStored when the database refuses the write; in both cases no file is left.
    """
    if not consent:
        raise ValueError("Consent is required.")
    if attendee is not None and not replace:
        usable = attendee.selfies.exclude(match_state=Selfie.State.FAILED).count()
        if usable >= settings.ATTENDEE_MAX_SELFIES:
            raise SelfieLimit(
                _("You already have %(count)d selfies: delete them to start again.")
                % {"count": settings.ATTENDEE_MAX_SELFIES}
            )
    suffix = _selfie_upload_check(upload)
    turned_suffix = _selfie_upload_check(turned) if turned is not None else ""
    now = timezone.now()
    selfie = Selfie(event=event, consent_at=now)
    selfie.image.save(f"original.{suffix}", File(upload), save=False)
    if turned is not None:
        selfie.turned_image.save(f"original.{turned_suffix}", File(turned), save=False)
    try:
        with transaction.atomic():
            if attendee is None:
                attendee = Attendee.objects.create(event=event, consent_at=now, opted_out=opted_out)
            # Their private link now stands for the code this selfie was taken under.
            Attendee.objects.filter(pk=attendee.pk).update(code_digest=access.code_digest(event))
            # The deletion signals remove their files and remote faces (after commit).
            gone = attendee.selfies.all() if replace else attendee.selfies.failed()
            _quick_deletes_record(event=event, selfies=gone, client=client)
            gone.delete()
            selfie.attendee = attendee
            selfie.save()
            kind = AuditEntry.Kind.OPTOUT if attendee.opted_out else AuditEntry.Kind.SELFIE
            AuditEntry.objects.create(event=event, kind=kind, client=client)
            jobs.enqueue_selfie_match(selfie.pk)
    except DatabaseError as exc:
        # A face must never stay on disk without the row that would delete it.
        for file in (selfie.image, selfie.turned_image):
            if file:
                file.storage.delete(file.name)
        raise SelfieNotStored(str(exc)) from exc
    return selfie


def _selfie_upload_check(upload: IO[bytes]) -> str:
    """The file suffix of an acceptable selfie picture, from its header only; ImageProblem otherwise."""
    if getattr(upload, "size", 0) > settings.SELFIE_MAX_BYTES:
        raise ImageProblem(
            _("This photo is too large; the limit is %(size)s.") % {"size": filesizeformat(settings.SELFIE_MAX_BYTES)}
        )
    image = identify(upload)
    if image.width * image.height > settings.SELFIE_MAX_PIXELS:
        raise ImageProblem(_("This photo has too many pixels for a selfie; please use a smaller one."))
    upload.seek(0)
    return file_suffix(image)


def optout_create(*, event: Event, upload: IO[bytes], consent: bool, client: str = "") -> Attendee:
    """Opt a person out of the event: one photo of them, whose template only hides them.

    Stored and enrolled like a selfie (same checks, same small copy, same retention),
    then its job marks and blurs their faces and takes them out of everyone's results.
    The returned attendee's private link withdraws the opt-out and opens nothing else.
    """
    return selfie_create(event=event, upload=upload, consent=consent, opted_out=True, client=client).attendee


def optout_withdraw(*, optout: Attendee) -> None:
    """Withdraw an opt-out: its template goes, and its faces are shown again (signals queue the job)."""
    if not optout.opted_out:
        raise ValueError("Not an opt-out.")
    optout.delete()


def selfie_turned_drop(*, selfie_id: int) -> None:
    """Delete the second picture of a camera-only selfie: only the pose check needed it."""
    with transaction.atomic():
        name = Selfie.objects.filter(pk=selfie_id).values_list("turned_image", flat=True).first()
        if name and Selfie.objects.filter(pk=selfie_id, turned_image=name).update(turned_image=""):
            jobs.enqueue_files_delete([name])


def selfie_image_drop(*, selfie_id: int) -> None:
    """Delete a selfie's pictures but keep its row (and failure message): matching could not use it."""
    selfie_turned_drop(selfie_id=selfie_id)
    with transaction.atomic():
        name = Selfie.objects.filter(pk=selfie_id).values_list("image", flat=True).first()
        if name and Selfie.objects.filter(pk=selfie_id, image=name).update(image=""):
            jobs.enqueue_files_delete([name])


def selfie_is_original(selfie: Selfie) -> bool:
    """Is the stored file still the upload as it came (not yet the small copy)?"""
    return PurePosixPath(selfie.image.name).name.startswith(ORIGINAL_PREFIX)


def selfie_copy_store(*, selfie: Selfie, image: Image.Image) -> bool:
    """Replace the stored upload by a small, metadata-free JPEG of `image` (the job's work).

    False when the selfie was deleted meanwhile (the new copy is removed again).
    """
    original = selfie.image.name
    selfie.image.save("selfie.jpg", jpeg_file(image, max_side=settings.SELFIE_MAX_SIDE, quality=85), save=False)
    if Selfie.objects.filter(pk=selfie.pk, image=original).update(image=selfie.image.name):
        selfie.image.storage.delete(original)
        return True
    selfie.image.storage.delete(selfie.image.name)
    return False


def attendee_email_set(*, attendee: Attendee, email: str, language: str, site: str) -> None:
    """Opt in to e-mails (its own consent): the private link now, then news of new photos.

    Photos already in the gallery are not news: only those matched from now on are.
    """
    now = timezone.now()
    with transaction.atomic():
        Attendee.objects.filter(pk=attendee.pk).update(
            email=email, email_consent_at=now, email_language=language, email_site=site[:200], notified_at=now
        )
        jobs.enqueue_link_email(attendee.pk)


def attendee_email_stop(*, attendee: Attendee) -> None:
    """Unsubscribe: the address and its consent are forgotten."""
    Attendee.objects.filter(pk=attendee.pk).update(email="", email_consent_at=None, email_language="", email_site="")


def attendee_delete(*, attendee: Attendee, client: str = "") -> None:
    """Forget an attendee: their selfies, faces and matches (files via signals), and their "not me" marks."""
    with transaction.atomic():
        _quick_deletes_record(event=attendee.event, selfies=attendee.selfies.all(), client=client)
        attendee.delete()


def _quick_deletes_record(*, event: Event, selfies: models.QuerySet[Selfie], client: str) -> None:
    """Selfies deleted soon after they were matched go on the audit page (how many, never which)."""
    since = timezone.now() - timedelta(minutes=settings.AUDIT_QUICK_DELETE_MINUTES)
    count = selfies.searching().filter(matched_at__gte=since).count()
    if count:
        AuditEntry.objects.create(event=event, kind=AuditEntry.Kind.QUICK_DELETE, client=client, count=count)


def audit_limit_record(*, event: Event, client: str) -> None:
    """A client reached a selfie limit: on the audit page."""
    AuditEntry.objects.create(event=event, kind=AuditEntry.Kind.LIMIT, client=client)


def photo_reject(*, attendee: Attendee, photo: Photo) -> None:
    """ "Not me": the photo leaves the attendee's gallery, and re-matching never brings it back."""
    Rejection.objects.get_or_create(attendee=attendee, photo=photo)


def photo_unreject(*, attendee: Attendee, photo_id: int) -> bool:
    """Undo "not me". True when there was a mark to remove."""
    deleted, _ = Rejection.objects.filter(attendee=attendee, photo_id=photo_id).delete()
    return bool(deleted)


# --- Retention ----------------------------------------------------------------


@dataclass
class PurgeCounts:
    """What a purge removed (or, dry, would remove) from one event."""

    event: Event
    attendees: int
    selfies: int
    matches: int

    def describe(self) -> str:
        return (
            f"{self.event.slug}: {self.attendees} attendees, {self.selfies} selfies, {self.matches} matches"
            f" (retention {self.event.retention_days} days after {self.event.date.isoformat()})"
        )


def attendee_data_purge(*, event: Event, dry_run: bool = False) -> PurgeCounts:
    """Delete every attendee of the event with their selfies (images and face vectors),
    matches, "not me" marks and e-mail addresses; photos and their faces stay.

    Stored selfie images and faces kept by a hosted engine go through the deletion
    signals, after commit.
    """
    attendees = Attendee.objects.filter(event=event)
    counts = PurgeCounts(
        event=event,
        attendees=attendees.count(),
        selfies=Selfie.objects.filter(event=event).count(),
        matches=Match.objects.filter(selfie__event=event).count(),
    )
    if not dry_run:
        with transaction.atomic():
            # Every attendee goes: no photo is handed over to another (gallery.signals).
            Match.objects.filter(selfie__event=event).delete()
            # Selfies first (they point at attendees), each with its signals.
            Selfie.objects.filter(event=event).delete()
            attendees.delete()
            AuditEntry.objects.filter(event=event).delete()
    return counts


def expired_attendee_data_purge(
    *, events: models.QuerySet[Event] | None = None, dry_run: bool = False, today: date | None = None
) -> list[PurgeCounts]:
    """Purge the attendee data of every event (of `events`) past its retention period."""
    events = Event.objects.all() if events is None else events
    today = today or timezone.localdate()
    return [attendee_data_purge(event=event, dry_run=dry_run) for event in events.retention_expired(today=today)]


# --- Attendees' downloads, for the event dashboard --------------------------------


def event_downloads_count(*, event_id: int, photos: int = 1, zip_download: bool = False) -> None:
    """Count a download by an attendee: one photo, or a zip of `photos` photos."""
    Download.objects.create(event_id=event_id, photos=photos, zip=zip_download)


# --- Queueing photos and selfies again -----------------------------------------


def event_reindex(*, event: Event | None = None, failed_only: bool = False, stuck_only: bool = False) -> int:
    """Queue photos for indexing again: all, the failed ones, or the stuck ones. Returns how many.

    Stuck: their job was lost (a broker restart, a worker killed without answering);
    see PhotoQuerySet.stuck.
    """
    photos = Photo.objects.all() if event is None else event.photos.all()
    if failed_only:
        photos = photos.failed()
    if stuck_only:
        photos = photos.stuck(queue_empty=not jobs.waiting())
    return photos_reindex(photo_ids=list(photos.values_list("id", flat=True)))


def event_copies_remake(*, event: Event) -> int:
    """After the watermark changed: queue the job that makes the served copies (display
    size and thumbnail) of the event's photos again, with the new watermark.

    Only pixels change: faces, their embeddings and matches are not touched, and no
    face engine is called (matching.tasks.event_copies_task). Photos without copies
    yet get the new watermark from their index job. Returns how many photos.
    """
    # Above every photo's too: an Event saved from an older instance may have written back a lower number.
    newest = event.photos.aggregate(newest=Max("copies_version"))["newest"] or 0
    with transaction.atomic():
        Event.objects.filter(pk=event.pk).update(copies_version=Greatest(F("copies_version"), newest) + 1)
        jobs.enqueue_event_copies(event.pk)
    return event.photos.exclude(display="").count()


def photos_copies_outdated(*, event_id: int, limit: int) -> tuple[list[Photo], int]:
    """The copies job's next batch: up to `limit` photos of the event whose copies predate
    its watermark, and the event's copies_version to record once each is made again."""
    version = Event.objects.filter(pk=event_id).values_list("copies_version", flat=True).first()
    if version is None:
        return [], 0  # the event was deleted
    photos = (
        Photo.objects.filter(event_id=event_id, copies_version__lt=version)
        .exclude(display="")
        .select_related("event")
        .order_by("pk")
    )
    return list(photos[:limit]), version


def photo_copies_current(*, photo_id: int, version: int) -> None:
    """Record that the photo's copies carry the watermark of `version` (never lowering it:
    a later change, with its own job, still makes them again)."""
    Photo.objects.filter(pk=photo_id, copies_version__lt=version).update(copies_version=version)


def copies_stuck_requeue() -> int:
    """For the sweeper: when no job waits, queue the copies job again for each event that
    still has outdated copies (its job was lost). A job run twice redoes nothing."""
    if jobs.waiting():
        return 0
    outdated = Photo.objects.filter(copies_version__lt=F("event__copies_version")).exclude(display="")
    event_ids = list(outdated.order_by().values_list("event_id", flat=True).distinct())
    for event_id in event_ids:
        jobs.enqueue_event_copies(event_id)
    return len(event_ids)


def photos_reindex(*, photo_ids: list[int]) -> int:
    """Reset photos to pending and queue their index jobs. Faces are replaced, not added."""
    with transaction.atomic():
        rows = list(Photo.objects.filter(id__in=photo_ids).values_list("id", "event_id"))
        Photo.objects.filter(id__in=photo_ids).reset()
        for photo_id, event_id in rows:
            jobs.enqueue_photo_index(photo_id, event_id=event_id)
    return len(rows)


def event_rematch(*, event: Event | None = None, stuck_only: bool = False) -> int:
    """Queue every selfie (of one event, or all; or only stuck ones) to be matched again. Returns how many."""
    selfies = Selfie.objects.all() if event is None else event.selfies.all()
    selfies = selfies.exclude(image="")  # failed for good: their picture was not kept
    if stuck_only:
        selfies = selfies.stuck(queue_empty=not jobs.waiting())
    with transaction.atomic():
        ids = list(selfies.values_list("id", flat=True))
        Selfie.objects.filter(id__in=ids).reset()
        for selfie_id in ids:
            jobs.enqueue_selfie_match(selfie_id)
    return len(ids)


def uploads_stuck_requeue() -> int:
    """Queue again the uploads whose import job was lost: left "waiting to be imported"
    or "importing" by a killed worker (UploadQuerySet.stuck). Returns how many.

    The job claims its row (Upload.objects.claim), so a requeued upload whose first job
    is alive after all is imported once; photos imported before a crash count as duplicates.
    """
    with transaction.atomic():
        rows = list(Upload.objects.stuck(queue_empty=not jobs.waiting()).values_list("id", "event_id"))
        Upload.objects.filter(id__in=[upload_id for upload_id, _ in rows]).reset()
        for upload_id, event_id in rows:
            jobs.enqueue_upload_import(upload_id, event_id=event_id)
    return len(rows)


# --- Uploads from the browser, in chunks -----------------------------------------
#
# The browser sends each file (a photo or a zip archive) in chunks of
# UPLOAD_CHUNK_BYTES; each is stored before it is acknowledged, so a dropped
# connection or a web restart loses nothing acknowledged and the browser goes
# on from the first chunk the server lacks. A job assembles, unpacks and imports.


# An archive of 20,000 broken files should not make a 20,000-line page.
UPLOAD_REJECTIONS_KEPT = 500
# Stored as it is and translated when shown (gallery.admin): the job runs in no language.
UPLOAD_UNREADABLE = gettext_noop("The upload could not be read back from the storage: upload the file again.")


class UploadProblem(ValueError):
    """A request about an upload that cannot be honoured; the message says why (a 4xx)."""


def upload_create(*, event: Event, name: str, size: int, user: AbstractBaseUser | None = None) -> Upload:
    """A new upload of `size` bytes, waiting for its chunks."""
    name = PurePosixPath(name.replace("\\", "/")).name[:255] or "upload"
    if size < 0:
        raise UploadProblem(_("The file size is missing or wrong."))
    if size > settings.UPLOAD_MAX_BYTES:
        raise UploadProblem(
            _("%(name)s is larger than %(size)s.") % {"name": name, "size": filesizeformat(settings.UPLOAD_MAX_BYTES)}
        )
    return Upload.objects.create(
        event=event, created_by=user, file_name=name, size=size, chunk_size=settings.UPLOAD_CHUNK_BYTES
    )


def upload_chunk_store(*, upload: Upload, index: int, data: bytes, sha256: str = "") -> None:
    """Store chunk `index`; sending it again replaces it. Nothing is kept from a chunk that is not exactly right."""
    if upload.state != Upload.State.RECEIVING:
        raise UploadProblem(_("This upload is already complete."))
    if not 0 <= index < upload.chunk_count:
        raise UploadProblem(_("There is no chunk %(index)s in this upload.") % {"index": index})
    expected = upload.chunk_length(index)
    if len(data) != expected:
        raise UploadProblem(
            _("Chunk %(index)s has %(length)s bytes instead of %(expected)s: send it again.")
            % {"index": index, "length": len(data), "expected": expected}
        )
    if sha256 and hashlib.sha256(data).hexdigest() != sha256.strip().lower():
        raise UploadProblem(
            _("Chunk %(index)s arrived damaged (its checksum differs): send it again.") % {"index": index}
        )
    # The storage may pick another name if one exists (two retries racing): the row says which.
    stored = default_storage.save(upload.chunk_name(index), ContentFile(data))
    with transaction.atomic():
        previous = UploadChunk.objects.select_for_update().filter(upload=upload, index=index).first()
        if previous is None:
            UploadChunk.objects.create(upload=upload, index=index, name=stored)
        else:
            jobs.enqueue_files_delete([previous.name])
            previous.name = stored
            previous.save(update_fields=["name"])


def upload_finish(*, upload: Upload) -> Upload:
    """Every chunk is there: queue the import. Asking again queues it again while it waits
    (a job lost by the broker is then sent anew; the claim lets only one run)."""
    if upload.state == Upload.State.RECEIVING:
        missing = upload.chunk_count - upload.chunks.count()
        if missing:
            raise UploadProblem(
                _("%(missing)s of %(count)s chunks have not arrived yet.")
                % {"missing": missing, "count": upload.chunk_count}
            )
    with transaction.atomic():
        Upload.objects.filter(pk=upload.pk, state=Upload.State.RECEIVING).update(state=Upload.State.PENDING)
        if Upload.objects.filter(pk=upload.pk, state=Upload.State.PENDING).exists():
            jobs.enqueue_upload_import(upload.pk, event_id=upload.event_id)
    upload.refresh_from_db()
    return upload


class UploadUnreadable(Exception):
    """The upload's stored chunks cannot be read (one is missing, or the storage failed).

    Not an OSError on purpose: zipfile and the importers take those for a damaged
    file and reject it, whereas this is no fault of the file.
    """


class _ChunksReader(io.RawIOBase):
    """An upload's bytes read in place from its stored chunks, seekable: zipfile reads an
    archive of several GB without it ever being copied or assembled, and each batch job
    reads only the chunks holding its files (and the archive's directory, at its end)."""

    def __init__(self, upload: Upload, names: dict[int, str]) -> None:
        self._upload, self._names = upload, names
        self._position, self._index = 0, -1
        self._file: IO[bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._upload.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._position >= self._upload.size:
            return 0
        index, within = divmod(self._position, self._upload.chunk_size)
        try:
            if index != self._index:
                self._close_chunk()
                if index not in self._names:
                    raise UploadUnreadable(f"chunk {index} is missing")
                self._file = default_storage.open(self._names[index], "rb")
                self._index = index
            assert self._file is not None
            self._file.seek(within)
            data = self._file.read(min(len(buffer), self._upload.chunk_length(index) - within))
        except OSError as exc:
            raise UploadUnreadable(f"chunk {index}: {exc}") from exc
        if not data:
            raise UploadUnreadable(f"chunk {index} is shorter than when it was stored")
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def _close_chunk(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self._index = None, -1

    def close(self) -> None:
        self._close_chunk()
        super().close()


@contextmanager
def upload_reader(upload: Upload) -> Iterator[IO[bytes]]:
    """The upload's whole file, buffered, read from its chunks."""
    names = dict(upload.chunks.values_list("index", "name"))
    with io.BufferedReader(_ChunksReader(upload, names), buffer_size=_CHUNK) as reader:
        yield reader


def upload_process(*, upload_id: int) -> str:
    """The import job: the photo, or the archive's next UPLOAD_IMPORT_BATCH files, read from
    the stored chunks; the counts and reasons recorded on the upload.

    A batch that leaves files records how far it got, puts the upload back to
    pending and queues the next job, which claims it as the first did. The record
    is conditional on the progress the job started from, so a batch is counted once
    even if two jobs ran it; a job whose worker died is queued again by the sweeper
    and starts from the last recorded batch (photos it had imported count as
    duplicates then: none is imported twice, none is skipped). The chunks go once
    the whole file is imported.
    """
    if not Upload.objects.claim(pk=upload_id):
        return "skipped"
    upload = Upload.objects.select_related("event").get(pk=upload_id)
    try:
        with upload_reader(upload) as stream:
            if upload.file_name.lower().endswith(".zip"):
                batch = archive_batch_import(
                    event=upload.event,
                    fileobj=stream,
                    name=upload.file_name,
                    start=upload.members_done,
                    limit=settings.UPLOAD_IMPORT_BATCH,
                )
            else:
                batch = ArchiveBatch(photo_import(event=upload.event, name=upload.file_name, fileobj=stream), 1, 1)
    except (UploadUnreadable, OSError):
        # The record keeps the message (worded in the reader's language when shown); the log keeps why.
        logger.exception("upload %s could not be read back", upload_id, extra={"upload_id": upload_id})
        Upload.objects.filter(pk=upload_id, state=Upload.State.IMPORTING).update(
            state=Upload.State.FAILED, error=UPLOAD_UNREADABLE, finished_at=timezone.now()
        )
        return "failed"
    summary, finished = batch.summary, batch.done >= batch.total
    room = max(0, UPLOAD_REJECTIONS_KEPT - len(upload.rejections))
    progress = {
        "imported": F("imported") + len(summary.created),
        "duplicates": F("duplicates") + len(summary.duplicates),
        "rejected": F("rejected") + len(summary.rejected),
        "rejections": upload.rejections + [rejection_json(name, why) for name, why in summary.rejected[:room]],
        "members_done": batch.done,
        "members_total": batch.total,
    }
    if finished:
        progress |= {"state": Upload.State.DONE, "finished_at": timezone.now()}
    else:
        progress |= {"state": Upload.State.PENDING, "claimed_at": None}
    with transaction.atomic():
        recorded = Upload.objects.filter(
            pk=upload_id, state=Upload.State.IMPORTING, members_done=upload.members_done
        ).update(**progress)
        if not recorded:
            return "superseded"  # another job recorded this batch first
        if finished:
            UploadChunk.objects.filter(upload_id=upload_id).delete()  # their files go by the deletion signal
        else:
            jobs.enqueue_upload_import(upload_id, event_id=upload.event_id)
    return "done" if finished else f"{batch.done} of {batch.total} files"
