"""The hosted engine: AWS Rekognition face collections, one per event.

Rekognition keeps the faces (FaceId per face); our Face rows and Selfie rows
keep those ids. Photo faces are indexed with ExternalImageId "<photo id>:<run>"
and selfie faces with "selfie-<id>" in the same collection. Each attendee is a
Rekognition user holding their selfie faces: a selfie's SearchFaces answers
"which photos show this face", and a photo face's SearchUsers answers "which
one attendee is this", without being crowded out by every other photo face.
See docs/rekognition.md for setup, IAM policy, limits and costs.

Retries (throttling, 5xx, timeouts) are botocore's job, configured on the
client; the engine bounds how many calls a worker process has in flight and
how long one job may spend on a photo's many searches.
"""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from PIL import Image

from matching.engines.base import FaceGone, FoundFace, HostedEngine, PhotoFaces, PhotoMatches

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

# Fixed API limits (Rekognition API reference / service model, checked 2026).
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Image.Bytes: at most 5,242,880 bytes
MIN_IMAGE_SIDE = 80  # smallest accepted width and height
INDEX_MAX_FACES = 100  # IndexFaces never indexes more than the 100 largest faces
SEARCH_MAX_FACES = 4096  # SearchFaces / SearchFacesByImage MaxFaces maximum, and no pagination
DELETE_BATCH = 4096  # DeleteFaces FaceIds maximum per call
ASSOCIATE_BATCH = 100  # AssociateFaces / DisassociateFaces FaceIds maximum per call (and faces per user)
JPEG_QUALITY = 90
# Seconds. IndexFaces of a 5 MB image with 100 faces answers in a few seconds.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30

SELFIE_PREFIX = "selfie-"
logger = logging.getLogger("trouvaille.matching")
# Errors an operator must fix (credentials, IAM policy); retrying will not help.
_DENIED = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException"}


_T = TypeVar("_T")
_R = TypeVar("_R")


