"""The Rekognition engine against a real boto3 client whose calls are stubbed, never sent to AWS.

botocore's Stubber checks every request against Rekognition's API model, so a
wrong parameter name, type or enum value fails here as it would against AWS.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from django.core.files.base import ContentFile
from PIL import Image

from gallery.models import Event, Face, Match, Photo, Selfie
from matching import engines, services
from matching.engines.base import FoundFace
from matching.engines.rekognition import (
    JPEG_QUALITY,
    MAX_IMAGE_BYTES,
    RekognitionEngine,
    RekognitionError,
    encode,
    make_client,
)
from tests.conftest import ROOT, selfie_row

pytestmark = pytest.mark.django_db

FACE_A = "aaaaaaaa-0000-4000-8000-000000000001"
FACE_B = "bbbbbbbb-0000-4000-8000-000000000002"
SELFIE_FACE = "cccccccc-0000-4000-8000-000000000003"
OTHER_FACE = "dddddddd-0000-4000-8000-000000000004"
IMAGE_ID = "eeeeeeee-0000-4000-8000-000000000005"


# --- Fixtures and helpers -------------------------------------------------------------


@pytest.fixture
def aws(settings, monkeypatch, tmp_path) -> object:
    """Rekognition settings, dummy credentials, and no way to reach a real account."""
    settings.AWS_REKOGNITION_REGION = "us-east-1"
    settings.AWS_REKOGNITION_COLLECTION_PREFIX = "test"
    settings.AWS_REKOGNITION_SIMILARITY = 90.0
    settings.AWS_CONCURRENT_REQUESTS = 4
    settings.AWS_MAX_ATTEMPTS = 3
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.JOBS_SYNC = True
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)
    return settings


@pytest.fixture
def engine(aws) -> RekognitionEngine:
    return RekognitionEngine(client=make_client())


@pytest.fixture
def stubber(engine) -> Iterator[Stubber]:
    with Stubber(engine.client) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def use_engine(aws, engine, monkeypatch) -> RekognitionEngine:
    """matching.services gets our stubbed engine from get_engine()."""
    aws.FACE_BACKEND = "rekognition"
    monkeypatch.setitem(engines._engines, "rekognition", engine)
    return engine


@pytest.fixture
def event() -> Event:
    return Event.objects.create(name="Gala", slug="gala")


def jpeg(size: tuple[int, int] = (400, 300), color: tuple[int, int, int] = (180, 120, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_photo(event: Event, name: str, *, state: str = Photo.State.PENDING, image: bytes | None = None) -> Photo:
    photo = Photo.objects.create(
        event=event, original_name=name, content_hash=hashlib.sha256(name.encode()).hexdigest(), index_state=state
    )
    if image is not None:
        photo.original.save(name, ContentFile(image))
    return photo


def make_selfie(event: Event, *, external_id: str = "", engine: str = "", image: bytes | None = None) -> Selfie:
    selfie = selfie_row(event, external_id=external_id, engine=engine)
    if image is not None:
        selfie.image.save("selfie.jpg", ContentFile(image))
    return selfie


def box(left: float, top: float, width: float, height: float) -> dict:
    return {"Left": left, "Top": top, "Width": width, "Height": height}


def indexed(*faces: tuple[str, str, dict]) -> dict:
    """An IndexFaces response: (FaceId, ExternalImageId, BoundingBox) per face."""
    return {
        "FaceRecords": [
            {
                "Face": {
                    "FaceId": face_id,
                    "BoundingBox": bounding,
                    "ImageId": IMAGE_ID,
                    "ExternalImageId": external,
                    "Confidence": 99.9,
                },
                "FaceDetail": {"BoundingBox": bounding, "Confidence": 99.9},
            }
            for face_id, external, bounding in faces
        ],
        "FaceModelVersion": "7.0",
        "UnindexedFaces": [],
    }


def found(searched: str | None, *matches: tuple[str, float]) -> dict:
    """A SearchFaces(ByImage) response: (ExternalImageId, Similarity) per matched face."""
    response: dict = {
        "FaceMatches": [
            {
                "Similarity": similarity,
                "Face": {
                    "FaceId": f"{n:08x}-1111-4000-8000-000000000000",
                    "BoundingBox": box(0.1, 0.1, 0.2, 0.2),
                    "ImageId": IMAGE_ID,
                    "ExternalImageId": external,
                    "Confidence": 99.0,
                },
            }
            for n, (external, similarity) in enumerate(matches)
        ],
        "FaceModelVersion": "7.0",
    }
    if searched:
        response["SearchedFaceId"] = searched
    return response


def index_params(event: Event, external: str, max_faces: int = 100) -> dict:
    return {
        "CollectionId": f"test-event-{event.pk}",
        "Image": {"Bytes": ANY},
        "ExternalImageId": external,
        "MaxFaces": max_faces,
        "QualityFilter": "AUTO",
        "DetectionAttributes": ["DEFAULT"],
    }


def search_params(event: Event, face_id: str, threshold: float = 90.0) -> dict:
    return {
        "CollectionId": f"test-event-{event.pk}",
        "FaceId": face_id,
        "MaxFaces": 4096,
        "FaceMatchThreshold": threshold,
    }


# --- Indexing photos ------------------------------------------------------------------


def test_index_photo_returns_faces_with_boxes_in_pixels(engine, stubber, event):
    photo = make_photo(event, "two.jpg")
    image = Image.new("RGB", (1000, 800), (90, 90, 90))
    response = indexed(
        (FACE_A, str(photo.pk), box(0.1, 0.2, 0.3, 0.25)),
        # Partly outside the picture: Rekognition's box spills over the edges.
        (FACE_B, str(photo.pk), box(-0.05, 0.9, 0.2, 0.2)),
    )
    stubber.add_response("index_faces", response, index_params(event, str(photo.pk)))

    faces = engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=image)

    assert faces == [
        FoundFace(left=100, top=160, width=300, height=200, external_id=FACE_A),
        FoundFace(left=0, top=720, width=150, height=80, external_id=FACE_B),
    ]
    assert all(face.embedding is None for face in faces)


def test_photo_without_faces_gives_no_faces(engine, stubber, event):
    photo = make_photo(event, "empty.jpg")
    stubber.add_response(
        "index_faces",
        {"FaceRecords": [], "FaceModelVersion": "7.0", "UnindexedFaces": [{"Reasons": ["LOW_SHARPNESS"]}]},
        index_params(event, str(photo.pk)),
    )

    assert engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=Image.new("RGB", (640, 480))) == []


@pytest.mark.parametrize("create_error", [None, "ResourceAlreadyExistsException"])
def test_collection_is_created_on_the_events_first_face(engine, stubber, event, create_error):
    photo = make_photo(event, "first.jpg")
    params = index_params(event, str(photo.pk))
    stubber.add_client_error("index_faces", "ResourceNotFoundException", "no such collection", expected_params=params)
    if create_error:  # another worker created it in between: fine
        stubber.add_client_error(
            "create_collection", create_error, "exists", expected_params={"CollectionId": "test-event-" + str(event.pk)}
        )
    else:
        stubber.add_response(
            "create_collection",
            {"StatusCode": 200, "CollectionArn": "arn:aws:rekognition:us-east-1:123456789012:collection/x"},
            {"CollectionId": f"test-event-{event.pk}"},
        )
    stubber.add_response("index_faces", indexed((FACE_A, str(photo.pk), box(0, 0, 0.5, 0.5))), params)

    faces = engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=Image.new("RGB", (200, 100)))

    assert faces == [FoundFace(left=0, top=0, width=100, height=50, external_id=FACE_A)]


def test_throttling_is_not_retried_by_the_engine_itself(engine, stubber, event):
    """Stubbed errors skip botocore's retry handler: the engine must neither hide nor loop on them."""
    photo = make_photo(event, "busy.jpg")
    params = index_params(event, str(photo.pk))
    stubber.add_client_error("index_faces", "ThrottlingException", "Rate exceeded", expected_params=params)
    stubber.add_response("index_faces", indexed((FACE_A, str(photo.pk), box(0.5, 0.5, 0.1, 0.1))), params)
    image = Image.new("RGB", (100, 100))

    with pytest.raises(ClientError) as raised:
        engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=image)
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    # The next call (a retry of the job) goes through.
    assert [face.external_id for face in engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=image)] == [
        FACE_A
    ]


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **kwargs: object) -> Iterator[bytes]:
        yield self.data


