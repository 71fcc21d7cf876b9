"""Face engines, chosen by the FACE_BACKEND setting and imported lazily.

The web process never calls get_engine(): only jobs and commands do, so dlib
(or boto3's Rekognition client) is loaded once per worker process.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from matching.engines.base import FaceEngine

ENGINES = {
    "dlib": "matching.engines.dlib.DlibEngine",
    "rekognition": "matching.engines.rekognition.RekognitionEngine",
    "fake": "matching.engines.fake.FakeEngine",
}

_engines: dict[str, FaceEngine] = {}
_lock = threading.Lock()


def get_engine(name: str | None = None) -> FaceEngine:
    name = name or settings.FACE_BACKEND
    with _lock:
        if name not in _engines:
            if name not in ENGINES:
                raise ImproperlyConfigured(f"Unknown FACE_BACKEND {name!r}; choose one of {', '.join(ENGINES)}.")
            _engines[name] = import_string(ENGINES[name])()
        return _engines[name]
