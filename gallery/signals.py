"""Deletion hooks: stored files and faces kept by a hosted engine go with their rows,
and the photos a deleted selfie held are decided again (matching's job, queued by name).

Signals, not services, because the admin and cascades delete rows in bulk; every
path of deletion must clean up. The work runs after commit, so a rolled-back
delete keeps its files. Remote faces are forgotten by the engine that stored
them, which may no longer be the configured one.
"""

from __future__ import annotations

from django.db.models.fields.files import FieldFile
from django.db.models.signals import post_delete, pre_delete
from django.dispatch import receiver

from gallery import jobs
from gallery.models import Attendee, Event, Face, Photo, Selfie, UploadChunk


def _delete_files_on_commit(*files: FieldFile) -> None:
    # A job, not the request: deleting a big event means thousands of S3 calls.
    jobs.enqueue_files_delete([file.name for file in files if file and file.name])


@receiver(pre_delete, sender=Event)
def _event_pre_delete(sender: type[Event], instance: Event, **kwargs: object) -> None:
    remote = set(Face.objects.filter(photo__event=instance).remote().values_list("engine", flat=True))
    remote |= set(instance.selfies.remote().values_list("engine", flat=True))
    for engine in remote:
        jobs.enqueue_forget_event(instance.pk, engine=engine)


@receiver(post_delete, sender=Event)
def _event_post_delete(sender: type[Event], instance: Event, **kwargs: object) -> None:
    _delete_files_on_commit(instance.cover, instance.watermark_logo)


@receiver(pre_delete, sender=Photo)
def _photo_pre_delete(sender: type[Photo], instance: Photo, **kwargs: object) -> None:
    jobs.enqueue_forget(instance.event_id, instance.faces.remote().values_list("engine", "external_id"))


@receiver(post_delete, sender=Photo)
def _photo_post_delete(sender: type[Photo], instance: Photo, **kwargs: object) -> None:
    _delete_files_on_commit(instance.original, instance.display, instance.thumbnail)


@receiver(pre_delete, sender=Selfie)
def _selfie_pre_delete(sender: type[Selfie], instance: Selfie, origin: object = None, **kwargs: object) -> None:
    # The faces this selfie held go at once to whoever wins them without it (the next
    # nearest attendee, under the event's rules), not at the next rematch. Read now:
    # its matches are deleted with it. A whole event going needs no new decision.
    if isinstance(origin, Event) or getattr(origin, "model", None) is Event:
        return
    photo_ids = list(instance.matches.values_list("photo_id", flat=True))
    if photo_ids:
        jobs.enqueue_photos_decide(instance.event_id, photo_ids)


@receiver(post_delete, sender=Selfie)
def _selfie_post_delete(sender: type[Selfie], instance: Selfie, **kwargs: object) -> None:
    jobs.enqueue_forget(instance.event_id, [(instance.engine, instance.external_id)])
    _delete_files_on_commit(instance.image, instance.turned_image)


@receiver(post_delete, sender=UploadChunk)
def _upload_chunk_post_delete(sender: type[UploadChunk], instance: UploadChunk, **kwargs: object) -> None:
    # An upload abandoned half-way goes with its event; its stored chunks too.
    jobs.enqueue_files_delete([instance.name])


@receiver(post_delete, sender=Attendee)
def _attendee_post_delete(sender: type[Attendee], instance: Attendee, **kwargs: object) -> None:
    # A withdrawn (or expired) opt-out: the faces it hid are shown and matched again.
    if instance.opted_out and Event.objects.filter(pk=instance.event_id).exists():
        jobs.enqueue_optout_apply(instance.event_id)
