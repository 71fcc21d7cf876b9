"""Structured logs: one JSON object per line in production, readable text in development.

Extra fields passed as `logger.info("...", extra={"photo_id": 1})` become keys of
the JSON object, so job and request logs can be filtered by id, duration and outcome.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "extra_fields"}

request_logger = logging.getLogger("trouvaille.request")


# An attendee's private link (/e/<slug>/me/<token>/) is a bearer credential. Django
# itself logs paths too (django.request's "Not Found: ..."), so every formatted line
# is redacted, whoever wrote it.
_PRIVATE_LINK = re.compile(r"(/e/[^/\s]+/me/)[^/?\s\"']+/")


def redact(text: str) -> str:
    return _PRIVATE_LINK.sub(r"\1<redacted>/", text)


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class ExtraFieldsFilter(logging.Filter):
    """Adds `extra_fields` ("key=value ...") for the text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.extra_fields = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str))


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
