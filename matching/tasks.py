"""django-q2 entry points: thin wrappers that log and call the services."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.core.files.storage import default_storage
from django_q.exceptions import TimeoutException

from gallery import emails, jobs
from gallery import services as gallery_services
from gallery.images import ImageProblem
from gallery.models import Selfie
from matching import services
from matching.engines import get_engine

logger = logging.getLogger("trouvaille.jobs")


def _run(job: str, job_id: str, work: Callable[[], str], **ids: int) -> str:
    """Run a job's work and log one line for it: job, job id, ids, outcome, duration."""
    started = time.monotonic()
    outcome = "error"
    try:
        outcome = work()
        return outcome
    finally:
        logger.info(
            job,
            extra={
                "job": job,
                "job_id": job_id,
                **ids,
                "outcome": outcome,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )


# Selfies first. An attendee waits on the page for their photos while an
# organizer's import can wait a second, but django-q2's queues have no
# priorities: a selfie queued behind 2,000 photos would wait for all of them. So
# a worker about to index a photo first matches the selfies already waiting (at
# most this many, to stay far within Q_TIMEOUT). Each claims its row as usual,
# so its own job, delivered later, finds it done and skips it.
SELFIES_BEFORE_A_PHOTO = 3


def _waiting_selfies_match() -> None:
    waiting = Selfie.objects.pending().order_by("pk").values_list("pk", flat=True)
    for selfie_id in waiting[:SELFIES_BEFORE_A_PHOTO]:
        try:
            selfie_match_task(selfie_id, job_id="before-a-photo")
        except Exception:  # a database error: the sweeper requeues it; the photo must not suffer
            logger.exception("matching waiting selfie %s failed", selfie_id, extra={"selfie_id": selfie_id})


def photo_index_task(photo_id: int, job_id: str = "") -> str:
    _waiting_selfies_match()
    try:
        return _run("photo_index", job_id, lambda: services.photo_index(photo_id=photo_id), photo_id=photo_id)
    except TimeoutException:
        # django-q2 raises this (a SystemExit) past Q_TIMEOUT; without recording
        # it the photo would stay "processing" for good.
        services.photo_index_abandon(photo_id=photo_id, reason=_timeout_reason())
        raise


def selfie_match_task(selfie_id: int, job_id: str = "") -> str:
    try:
        return _run("selfie_match", job_id, lambda: services.selfie_match(selfie_id=selfie_id), selfie_id=selfie_id)
    except TimeoutException:
        services.selfie_match_abandon(selfie_id=selfie_id)
        raise


def photos_decide_task(event_id: int, photo_ids: list[int], job_id: str = "") -> str:
    """A selfie that held these photos was deleted: they go to whoever wins them now."""
    return _run(
        "photos_decide",
        job_id,
        lambda: f"{services.photos_decide(event_id=event_id, photo_ids=photo_ids)} matches",
        event_id=event_id,
        photos=len(photo_ids),
    )


def optout_apply_task(event_id: int, job_id: str = "") -> str:
    """An opt-out was withdrawn or deleted: its faces are shown (and matched) again."""
    return _run("optout_apply", job_id, lambda: f"{services.optout_apply(event_id=event_id)} photos", event_id=event_id)


def _timeout_reason() -> str:
    return f"Indexing took longer than Q_TIMEOUT ({settings.Q_CLUSTER['timeout']} s); try `reindex --failed`."


def files_delete_task(names: list[str], job_id: str = "") -> str:
    """Delete each file; one failure (an S3 hiccup) neither stops the others nor hides."""

    def delete() -> str:
        failed = []
        for name in names:
            try:
                default_storage.delete(name)
            except Exception:  # logged with the name; the rest are still deleted
                logger.exception("deleting %s failed", name, extra={"job_id": job_id})
                failed.append(name)
        if failed:
            # django-q2 records the failure in its admin (Failed tasks), with the names.
            raise OSError(f"could not delete {len(failed)} file(s): {', '.join(failed[:10])}")
        return "deleted"

    return _run("files_delete", job_id, delete, files=len(names))


def faces_forget_task(event_id: int, external_ids: list[str], engine: str, job_id: str = "") -> str:
    def forget() -> str:
        get_engine(engine).forget_faces(event_id=event_id, external_ids=external_ids)
        return "forgotten"

    return _run("faces_forget", job_id, forget, event_id=event_id, faces=len(external_ids))


def event_forget_task(event_id: int, engine: str, job_id: str = "") -> str:
    def forget() -> str:
        get_engine(engine).forget_event(event_id=event_id)
        return "forgotten"

    return _run("event_forget", job_id, forget, event_id=event_id)


# The names of the django-q2 schedules that run the sweeper and the purge (matching.apps.schedules_ensure).
SWEEP_SCHEDULE = "Requeue lost photo and selfie jobs"
PURGE_SCHEDULE = "Purge expired attendee data"


def stuck_requeue_task(job_id: str = "") -> str:
    """The sweeper: what `reindex --stuck` and `rematch --stuck` do, every Q_SWEEP_MINUTES.

    A photo, selfie or browser upload whose job died with its worker (on Redis, which never
    delivers a job twice; on the ORM broker, when the delivery came too early)
    is queued again, so nothing stays "processing" or "importing" without a job that will end it.
    """

    def sweep() -> str:
        photos = gallery_services.event_reindex(stuck_only=True)
        selfies = gallery_services.event_rematch(stuck_only=True)
        uploads = gallery_services.uploads_stuck_requeue()
        copies = gallery_services.copies_stuck_requeue()
        if photos or selfies or uploads or copies:
            logger.warning(
                "requeued %s stuck photos, %s stuck selfies, %s stuck uploads and the copies of %s events",
                photos,
                selfies,
                uploads,
                copies,
                extra={"photos": photos, "selfies": selfies, "uploads": uploads, "copies": copies},
            )
        return f"requeued {photos} photos, {selfies} selfies, {uploads} uploads, copies of {copies} events"

    return _run("stuck_requeue", job_id, sweep)


def link_email_task(attendee_id: int, job_id: str = "") -> str:
    return _run("link_email", job_id, lambda: emails.link_email_send(attendee_id=attendee_id), attendee_id=attendee_id)


def new_photos_notify_task(event_id: int, job_id: str = "") -> str:
    return _run(
        "new_photos_notify", job_id, lambda: f"sent {emails.new_photos_notify(event_id=event_id)}", event_id=event_id
    )


def expired_attendee_data_purge_task(job_id: str = "") -> str:
    """Daily (PURGE_SCHEDULE, made by matching.apps.schedules_ensure): attendee data past its retention period."""

    def purge() -> str:
        purged = gallery_services.expired_attendee_data_purge()
        for counts in purged:
            logger.info("purged %s", counts.describe(), extra={"job_id": job_id, "event_id": counts.event.pk})
        return f"purged {len(purged)} events"

    return _run("attendee_data_purge", job_id, purge)


def upload_import_task(upload_id: int, job_id: str = "") -> str:
    """Assemble a chunked browser upload and import it (gallery.services.upload_process)."""
    return _run(
        "upload_import", job_id, lambda: gallery_services.upload_process(upload_id=upload_id), upload_id=upload_id
    )


# Photos one copies job makes again before it queues the next: a few seconds each at
# most, so a batch ends well within Q_TIMEOUT however large the event.
COPIES_BATCH = 50


def event_copies_task(event_id: int, job_id: str = "") -> str:
    """The event's watermark changed: make its photos' served copies again, a batch per job.

    No face work: faces, embeddings and matches stay as they are. Each photo is
    recorded as current once its new copies are stored (a conditional update), so a
    job delivered twice, or again after its worker was killed, redoes nothing done;
    the sweeper queues it again if it was lost (gallery.services.copies_stuck_requeue).
    """

    def remake() -> str:
        photos, version = gallery_services.photos_copies_outdated(event_id=event_id, limit=COPIES_BATCH)
        for photo in photos:
            try:
                services.photo_copies_remake(photo=photo)
            except ImageProblem:
                # Its original cannot be read any more: it keeps its copies, and is not tried again.
                logger.warning("photo %s: original unreadable, copies not made again", photo.pk)
            gallery_services.photo_copies_current(photo_id=photo.pk, version=version)
        if len(photos) == COPIES_BATCH:
            jobs.enqueue_event_copies(event_id)  # the next batch, in a job of its own
        return f"{len(photos)} photos"

    return _run("event_copies", job_id, remake, event_id=event_id)