def test_botocore_retries_throttling_with_the_engines_client_config(aws, event, monkeypatch):
    """The real retry path: answers injected at the HTTP layer (before-send), so botocore's retry handler runs."""
    photo = make_photo(event, "retry.jpg")
    engine = RekognitionEngine()  # the client it builds itself, with its retry config
    replies = [
        (400, {"__type": "ThrottlingException", "message": "Rate exceeded"}),
        (400, {"__type": "ProvisionedThroughputExceededException", "message": "Slow down"}),
        (200, indexed((FACE_A, str(photo.pk), box(0.25, 0.25, 0.5, 0.5)))),
    ]
    sent: list[str] = []

    def answer(request, **kwargs: object) -> AWSResponse:
        sent.append(request.headers["X-Amz-Target"].decode())
        status, body = replies[len(sent) - 1]
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "r"}
        return AWSResponse(request.url, status, headers, _Body(json.dumps(body).encode()))

    engine.client.meta.events.register("before-send.rekognition.IndexFaces", answer)
    backoffs: list[float] = []
    monkeypatch.setattr(botocore.endpoint.time, "sleep", backoffs.append)

    faces = engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=Image.new("RGB", (400, 400)))

    assert faces == [FoundFace(left=100, top=100, width=200, height=200, external_id=FACE_A)]
    assert sent == ["RekognitionService.IndexFaces"] * 3
    assert len(backoffs) == 2  # botocore waited before each retry


