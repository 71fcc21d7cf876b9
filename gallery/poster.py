"""A printable A4 poster for an event: name, date, QR code to the attendee link, how to use it.

SVG (vector, scales to any printer) and PNG at 150 dpi. The instructions are in
French and English on every poster, whatever the organizer's language: the
people reading it are the event's attendees.
"""

from __future__ import annotations

import io
from xml.sax.saxutils import escape

import qrcode
from django.utils.formats import date_format
from PIL import Image, ImageDraw

from gallery import fonts
from gallery.models import Event

A4_MM = (210, 297)
# The event's name: on at most NAME_MAX_LINES lines no wider than NAME_WIDTH_MM, its
# last line on NAME_BASELINE_MM (above the date), in bold from NAME_SIZE_MM down to
# NAME_MIN_SIZE_MM; the lines above it must stay below NAME_TOP_MM.
NAME_WIDTH_MM = 180
NAME_BASELINE_MM = 40
NAME_TOP_MM = 6
NAME_SIZE_MM = 14.0
NAME_MIN_SIZE_MM = 5.0
NAME_ONE_LINE_MIN_SIZE_MM = 10.0
NAME_MAX_LINES = 4
LINE_SPACING = 1.2
INSTRUCTIONS = (
    "Scannez le code, prenez un selfie : retrouvez vos photos.",
    "Scan the code, take a selfie: find your photos.",
)


def _lines(event: Event, url: str) -> dict[str, str]:
    code = f"Code : {event.access_code} / Code: {event.access_code}" if event.access_code else ""
    # People who do not want to be shown opt out there (issue #13): said on the poster too.
    optout = f"Ne pas apparaître / Don't show me: {url.rstrip('/')}/opt-out/"
    return {
        "name": event.name,
        "date": date_format(event.date, "DATE_FORMAT"),
        "url": url,
        "code": code,
        "optout": optout,
    }


def text_width(text: str, size: float, *, bold: bool = False) -> float:
    """The width of `text` in DejaVu Sans at `size` (in any unit: the result is in the same)."""
    reference = 100  # pixels: the font's advance widths scale linearly with its size
    return fonts.dejavu(reference, bold=bold).getlength(text) * size / reference


def _wrapped(words: list[str], size: float) -> list[str]:
    """Words on as few lines as fit NAME_WIDTH_MM at `size`; a word too long for a line is cut."""
    lines: list[str] = []
    for word in words:
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and text_width(candidate, size, bold=True) <= NAME_WIDTH_MM:
            lines[-1] = candidate
            continue
        while text_width(word, size, bold=True) > NAME_WIDTH_MM:
            cut = len(word) - 1
            while cut > 1 and text_width(word[:cut], size, bold=True) > NAME_WIDTH_MM:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines


def _fits(lines: list[str], size: float) -> bool:
    block = size * LINE_SPACING * (len(lines) - 1)
    return len(lines) <= NAME_MAX_LINES and NAME_BASELINE_MM - block - size >= NAME_TOP_MM


def name_layout(name: str) -> tuple[list[str], float]:
    """The event's name as lines that fit the page, and their font size (mm).

    On one line down to NAME_ONE_LINE_MIN_SIZE_MM; otherwise the largest size at
    which the name fits, wrapped at spaces; at the smallest,
    a name still too long keeps the lines that fit and ends with "…".
    """
    words = name.split() or [""]
    # One line while it stays large enough to read across a room; then wrapped lines.
    for one_line in (True, False):
        size = NAME_SIZE_MM
        while size > (NAME_ONE_LINE_MIN_SIZE_MM if one_line else NAME_MIN_SIZE_MM):
            lines = _wrapped(words, size)
            if _fits(lines, size) and (len(lines) == 1 or not one_line):
                return lines, size
            size = max(NAME_MIN_SIZE_MM, size * 0.9)
    lines = _wrapped(words, size)
    if _fits(lines, size):
        return lines, size
    kept = [line for n, line in enumerate(lines) if _fits(lines[: n + 1], size)]
    last = kept[-1]
    while last and text_width(last + "…", size, bold=True) > NAME_WIDTH_MM:
        last = last[:-1]
    return [*kept[:-1], last.rstrip() + "…"], size


