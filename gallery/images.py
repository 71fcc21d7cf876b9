"""Opening untrusted images safely, and writing the copies we serve."""

from __future__ import annotations

import io
import math
import struct
import warnings
from typing import IO

import numpy as np
import pillow_heif
from django.conf import settings
from django.core.files.base import ContentFile
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from PIL import Image, ImageFile, ImageFilter, ImageOps, UnidentifiedImageError

# iPhones take HEIC/HEIF photos. libheif applies their rotation itself and
# pillow-heif then clears the EXIF orientation, so exif_transpose stays right.
pillow_heif.register_heif_opener()

# Formats we accept from organizers and attendees; anything else is refused
# before PIL's less common (and less hardened) decoders ever see it.
ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "MPO", "TIFF", "BMP", "GIF", "HEIF"}


class ImageProblem(ValueError):
    """An image we cannot use; the message is shown to people as it is.

    `code` and `params` say the same for a record read later, in another language
    (an upload's rejections: gallery.rejections).
    """

    def __init__(self, message: str, *, code: str = "not-image", params: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.params = params or {}


# What Pillow's decoders raise on malformed data. Pillow's fuzzing found each of
# these (a truncated PNG header is a ValueError, a short TIFF tag a struct.error):
# all mean "not an image we can read", never a crash of the caller.
DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)
NOT_READABLE = gettext_lazy("This file is not an image we can read (JPEG, PNG, WebP, HEIC, TIFF, GIF or BMP).")
CORRUPT = gettext_lazy("The image data is corrupt or truncated.")
FORMAT_UNSUPPORTED = gettext_lazy("%(format)s images are not supported; use JPEG, PNG or WebP.")
TOO_MANY_PIXELS = gettext_lazy("This image is too large (more than %(pixels)s pixels).")


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
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels() from exc
    except DECODE_ERRORS as exc:
        raise ImageProblem(NOT_READABLE) from exc
    if image.format not in ACCEPTED_FORMATS:
        params = {"format": image.format}
        raise ImageProblem(FORMAT_UNSUPPORTED % params, code="format", params=params)
    if image.width * image.height > settings.PHOTO_MAX_PIXELS:
        raise _too_many_pixels()
    if image.width < 1 or image.height < 1:
        raise ImageProblem(NOT_READABLE)
    return image


def _too_many_pixels() -> ImageProblem:
    params = {"pixels": settings.PHOTO_MAX_PIXELS}
    message = TOO_MANY_PIXELS % {"pixels": f"{settings.PHOTO_MAX_PIXELS:,}"}
    return ImageProblem(message, code="too-many-pixels", params=params)


def load_rgb(fileobj: IO[bytes], *, draft_side: int = 0, max_pixels: int = 0) -> Image.Image:
    """Decode the whole image, upright (EXIF orientation applied), as RGB.

    With draft_side, a JPEG is decoded at a reduced scale (DCT scaling) whose
    longest side is no smaller than that: much faster when only a smaller copy
    is needed. Other formats always decode at full size, so max_pixels bounds
    them (memory).
    """
    return load_scaled(fileobj, side=draft_side, max_pixels=max_pixels)[0]


def load_scaled(fileobj: IO[bytes], *, side: int, max_pixels: int = 0) -> tuple[Image.Image, tuple[int, int]]:
    """`load_rgb` with draft_side=side, and the upright size of the full-resolution image.

    A 6,000 px JPEG wanted at 3,000 px is decoded at half scale: about a third of the
    time of a full decode, and no full-size resize afterwards.
    """
    # face_recognition sets this to True on import, which silently turns a
    # truncated upload into a grey-padded picture; we want the error instead.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    image = identify(fileobj)
    full = image.size
    if max_pixels and image.format not in ("JPEG", "MPO") and image.width * image.height > max_pixels:
        raise ImageProblem(
            _("This photo has too many pixels; please use a smaller one (or a JPEG)."),
            code="too-many-pixels",
            params={"pixels": max_pixels},
        )
    try:
        if side and image.format in ("JPEG", "MPO") and max(full) > side:
            # Pillow keeps each side at least the one asked for: ask for the photo's
            # own proportions, or a landscape photo would never be reduced.
            scale = side / max(full)
            image.draft("RGB", (math.ceil(full[0] * scale), math.ceil(full[1] * scale)))
        image.load()
        decoded = image.size
        image = ImageOps.exif_transpose(image)
        # A quarter turn (EXIF orientations 5 to 8) swaps the sides.
        turned = image.size != decoded
        return _to_rgb(image), (full[1], full[0]) if turned else full
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels() from exc
    except DECODE_ERRORS as exc:
        raise ImageProblem(CORRUPT, code="corrupt") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # 16-bit (and 32-bit) grayscale: Pillow's convert() clips every value
        # above 255 to white, so a 16-bit PNG would come out blank. Scale instead.
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode == "F" and pixels.size and np.nanmax(pixels) <= 1.0:
            pixels = pixels * 255.0  # floating-point images are usually 0..1
        elif image.mode != "F":
            pixels = pixels / 257.0  # 0..65535 -> 0..255
        gray = np.nan_to_num(pixels).clip(0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        # Transparent pixels become white rather than black.
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, "white")
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def contained_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled down to fit max_side, never to a side of 0 (a 1x3000 strip stays 1 px wide)."""
    width, height = size
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fitted(image: Image.Image, max_side: int) -> Image.Image:
    """The image itself when it fits max_side, else a copy scaled down to fit.

    reducing_gap=3: a large reduction first averages pixel blocks, then
    resamples (Lanczos); Pillow documents it as indistinguishable from a full
    Lanczos, for a fraction of the time (3000 -> 480 px: 22 instead of 53 ms).
    """
    size = contained_size(image.size, max_side)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def jpeg_file(image: Image.Image, *, max_side: int, quality: int = 88) -> ContentFile:
    """A JPEG copy no larger than max_side, with no EXIF, GPS or other metadata."""
    # Resized straight from the source: no second full-size copy in memory.
    copy = fitted(image, max_side)
    copy = image.copy() if copy is image else copy
    # Pillow's JPEG writer reuses info["comment"] (and copies carry info along):
    # nothing of the original's metadata may travel into what we serve.
    copy.info.clear()
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=quality, optimize=True, progressive=True)
    return ContentFile(buffer.getvalue())


# Around each face box (a fraction of its size): hair, ears and the jaw go too, and a
# detector's box, which can be larger than the engine's, is covered whole.
BLUR_MARGIN = 0.4
# Pixel blocks across a blurred face: too few for eyes, nose and mouth to survive.
BLUR_BLOCKS = 5


def faces_blurred(image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> Image.Image:
    """A copy of `image` with each (left, top, width, height) box made unrecognisable.

    Pixelated to a few blocks, then smoothed: a face detector finds nothing there
    (tests/test_optout.py checks with dlib on the served bytes), unlike a light
    Gaussian blur, which dlib still detects and can even recognise.
    """
    out = image.copy()
    for left, top, width, height in boxes:
        dx, dy = round(width * BLUR_MARGIN), round(height * BLUR_MARGIN)
        right, bottom = min(image.width, left + width + dx), min(image.height, top + height + dy)
        box = (max(0, left - dx), max(0, top - dy), right, bottom)
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        region = out.crop(box)
        blocks = (BLUR_BLOCKS, BLUR_BLOCKS)
        region = region.resize(blocks, Image.Resampling.BOX).resize(region.size, Image.Resampling.NEAREST)
        out.paste(region.filter(ImageFilter.GaussianBlur(radius=max(region.size) / 10)), box[:2])
    return out


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