def test_client_is_made_lazily_with_region_retries_and_pool(aws):
    aws.AWS_REKOGNITION_REGION = "eu-west-1"
    aws.AWS_MAX_ATTEMPTS = 5
    aws.AWS_CONCURRENT_REQUESTS = 12
    engine = RekognitionEngine()
    assert engine._client is None

    client = engine.client

    assert client is engine.client
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 5}
    assert client.meta.config.max_pool_connections >= 12
    # botocore's 60 s defaults would let a silent network hold a job for minutes per try.
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (5, 30)


def test_concurrent_calls_are_bounded_per_process(aws):
    aws.AWS_CONCURRENT_REQUESTS = 2

    class SlowClient:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.active = self.peak = self.calls = 0

        def delete_faces(self, **params: object) -> dict:
            with self.lock:
                self.active += 1
                self.calls += 1
                self.peak = max(self.peak, self.active)
            time.sleep(0.05)
            with self.lock:
                self.active -= 1
            return {"DeletedFaces": params["FaceIds"]}

    client = SlowClient()
    engine = RekognitionEngine(client=client)
    threads = [
        threading.Thread(target=engine.forget_faces, kwargs={"event_id": 1, "external_ids": [FACE_A]}) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert client.calls == 6
    assert client.peak == 2


def test_access_denied_fails_the_photo_with_a_clear_message(use_engine, stubber, event):
    photo = make_photo(event, "denied.jpg", image=jpeg())
    stubber.add_client_error(
        "index_faces",
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/trouvaille is not authorized to perform: rekognition:IndexFaces",
        expected_params=index_params(event, str(photo.pk)),
    )

    assert services.photo_index(photo_id=photo.pk) == "failed"

    photo.refresh_from_db()
    assert photo.index_state == Photo.State.FAILED
    assert photo.index_error.startswith(
        "Unexpected error: RekognitionError: AWS denied access to Rekognition IndexFaces (AccessDeniedException)"
    )
    assert "IAM policy" in photo.index_error
    # Failure texts can reach attendees (selfies): AWS's message naming the account stays out.
    assert "123456789012" not in photo.index_error
    assert not photo.faces.exists()


def test_access_denied_is_a_rekognition_error_wrapping_the_client_error(engine, stubber, event):
    stubber.add_client_error(
        "delete_collection", "AccessDeniedException", "nope", expected_params={"CollectionId": f"test-event-{event.pk}"}
    )
    with pytest.raises(RekognitionError) as raised:
        engine.forget_event(event_id=event.pk)
    assert "DeleteCollection (AccessDeniedException)" in str(raised.value)
    assert isinstance(raised.value.__cause__, ClientError)  # AWS's details, for the logs
    assert raised.value.__cause__.response["Error"]["Message"] == "nope"


# --- Images sent ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "max_side", "sent"),
    [
        ((4000, 3000), 1920, (1920, 1440)),  # no more pixels than Rekognition can use
        ((1000, 800), 1920, (1000, 800)),  # already small enough: untouched
        ((64, 48), 1920, (107, 80)),  # below the 80 px minimum: enlarged
    ],
)
def test_encode_sizes(size, max_side, sent):
    data = encode(Image.new("RGB", size, (10, 200, 30)), max_side=max_side)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert image.size == sent


