"""How trustworthy a detected face is: its size in pixels and how sharp it is.

Both are measured on the upright image the face was found in, from the face's
box, so every engine gets the same numbers. Low values are not rejected: the
face is stored and matched with a stricter tolerance (matching.rules).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Sharpness is measured on the face resized to this square, so a big face and a
# small one with the same detail score alike, and a face upscaled from a few
# pixels scores as the blur it is.
_SIDE = 64


def face_size(width: int, height: int) -> int:
    """The shorter side of the face's box, in pixels of the photo."""
    return int(min(width, height))


def face_sharpness(image: Image.Image, *, left: int, top: int, width: int, height: int) -> float:
    """High-frequency detail of the face relative to its contrast (0 = flat; ~0.5+ = crisp).

    The variance of the Laplacian (the classic focus measure), divided by the
    variance of the grey levels, so a dark or over-exposed face is not mistaken for
    a blurred one.
    """
    box = (max(0, left), max(0, top), min(image.width, left + width), min(image.height, top + height))
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return 0.0
    grey = image.crop(box).convert("L").resize((_SIDE, _SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(grey, dtype=np.float64)
    laplacian = pixels[:-2, 1:-1] + pixels[2:, 1:-1] + pixels[1:-1, :-2] + pixels[1:-1, 2:] - 4 * pixels[1:-1, 1:-1]
    contrast = pixels.var()
    if contrast < 1e-6:
        return 0.0
    return round(float(laplacian.var() / contrast), 4)
