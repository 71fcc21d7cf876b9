"""An event's watermark on the copies attendees view and download; never on the stored original.

The index job makes the served copies (display, thumbnail) once; the watermark
is drawn on the upright image just before, so changing it means making the
copies again (services.event_copies_remake queues the job that does).

The watermark is the event's logo (a PNG with transparency), its text, or the
logo with the text below it: one mark, placed at the event's position, at its
opacity.
"""

from __future__ import annotations

import functools
import io
import logging

from django.core.files.storage import default_storage
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from PIL import Image, ImageDraw, ImageFile

from gallery import fonts
from gallery.images import DECODE_ERRORS, ImageProblem, contained_size
from gallery.models import Event

logger = logging.getLogger("trouvaille.jobs")

# An uploaded logo: at most this many bytes and pixels, stored as a PNG no larger than LOGO_MAX_SIDE.
LOGO_MAX_BYTES = 2 * 1024 * 1024
LOGO_MAX_PIXELS = 16_000_000
LOGO_MAX_SIDE = 1000
# The mark's width, as a share of the photo's shorter side.
LOGO_SHARE = 0.25


def logo_png(fileobj: io.BufferedIOBase) -> bytes:
    """A PNG logo as we store it: decoded, at most LOGO_MAX_SIDE, RGBA, no metadata.

    Raises ImageProblem with a message for the organizer.
    """
    # face_recognition, once imported, makes Pillow pad truncated images: we want the error.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    data = fileobj.read(LOGO_MAX_BYTES + 1)
    if len(data) > LOGO_MAX_BYTES:
        raise ImageProblem(
            _("The logo is larger than %(size)s; use a smaller PNG.") % {"size": filesizeformat(LOGO_MAX_BYTES)}
        )
    try:
        logo = Image.open(io.BytesIO(data))
        if logo.format != "PNG":
            raise ImageProblem(_("The logo must be a PNG image (with a transparent background)."))
        if logo.width * logo.height > LOGO_MAX_PIXELS:
            raise ImageProblem(_("The logo has too many pixels; 1000 x 1000 is plenty."))
        logo.load()
        logo = logo.convert("RGBA")
    except ImageProblem:
        raise
    except DECODE_ERRORS as exc:
        raise ImageProblem(_("The logo is not a PNG image we can read.")) from exc
    logo = logo.resize(contained_size(logo.size, LOGO_MAX_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    logo.save(buffer, format="PNG", optimize=True)  # a fresh PNG: nothing of the upload's metadata
    return buffer.getvalue()


@functools.lru_cache(maxsize=8)
def _stored_logo(name: str) -> Image.Image:
    # Logo files get a new random name each time, so a name always means the same pixels:
    # a copies job reads its event's logo once, not once per photo.
    with default_storage.open(name, "rb") as handle:
        logo = Image.open(handle)
        logo.load()
    return logo.convert("RGBA")


def _event_logo(event: Event) -> Image.Image | None:
    if not event.watermark_logo:
        return None
    try:
        return _stored_logo(event.watermark_logo.name)
    except (*DECODE_ERRORS, OSError):
        # Checked when uploaded, so a storage problem: the photo is still indexed and served.
        logger.warning("event %s: watermark logo %s unreadable", event.pk, event.watermark_logo.name, exc_info=True)
        return None


def _text_mark(text: str, size: int) -> Image.Image:
    """The text in white with a dark outline (readable on any photo), on a transparent ground."""
    font = fonts.dejavu(size, bold=True)
    stroke = max(1, size // 14)
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font, stroke_width=stroke)
    mark = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    ImageDraw.Draw(mark).text(
        (-left, -top), text, font=font, fill=(255, 255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0, 255)
    )
    return mark


def _mark(event: Event, base: Image.Image) -> Image.Image | None:
    """The event's whole mark (logo above text), fully opaque, sized for `base`."""
    size = max(12, min(base.size) // 18)
    parts = []
    logo = _event_logo(event)
    if logo is not None:
        width = max(1, round(min(base.size) * LOGO_SHARE))
        height = max(1, round(logo.height * width / logo.width))
        parts.append(logo.resize((width, height), Image.Resampling.LANCZOS))
    text = event.watermark_text.strip()
    if text:
        parts.append(_text_mark(text, size))
    if not parts:
        return None
    gap = size // 3
    mark = Image.new(
        "RGBA",
        (max(part.width for part in parts), sum(part.height for part in parts) + gap * (len(parts) - 1)),
        (0, 0, 0, 0),
    )
    y = 0
    for part in parts:
        mark.alpha_composite(part, ((mark.width - part.width) // 2, y))
        y += part.height + gap
    return mark


def _fitting(size: tuple[int, int], room: tuple[int, int]) -> tuple[int, int]:
    scale = min(room[0] / size[0], room[1] / size[1])
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def watermarked(image: Image.Image, event: Event) -> Image.Image:
    """A copy of `image` with the event's watermark, or `image` itself when there is none."""
    if not event.watermark_opacity or not (event.watermark_text.strip() or event.watermark_logo):
        return image
    base = image.convert("RGBA")
    mark = _mark(event, base)
    if mark is None:
        return image
    # The organizer's opacity scales the mark's own transparency.
    alpha = mark.getchannel("A").point(lambda value: value * event.watermark_opacity // 100)
    mark.putalpha(alpha)
    margin = max(12, min(base.size) // 18)
    room = (max(1, base.width - 2 * margin), max(1, base.height - 2 * margin))
    if mark.width > room[0] or mark.height > room[1]:  # a small photo: the mark shrinks to fit
        mark = mark.resize(_fitting(mark.size, room), Image.Resampling.LANCZOS)
    x = {"left": margin, "right": base.width - mark.width - margin, "center": (base.width - mark.width) // 2}
    y = {"top": margin, "bottom": base.height - mark.height - margin, "center": (base.height - mark.height) // 2}
    vertical, horizontal = event.watermark_position.partition("-")[::2]
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    layer.alpha_composite(mark, (max(0, x[horizontal or "center"]), max(0, y[vertical])))
    return Image.alpha_composite(base, layer).convert("RGB")