def test_photo_over_the_byte_limit_is_shrunk_to_fit(aws, event):
    aws.AWS_REKOGNITION_MAX_SIDE = 0  # no pixel cap: only the 5 MB limit applies
    engine = RekognitionEngine(client=make_client())
    photo = make_photo(event, "noise.jpg")
    # Noise does not compress: about 0.9 byte per pixel at our JPEG quality.
    image = Image.frombytes("RGB", (3200, 2400), os.urandom(3200 * 2400 * 3))
    whole = io.BytesIO()
    image.save(whole, format="JPEG", quality=JPEG_QUALITY)
    assert whole.tell() > MAX_IMAGE_BYTES  # the test really starts above the limit

    sent: list[bytes] = []
    engine.client.meta.events.register(
        "provide-client-params.rekognition.IndexFaces", lambda params, **kwargs: sent.append(params["Image"]["Bytes"])
    )
    with Stubber(engine.client) as stubber:
        response = indexed((FACE_A, str(photo.pk), box(0.5, 0.25, 0.25, 0.5)))
        stubber.add_response("index_faces", response, index_params(event, str(photo.pk)))
        faces = engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=image)

    assert len(sent) == 1
    assert len(sent[0]) <= MAX_IMAGE_BYTES
    with Image.open(io.BytesIO(sent[0])) as shrunk:
        assert shrunk.width < 3200
        assert abs(shrunk.width / shrunk.height - 4 / 3) < 0.01
    # Boxes are in pixels of the photo we were given, not of the copy sent.
    assert faces == [FoundFace(left=1600, top=600, width=800, height=1200, external_id=FACE_A)]


# --- Selfies and matching -------------------------------------------------------------


