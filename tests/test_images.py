"""Decoding at reduced scale: the smallest JPEG DCT scale that still covers the side asked for."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gallery.images import load_scaled


def jpeg(size: tuple[int, int], orientation: int = 1) -> io.BytesIO:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buffer, format="JPEG", exif=exif)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("side", "decoded"),
    [
        (600, (600, 400)),  # half scale covers 600 exactly
        (599, (600, 400)),
        (601, (1200, 800)),  # half would be too small: full size
        (300, (300, 200)),  # quarter scale
        (0, (1200, 800)),  # no side: full size
        (5000, (1200, 800)),  # never enlarged
    ],
)
def test_a_landscape_jpeg_is_decoded_at_the_smallest_scale_that_covers_the_side(side, decoded):
    image, full = load_scaled(jpeg((1200, 800)), side=side)
    assert image.size == decoded
    assert full == (1200, 800)


def test_a_quarter_turn_swaps_the_full_size_as_it_swaps_the_image():
    # Stored 1200x800 with "rotate 90 clockwise to display" (EXIF 6): upright 800x1200.
    image, full = load_scaled(jpeg((1200, 800), orientation=6), side=600)
    assert image.size == (400, 600)
    assert full == (800, 1200)


def test_other_formats_decode_at_full_size():
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 800)).save(buffer, format="PNG")
    buffer.seek(0)
    image, full = load_scaled(buffer, side=300)
    assert image.size == full == (1200, 800)
