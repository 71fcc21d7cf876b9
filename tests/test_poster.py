"""A long event name fits the A4 poster: wrapped on a few lines and shrunk if need be,
in the SVG (measured with the font's metrics) and in the PNG (measured on its pixels)."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from gallery import poster
from gallery.models import Event

SENTENCE = (
    "Assemblée générale annuelle de l'Association des anciens élèves du lycée Victor-Hugo de Besançon, "
    "promotions 1995 à 2005, et soirée de gala au Kursaal"
)
WIDEST = "W" * 200  # one word of the widest letter, as long as a name may be: cut, and ends with "…"
LONG_NAMES = [SENTENCE, WIDEST]


def _svg_name_lines(svg: str) -> list[tuple[float, float, str]]:
    return [
        (float(y), float(size), text)
        for y, size, text in re.findall(
            r'<text x="105" y="([\d.]+)" font-size="([\d.]+)" font-weight="bold">([^<]*)<', svg
        )
    ]


@pytest.mark.parametrize("name", LONG_NAMES)
def test_a_long_name_fits_the_svg_poster(db, name):
    event = Event.objects.create(name=name, slug="long")
    svg = poster.poster_svg(event, "https://photos.example.org/e/long/")
    lines = _svg_name_lines(svg)
    assert 1 < len(lines) <= poster.NAME_MAX_LINES
    width, _ = poster.A4_MM
    for y, size, text in lines:
        # Centred on x=105 mm: half its width on each side, inside a 10 mm margin.
        assert poster.text_width(text, size, bold=True) / 2 <= width / 2 - 10
        assert size - 1 <= y < 52  # below the page's top, above the date
    printed = "".join(text for _, _, text in lines).replace(" ", "")
    if name == SENTENCE:
        assert printed == name.replace(" ", "")  # all of it, wrapped at spaces
    else:
        assert printed.endswith("…") and name.startswith(printed[:-1])


def test_a_short_name_stays_one_large_line(db):
    event = Event.objects.create(name="Gala", slug="gala")
    assert _svg_name_lines(poster.poster_svg(event, "https://x.example/e/gala/")) == [(40.0, 14.0, "Gala")]


@pytest.mark.parametrize("name", LONG_NAMES)
def test_a_long_name_fits_the_png_poster(db, name):
    event = Event.objects.create(name=name, slug="long")
    image = Image.open(io.BytesIO(poster.poster_png(event, "https://photos.example.org/e/long/"))).convert("L")
    px = image.width / poster.A4_MM[0]
    band = image.crop((0, 0, image.width, round(44.5 * px)))  # the name, above the date
    inked = band.point(lambda value: 255 if value < 128 else 0).getbbox()
    assert inked is not None
    left, top, right, bottom = inked
    assert left >= 10 * px and right <= image.width - 10 * px  # within 10 mm margins
    assert top > 0 and bottom - top > 14 * px  # several lines, none cut at the top