def test_selfie_is_enrolled_then_matched_to_indexed_photos(use_engine, stubber, event):
    best = make_photo(event, "best.jpg", state=Photo.State.INDEXED)
    other = make_photo(event, "other.jpg", state=Photo.State.INDEXED)
    pending = make_photo(event, "pending.jpg", state=Photo.State.PROCESSING)
    selfie = make_selfie(event, image=jpeg((300, 400)))
    stubber.add_response(
        "index_faces",
        indexed((SELFIE_FACE, f"selfie-{selfie.pk}", box(0.2, 0.2, 0.5, 0.5))),
        index_params(event, f"selfie-{selfie.pk}", max_faces=1),
    )
    stubber.add_response(
        "search_faces",
        found(
            SELFIE_FACE,
            (str(best.pk), 99.5),
            (str(best.pk), 97.0),  # the same person twice in one photo: the better face counts
            (str(other.pk), 92.0),
            ("selfie-999", 99.9),  # another attendee's selfie, not a photo
            (str(pending.pk), 98.0),  # being reindexed: its faces are not final yet
            ("424242", 98.0),  # a deleted photo whose faces were not forgotten yet
        ),
        search_params(event, SELFIE_FACE),
    )

    assert services.selfie_match(selfie_id=selfie.pk) == "done"

    selfie.refresh_from_db()
    assert (selfie.engine, selfie.external_id, selfie.match_state) == ("rekognition", SELFIE_FACE, Selfie.State.DONE)
    assert dict(selfie.matches.values_list("photo_id", "distance")) == {best.pk: 0.005, other.pk: 0.08}


def test_selfie_without_a_face_fails_with_the_no_face_message(use_engine, stubber, event):
    selfie = make_selfie(event, image=jpeg((300, 400)))
    stubber.add_response(
        "index_faces",
        {"FaceRecords": [], "FaceModelVersion": "7.0", "UnindexedFaces": []},
        index_params(event, f"selfie-{selfie.pk}", max_faces=1),
    )

    assert services.selfie_match(selfie_id=selfie.pk) == "failed"

    selfie.refresh_from_db()
    assert selfie.match_state == Selfie.State.FAILED
    assert selfie.match_error == services.NO_FACE_MESSAGE
    assert selfie.external_id == ""


def test_tolerance_sets_the_similarity_threshold(engine, stubber, event):
    photo = make_photo(event, "p.jpg", state=Photo.State.INDEXED)
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    stubber.add_response(
        "search_faces", found(SELFIE_FACE, (str(photo.pk), 80.0)), search_params(event, SELFIE_FACE, 75.0)
    )
    stubber.add_response("search_faces", found(SELFIE_FACE), search_params(event, SELFIE_FACE, 0.0))

    assert services.photos_near_selfie(engine=engine, selfie=selfie, tolerance=0.25) == {photo.pk: 0.2}
    assert services.photos_near_selfie(engine=engine, selfie=selfie, tolerance=1.5) == {}  # clamped to 0..100


def test_new_photo_is_matched_to_the_events_enrolled_selfies(use_engine, stubber, event):
    enrolled = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    make_selfie(event, engine="dlib")  # enrolled with another engine: not searched for
    gone = make_selfie(event, external_id=OTHER_FACE, engine="rekognition")
    gone_id = gone.pk
    Selfie.objects.filter(pk=gone_id).delete()  # its face may still sit in the collection
    photo = make_photo(event, "crowd.jpg", image=jpeg((800, 600)))
    stubber.add_response(
        "index_faces",
        indexed((FACE_A, str(photo.pk), box(0.1, 0.1, 0.2, 0.2)), (FACE_B, str(photo.pk), box(0.6, 0.1, 0.2, 0.2))),
        index_params(event, str(photo.pk)),
    )
    stubber.add_response(
        "search_faces",
        found(FACE_A, (f"selfie-{enrolled.pk}", 95.0), ("77", 99.0), (f"selfie-{gone_id}", 99.0)),
        search_params(event, FACE_A),
    )
    stubber.add_response("search_faces", found(FACE_B), search_params(event, FACE_B))

    assert services.photo_index(photo_id=photo.pk) == "indexed"

    photo.refresh_from_db()
    assert (photo.index_state, photo.face_count) == (Photo.State.INDEXED, 2)
    assert sorted(Face.objects.filter(photo=photo).values_list("external_id", "engine", "left")) == [
        (FACE_A, "rekognition", 80),
        (FACE_B, "rekognition", 480),
    ]
    assert list(Match.objects.values_list("selfie_id", "photo_id", "distance")) == [(enrolled.pk, photo.pk, 0.05)]


