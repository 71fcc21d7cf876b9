"""A real qcluster SIGKILLed in the middle of indexing, and of matching; then started again.

Afterwards every photo and selfie reaches a final state, with no duplicate faces
or matches, no upload left as it came and no file without its row, and nobody
runs a command: on the ORM broker the killed jobs are delivered again (after
Q_RETRY) and finish the work; on Redis, which never delivers a job twice, the
sweeper scheduled in django-q2 queues them again (its first run comes about 30 s
after the cluster starts: django-q2 looks at its schedules twice a minute).

Short limits keep them fast: Q_TIMEOUT=5, Q_RETRY=8, and the fake engine slowed to
FAKE_ENGINE_DELAY=1 s per detection, so a job is reliably caught running.
Runs on whatever the settings point at: SQLite + ORM broker, or PostgreSQL + Redis
in the second pass of .ci/run.
"""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest
from django.db.models import Count
from django.utils import timezone
from django_q.models import Schedule

from gallery import services
from gallery.models import Event, Face, Match, Photo, Selfie
from matching.apps import schedules_ensure
from matching.tasks import SWEEP_SCHEDULE
from tests.conftest import jpeg_bytes, upload, wait_for

pytestmark = [pytest.mark.cluster]

CRASH_ENV = {"Q_TIMEOUT": "5", "Q_RETRY": "8", "FAKE_ENGINE_DELAY": "1", "Q_WORKERS": "2"}
COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (200, 40, 200), (40, 200, 200)]


@pytest.fixture
def crash_cluster(qcluster, settings):
    """Starts the cluster with short limits; the sweeper due at its first scheduler pass."""
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 5, "retry": 8}
    schedules_ensure(sweep_minutes=1)
    Schedule.objects.filter(name=SWEEP_SCHEDULE).update(next_run=timezone.now())
    return lambda: qcluster(**CRASH_ENV)


def kill_hard(process) -> None:
    """SIGKILL to the cluster's whole process group: no worker answers, nothing is acknowledged."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def assert_nothing_orphaned(settings) -> None:
    root = Path(settings.MEDIA_ROOT)
    stored = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()
    owned = set()
    for photo in Photo.objects.all():
        owned |= {f.name for f in (photo.original, photo.display, photo.thumbnail) if f}
    owned |= {selfie.image.name for selfie in Selfie.objects.all() if selfie.image}
    # Files of rows deleted meanwhile may still be queued for deletion; none exist here.
    assert stored == owned


def test_killed_during_indexing_every_photo_ends_indexed(crash_cluster, settings):
    event = Event.objects.create(name="Crash", slug="crash")
    cluster = crash_cluster()
    for n, color in enumerate(COLORS):
        services.photo_import(event=event, name=f"{n}.jpg", fileobj=io.BytesIO(jpeg_bytes(color)))
    photos = Photo.objects.filter(event=event)
    wait_for(lambda: photos.filter(index_state=Photo.State.PROCESSING).exists(), timeout=60, what="a job to start")
    kill_hard(cluster)
    assert photos.filter(index_state=Photo.State.PROCESSING).exists()  # killed in the middle

    crash_cluster()
    wait_for(lambda: photos.finished().count() == len(COLORS), timeout=150, what="every photo to finish")
    assert set(photos.values_list("index_state", flat=True)) == {Photo.State.INDEXED}
    assert list(photos.values_list("face_count", flat=True)) == [1] * len(COLORS)
    assert Face.objects.count() == len(COLORS)  # no duplicates from the second delivery
    assert_nothing_orphaned(settings)


def test_killed_during_matching_every_selfie_ends_done(crash_cluster, settings):
    event = Event.objects.create(name="Crash", slug="crash")
    cluster = crash_cluster()
    for n, color in enumerate(COLORS[:2]):
        services.photo_import(event=event, name=f"{n}.jpg", fileobj=io.BytesIO(jpeg_bytes(color)))
    photos = Photo.objects.filter(event=event)
    wait_for(lambda: photos.finished().count() == 2, timeout=60, what="indexing")
    for n in range(4):
        color = COLORS[n % 2]
        services.selfie_create(event=event, upload=upload(f"{n}.jpg", jpeg_bytes(color, size=(60, 50))), consent=True)
    selfies = Selfie.objects.filter(event=event)
    wait_for(lambda: selfies.filter(match_state=Selfie.State.MATCHING).exists(), timeout=60, what="matching to start")
    kill_hard(cluster)
    assert selfies.filter(match_state=Selfie.State.MATCHING).exists()

    crash_cluster()
    wait_for(
        lambda: selfies.filter(match_state__in=[Selfie.State.DONE, Selfie.State.FAILED]).count() == 4,
        timeout=150,
        what="every selfie to finish",
    )
    assert set(selfies.values_list("match_state", flat=True)) == {Selfie.State.DONE}
    # One match per selfie, its own colour's photo: none lost, none twice.
    assert Match.objects.count() == 4
    assert not Match.objects.values("selfie", "photo").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert not any("original-" in selfie.image.name for selfie in selfies)  # every upload made small
    assert_nothing_orphaned(settings)
