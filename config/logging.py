"""Structured logs: one JSON object per line in production, readable text in development.

One configuration (`logging_config`) serves Django, the job cluster and gunicorn
(gunicorn.conf.py passes it as `logconfig_dict`), so every process writes the same
format through the same handler, and that handler's `RedactFilter` removes private-link
tokens from every line, whoever wrote it.

Extra fields passed as `logger.info("...", extra={"photo_id": 1})` become keys of
the JSON object, so job and request logs can be filtered by id, duration and outcome.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:  # settings.py imports this module: keep its imports light
    from django.http import HttpRequest, HttpResponse

# Attributes every LogRecord has: whatever else a record carries came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "extra_fields"}

request_logger = logging.getLogger("trouvaille.request")


# An attendee's private link (/e/<slug>/me/<token>/) is a bearer credential. Paths
# reach the logs from many places (this app's request line, django.request's
# "Not Found: ...", runserver's and gunicorn's access lines, a Referer header), with or
# without the trailing slash, and percent-encoded inside a query string. Tokens are
# 43 URL-safe characters (secrets.token_urlsafe(32)); the views under /me/ have
# short lowercase names ("status", "forget"), which stay readable. Any segment after
# /me/ of 16 or more characters is taken for a token, so a mistyped one is hidden too.
_PRIVATE_LINK = re.compile(r"(/e/[^/\s]+/me/|%2Fe%2F[^%\s]+%2Fme%2F)[^/?#&\s\"'%]{16,}", re.IGNORECASE)
REDACTED = "<redacted>"


def redact(text: str) -> str:
    return _PRIVATE_LINK.sub(rf"\1{REDACTED}", text)


class RedactFilter(logging.Filter):
    """Redacts private-link tokens from a record's message, extra fields and traceback.

    A handler filter, so it covers every logger whose records reach the handler:
    Django's, django-q2's, gunicorn's and ours.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: logging reports it when formatting
            return True
        if _PRIVATE_LINK.search(message):
            record.msg, record.args = redact(message), None
        for key, value in list(vars(record).items()):
            if key in _STANDARD or value is None or isinstance(value, int | float):
                continue
            # Objects too (django.request passes the request, whose repr shows the path):
            # the formatters print str(value) anyway.
            text = value if isinstance(value, str) else str(value)
            if _PRIVATE_LINK.search(text):
                setattr(record, key, redact(text))
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            if _PRIVATE_LINK.search(text):
                # Both formatters print exc_text when exc_info is gone. Only then: other
                # handlers (pytest's caplog) see the record too and keep the exception.
                record.exc_text, record.exc_info = redact(text), None
        return True


class GunicornAccessFilter(logging.Filter):
    """Turns gunicorn's access line into fields, like this app's own "request" line.

    Gunicorn logs `access_log_format % atoms` with the atoms dict as the record's
    arguments: the fields are taken from there, so `access_log_format` plays no part.
    """

    _FIELDS = {
        "remote_addr": "h",
        "forwarded_for": "{x-forwarded-for}i",
        "request_id": "{x-request-id}i",
        "method": "m",
        "path": "U",
        "query": "q",
        "protocol": "H",
        "status": "s",
        "bytes": "B",
        "duration_ms": "M",
        "referer": "f",
        "user_agent": "a",
    }

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if record.name != "gunicorn.access" or not isinstance(atoms, Mapping):
            return True
        for field, atom in self._FIELDS.items():
            value = dict.get(atoms, atom)  # the raw value: gunicorn's wrapper answers "-" for absent
            if isinstance(value, str):
                value = value.replace('\\"', '"')  # gunicorn's wrapper escapes quotes for its text format
                value = int(value) if field == "status" and value.isdigit() else value
            setattr(record, field, None if value in ("-", "") else value)
        record.msg, record.args = "access", None
        return True


class ExtraFieldsFilter(logging.Filter):
    """Adds `extra_fields` ("key=value ...") for the text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        extras = {key: value for key, value in vars(record).items() if key not in _STANDARD}
        record.extra_fields = " ".join(f"{key}={value}" for key, value in extras.items())
        return True


def logging_config(*, level: str, fmt: str, jobs_level: str) -> dict:
    """The dictConfig for every process: Django's LOGGING and gunicorn's logconfig_dict."""
    if fmt not in {"json", "text"}:
        raise ImproperlyConfigured(f"LOG_FORMAT={fmt!r}: use json or text")
    console = {
        "class": "logging.StreamHandler",
        "formatter": fmt,
        # In this order: gunicorn's atoms become fields, then every field is redacted.
        "filters": ["gunicorn_access", "redact", "extra_fields"],
    }
    own_handler = {"handlers": ["console"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "datefmt": "%Y-%m-%dT%H:%M:%S%z",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "exception"},
                "reserved_attrs": sorted(_STANDARD),
            },
            "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s %(extra_fields)s"},
        },
        "filters": {
            "redact": {"()": "config.logging.RedactFilter"},
            "gunicorn_access": {"()": "config.logging.GunicornAccessFilter"},
            "extra_fields": {"()": "config.logging.ExtraFieldsFilter"},
        },
        "handlers": {"console": console},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's default configuration gives these loggers handlers of their own
            # (runserver's access lines, DEBUG's console), which would bypass the
            # redaction: naming a handler here replaces them.
            "django": {**own_handler, "level": level},
            "django.server": {**own_handler, "level": "WARNING"},  # 4xx and 5xx only: RequestLog has the rest
            "django-q": {**own_handler, "level": jobs_level},
            "gunicorn.error": {**own_handler, "level": level},
            "gunicorn.access": {**own_handler, "level": "INFO"},
            # Failed and locked-out admin logins are warnings; its start banner is not news.
            "axes": {**own_handler, "level": "WARNING"},
            # Scanners probing with wrong Host headers are not errors worth a traceback.
            "django.security.DisallowedHost": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
    }


class RequestLogMiddleware:
    """One log line per request: method, path, status, duration."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.monotonic()
        response = self.get_response(request)
        request_logger.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return response