def test_match_photo_makes_no_call_when_nobody_is_enrolled(engine, stubber, event):
    photo = make_photo(event, "lonely.jpg", state=Photo.State.INDEXED)
    Face.objects.create(photo=photo, left=0, top=0, width=10, height=10, engine="rekognition", external_id=FACE_A)
    make_selfie(event)  # uploaded, not enrolled yet

    # No stubbed response: any AWS call would raise UnStubbedResponseError.
    assert services.selfies_near_photo(engine=engine, photo=photo) == {}


def detected(count: int) -> dict:
    """A DetectFaces response with `count` faces."""
    return {"FaceDetails": [{"BoundingBox": box(0.1 * n, 0.1, 0.1, 0.1), "Confidence": 99.0} for n in range(count)]}


DETECT_PARAMS = {"Image": {"Bytes": ANY}, "Attributes": ["DEFAULT"]}


def test_search_image_finds_photos_and_tolerates_no_collection(engine, stubber, event):
    photo = make_photo(event, "p.jpg", state=Photo.State.INDEXED)
    params = {
        "CollectionId": f"test-event-{event.pk}",
        "Image": {"Bytes": ANY},
        "MaxFaces": 4096,
        "FaceMatchThreshold": 90.0,
        "QualityFilter": "AUTO",
    }
    stubber.add_response("detect_faces", detected(1), DETECT_PARAMS)
    stubber.add_response("search_faces_by_image", found(None, (str(photo.pk), 96.0), ("selfie-3", 99.0)), params)
    stubber.add_response("detect_faces", detected(2), DETECT_PARAMS)
    stubber.add_client_error(
        "search_faces_by_image", "ResourceNotFoundException", "no collection", expected_params=params
    )
    stubber.add_response("detect_faces", detected(1), DETECT_PARAMS)
    stubber.add_client_error("search_faces_by_image", "InternalServerError", "boom", 500, expected_params=params)
    image = Image.new("RGB", (300, 300))

    assert engine.photos_near_image(event_id=event.pk, image=image) == {photo.pk: 0.04}
    assert engine.photos_near_image(event_id=event.pk, image=image) == {}  # nothing indexed yet: no collection
    with pytest.raises(ClientError):  # any other failure is visible
        engine.photos_near_image(event_id=event.pk, image=image)
    stubber.assert_no_pending_responses()


def test_search_image_without_a_face_makes_no_search(engine, stubber, event):
    """ "No face" is known from a face check, never from the wording of an error message."""
    stubber.add_response("detect_faces", {"FaceDetails": []}, DETECT_PARAMS)

    # Only the check is stubbed: a search would raise UnStubbedResponseError.
    assert engine.photos_near_image(event_id=event.pk, image=Image.new("RGB", (300, 300))) == {}
    stubber.assert_no_pending_responses()


def test_search_image_whose_faces_fail_the_quality_filter_finds_nothing(engine, stubber, event):
    """A face found by the check but filtered out by the search: AWS answers InvalidParameterException."""
    stubber.add_response("detect_faces", detected(1), DETECT_PARAMS)
    stubber.add_client_error(
        "search_faces_by_image",
        "InvalidParameterException",
        "any wording at all",
        expected_params={
            "CollectionId": f"test-event-{event.pk}",
            "Image": {"Bytes": ANY},
            "MaxFaces": 4096,
            "FaceMatchThreshold": 90.0,
            "QualityFilter": "AUTO",
        },
    )

    assert engine.photos_near_image(event_id=event.pk, image=Image.new("RGB", (300, 300))) == {}
    stubber.assert_no_pending_responses()


# --- Forgetting -------------------------------------------------------------------------