def _name_baselines(lines: list[str], size: float) -> list[float]:
    """Each line's baseline (mm from the top): the last on NAME_BASELINE_MM, the others above."""
    return [NAME_BASELINE_MM - size * LINE_SPACING * (len(lines) - 1 - n) for n in range(len(lines))]


def poster_svg(event: Event, url: str) -> str:
    """The poster as an A4 SVG document, in millimetres."""
    qr = qrcode.QRCode(border=0, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(url)
    qr.make(fit=True)
    # The QR code's path in module units, scaled into a 130 mm square.
    modules = qr.modules_count
    squares = "".join(f"M{x},{y}h1v1h-1z" for y, row in enumerate(qr.modules) for x, dark in enumerate(row) if dark)
    text = {key: escape(value) for key, value in _lines(event, url).items()}
    width, height = A4_MM
    side = 130
    left = (width - side) / 2
    code_line = f'<text x="105" y="232" font-size="7">{text["code"]}</text>' if text["code"] else ""
    lines, size = name_layout(event.name)
    name = "".join(
        f'<text x="105" y="{y:.2f}" font-size="{size:.2f}" font-weight="bold">{escape(line)}</text>'
        for line, y in zip(lines, _name_baselines(lines, size), strict=True)
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}mm" height="{height}mm" viewBox="0 0 {width} {height}">
<rect width="{width}" height="{height}" fill="#fff"/>
<g font-family="DejaVu Sans, Helvetica, Arial, sans-serif" text-anchor="middle" fill="#111">
{name}
<text x="105" y="52" font-size="8">{text["date"]}</text>
<g transform="translate({left},65) scale({side / modules})"><path d="{squares}" fill="#000"/></g>
{code_line}
<text x="105" y="248" font-size="7">{escape(INSTRUCTIONS[0])}</text>
<text x="105" y="260" font-size="7" font-style="italic">{escape(INSTRUCTIONS[1])}</text>
<text x="105" y="280" font-size="4.5" fill="#444">{text["url"]}</text>
<text x="105" y="288" font-size="4" fill="#444">{text["optout"]}</text>
</g>
</svg>
"""


def poster_png(event: Event, url: str, *, dpi: int = 150) -> bytes:
    """The poster as an A4 PNG image (150 dpi: 1240 x 1754 pixels)."""
    px = dpi / 25.4  # pixels per millimetre
    width, height = (round(mm * px) for mm in A4_MM)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    side = round(130 * px)
    qr = qrcode.QRCode(border=0, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(url)
    qr.make(fit=True)
    code = qr.make_image().get_image().convert("RGB").resize((side, side), Image.Resampling.NEAREST)
    image.paste(code, ((width - side) // 2, round(65 * px)))
    lines = _lines(event, url)

    def centred(y_mm: float, size_mm: float, value: str, fill: str = "#111", *, bold: bool = False) -> None:
        if not value:
            return
        size = round(size_mm * px)
        font = fonts.dejavu(size, bold=bold)
        while size > 8 and draw.textlength(value, font=font) > width * 0.9:  # a long URL or code shrinks to fit
            size = size * 9 // 10
            font = fonts.dejavu(size, bold=bold)
        draw.text((width / 2, y_mm * px), value, font=font, fill=fill, anchor="ms")

    name_lines, name_size = name_layout(event.name)
    for line, y in zip(name_lines, _name_baselines(name_lines, name_size), strict=True):
        centred(y, name_size, line, bold=True)
    centred(52, 8, lines["date"])
    centred(232, 7, lines["code"])
    centred(248, 7, INSTRUCTIONS[0])
    centred(260, 7, INSTRUCTIONS[1])
    centred(280, 4.5, lines["url"], fill="#444")
    centred(288, 4, lines["optout"], fill="#444")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", dpi=(dpi, dpi))
    return buffer.getvalue()
