"""An event's logo watermark: a checked PNG, drawn at the event's position and opacity on
the served copies (real pixels compared), never on the original (byte for byte)."""

from __future__ import annotations

import io

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image, ImageChops

from gallery import branding, services
from gallery.models import Event, Photo
from tests.conftest import event_admin_form, jpeg_bytes, upload

GREY = (128, 128, 128)


def logo_bytes(size: tuple[int, int] = (200, 100)) -> bytes:
    """Transparent, with an opaque red bar in its middle."""
    logo = Image.new("RGBA", size, (0, 0, 0, 0))
    width, height = size
    logo.paste((220, 20, 20, 255), (width // 4, height // 4, width * 3 // 4, height * 3 // 4))
    buffer = io.BytesIO()
    logo.save(buffer, format="PNG")
    return buffer.getvalue()


def _form(event: Event, **fields: object) -> dict[str, object]:
    watermark = {"watermark_text": "", "watermark_position": "top-left", "watermark_opacity": "100"}
    return event_admin_form(event, **{**watermark, **fields})


def _pixels(field) -> Image.Image:
    with field.open("rb") as handle:
        return Image.open(handle).convert("RGB")


@pytest.fixture
def photo(event, run_jobs) -> Photo:
    with run_jobs():
        services.photo_import(event=event, name="grey.jpg", fileobj=io.BytesIO(jpeg_bytes(GREY, size=(800, 600))))
    return Photo.objects.get()


def test_the_logo_is_drawn_on_the_copies_and_never_on_the_original(event, photo, admin_client, run_jobs):
    plain = _pixels(photo.display)
    with photo.original.open("rb") as handle:
        original = handle.read()
    url = reverse("admin:gallery_event_change", args=[event.pk])
    with run_jobs():
        response = admin_client.post(url, _form(event, watermark_logo=upload("logo.png", logo_bytes(), "image/png")))
    assert response.status_code == 302, response.content.decode()
    event.refresh_from_db()
    assert event.watermark_logo.name.endswith(".png")

    photo.refresh_from_db()
    marked = _pixels(photo.display)
    box = ImageChops.difference(plain, marked).getbbox()
    assert box is not None and box[2] <= marked.width // 2 and box[3] <= marked.height // 2  # top left only
    # The mark: 150 x 75 px (a quarter of the photo's shorter side), 33 px from the corner.
    margin, width, height = 600 // 18, 150, 75
    r, g, b = marked.getpixel((margin + width // 2, margin + height // 2))
    assert r > 180 and g < 80 and b < 80  # the logo's red bar, opaque
    # Its transparent part lets the photo through.
    assert all(abs(channel - 128) < 12 for channel in marked.getpixel((margin + 4, margin + 4)))
    with photo.original.open("rb") as handle:
        assert handle.read() == original


def test_the_opacity_applies_to_the_logo(event, photo, run_jobs):
    event.watermark_logo.save("logo.png", ContentFile(branding.logo_png(io.BytesIO(logo_bytes()))), save=False)
    event.watermark_opacity = 40
    event.watermark_position = "top-left"
    event.save()
    with run_jobs():
        services.event_copies_remake(event=event)
    photo.refresh_from_db()
    r, g, _ = _pixels(photo.display).getpixel((600 // 18 + 75, 600 // 18 + 37))  # the bar's middle
    # 40 % of red (220, 20, 20) over grey: about (165, 85, 85), far from the logo's own red.
    assert 150 < r < 185 and 70 < g < 100


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("logo.jpg", jpeg_bytes(), "must be a PNG"),
        ("logo.png", b"this is not an image at all", "not a PNG image we can read"),
        ("logo.png", logo_bytes()[:60], "not a PNG image we can read"),
    ],
)
def test_a_bad_logo_is_refused_with_a_clear_message(event, admin_client, name, data, message):
    url = reverse("admin:gallery_event_change", args=[event.pk])
    response = admin_client.post(url, _form(event, watermark_logo=upload(name, data, "image/png")))
    assert response.status_code == 200 and message in response.content.decode()
    event.refresh_from_db()
    assert not event.watermark_logo


def test_a_too_large_logo_is_refused(event, admin_client, monkeypatch):
    monkeypatch.setattr(branding, "LOGO_MAX_BYTES", 100)
    url = reverse("admin:gallery_event_change", args=[event.pk])
    response = admin_client.post(
        url, _form(event, watermark_logo=upload("logo.png", logo_bytes(), "image/png")), HTTP_ACCEPT_LANGUAGE="fr"
    )
    assert response.status_code == 200 and "Le logo dépasse 100" in response.content.decode()


def test_logo_and_text_make_one_mark(event):
    event.watermark_logo.save("logo.png", ContentFile(branding.logo_png(io.BytesIO(logo_bytes()))), save=False)
    event.watermark_opacity = 100
    event.watermark_position = "bottom-right"
    image = Image.new("RGB", (800, 600), GREY)
    logo_only = ImageChops.difference(image, branding.watermarked(image, event)).getbbox()
    event.watermark_text = "Studio"
    both = ImageChops.difference(image, branding.watermarked(image, event)).getbbox()
    assert logo_only is not None and both is not None
    assert both[3] - both[1] > logo_only[3] - logo_only[1]  # the text below the logo: a taller mark