def test_forget_faces_deletes_in_chunks_of_4096(engine, stubber):
    ids = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(5000)]
    for chunk in (ids[:4096], ids[4096:]):
        stubber.add_response(
            "delete_faces", {"DeletedFaces": chunk}, {"CollectionId": "test-event-7", "FaceIds": chunk}
        )
    engine.forget_faces(event_id=7, external_ids=ids)
    stubber.assert_no_pending_responses()  # both calls made: 4096 ids, then 904

    stubber.add_client_error(
        "delete_faces",
        "ResourceNotFoundException",
        "gone",
        expected_params={"CollectionId": "test-event-8", "FaceIds": [FACE_A]},
    )
    engine.forget_faces(event_id=8, external_ids=[FACE_A])  # the event's collection is already gone: fine
    stubber.assert_no_pending_responses()

    # Nothing to do: any AWS call would raise UnStubbedResponseError.
    engine.forget_faces(event_id=9, external_ids=[])


def test_forget_event_deletes_the_collection_even_if_already_gone(engine, stubber):
    stubber.add_response("delete_collection", {"StatusCode": 200}, {"CollectionId": "test-event-5"})
    stubber.add_client_error(
        "delete_collection", "ResourceNotFoundException", "gone", expected_params={"CollectionId": "test-event-5"}
    )
    stubber.add_client_error(
        "delete_collection",
        "InternalServerError",
        "boom",
        http_status_code=500,
        expected_params={"CollectionId": "test-event-5"},
    )

    engine.forget_event(event_id=5)
    engine.forget_event(event_id=5)  # already gone: no error
    with pytest.raises(ClientError):  # other failures stay visible, so the job is retried
        engine.forget_event(event_id=5)
    stubber.assert_no_pending_responses()  # all three calls were made, with these parameters


# --- Settings that refuse to start ------------------------------------------------------


def _start(**environ: str) -> subprocess.CompletedProcess[str]:
    """Load the settings in a fresh process, as `manage.py` or the workers would."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AWS_", "FACE_"))}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**keep, "DJANGO_SETTINGS_MODULE": "config.settings", "FACE_BACKEND": "rekognition", **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_valid_rekognition_settings_start():
    started = _start(
        AWS_REKOGNITION_QUALITY_FILTER="HIGH",
        AWS_REKOGNITION_SIMILARITY="100",
        AWS_REKOGNITION_COLLECTION_PREFIX="Prod_v2.photos-eu",
        AWS_REKOGNITION_MAX_SIDE="0",
        AWS_CONCURRENT_REQUESTS="1",
    )
    assert started.returncode == 0, started.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AWS_REKOGNITION_QUALITY_FILTER", "auto", "AWS_REKOGNITION_QUALITY_FILTER='auto' must be NONE, AUTO, LOW"),
        ("AWS_REKOGNITION_SIMILARITY", "101", "AWS_REKOGNITION_SIMILARITY=101.0 must be between 0 and 100"),
        ("AWS_REKOGNITION_SIMILARITY", "-1", "AWS_REKOGNITION_SIMILARITY=-1.0 must be between 0 and 100"),
        ("AWS_REKOGNITION_COLLECTION_PREFIX", "my photos", "AWS_REKOGNITION_COLLECTION_PREFIX='my photos' must be"),
        ("AWS_REKOGNITION_COLLECTION_PREFIX", "été", "AWS_REKOGNITION_COLLECTION_PREFIX='été' must be"),
        ("AWS_REKOGNITION_COLLECTION_PREFIX", "x" * 201, "must be 1-200 characters"),
        ("AWS_REKOGNITION_MAX_SIDE", "40", "AWS_REKOGNITION_MAX_SIDE=40 must be 0 (no cap) or at least 80"),
        ("AWS_CONCURRENT_REQUESTS", "0", "AWS_CONCURRENT_REQUESTS=0 must be at least 1"),
        ("AWS_MAX_ATTEMPTS", "0", "AWS_MAX_ATTEMPTS=0 must be at least 1"),
    ],
)
def test_invalid_rekognition_settings_refuse_to_start(name, value, message):
    started = _start(**{name: value})
    assert started.returncode != 0
    assert "ImproperlyConfigured: Invalid Rekognition settings: " in started.stderr
    assert message in started.stderr
