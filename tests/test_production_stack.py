"""End to end on the production stack: PostgreSQL + Redis broker + S3 media + a real qcluster.

Runs in the PostgreSQL + Redis pass of .ci/run (skipped on the embedded setup).
"""

from __future__ import annotations

import urllib.request

import boto3
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse

from gallery import services
from gallery.models import Event, Photo
from tests.conftest import sample, upload, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.dlib, pytest.mark.s3]


@pytest.fixture
def production_stack(transactional_db) -> None:
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("needs DATABASE_URL=postgres://... and REDIS_URL (the second pass of .ci/run)")


def test_import_index_match_and_serve_on_postgres_redis_s3(production_stack, s3_storage, qcluster, dlib_engine):
    event = Event.objects.create(name="Production night", slug="prod")
    qcluster(**s3_storage)
    files = [sample("groups/obama_and_biden.jpg"), sample("people/obama/obama.jpg"), sample("people/biden/biden.jpg")]
    summary = services.paths_import(event=event, paths=files)
    assert len(summary.created) == 3
    photos = Photo.objects.filter(event=event)
    wait_for(lambda: photos.filter(index_state=Photo.State.INDEXED).count() == 3, timeout=120, what="indexing")

    attendee = Client()
    attendee.post(
        reverse("gallery:selfie_upload", args=[event.slug]),
        {"image": upload("me.jpg", sample("people/obama/obama2.jpg").read_bytes()), "consent": "on"},
    )
    status_url = reverse("gallery:me_status", args=[event.slug])
    wait_for(lambda: attendee.get(status_url).json()["state"] == "done", timeout=60, what="matching")
    matched = Photo.objects.filter(matches__selfie__event=event).order_by("original_name")
    assert [p.original_name for p in matched] == ["obama.jpg", "obama_and_biden.jpg"]

    by_name = {path.name: path for path in files}
    s3 = boto3.client("s3", endpoint_url=s3_storage["AWS_S3_ENDPOINT_URL"])
    bucket = s3_storage["AWS_STORAGE_BUCKET_NAME"]
    for photo in matched:
        # Originals went to the bucket byte for byte.
        stored = s3.get_object(Bucket=bucket, Key=photo.original.name)["Body"].read()
        assert stored == by_name[photo.original_name].read_bytes()
        # The attendee's download is a presigned redirect to exactly the served object.
        response = attendee.get(reverse("gallery:photo_download", args=[event.slug, photo.pk]))
        assert response.status_code == 302 and "X-Amz-Signature=" in response["Location"]
        with urllib.request.urlopen(response["Location"], timeout=10) as served:
            assert served.read() == s3.get_object(Bucket=bucket, Key=photo.display.name)["Body"].read()
