"""The hosted engine: AWS Rekognition face collections, one per event.

Rekognition keeps the faces (FaceId per face); our Face rows and Selfie rows
keep those ids. Photo faces are indexed with ExternalImageId = the photo id and
selfie faces with "selfie-<id>" in the same collection, so one SearchFaces by
FaceId answers both "which photos show this selfie" and "which selfies are in
this new photo". See docs/rekognition.md for setup, IAM policy and costs.

Retries (throttling, 5xx) are botocore's job, configured on the client; the
engine only bounds how many calls a worker process has in flight.
"""

from __future__ import annotations

import io
import logging
import threading
from typing import TYPE_CHECKING, Any

from django.conf import settings
from PIL import Image

from matching.engines.base import FoundFace, HostedEngine

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

# Fixed API limits (Rekognition API reference / service model, checked 2026).
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Image.Bytes: at most 5,242,880 bytes
MIN_IMAGE_SIDE = 80  # smallest accepted width and height
INDEX_MAX_FACES = 100  # IndexFaces never indexes more than the 100 largest faces
SEARCH_MAX_FACES = 4096  # SearchFaces / SearchFacesByImage MaxFaces maximum
DELETE_BATCH = 4096  # DeleteFaces FaceIds maximum per call
JPEG_QUALITY = 90
# Seconds. IndexFaces of a 5 MB image with 100 faces answers in a few seconds.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30

SELFIE_PREFIX = "selfie-"
logger = logging.getLogger("trouvaille.matching")
# Errors an operator must fix (credentials, IAM policy); retrying will not help.
_DENIED = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException"}


class RekognitionError(RuntimeError):
    """Rekognition refused our credentials or policy: the message says what to fix."""


def make_client() -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        # total_max_attempts counts the first try, like the AWS_MAX_ATTEMPTS
        # variable of the AWS CLI/SDKs; adaptive mode also slows this client
        # down after throttling, which bulk imports hit first.
        retries={"mode": "adaptive", "total_max_attempts": settings.AWS_MAX_ATTEMPTS},
        max_pool_connections=max(10, settings.AWS_CONCURRENT_REQUESTS),
        # botocore's defaults are 60 s each: a silent network would hold a job
        # for minutes per try. A timed-out try is retried like a 5xx.
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
    )
    # A session of our own: boto3's default session is shared, mutable state.
    return boto3.session.Session().client("rekognition", region_name=settings.AWS_REKOGNITION_REGION, config=config)


