"""Queueing jobs on django-q2, always after the surrounding transaction commits.

A job only carries ids; the database row it points at says whether there is
work left, so a job that runs twice, late, or after a retry does no harm.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

logger = logging.getLogger("trouvaille.jobs")


def _sync() -> bool:
    return bool(settings.Q_CLUSTER.get("sync", False))


def enqueue(func: str, *args: object, group: str | None = None) -> None:
    """Queue `func(*args, job_id=...)` once the current transaction commits (now if none).

    The job id ties the task row in django-q2's admin to the job's log lines.
    """
    job_id = uuid.uuid4().hex[:12]
    name = f"{func.rsplit('.', 1)[-1]}:{','.join(map(str, args))[:60]}:{job_id}"

    def send() -> None:
        from django_q.tasks import async_task

        # Q_CLUSTER["sync"] runs the job inline, through django-q2's own worker code
        # (arguments pickled and signed as for the broker). Passed per call because
        # django-q2 reads Q_CLUSTER only once, at import: tests switch it per test.
        async_task(func, *args, job_id=job_id, group=group, task_name=name, sync=_sync())

    # robust: the rows are committed either way; a broker outage must not turn
    # the attendee's upload into an error page. The row stays pending and
    # `reindex --stuck` / `rematch --stuck` queue it again later.
    transaction.on_commit(send, robust=True)


def waiting() -> int:
    """Jobs queued and not yet finished, as far as the broker can tell.

    The ORM broker also counts jobs a cluster has fetched but not acknowledged;
    Redis only knows its list (a cluster's few prefetched jobs are invisible).
    """
    if _sync():
        return 0
    from django_q.brokers import get_broker

    broker = get_broker()
    return (broker.queue_size() or 0) + (broker.lock_size() or 0)


def enqueue_photo_index(photo_id: int, *, event_id: int) -> None:
    enqueue("matching.tasks.photo_index_task", photo_id, group=f"event-{event_id}-index")


def enqueue_selfie_match(selfie_id: int) -> None:
    enqueue("matching.tasks.selfie_match_task", selfie_id, group="selfies")


def enqueue_upload_import(upload_id: int, *, event_id: int) -> None:
    enqueue("matching.tasks.upload_import_task", upload_id, group=f"event-{event_id}-upload")


def enqueue_event_copies(event_id: int) -> None:
    """The event's watermark changed: make its photos' served copies again (no face work)."""
    enqueue("matching.tasks.event_copies_task", event_id, group=f"event-{event_id}-copies")


def enqueue_files_delete(names: list[str]) -> None:
    """Delete stored files (of rows already deleted) once the deletion commits."""
    if names:
        enqueue("matching.tasks.files_delete_task", names, group="files")


def enqueue_forget(event_id: int, faces: Iterable[tuple[str, str]]) -> None:
    """Drop faces kept remotely, given as (engine, external id) pairs: one job per engine,
    run by the engine that stored them (not necessarily the current one). Faces without
    an external id (kept only in our database) need nothing."""
    by_engine: dict[str, list[str]] = {}
    for engine, external_id in faces:
        if external_id:
            by_engine.setdefault(engine, []).append(external_id)
    for engine, external_ids in by_engine.items():
        enqueue("matching.tasks.faces_forget_task", event_id, external_ids, engine, group="forget")


def enqueue_forget_event(event_id: int, *, engine: str) -> None:
    enqueue("matching.tasks.event_forget_task", event_id, engine, group="forget")


def enqueue_link_email(attendee_id: int) -> None:
    enqueue("matching.tasks.link_email_task", attendee_id, group="email")


def enqueue_new_photos_notify(event_id: int) -> None:
    """After a batch of photos is indexed: tell subscribed attendees about their new photos."""
    enqueue("matching.tasks.new_photos_notify_task", event_id, group="email")


def enqueue_photos_decide(event_id: int, photo_ids: list[int]) -> None:
    """A selfie that held these photos is being deleted: decide again who is in them."""
    enqueue("matching.tasks.photos_decide_task", event_id, photo_ids, group=f"event-{event_id}-decide")


def enqueue_optout_apply(event_id: int) -> None:
    """The event's opt-outs changed: mark, blur and match its photos' faces again."""
    enqueue("matching.tasks.optout_apply_task", event_id, group=f"event-{event_id}-optout")
