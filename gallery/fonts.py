"""The typeface of the images Trouvaille draws text on (poster, watermark)."""

from __future__ import annotations

from PIL import ImageFont


def dejavu(size: int, *, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at `size` pixels: Debian's fonts-dejavu-core covers accented text;
    Pillow's bundled font (ASCII only) keeps drawing working where it is missing."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for path in (f"/usr/share/fonts/truetype/dejavu/{name}", name):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)
