"""Property-based: valid images, mutated (bytes flipped, cut, inserted, headers rewritten),
through image decoding, the import and the selfie form.

Whatever the bytes: a clear refusal (ImageProblem, a rejection, a form error) or a
photo recorded as indexed or failed with a readable reason; never another
exception, never a 500. Bounded: a modest number of examples, no deadline (the
shared CI machine is slow), and no example database (nothing written to the tree).
"""

from __future__ import annotations

import io
import re
import zlib

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gallery import services
from gallery.images import ImageProblem, identify, jpeg_file, load_rgb
from gallery.models import Photo, Selfie
from tests.conftest import upload

pytestmark = pytest.mark.django_db

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
READABLE = re.compile(r"^[A-Z][^\n]{8,}")


def _seed(fmt: str, mode: str = "RGB", **save: object) -> bytes:
    buffer = io.BytesIO()
    image = Image.new(mode, (48, 32), (180, 90, 40) if mode == "RGB" else 120)
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


SEEDS = [
    _seed("JPEG"),
    _seed("JPEG", progressive=True),
    _seed("PNG"),
    _seed("PNG", mode="I;16"),
    _seed("GIF", mode="P"),
    _seed("WEBP"),
    _seed("TIFF"),
    _seed("BMP"),
]


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "header", "dims", "field", "chunk"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "header":
            # Headers are where decoders trust numbers: rewrite the first 64 bytes.
            offset = draw(st.integers(0, 63))
            data[offset : offset + 4] = draw(st.binary(min_size=4, max_size=4))
        elif kind == "dims":
            # Big-endian and little-endian "sizes" anywhere early: pixel bombs, zero sides.
            value = draw(st.sampled_from([0, 1, 65535, 60000, 2**31 - 1]))
            width = draw(st.sampled_from([2, 4]))
            data[at : at + width] = value.to_bytes(4, draw(st.sampled_from(["big", "little"])))[-width:]
        elif kind == "field":
            # The fields decoders size their work by: PNG's IHDR length and size,
            # GIF's and BMP's sizes, a JPEG frame header's size.
            at = draw(st.sampled_from([8, 16, 20, 6, 18, 22, max(0, data.find(b"\xff\xc0") + 5)]))
            value = draw(st.sampled_from([0, 1, 5, 13, 3000, 65535, 2**31 - 1]))
            data[at : at + 4] = value.to_bytes(4, "big")
        elif kind == "chunk" and data.startswith(b"\x89PNG"):
            # A PNG header chunk of any length and content, with a valid CRC (so
            # the decoder believes it, as it would a crafted file).
            body = draw(st.binary(min_size=0, max_size=20))
            chunk = len(body).to_bytes(4, "big") + b"IHDR" + body + zlib.crc32(b"IHDR" + body).to_bytes(4, "big")
            data[8:33] = chunk
    return bytes(data)


@PROPERTY_SETTINGS
@given(data=mutated_images())
def test_decoding_any_mutated_image_is_an_image_or_an_image_problem(data):
    try:
        identify(io.BytesIO(data))
        image = load_rgb(io.BytesIO(data), draft_side=1024, max_pixels=24_000_000)
    except ImageProblem as exc:
        assert READABLE.match(str(exc))
        return
    assert image.mode == "RGB" and image.width >= 1 and image.height >= 1
    jpeg_file(image, max_side=480)


@PROPERTY_SETTINGS
@given(data=mutated_images())
def test_importing_any_mutated_image_is_rejected_or_recorded(event, run_jobs, data):
    Photo.objects.all().delete()
    with run_jobs():
        summary = services.photo_import(event=event, name="mutant.jpg", fileobj=io.BytesIO(data))
    if summary.rejected:
        reason = str(summary.rejected[0][1])
        assert READABLE.match(reason) or reason == "empty file"
        assert not Photo.objects.exists()
        return
    photo = Photo.objects.get()
    assert photo.index_state in (Photo.State.INDEXED, Photo.State.FAILED)
    if photo.index_state == Photo.State.FAILED:
        assert READABLE.match(photo.index_error) and "Unexpected error" not in photo.index_error


@PROPERTY_SETTINGS
@given(data=mutated_images())
def test_any_mutated_selfie_is_refused_or_answered(event, run_jobs, settings, data):
    settings.SELFIE_UPLOADS_PER_ADDRESS = 10_000
    settings.SELFIE_UPLOADS_PER_EVENT = 10_000
    client = Client()
    with run_jobs():
        response = client.post(
            reverse("gallery:selfie_upload", args=[event.slug]),
            {"image": upload("mutant.jpg", data), "consent": "on"},
        )
    assert response.status_code in (302, 400)
    if response.status_code == 302:
        status = client.get(reverse("gallery:me_status", args=[event.slug])).json()
        assert status["state"] in ("done", "failed")
        assert status["state"] == "done" or READABLE.match(status["error"])
    Selfie.objects.all().delete()