def encode(image: Image.Image, *, max_side: int, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """JPEG bytes Rekognition accepts: sides of 80 px to max_side (0: no cap), at most max_bytes."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    scale = 1.0
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
    scale = max(scale, MIN_IMAGE_SIDE / min(image.size))
    while True:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        copy = image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        copy.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
        # JPEG size follows the pixel count: shrink each side by the square
        # root of the overshoot, with a margin so one more pass is rare.
        scale *= 0.95 * (max_bytes / buffer.tell()) ** 0.5


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _distance(similarity: float) -> float:
    return round(1 - similarity / 100, 6)


class RekognitionEngine(HostedEngine):
    name = "rekognition"

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._client_lock = threading.Lock()
        # Every call holds a slot, so threads of one worker never exceed the
        # concurrency the account's TPS quota was sized for.
        self._slots = threading.BoundedSemaphore(settings.AWS_CONCURRENT_REQUESTS)
        self.quality_filter: str = settings.AWS_REKOGNITION_QUALITY_FILTER
        # Rekognition needs 40 px faces at 1920x1080 and proportionally bigger
        # ones above: more pixels only cost upload bytes and time.
        self.max_side: int = settings.AWS_REKOGNITION_MAX_SIDE

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = make_client()
            return self._client

    def collection_id(self, event_id: int) -> str:
        return f"{settings.AWS_REKOGNITION_COLLECTION_PREFIX}-event-{event_id}"

    # --- Faces in ------------------------------------------------------------

    def index_photo(self, *, event_id: int, photo_id: int, image: Image.Image) -> list[FoundFace]:
        records = self._index(event_id, image, external_id=str(photo_id), max_faces=INDEX_MAX_FACES)
        return [self._found(record["Face"], image) for record in records]

    def enroll_selfie(self, *, event_id: int, selfie_id: int, image: Image.Image) -> FoundFace | None:
        # MaxFaces=1 keeps one face: the best quality, then the largest.
        records = self._index(event_id, image, external_id=f"{SELFIE_PREFIX}{selfie_id}", max_faces=1)
        return self._found(records[0]["Face"], image) if records else None

    def _index(self, event_id: int, image: Image.Image, *, external_id: str, max_faces: int) -> list[dict]:
        from botocore.exceptions import ClientError

        params = {
            "CollectionId": self.collection_id(event_id),
            "Image": {"Bytes": encode(image, max_side=self.max_side)},
            "ExternalImageId": external_id,
            "MaxFaces": max_faces,
            "QualityFilter": self.quality_filter,
            "DetectionAttributes": ["DEFAULT"],
        }
        try:
            return self._call("index_faces", **params)["FaceRecords"]
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
        # The event's first face: its collection is made now, not per call.
        self._create_collection(params["CollectionId"])
        return self._call("index_faces", **params)["FaceRecords"]

    def _create_collection(self, collection_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call("create_collection", CollectionId=collection_id)
        except ClientError as exc:
            if _code(exc) != "ResourceAlreadyExistsException":  # another worker was first
                raise

    @staticmethod
    def _found(face: dict, image: Image.Image) -> FoundFace:
        # BoundingBox is in ratios of the image (may spill over its edges);
        # ratios survive our resizing, so they map onto `image` directly.
        box, width, height = face["BoundingBox"], image.width, image.height
        left = min(max(round(box["Left"] * width), 0), width)
        top = min(max(round(box["Top"] * height), 0), height)
        right = min(max(round((box["Left"] + box["Width"]) * width), left), width)
        bottom = min(max(round((box["Top"] + box["Height"]) * height), top), height)
        return FoundFace(left=left, top=top, width=right - left, height=bottom - top, external_id=face["FaceId"])

    # --- Matching ------------------------------------------------------------

    def photos_near_face(self, *, event_id: int, face_id: str, tolerance: float | None = None) -> dict[int, float]:
        return self._photos(self._search_face(event_id, face_id, tolerance))

    def selfies_near_faces(
        self, *, event_id: int, face_ids: list[str], tolerance: float | None = None
    ) -> dict[int, float]:
        best: dict[int, float] = {}
        for face_id in face_ids:
            for match in self._search_face(event_id, face_id, tolerance):
                external = match["Face"].get("ExternalImageId", "")
                if external.startswith(SELFIE_PREFIX) and external[len(SELFIE_PREFIX) :].isdigit():
                    _keep_best(best, int(external[len(SELFIE_PREFIX) :]), _distance(match["Similarity"]))
        return best

    def photos_near_image(
        self, *, event_id: int, image: Image.Image, tolerance: float | None = None
    ) -> dict[int, float]:
        from botocore.exceptions import ClientError

        data = encode(image, max_side=self.max_side)
        # A face check first: SearchFacesByImage reports "no face" only as an
        # InvalidParameterException, whose message text is not part of the API.
        if not self._call("detect_faces", Image={"Bytes": data}, Attributes=["DEFAULT"])["FaceDetails"]:
            return {}
        try:
            response = self._call(
                "search_faces_by_image",
                CollectionId=self.collection_id(event_id),
                Image={"Bytes": data},
                MaxFaces=SEARCH_MAX_FACES,
                FaceMatchThreshold=self._threshold(tolerance),
                QualityFilter=self.quality_filter,
            )
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":  # no photo indexed yet: no collection
                return {}
            # Our parameters are validated at start-up, so what is left to be
            # invalid is the image: its faces were all below the quality filter.
            if _code(exc) == "InvalidParameterException":
                logger.warning("no searchable face in the image for event %s: %s", event_id, exc)
                return {}
            raise
        return self._photos(response["FaceMatches"])

    def _search_face(self, event_id: int, face_id: str, tolerance: float | None) -> list[dict]:
        return self._call(
            "search_faces",
            CollectionId=self.collection_id(event_id),
            FaceId=face_id,
            MaxFaces=SEARCH_MAX_FACES,
            FaceMatchThreshold=self._threshold(tolerance),
        )["FaceMatches"]

    @staticmethod
    def _threshold(tolerance: float | None) -> float:
        if tolerance is None:
            return float(settings.AWS_REKOGNITION_SIMILARITY)
        return min(max((1 - tolerance) * 100, 0.0), 100.0)

    @staticmethod
    def _photos(matches: list[dict]) -> dict[int, float]:
        """Best distance per photo id (selfie faces share the collection and are skipped)."""
        best: dict[int, float] = {}
        for match in matches:
            external = match["Face"].get("ExternalImageId", "")
            if external.isdigit():
                _keep_best(best, int(external), _distance(match["Similarity"]))
        return best

    # --- Forgetting ----------------------------------------------------------

    def forget_faces(self, *, event_id: int, external_ids: list[str]) -> None:
        from botocore.exceptions import ClientError

        for start in range(0, len(external_ids), DELETE_BATCH):
            try:
                self._call(
                    "delete_faces",
                    CollectionId=self.collection_id(event_id),
                    FaceIds=external_ids[start : start + DELETE_BATCH],
                )
            except ClientError as exc:
                if _code(exc) == "ResourceNotFoundException":
                    return  # the event's collection is already gone, with its faces
                raise

    def forget_event(self, *, event_id: int) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call("delete_collection", CollectionId=self.collection_id(event_id))
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise

    # --- Calls ---------------------------------------------------------------

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError, NoCredentialsError

        with self._slots:
            try:
                return getattr(self.client, operation)(**params)
            except ClientError as exc:
                if _code(exc) in _DENIED:
                    # AWS's own message names the account and IAM user; it stays in
                    # the chained exception (logged), out of the recorded failure
                    # text, which an attendee may see.
                    raise RekognitionError(
                        f"AWS denied access to Rekognition {exc.operation_name} ({_code(exc)}): check the AWS "
                        "credentials and that their IAM policy allows the actions in docs/rekognition.md."
                    ) from exc
                raise
            except NoCredentialsError as exc:
                raise RekognitionError(
                    "No AWS credentials found for Rekognition: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                    "(or an instance role); see docs/rekognition.md."
                ) from exc


def _keep_best(best: dict[int, float], key: int, distance: float) -> None:
    if key not in best or distance < best[key]:
        best[key] = distance
