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
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}mm" height="{height}mm" viewBox="0 0 {width} {height}">
<rect width="{width}" height="{height}" fill="#fff"/>
<g font-family="DejaVu Sans, Helvetica, Arial, sans-serif" text-anchor="middle" fill="#111">
<text x="105" y="40" font-size="14" font-weight="bold">{text["name"]}</text>
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

    def centred(y_mm: float, size_mm: float, value: str, fill: str = "#111") -> None:
        if not value:
            return
        size = round(size_mm * px)
        font = fonts.dejavu(size)
        while size > 8 and draw.textlength(value, font=font) > width * 0.9:  # long names shrink to fit
            size = size * 9 // 10
            font = fonts.dejavu(size)
        draw.text((width / 2, y_mm * px), value, font=font, fill=fill, anchor="ms")

    centred(40, 14, lines["name"])
    centred(52, 8, lines["date"])
    centred(232, 7, lines["code"])
    centred(248, 7, INSTRUCTIONS[0])
    centred(260, 7, INSTRUCTIONS[1])
    centred(280, 4.5, lines["url"], fill="#444")
    centred(288, 4, lines["optout"], fill="#444")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", dpi=(dpi, dpi))
    return buffer.getvalue()
