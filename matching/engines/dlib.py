"""The default engine: dlib's HOG detector and ResNet embeddings via face_recognition.

Imported only by job workers and commands (see matching.engines.get_engine):
loading dlib's models costs ~100 MB and a second, which the web process never pays.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
from django.conf import settings
from PIL import Image

from matching.engines import resnet
from matching.engines.base import EmbeddingEngine, FoundFace, largest

logger = logging.getLogger(__name__)

# The coarse pyramid (see DlibEngine._locate). dlib scans a pyramid whose levels
# shrink by 5/6, but its face detector scores a face well over a ~1.6x range of
# sizes (about 58 to 94 px boxes at one level; best at 70-82), so levels 0.71 apart
# with a lowered threshold miss no face that the dense pyramid finds: each
# candidate is then confirmed (or dropped) by dlib's own dense pyramid on a small
# crop around it, which also gives the usual tight box.
PYRAMID_STEP = 0.5**0.5
CANDIDATE_THRESHOLD = -0.5
# The first level is 10% smaller than dlib's would be (2,880 instead of 3,200 px
# for a 4,000 px photo): the smallest wanted face (2.5% of the longest side) then
# lands at ~72 px, where dlib scores faces best.
FIRST_LEVEL_SHRINK = 0.9
WINDOW = 80  # dlib's frontal face detector window (px)
CONFIRM_BOX = 110  # candidate crops are scaled so the face is ~this wide
CONFIRM_MARGIN = 1.6  # crop half-width, in face widths


def _one_level(detector: object) -> object | None:
    """dlib's frontal face detector scanning only the image given, at its own scale.

    dlib's Python API has no pyramid option, so the serialized detector's
    max_pyramid_levels (1000) is rewritten to 1. None if the format is not the
    one this was written for (another dlib release): callers use the dense pyramid.
    """
    import dlib

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "detector.svm"
        detector.save(str(path))
        raw = path.read_bytes()
        # Versions 2 and 1, feature extractor, cell size 8, padding 0, window 80x80,
        # then max_pyramid_levels as dlib's varint: 2 bytes, 1000 (0x03e8).
        header = b"\x01\x02\x01\x01\x01\x00\x01\x00\x01\x08\x01\x00\x01\x50\x01\x50"
        if not raw.startswith(header + b"\x02\xe8\x03"):
            return None
        path.write_bytes(header + b"\x01\x01" + raw[len(header) + 3 :])
        return dlib.fhog_object_detector(str(path))


# dlib's face chips, as its compute_face_descriptor makes them
# (dlib/tools/python/src/face_recognition.cpp: get_face_chip_details(shape, 150, 0.25)).
CHIP_PADDING = 0.25
# The numpy network must give dlib's embedding (within 1e-6 in practice) or is not used.
EMBEDDING_TOLERANCE = 1e-4


def _numpy_embedder(encoder: object) -> resnet.Network | None:
    """dlib's embedding network run by numpy (FACE_EMBEDDER=numpy), or None: dlib's encoder.

    None too if the installed model file is not the one resnet.py parses, or if
    the numpy network disagrees with this dlib on a test chip (a dlib release that
    computes differently): the check costs one dlib embedding per process.
    """
    if settings.FACE_EMBEDDER != "numpy":
        return None
    try:
        network = resnet.installed_network()
    except (resnet.ModelFormatError, OSError) as error:
        logger.warning("FACE_EMBEDDER=numpy: dlib's model file cannot be read (%s); using dlib's encoder", error)
        return None
    chip = np.random.default_rng(0).integers(0, 256, (1, resnet.CHIP_SIZE, resnet.CHIP_SIZE, 3), dtype=np.uint8)
    expected = np.asarray(encoder.compute_face_descriptor(chip[0], 0), dtype=np.float32)
    difference = float(np.abs(network.embed(chip)[0] - expected).max())
    if difference > EMBEDDING_TOLERANCE:
        logger.warning("FACE_EMBEDDER=numpy: %.1e away from dlib's embedding; using dlib's encoder", difference)
        return None
    return network


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _best_first(boxes: list[tuple[float, tuple[float, float, float, float]]]) -> list[tuple[float, ...]]:
    """Non-maximum suppression: the best-scored of overlapping boxes."""
    kept: list[tuple[float, float, float, float]] = []
    for _score, box in sorted(boxes, key=lambda item: -item[0]):
        if all(_overlap(box, other) < 0.3 for other in kept):
            kept.append(box)
    return kept


class DlibEngine(EmbeddingEngine):
    name = "dlib"

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # face_recognition_models imports the deprecated pkg_resources (pinned setuptools<81).
            warnings.simplefilter("ignore", UserWarning)
            import face_recognition  # heavy: loads the models once per process
            from face_recognition import api

        self._fr = face_recognition
        self._landmarks = api.pose_predictor_5_point
        self._embedder = _numpy_embedder(api.face_encoder)
        self._dense = api.face_detector
        self._level = _one_level(api.face_detector) if settings.FACE_MODEL == "hog" else None
        self.max_side = settings.FACE_DETECT_MAX_SIDE
        self.upsample = settings.FACE_DETECT_UPSAMPLE
        self.model = settings.FACE_MODEL

    def detect(
        self,
        image: Image.Image,
        *,
        upsample: int | None = None,
        jitter: int = 1,
        landmarks: str = "small",
        largest_only: bool = False,
    ) -> list[FoundFace]:
        """Every face with its embedding, boxes in the image's pixels.

        The smallest face found is that of dlib's detector on the photo downscaled
        to FACE_DETECT_MAX_SIDE and upsampled FACE_DETECT_UPSAMPLE times (2.5% of
        the longest side by default), as face_recognition's command-line tool does.
        """
        image = image if image.mode == "RGB" else image.convert("RGB")
        upsample = self.upsample if upsample is None else upsample
        boxes = self._locate_dense(image, upsample) if self._level is None else self._locate(image, upsample)
        if not boxes:
            return []
        pixels = np.asarray(image)
        # face_recognition's (top, right, bottom, left); embeddings from the image
        # itself, so a small face's is made from every pixel it has.
        css = [(round(top), round(right), round(bottom), round(left)) for left, top, right, bottom in boxes]
        if largest_only:  # a selfie: only its main face is worth a (jittered) encoding
            css = [max(css, key=lambda box: (box[2] - box[0]) * (box[1] - box[3]))]
        if self._embedder is not None and jitter <= 1 and landmarks == "small":
            encodings = self._embed(pixels, css)
        else:
            encodings = self._fr.face_encodings(pixels, known_face_locations=css, num_jitters=jitter, model=landmarks)
        return [
            FoundFace(
                left=max(0, left),
                top=max(0, top),
                width=min(image.width, right) - max(0, left),
                height=min(image.height, bottom) - max(0, top),
                embedding=np.asarray(encoding, dtype=np.float32),
            )
            for (top, right, bottom, left), encoding in zip(css, encodings, strict=True)
        ]

    def _embed(self, pixels: np.ndarray, css: list[tuple[int, int, int, int]]) -> np.ndarray:
        """face_recognition.face_encodings(num_jitters=1, model="small"), by numpy.

        The same 5 landmarks and the same chips as dlib's compute_face_descriptor
        (dlib.get_face_chips makes them with the same chip details), the photo's
        faces batched through the network.
        """
        import dlib

        shapes = dlib.full_object_detections()
        for top, right, bottom, left in css:
            shapes.append(self._landmarks(pixels, dlib.rectangle(left, top, right, bottom)))
        chips = dlib.get_face_chips(pixels, shapes, size=resnet.CHIP_SIZE, padding=CHIP_PADDING)
        return self._embedder.embed(np.stack(chips))

    def _locate_dense(self, image: Image.Image, upsample: int) -> list[tuple[float, float, float, float]]:
        """dlib's own pyramid on the photo downscaled to max_side (CNN model, other dlib releases)."""
        scale = min(1.0, self.max_side / max(image.size))
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
        found = self._fr.face_locations(np.asarray(image), number_of_times_to_upsample=upsample, model=self.model)
        return [(left / scale, top / scale, right / scale, bottom / scale) for top, right, bottom, left in found]

    def _locate(self, image: Image.Image, upsample: int) -> list[tuple[float, float, float, float]]:
        """Faces in two passes: a coarse pyramid for candidates, dlib's dense one around each.

        The dense pyramid (5/6 steps from twice the 1,600 px copy) scans ~3.3
        times the pixels of its first level; this one ~1.9 times those of a
        first level 0.8 times its size, so a third of the work, plus ~2 ms per
        candidate to confirm it on a crop.
        """
        longest = max(image.size)
        scale = 2**upsample * min(longest, self.max_side) / longest * FIRST_LEVEL_SHRINK
        if 0.9 <= scale <= 1.1:
            scale = 1.0  # close enough: the photo as it came (often the display copy), no resampling
        candidates: list[tuple[float, tuple[float, float, float, float]]] = []
        # Two chains of halvings, sqrt(1/2) apart: one resampling each, then
        # 2x2 averages (Image.reduce, ~10 times cheaper than a resize).
        for first in (scale, scale * PYRAMID_STEP):
            level = (
                image
                if first == 1.0
                else image.resize(
                    (max(1, round(image.width * first)), max(1, round(image.height * first))), Image.Resampling.BILINEAR
                )
            )
            while min(level.size) >= WINDOW:
                rects, scores, _ = self._level.run(np.asarray(level), 0, CANDIDATE_THRESHOLD)
                sx, sy = image.width / level.width, image.height / level.height
                candidates.extend(
                    (score, (r.left() * sx, r.top() * sy, (r.right() + 1) * sx, (r.bottom() + 1) * sy))
                    for r, score in zip(rects, scores, strict=True)
                )
                level = level.reduce(2)
        confirmed = [box for box in (self._confirm(image, box) for box in _best_first(candidates)) if box]
        return _best_first(confirmed)

    def _confirm(
        self, image: Image.Image, box: tuple[float, float, float, float]
    ) -> tuple[float, tuple[float, float, float, float]] | None:
        """dlib's dense pyramid on a crop around a candidate: its best face there, or None."""
        left, top, right, bottom = box
        width = right - left
        cx, cy = (left + right) / 2, (top + bottom) / 2
        crop_box = tuple(
            round(v)
            for v in (
                cx - CONFIRM_MARGIN * width,
                cy - CONFIRM_MARGIN * width,
                cx + CONFIRM_MARGIN * width,
                cy + CONFIRM_MARGIN * width,
            )
        )
        crop = image.crop(crop_box)  # outside the photo: black, as dlib's own padding
        zoom = CONFIRM_BOX / width
        crop = crop.resize(
            (max(1, round(crop.width * zoom)), max(1, round(crop.height * zoom))), Image.Resampling.BILINEAR
        )
        rects, scores, _ = self._dense.run(np.asarray(crop), 0, 0.0)
        best = None
        for r, score in zip(rects, scores, strict=True):
            found = (
                crop_box[0] + r.left() / zoom,
                crop_box[1] + r.top() / zoom,
                crop_box[0] + (r.right() + 1) / zoom,
                crop_box[1] + (r.bottom() + 1) / zoom,
            )
            if _overlap(found, box) > 0.3 and (best is None or score > best[0]):
                best = (score, found)
        return best

    def enroll_selfie(self, *, event_id: int, selfie_id: int, image: Image.Image) -> FoundFace | None:
        # A selfie's face fills much of the picture: dlib finds it without
        # upsampling, for less than half the CPU. A small face (a selfie taken
        # from afar) falls back to the configured upsampling.
        # Jitter (re-encoding slightly shifted copies and averaging) and the
        # 68-point landmarks are paid once per selfie, never per photo face
        # (docs/accuracy.md has the measurements).
        careful = {
            "jitter": settings.FACE_SELFIE_JITTER,
            "landmarks": settings.FACE_SELFIE_LANDMARKS,
            "largest_only": True,
        }
        face = largest(self.detect(image, upsample=0, **careful))
        return face if face is not None else largest(self.detect(image, **careful))