class RekognitionError(RuntimeError):
    """Rekognition refused our credentials or policy, or a job ran out of time: the message says what to do."""


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

    def index_photo(self, *, event_id: int, photo_id: int, image: Image.Image) -> PhotoFaces:
        # For one image, collection and ExternalImageId, IndexFaces answers with
        # the FaceIds it already keeps. A run id of our own makes two runs on
        # one photo (a reindex racing a stale job) get faces of their own, so the
        # run that loses forgets only its faces, never the winner's.
        external_id = f"{photo_id}:{secrets.token_hex(6)}"
        response = self._index(event_id, image, external_id=external_id, max_faces=INDEX_MAX_FACES)
        unindexed = response.get("UnindexedFaces", [])
        reasons = Counter(reason for face in unindexed for reason in face.get("Reasons", []))
        if unindexed:
            logger.info(
                "Rekognition left %s face(s) of photo %s out: %s",
                len(unindexed),
                photo_id,
                dict(reasons),
                extra={"photo_id": photo_id},
            )
        return PhotoFaces(
            faces=[self._found(record["Face"], image) for record in response["FaceRecords"]],
            left_out_count=len(unindexed),
            left_out=dict(reasons),
        )

    def enroll_selfie(self, *, event_id: int, selfie_id: int, image: Image.Image) -> FoundFace | None:
        # MaxFaces=1 keeps one face: the best quality, then the largest.
        records = self._index(event_id, image, external_id=f"{SELFIE_PREFIX}{selfie_id}", max_faces=1)["FaceRecords"]
        return self._found(records[0]["Face"], image) if records else None

    def _index(self, event_id: int, image: Image.Image, *, external_id: str, max_faces: int) -> dict[str, Any]:
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
            return self._call("index_faces", **params)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
        # The event's first face: its collection is made now, not per call.
        self._create_collection(params["CollectionId"])
        return self._call("index_faces", **params)

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

    # --- People (Rekognition users) -----------------------------------------

    def person_add_face(self, *, event_id: int, person_id: str, face_id: str) -> None:
        from botocore.exceptions import ClientError

        collection_id = self.collection_id(event_id)
        try:
            response = self._associate(collection_id, person_id, face_id)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            # The attendee's first selfie: their user is made now.
            self._create_user(collection_id, person_id, face_id)
            response = self._associate(collection_id, person_id, face_id)
        for failure in response.get("UnsuccessfulFaceAssociations", []):
            reasons = failure.get("Reasons", [])
            if "FACE_NOT_FOUND" in reasons:
                raise FaceGone(face_id)
            # LOW_MATCH_CONFIDENCE: this selfie does not look like the person's
            # other selfies. Its own searches still work; photo faces are not
            # compared with it through the user. Not worth failing the selfie.
            logger.warning(
                "Rekognition did not add face %s to user %s: %s", face_id, person_id, ", ".join(reasons) or "no reason"
            )

    def _associate(self, collection_id: str, person_id: str, face_id: str) -> dict[str, Any]:
        return self._call("associate_faces", CollectionId=collection_id, UserId=person_id, FaceIds=[face_id])

    def _create_user(self, collection_id: str, person_id: str, face_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call("create_user", CollectionId=collection_id, UserId=person_id)
        except ClientError as exc:
            if _code(exc) == "ConflictException":  # another selfie's job of this attendee was first
                return
            if _code(exc) == "ResourceNotFoundException":  # the whole collection is gone, with the face
                raise FaceGone(face_id) from exc
            raise

    # --- Matching ------------------------------------------------------------

    def photos_near_face(
        self,
        *,
        event_id: int,
        face_id: str,
        person_id: str,
        tolerance: float | None = None,
        similarity: float | None = None,
        hidden: frozenset[str] = frozenset(),
    ) -> PhotoMatches:
        threshold = self._threshold(tolerance, similarity)
        matches = self._search_kept_face(event_id, face_id, threshold)
        limit_reached = len(matches) >= SEARCH_MAX_FACES
        photo_faces = [
            match
            for match in matches
            if _photo_id(match["Face"].get("ExternalImageId", "")) is not None and match["Face"]["FaceId"] not in hidden
        ]
        # A face of another person's selfie among the results: someone who looks
        # like this person is enrolled, so each photo face found might be theirs.
        # Only then is each one asked for its single best person.
        lookalike = any(match["Face"].get("UserId", person_id) != person_id for match in matches)
        if lookalike and photo_faces:
            owners = self._each(
                lambda match: self._best_person(event_id, match["Face"]["FaceId"], threshold), photo_faces
            )
            photo_faces = [match for match, owner in zip(photo_faces, owners, strict=True) if owner == person_id]
        return PhotoMatches(distances=self._photos(photo_faces), limit_reached=limit_reached)

    def photo_faces_near_face(self, *, event_id: int, face_id: str, similarity: float | None = None) -> set[str]:
        matches = self._search_kept_face(event_id, face_id, self._threshold(None, similarity))
        # Photo faces only: other selfie faces share the collection.
        return {
            match["Face"]["FaceId"]
            for match in matches
            if _photo_id(match["Face"].get("ExternalImageId", "")) is not None
        }

    def _search_kept_face(self, event_id: int, face_id: str, threshold: float) -> list[dict]:
        """SearchFaces by a kept face; FaceGone when the collection no longer has it."""
        from botocore.exceptions import ClientError

        try:
            matches = self._search_face(event_id, face_id, threshold)
        except ClientError as exc:
            # An unknown FaceId is an invalid parameter; a missing collection took it along.
            if _code(exc) in {"InvalidParameterException", "ResourceNotFoundException"}:
                raise FaceGone(face_id) from exc
            raise
        if len(matches) >= SEARCH_MAX_FACES:
            logger.warning(
                "SearchFaces for face %s in event %s returned its maximum of %s faces: weaker matches may be missing",
                face_id,
                event_id,
                SEARCH_MAX_FACES,
                extra={"event_id": event_id},
            )
        return matches

    def people_near_faces(
        self, *, event_id: int, face_ids: list[str], tolerance: float | None = None, similarity: float | None = None
    ) -> dict[str, float]:
        threshold = self._threshold(tolerance, similarity)
        best: dict[str, float] = {}
        for found in self._each(lambda face_id: self._nearest_person(event_id, face_id, threshold), face_ids):
            if found is not None:
                _keep_best(best, found[0], found[1])
        return best

    def _nearest_person(self, event_id: int, face_id: str, threshold: float) -> tuple[str, float] | None:
        """The one person nearest to a kept face above the threshold, with the distance."""
        from botocore.exceptions import ClientError

        try:
            response = self._call(
                "search_users",
                CollectionId=self.collection_id(event_id),
                FaceId=face_id,
                UserMatchThreshold=threshold,
                MaxUsers=1,
            )
        except ClientError as exc:
            if _code(exc) in {"InvalidParameterException", "ResourceNotFoundException"}:
                # The photo's face is gone from the collection: the photo needs a reindex.
                logger.warning("face %s of event %s is gone from Rekognition; reindex its photo", face_id, event_id)
                return None
            raise
        users = response.get("UserMatches", [])
        return (users[0]["User"]["UserId"], _distance(users[0]["Similarity"])) if users else None

    def _best_person(self, event_id: int, face_id: str, threshold: float) -> str | None:
        found = self._nearest_person(event_id, face_id, threshold)
        return found[0] if found else None

    def photos_near_image(
        self,
        *,
        event_id: int,
        image: Image.Image,
        tolerance: float | None = None,
        similarity: float | None = None,
        hidden: frozenset[str] = frozenset(),
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
                FaceMatchThreshold=self._threshold(tolerance, similarity),
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
        if len(response["FaceMatches"]) >= SEARCH_MAX_FACES:
            logger.warning(
                "SearchFacesByImage in event %s returned its maximum of %s faces: weaker matches may be missing",
                event_id,
                SEARCH_MAX_FACES,
                extra={"event_id": event_id},
            )
        return self._photos([match for match in response["FaceMatches"] if match["Face"]["FaceId"] not in hidden])

    def _search_face(self, event_id: int, face_id: str, threshold: float) -> list[dict]:
        return self._call(
            "search_faces",
            CollectionId=self.collection_id(event_id),
            FaceId=face_id,
            MaxFaces=SEARCH_MAX_FACES,
            FaceMatchThreshold=threshold,
        )["FaceMatches"]

    @staticmethod
    def _threshold(tolerance: float | None, similarity: float | None) -> float:
        """The similarity (0-100) a match needs: an explicit distance converted (our distance is
        1 - similarity / 100), else the event's similarity, else AWS_REKOGNITION_SIMILARITY."""
        if tolerance is not None:
            return min(max((1 - tolerance) * 100, 0.0), 100.0)
        if similarity is not None:
            return min(max(float(similarity), 0.0), 100.0)
        return float(settings.AWS_REKOGNITION_SIMILARITY)

    @staticmethod
    def _photos(matches: list[dict]) -> dict[int, float]:
        """Best distance per photo id (selfie faces share the collection and are skipped)."""
        best: dict[int, float] = {}
        for match in matches:
            photo_id = _photo_id(match["Face"].get("ExternalImageId", ""))
            if photo_id is not None:
                _keep_best(best, photo_id, _distance(match["Similarity"]))
        return best

    def _each(self, call: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """call(item) for each item, AWS_CONCURRENT_REQUESTS at a time, within the job's time budget.

        A photo with 100 faces needs 100 searches: one after the other, under
        throttling, they could outlast Q_TIMEOUT and the job would be killed
        without a word. Past half of it, the job stops with an error that says
        how to finish the work (`rematch`).
        """
        if not items:
            return []
        budget = settings.Q_CLUSTER["timeout"] / 2
        deadline = time.monotonic() + budget

        def bounded(item: _T) -> _R:
            if time.monotonic() > deadline:
                raise RekognitionError(
                    f"{len(items)} Rekognition searches took longer than {budget:g} s (half of Q_TIMEOUT); "
                    "`manage.py rematch` finishes them later."
                )
            return call(item)

        workers = min(len(items), settings.AWS_CONCURRENT_REQUESTS)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rekognition") as pool:
            futures = [pool.submit(bounded, item) for item in items]
            try:
                return [future.result() for future in futures]
            finally:
                for future in futures:
                    future.cancel()

    # --- Forgetting ----------------------------------------------------------

    def forget_faces(self, *, event_id: int, external_ids: list[str]) -> None:
        from botocore.exceptions import ClientError

        collection_id = self.collection_id(event_id)
        for start in range(0, len(external_ids), DELETE_BATCH):
            try:
                response = self._call(
                    "delete_faces", CollectionId=collection_id, FaceIds=external_ids[start : start + DELETE_BATCH]
                )
            except ClientError as exc:
                if _code(exc) == "ResourceNotFoundException":
                    return  # the event's collection is already gone, with its faces
                raise
            # A selfie face that belongs to an attendee's user is not deleted
            # (ASSOCIATED_TO_AN_EXISTING_USER): take it out of the user first.
            # FACE_NOT_FOUND is already what we want.
            held: dict[str, list[str]] = {}
            for failure in response.get("UnsuccessfulFaceDeletions", []):
                if "ASSOCIATED_TO_AN_EXISTING_USER" in failure.get("Reasons", []) and failure.get("UserId"):
                    held.setdefault(failure["UserId"], []).append(failure["FaceId"])
            for person_id, face_ids in held.items():
                for first in range(0, len(face_ids), ASSOCIATE_BATCH):
                    self._call(
                        "disassociate_faces",
                        CollectionId=collection_id,
                        UserId=person_id,
                        FaceIds=face_ids[first : first + ASSOCIATE_BATCH],
                    )
            if held:
                freed = [face_id for face_ids in held.values() for face_id in face_ids]
                self._call("delete_faces", CollectionId=collection_id, FaceIds=freed)

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


def _photo_id(external_image_id: str) -> int | None:
    """The photo id in a photo face's ExternalImageId ("<id>:<run>", or "<id>" before runs), else None."""
    head = external_image_id.split(":", 1)[0]
    return int(head) if head.isdigit() else None


def _keep_best(best: dict[_T, float], key: _T, distance: float) -> None:
    if key not in best or distance < best[key]:
        best[key] = distance
