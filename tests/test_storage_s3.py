"""Media on S3 (a real S3 API on loopback): private objects, presigned URLs, cleanup."""

from __future__ import annotations

import io
import urllib.parse
import urllib.request

import boto3
import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from gallery import services
from gallery.models import Photo
from tests.conftest import jpeg_bytes, upload

pytestmark = [pytest.mark.django_db, pytest.mark.s3]


def fetch(url: str) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(), dict(response.headers)


def bucket_keys(env: dict[str, str]) -> set[str]:
    client = boto3.client("s3", endpoint_url=env["AWS_S3_ENDPOINT_URL"])
    listing = client.list_objects_v2(Bucket=env["AWS_STORAGE_BUCKET_NAME"])
    return {item["Key"] for item in listing.get("Contents", [])}


def test_photos_live_in_the_bucket_and_are_served_by_presigned_urls(s3_storage, event, run_jobs):
    original = jpeg_bytes((200, 30, 30), size=(640, 480))
    with run_jobs():
        services.photo_import(event=event, name='Été "party".jpg', fileobj=io.BytesIO(original))
    photo = Photo.objects.get()
    assert photo.index_state == Photo.State.INDEXED
    assert {photo.original.name, photo.display.name, photo.thumbnail.name} <= bucket_keys(s3_storage)

    client = boto3.client("s3", endpoint_url=s3_storage["AWS_S3_ENDPOINT_URL"])
    acl = client.get_object_acl(Bucket=s3_storage["AWS_STORAGE_BUCKET_NAME"], Key=photo.original.name)
    assert not [g for g in acl["Grants"] if "AllUsers" in g["Grantee"].get("URI", "")]  # private

    attendee = Client()
    with run_jobs():
        attendee.post(
            reverse("gallery:selfie_upload", args=[event.slug]),
            {"image": upload("me.jpg", jpeg_bytes((200, 30, 30))), "consent": "on"},
        )
    response = attendee.get(reverse("gallery:photo_download", args=[event.slug, photo.pk]))
    assert response.status_code == 302
    url = response["Location"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert "X-Amz-Signature" in query and query["X-Amz-Expires"] == ["300"]
    body, headers = fetch(url)
    stored = client.get_object(Bucket=s3_storage["AWS_STORAGE_BUCKET_NAME"], Key=photo.display.name)["Body"].read()
    assert body == stored
    assert headers["Content-Disposition"] == "attachment; filename*=utf-8''%C3%89t%C3%A9%20%22party%22.jpg"
    assert response["Cache-Control"] == "private, max-age=60"  # shorter than the URL's 300 s
    # The organizer's original is untouched in the bucket.
    assert fetch(photo.original.url)[0] == original

    # A stranger gets no URL at all.
    assert Client().get(reverse("gallery:photo_download", args=[event.slug, photo.pk])).status_code == 404


def test_large_uploads_are_streamed_to_the_bucket(s3_storage, event, settings):
    # Bigger than the spool's memory part and than boto3's multipart threshold (8 MB).
    import os

    from PIL import Image

    noisy = Image.frombytes("RGB", (2600, 2600), os.urandom(2600 * 2600 * 3))
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) > 16 * 1024 * 1024
    summary = services.photo_import(event=event, name="big.png", fileobj=io.BytesIO(data))
    photo = Photo.objects.get(pk=summary.created[0])
    with default_storage.open(photo.original.name, "rb") as stored:
        assert stored.read() == data


def test_deleting_a_photo_removes_its_objects(s3_storage, event, run_jobs):
    with run_jobs():
        services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    photo = Photo.objects.get()
    keys = {photo.original.name, photo.display.name, photo.thumbnail.name}
    assert keys <= bucket_keys(s3_storage)
    with run_jobs():
        photo.delete()
    assert not keys & bucket_keys(s3_storage)


def test_healthz_reports_storage(s3_storage, client, settings):
    assert client.get("/healthz").json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
    }
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            **settings.STORAGES["default"],
            "OPTIONS": {**settings.STORAGES["default"]["OPTIONS"], "endpoint_url": "http://127.0.0.1:9"},
        },
    }
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["storage"].startswith("unreachable")
    assert "testing" not in response.content.decode()  # no credentials leak
