"""Opening untrusted images safely, and writing the copies we serve."""

from __future__ import annotations

import io
import warnings
from typing import IO

import pillow_heif
from django.conf import settings
from django.core.files.base import ContentFile
from django.utils.translation import gettext as _
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# iPhones take HEIC/HEIF photos. libheif applies their rotation itself and
# pillow-heif then clears the EXIF orientation, so exif_transpose stays right.
pillow_heif.register_heif_opener()

# Formats we accept from organizers and attendees; anything else is refused
# before PIL's less common (and less hardened) decoders ever see it.
ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "MPO", "TIFF", "BMP", "GIF", "HEIF"}


class ImageProblem(ValueError):
    """An image we cannot use; the message is shown to people as it is."""


def _limit_pixels() -> None:
    # PIL warns above MAX_IMAGE_PIXELS and raises above twice that; we want one
    # clear refusal at our own limit.
    Image.MAX_IMAGE_PIXELS = settings.PHOTO_MAX_PIXELS


def identify(fileobj: IO[bytes]) -> Image.Image:
    """Read the header only: format and size. Raises ImageProblem."""
    _limit_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(fileobj)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageProblem(
            _("This file is not an image we can read (JPEG, PNG, WebP, HEIC, TIFF, GIF or BMP).")
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageProblem(_too_many_pixels()) from exc
    if image.format not in ACCEPTED_FORMATS:
        raise ImageProblem(_("%(format)s images are not supported; use JPEG, PNG or WebP.") % {"format": image.format})
    if image.width * image.height > settings.PHOTO_MAX_PIXELS:
        raise ImageProblem(_too_many_pixels())
    return image


def _too_many_pixels() -> str:
    return _("This image is too large (more than %(pixels)s pixels).") % {"pixels": f"{settings.PHOTO_MAX_PIXELS:,}"}


def load_rgb(fileobj: IO[bytes], *, draft_side: int = 0, max_pixels: int = 0) -> Image.Image:
    """Decode the whole image, upright (EXIF orientation applied), as RGB.

    With draft_side, a JPEG is decoded at a reduced scale (DCT scaling) no
    smaller than that: much faster when only a small copy is needed. Other
    formats always decode at full size, so max_pixels bounds them (memory).
    """
    # face_recognition sets this to True on import, which silently turns a
    # truncated upload into a grey-padded picture; we want the error instead.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    image = identify(fileobj)
    if max_pixels and image.format not in ("JPEG", "MPO") and image.width * image.height > max_pixels:
        raise ImageProblem(_("This photo has too many pixels; please use a smaller one (or a JPEG)."))
    try:
        if draft_side and image.format in ("JPEG", "MPO"):
            image.draft("RGB", (draft_side, draft_side))
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(_("The image data is corrupt or truncated.")) from exc
    if image.mode != "RGB":
        # Transparent pixels become white rather than black.
        if image.mode in ("RGBA", "LA", "P", "PA"):
            image = image.convert("RGBA")
            background = Image.new("RGB", image.size, "white")
            background.paste(image, mask=image.getchannel("A"))
            image = background
        else:
            image = image.convert("RGB")
    return image


def jpeg_file(image: Image.Image, *, max_side: int, quality: int = 88) -> ContentFile:
    """A JPEG copy no larger than max_side, with no EXIF, GPS or other metadata."""
    if max_side and max(image.size) > max_side:
        # Resized straight from the source: no second full-size copy in memory.
        copy = ImageOps.contain(image, (max_side, max_side), Image.Resampling.LANCZOS)
    else:
        copy = image.copy()
    # Pillow's JPEG writer reuses info["comment"] (and copies carry info along):
    # nothing of the original's metadata may travel into what we serve.
    copy.info.clear()
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=quality, optimize=True, progressive=True)
    return ContentFile(buffer.getvalue())


def file_suffix(image: Image.Image) -> str:
    """The file extension for an identified image: from its format, never from a name."""
    return {"JPEG": "jpg", "MPO": "jpg", "TIFF": "tif"}.get(image.format or "", (image.format or "img").lower())


def exif_datetime(image: Image.Image) -> str | None:
    """The capture time as written in EXIF ("YYYY:MM:DD HH:MM:SS"), if any."""
    try:
        exif = image.getexif()
        value = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)  # DateTimeOriginal, DateTime
    except Exception:  # noqa: BLE001 - broken EXIF must never block an import
        return None
    return str(value).strip("\x00 ") if value else None
