"""Deletion hooks: stored files and faces kept by a hosted engine go with their rows.

Signals, not services, because the admin and cascades delete rows in bulk; every
path of deletion must clean up. The work runs after commit, so a rolled-back
delete keeps its files.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.fields.files import FieldFile
from django.db.models.signals import post_delete, pre_delete
from django.dispatch import receiver

from gallery.models import Event, Photo, Selfie
from matching import jobs


def _delete_files_on_commit(*files: FieldFile) -> None:
    for file in files:
        if file and file.name:
            storage, name = file.storage, file.name
            transaction.on_commit(lambda storage=storage, name=name: storage.delete(name))


@receiver(pre_delete, sender=Event)
def _event_pre_delete(sender: type[Event], instance: Event, **kwargs: object) -> None:
    jobs.enqueue_forget_event(instance.pk)


@receiver(pre_delete, sender=Photo)
def _photo_pre_delete(sender: type[Photo], instance: Photo, **kwargs: object) -> None:
    external_ids = list(instance.faces.exclude(external_id="").values_list("external_id", flat=True))
    jobs.enqueue_forget(instance.event_id, external_ids)


@receiver(post_delete, sender=Photo)
def _photo_post_delete(sender: type[Photo], instance: Photo, **kwargs: object) -> None:
    _delete_files_on_commit(instance.original, instance.display, instance.thumbnail)


@receiver(post_delete, sender=Selfie)
def _selfie_post_delete(sender: type[Selfie], instance: Selfie, **kwargs: object) -> None:
    if instance.external_id:
        jobs.enqueue_forget(instance.event_id, [instance.external_id])
    _delete_files_on_commit(instance.image)
