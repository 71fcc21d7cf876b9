"""Absolute links to the site, for QR codes, e-mails and printed banners.

They must point where the site really answers: SITE_URL when the operator set
it (behind a proxy, in e-mails sent by jobs), else the address the request came
in on (whatever port `make run` or gunicorn listens on).
"""

from __future__ import annotations

from contextvars import ContextVar

from django.conf import settings
from django.http import HttpRequest

# The admin's read-only fields get no request: its views set this for their duration.
current_request: ContextVar[HttpRequest | None] = ContextVar("current_request", default=None)


def public_url(path: str, *, request: HttpRequest | None = None) -> str:
    """The absolute URL of a site path; the bare path when neither SITE_URL nor a request tells the host."""
    if settings.SITE_URL:
        return settings.SITE_URL + path
    request = request or current_request.get()
    return request.build_absolute_uri(path) if request is not None else path
