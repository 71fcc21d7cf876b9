"""A deterministic stand-in engine for plumbing tests where real faces do not matter.

Every image that is not almost black has exactly one "face" covering its centre,
whose embedding is derived from the image's average colour: two images of the
same colour match, different colours do not. Never available in production.

FAKE_ENGINE_DELAY (seconds, environment) makes each detection that slow, so the
crash tests can kill a worker in the middle of a job.
"""

from __future__ import annotations

import os
import time

import numpy as np
from PIL import Image, ImageStat

from matching.engines.base import EmbeddingEngine, FoundFace


class FakeEngine(EmbeddingEngine):
    name = "fake"

    def detect(self, image: Image.Image) -> list[FoundFace]:
        time.sleep(float(os.environ.get("FAKE_ENGINE_DELAY", "0")))
        mean = np.array(ImageStat.Stat(image.convert("RGB")).mean, dtype=np.float32) / 255.0
        if mean.sum() < 0.05:
            return []
        embedding = np.zeros(128, dtype=np.float32)
        embedding[:3] = mean * 2
        w, h = image.size
        return [FoundFace(left=w // 4, top=h // 4, width=w // 2, height=h // 2, embedding=embedding)]
