"""The default engine: dlib's HOG detector and ResNet embeddings via face_recognition.

Imported only by job workers and commands (see matching.engines.get_engine):
loading dlib's models costs ~100 MB and a second, which the web process never pays.
"""

from __future__ import annotations

import warnings

import numpy as np
from django.conf import settings
from PIL import Image

from matching.engines.base import EmbeddingEngine, FoundFace, largest


class DlibEngine(EmbeddingEngine):
    name = "dlib"

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # face_recognition_models imports the deprecated pkg_resources (pinned setuptools<81).
            warnings.simplefilter("ignore", UserWarning)
            import face_recognition  # heavy: loads the models once per process

        self._fr = face_recognition
        self.max_side = settings.FACE_DETECT_MAX_SIDE
        self.upsample = settings.FACE_DETECT_UPSAMPLE
        self.model = settings.FACE_MODEL

    def detect(self, image: Image.Image, *, upsample: int | None = None) -> list[FoundFace]:
        # Detection cost grows with pixels; downscale big photos first. The
        # defaults still find faces of 2.5% of the longest side (settings.py).
        scale = 1.0
        if max(image.size) > self.max_side:
            scale = self.max_side / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
        pixels = np.asarray(image.convert("RGB"))
        upsample = self.upsample if upsample is None else upsample
        locations = self._fr.face_locations(pixels, number_of_times_to_upsample=upsample, model=self.model)
        if not locations:
            return []
        encodings = self._fr.face_encodings(pixels, known_face_locations=locations)
        faces = []
        for (top, right, bottom, left), encoding in zip(locations, encodings, strict=True):
            faces.append(
                FoundFace(
                    left=max(0, round(left / scale)),
                    top=max(0, round(top / scale)),
                    width=round((right - left) / scale),
                    height=round((bottom - top) / scale),
                    embedding=np.asarray(encoding, dtype=np.float32),
                )
            )
        return faces

    def enroll_selfie(self, *, event_id: int, selfie_id: int, image: Image.Image) -> FoundFace | None:
        # A selfie's face fills much of the picture: dlib finds it without
        # upsampling, for less than half the CPU. A small face (a selfie taken
        # from afar) falls back to the configured upsampling.
        face = largest(self.detect(image, upsample=0))
        return face if face is not None else largest(self.detect(image))
