"""A real qcluster process (not inline jobs) indexes an import and matches a selfie.

Runs on whatever the settings point at: SQLite + the ORM broker by default,
PostgreSQL + Redis in the second pass of .ci/run.
"""

from __future__ import annotations

import os

import pytest
import redis
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django_q.models import OrmQ

from gallery import services
from gallery.models import Event, Photo, Selfie
from tests.conftest import BIDEN_SELFIE, BIDEN_TWICE_AND_KIT, upload, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.dlib]


def test_a_real_cluster_indexes_and_matches(qcluster, dlib_engine):
    event = Event.objects.create(name="Cluster night", slug="cluster")
    assert len(services.paths_import(event=event, paths=BIDEN_TWICE_AND_KIT).created) == 3
    # The three jobs wait where the configured broker keeps them, and nowhere else.
    assert queued_jobs() == ({"redis": 3, "orm": 0} if os.environ.get("REDIS_URL") else {"redis": 0, "orm": 3})
    qcluster()
    photos = Photo.objects.filter(event=event)
    wait_for(lambda: photos.filter(index_state=Photo.State.INDEXED).count() == 3, timeout=120, what="indexing")
    assert sorted(photos.values_list("face_count", flat=True)) == [1, 1, 2]

    attendee = Client()
    response = attendee.post(
        reverse("gallery:selfie_upload", args=[event.slug]),
        {"image": upload("me.jpg", BIDEN_SELFIE.read_bytes()), "consent": "on"},
    )
    assert response.status_code == 302
    status_url = reverse("gallery:me_status", args=[event.slug])
    wait_for(lambda: attendee.get(status_url).json()["state"] == "done", timeout=60, what="matching")
    assert attendee.get(status_url).json()["matches"] == 2
    selfie = Selfie.objects.get()
    assert set(selfie.matches.values_list("photo__original_name", flat=True)) == {"two_people.jpg", "biden.jpg"}
    assert queued_jobs() == {"redis": 0, "orm": 0}  # all taken off the broker


def queued_jobs() -> dict[str, int]:
    """Jobs waiting in the ORM queue table and in the Redis list of this cluster's name,
    read from the stores themselves (not through django-q2's broker choice)."""
    name = settings.Q_CLUSTER["name"]
    in_redis = 0
    if os.environ.get("REDIS_URL"):
        in_redis = redis.Redis.from_url(os.environ["REDIS_URL"]).llen(f"django_q:{name}:q")
    return {"redis": in_redis, "orm": OrmQ.objects.filter(key=name).count()}
