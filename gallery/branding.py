"""An event's watermark on the copies attendees view and download; never on the stored original.

The index job makes the served copies (display, thumbnail) once; the watermark
is drawn on the upright image just before, so changing it means making the
copies again (services.event_copies_remake).
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from gallery import fonts
from gallery.models import Event


def watermarked(image: Image.Image, event: Event) -> Image.Image:
    """A copy of `image` with the event's watermark text, or `image` itself when there is none."""
    text = event.watermark_text.strip()
    if not text or not event.watermark_opacity:
        return image
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(12, min(base.size) // 18)
    font = fonts.dejavu(size, bold=True)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left, bottom - top
    margin = size
    x = {"left": margin, "right": base.width - width - margin, "center": (base.width - width) // 2}
    y = {"top": margin, "bottom": base.height - height - margin, "center": (base.height - height) // 2}
    vertical, _, horizontal = event.watermark_position.partition("-")
    position = (x[horizontal or "center"] - left, y[vertical] - top)
    alpha = round(255 * event.watermark_opacity / 100)
    # A dark outline keeps light text readable on any photo.
    draw.text(
        position,
        text,
        font=font,
        fill=(255, 255, 255, alpha),
        stroke_width=max(1, size // 14),
        stroke_fill=(0, 0, 0, alpha),
    )
    return Image.alpha_composite(base, layer).convert("RGB")
