"""The Rekognition engine against a real boto3 client whose calls are stubbed, never sent to AWS.

botocore's Stubber checks every request against Rekognition's API model, so a
wrong parameter name, type or enum value fails here as it would against AWS.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
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
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from gallery.models import Attendee, Event, Face, Match, Photo, Selfie
from matching import engines, services
from matching.engines.base import FoundFace, PhotoFaces
from matching.engines.rekognition import (
    JPEG_QUALITY,
    MAX_IMAGE_BYTES,
    RekognitionEngine,
    RekognitionError,
    encode,
    make_client,
)
from tests.conftest import ROOT, event_admin_form, selfie_row

pytestmark = pytest.mark.django_db

FACE_A = "aaaaaaaa-0000-4000-8000-000000000001"
FACE_B = "bbbbbbbb-0000-4000-8000-000000000002"
SELFIE_FACE = "cccccccc-0000-4000-8000-000000000003"
OTHER_FACE = "dddddddd-0000-4000-8000-000000000004"
IMAGE_ID = "eeeeeeee-0000-4000-8000-000000000005"
FACE_C = "ffffffff-0000-4000-8000-000000000006"


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
def serial(aws) -> None:
    """One call at a time, so stubbed answers are consumed in order (concurrency is tested with a fake client)."""
    aws.AWS_CONCURRENT_REQUESTS = 1


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


def make_selfie(
    event: Event,
    *,
    external_id: str = "",
    engine: str = "",
    image: bytes | None = None,
    attendee: Attendee | None = None,
) -> Selfie:
    if attendee is None:
        selfie = selfie_row(event, external_id=external_id, engine=engine)
    else:
        selfie = Selfie.objects.create(
            event=event, attendee=attendee, consent_at=timezone.now(), external_id=external_id, engine=engine
        )
    if image is not None:
        selfie.image.save("selfie.jpg", ContentFile(image))
    return selfie


def user(selfie: Selfie) -> str:
    """The Rekognition UserId of the selfie's attendee."""
    return f"attendee-{selfie.attendee_id}"


class PhotoRun:
    """Equal to a photo's per-run ExternalImageId, "<photo id>:<12 hex digits>"."""

    def __init__(self, photo_id: int) -> None:
        self.pattern = re.compile(rf"{photo_id}:[0-9a-f]{{12}}")
        self.seen: list[str] = []

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str) and self.pattern.fullmatch(other):
            self.seen.append(other)
            return True
        return False

    def __repr__(self) -> str:
        return f"<PhotoRun {self.pattern.pattern}>"


def box(left: float, top: float, width: float, height: float) -> dict:
    return {"Left": left, "Top": top, "Width": width, "Height": height}


def indexed(*faces: tuple[str, str, dict], unindexed: tuple[list[str], ...] = ()) -> dict:
    """An IndexFaces response: (FaceId, ExternalImageId, BoundingBox) per face, and left-out faces' reasons."""
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
        "UnindexedFaces": [
            {"Reasons": reasons, "FaceDetail": {"BoundingBox": box(0.9, 0.9, 0.01, 0.01), "Confidence": 80.0}}
            for reasons in unindexed
        ],
    }


def match_face_id(n: int) -> str:
    """The FaceId `found` gives its n-th match."""
    return f"{n:08x}-1111-4000-8000-000000000000"


def found(searched: str | None, *matches: tuple[str, float] | tuple[str, float, str]) -> dict:
    """A SearchFaces(ByImage) response: (ExternalImageId, Similarity[, UserId]) per matched face."""
    response: dict = {
        "FaceMatches": [
            {
                "Similarity": match[1],
                "Face": {
                    "FaceId": match_face_id(n),
                    "BoundingBox": box(0.1, 0.1, 0.2, 0.2),
                    "ImageId": IMAGE_ID,
                    "ExternalImageId": match[0],
                    "Confidence": 99.0,
                    **({"UserId": match[2]} if len(match) > 2 else {}),
                },
            }
            for n, match in enumerate(matches)
        ],
        "FaceModelVersion": "7.0",
    }
    if searched:
        response["SearchedFaceId"] = searched
    return response


def index_params(event: Event, external: str | PhotoRun, max_faces: int = 100) -> dict:
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


def users_found(*matches: tuple[str, float]) -> dict:
    """A SearchUsers response: (UserId, Similarity) per user, best first."""
    return {
        "UserMatches": [{"Similarity": sim, "User": {"UserId": uid, "UserStatus": "ACTIVE"}} for uid, sim in matches],
        "FaceModelVersion": "7.0",
    }


def search_users_params(event: Event, face_id: str, threshold: float = 90.0) -> dict:
    return {"CollectionId": f"test-event-{event.pk}", "FaceId": face_id, "UserMatchThreshold": threshold, "MaxUsers": 1}


def associate_params(event: Event, user_id: str, face_id: str) -> dict:
    return {"CollectionId": f"test-event-{event.pk}", "UserId": user_id, "FaceIds": [face_id]}


def associated(face_id: str, *, not_found: bool = False) -> dict:
    if not_found:
        return {
            "AssociatedFaces": [],
            "UnsuccessfulFaceAssociations": [{"FaceId": face_id, "Reasons": ["FACE_NOT_FOUND"]}],
            "UserStatus": "ACTIVE",
        }
    return {"AssociatedFaces": [{"FaceId": face_id}], "UnsuccessfulFaceAssociations": [], "UserStatus": "UPDATING"}


# --- Indexing photos ------------------------------------------------------------------


def test_index_photo_returns_faces_with_boxes_in_pixels(engine, stubber, event):
    photo = make_photo(event, "two.jpg")
    image = Image.new("RGB", (1000, 800), (90, 90, 90))
    response = indexed(
        (FACE_A, str(photo.pk), box(0.1, 0.2, 0.3, 0.25)),
        # Partly outside the picture: Rekognition's box spills over the edges.
        (FACE_B, str(photo.pk), box(-0.05, 0.9, 0.2, 0.2)),
    )
    stubber.add_response("index_faces", response, index_params(event, PhotoRun(photo.pk)))

    faces = engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=image).faces

    assert faces == [
        FoundFace(left=100, top=160, width=300, height=200, external_id=FACE_A),
        FoundFace(left=0, top=720, width=150, height=80, external_id=FACE_B),
    ]
    assert all(face.embedding is None for face in faces)


def test_photo_without_kept_faces_reports_the_faces_left_out(engine, stubber, event):
    photo = make_photo(event, "blurry.jpg")
    stubber.add_response(
        "index_faces",
        indexed(unindexed=(["LOW_SHARPNESS"], ["LOW_SHARPNESS", "SMALL_BOUNDING_BOX"])),
        index_params(event, PhotoRun(photo.pk)),
    )

    result = engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=Image.new("RGB", (640, 480)))

    assert result == PhotoFaces(faces=[], left_out_count=2, left_out={"LOW_SHARPNESS": 2, "SMALL_BOUNDING_BOX": 1})


def test_faces_beyond_the_100_largest_are_recorded_on_the_photo_and_shown_in_the_admin(
    use_engine, stubber, event, admin_client
):
    """IndexFaces keeps the 100 largest faces; the others come back in UnindexedFaces, counted on the photo."""
    photo = make_photo(event, "stadium.jpg", image=jpeg((1000, 800)))
    kept = [
        (f"{n:08x}-2222-4000-8000-000000000000", str(photo.pk), box(0.01 * (n % 90), 0.5, 0.01, 0.01))
        for n in range(100)
    ]
    left_out = (["EXCEEDS_MAX_FACES"],) * 7 + (["EXCEEDS_MAX_FACES", "LOW_SHARPNESS"],) * 2
    stubber.add_response("index_faces", indexed(*kept, unindexed=left_out), index_params(event, PhotoRun(photo.pk)))

    assert services.photo_index(photo_id=photo.pk) == "indexed"  # nobody enrolled: no search

    photo.refresh_from_db()
    assert (photo.face_count, photo.faces_left_out) == (100, 9)
    assert photo.faces_left_out_reasons == {"EXCEEDS_MAX_FACES": 9, "LOW_SHARPNESS": 2}
    page = admin_client.get(reverse("admin:gallery_photo_change", args=[photo.pk])).content.decode()
    assert "EXCEEDS_MAX_FACES: 9, LOW_SHARPNESS: 2" in page
    listing = admin_client.get(reverse("admin:gallery_photo_changelist")).content.decode()
    assert "100 (+9 left out)" in listing


def test_each_indexing_run_keeps_faces_of_its_own(engine, stubber, event):
    """IndexFaces returns the FaceIds it already has for the same image and ExternalImageId: runs must differ."""
    photo = make_photo(event, "twice.jpg")
    run = PhotoRun(photo.pk)
    for face_id in (FACE_A, FACE_B):
        stubber.add_response("index_faces", indexed((face_id, "x", box(0, 0, 0.5, 0.5))), index_params(event, run))
    image = Image.new("RGB", (200, 100))

    engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=image)
    engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=image)

    assert len(run.seen) == 2 and run.seen[0] != run.seen[1]


def test_a_superseded_indexing_run_forgets_only_its_own_faces(use_engine, stubber, event, monkeypatch):
    """A reindex races a stale job: the run that loses must not delete the faces the winner's rows point to."""
    photo = make_photo(event, "raced.jpg", image=jpeg((800, 600)))
    forgotten: list[tuple[int, list]] = []
    monkeypatch.setattr(
        services.jobs, "enqueue_forget", lambda event_id, faces: forgotten.append((event_id, list(faces)))
    )

    def the_other_run_wins(**kwargs: object) -> None:
        # While this run waits for AWS, the other one commits its faces (its own run id gave it FACE_B).
        Photo.objects.filter(pk=photo.pk).update(index_state=Photo.State.INDEXED)
        Face.objects.create(photo=photo, left=0, top=0, width=9, height=9, engine="rekognition", external_id=FACE_B)

    use_engine.client.meta.events.register("before-parameter-build.rekognition.IndexFaces", the_other_run_wins)
    stubber.add_response(
        "index_faces", indexed((FACE_A, "x", box(0, 0, 0.5, 0.5))), index_params(event, PhotoRun(photo.pk))
    )

    assert services.photo_index(photo_id=photo.pk) == "superseded"

    assert forgotten == [(event.pk, [("rekognition", FACE_A)])]
    assert list(photo.faces.values_list("external_id", flat=True)) == [FACE_B]


@pytest.mark.parametrize("create_error", [None, "ResourceAlreadyExistsException"])
def test_collection_is_created_on_the_events_first_face(engine, stubber, event, create_error):
    photo = make_photo(event, "first.jpg")
    params = index_params(event, PhotoRun(photo.pk))
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

    faces = engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=Image.new("RGB", (200, 100))).faces

    assert faces == [FoundFace(left=0, top=0, width=100, height=50, external_id=FACE_A)]
    first, retry = params["ExternalImageId"].seen
    assert first == retry  # one run: the retry after creating the collection is the same run


def test_throttling_is_not_retried_by_the_engine_itself(engine, stubber, event):
    """Stubbed errors skip botocore's retry handler: the engine must neither hide nor loop on them."""
    photo = make_photo(event, "busy.jpg")
    params = index_params(event, PhotoRun(photo.pk))
    stubber.add_client_error("index_faces", "ThrottlingException", "Rate exceeded", expected_params=params)
    stubber.add_response("index_faces", indexed((FACE_A, str(photo.pk), box(0.5, 0.5, 0.1, 0.1))), params)
    image = Image.new("RGB", (100, 100))

    with pytest.raises(ClientError) as raised:
        engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=image)
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    # The next call (a retry of the job) goes through.
    assert [
        face.external_id for face in engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=image).faces
    ] == [FACE_A]


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

    faces = engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=Image.new("RGB", (400, 400))).faces

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
        expected_params=index_params(event, PhotoRun(photo.pk)),
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
        stubber.add_response("index_faces", response, index_params(event, PhotoRun(photo.pk)))
        faces = engine.index_photo(event_id=event.pk, photo_id=photo.pk, image=image).faces

    assert len(sent) == 1
    assert len(sent[0]) <= MAX_IMAGE_BYTES
    with Image.open(io.BytesIO(sent[0])) as shrunk:
        assert shrunk.width < 3200
        assert abs(shrunk.width / shrunk.height - 4 / 3) < 0.01
    # Boxes are in pixels of the photo we were given, not of the copy sent.
    assert faces == [FoundFace(left=1600, top=600, width=800, height=1200, external_id=FACE_A)]


# --- Selfies, users and matching --------------------------------------------------------


def test_selfie_is_enrolled_joins_a_new_user_and_is_matched_to_indexed_photos(use_engine, stubber, event):
    best = make_photo(event, "best.jpg", state=Photo.State.INDEXED)
    other = make_photo(event, "other.jpg", state=Photo.State.INDEXED)
    pending = make_photo(event, "pending.jpg", state=Photo.State.PROCESSING)
    selfie = make_selfie(event, image=jpeg((300, 400)))
    stubber.add_response(
        "index_faces",
        indexed((SELFIE_FACE, f"selfie-{selfie.pk}", box(0.2, 0.2, 0.5, 0.5))),
        index_params(event, f"selfie-{selfie.pk}", max_faces=1),
    )
    # The attendee's first selfie: no user yet, so it is created, then the face joins it.
    stubber.add_client_error(
        "associate_faces",
        "ResourceNotFoundException",
        "user not found",
        expected_params=associate_params(event, user(selfie), SELFIE_FACE),
    )
    stubber.add_response("create_user", {}, {"CollectionId": f"test-event-{event.pk}", "UserId": user(selfie)})
    stubber.add_response("associate_faces", associated(SELFIE_FACE), associate_params(event, user(selfie), SELFIE_FACE))
    stubber.add_response(
        "search_faces",
        found(
            SELFIE_FACE,
            (f"{best.pk}:0123456789ab", 99.5),
            (f"{best.pk}:0123456789ab", 97.0),  # the same person twice in one photo: the better face counts
            (str(other.pk), 92.0),  # indexed before runs had ids of their own
            (f"selfie-{selfie.pk}", 99.9, user(selfie)),  # their own selfie face
            (f"{pending.pk}:0123456789ab", 98.0),  # being reindexed: its faces are not final yet
            ("424242:0123456789ab", 98.0),  # a deleted photo whose faces were not forgotten yet
        ),
        search_params(event, SELFIE_FACE),
    )

    assert services.selfie_match(selfie_id=selfie.pk) == "done"

    stubber.assert_no_pending_responses()
    selfie.refresh_from_db()
    assert (selfie.engine, selfie.external_id, selfie.match_state) == ("rekognition", SELFIE_FACE, Selfie.State.DONE)
    assert dict(selfie.matches.values_list("photo_id", "distance")) == {best.pk: 0.005, other.pk: 0.08}
    assert not selfie.search_limit_reached


def test_a_second_selfie_joins_the_attendees_existing_user(use_engine, stubber, event):
    first = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    second = make_selfie(event, image=jpeg((300, 400)), attendee=first.attendee)
    stubber.add_response(
        "index_faces",
        indexed((OTHER_FACE, f"selfie-{second.pk}", box(0.2, 0.2, 0.5, 0.5))),
        index_params(event, f"selfie-{second.pk}", max_faces=1),
    )
    stubber.add_response("associate_faces", associated(OTHER_FACE), associate_params(event, user(first), OTHER_FACE))
    stubber.add_response("search_faces", found(OTHER_FACE), search_params(event, OTHER_FACE))

    assert services.selfie_match(selfie_id=second.pk) == "done"
    stubber.assert_no_pending_responses()  # no CreateUser: the user exists


def test_concurrent_first_selfies_of_one_attendee_share_the_user(engine, stubber, event):
    """The other selfie's job created the user between our AssociateFaces and CreateUser: ConflictException."""
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    params = associate_params(event, user(selfie), SELFIE_FACE)
    stubber.add_client_error("associate_faces", "ResourceNotFoundException", "no user", expected_params=params)
    stubber.add_client_error(
        "create_user",
        "ConflictException",
        "exists",
        expected_params={"CollectionId": f"test-event-{event.pk}", "UserId": user(selfie)},
    )
    stubber.add_response("associate_faces", associated(SELFIE_FACE), params)

    engine.person_add_face(event_id=event.pk, person_id=user(selfie), face_id=SELFIE_FACE)
    stubber.assert_no_pending_responses()


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
    for threshold, matches in ((75.0, ((str(photo.pk), 80.0),)), (0.0, ())):
        stubber.add_response(
            "associate_faces", associated(SELFIE_FACE), associate_params(event, user(selfie), SELFIE_FACE)
        )
        stubber.add_response("search_faces", found(SELFIE_FACE, *matches), search_params(event, SELFIE_FACE, threshold))

    assert services.photos_near_selfie(engine=engine, selfie=selfie, tolerance=0.25) == {photo.pk: 0.2}
    assert services.photos_near_selfie(engine=engine, selfie=selfie, tolerance=1.5) == {}  # clamped to 0..100
    stubber.assert_no_pending_responses()


def test_the_events_similarity_is_the_threshold_of_every_search(engine, stubber, event, serial):
    """Event.face_similarity reaches FaceMatchThreshold and UserMatchThreshold as is (no distance conversion)."""
    Event.objects.filter(pk=event.pk).update(face_similarity=72.5)
    photo = make_photo(event, "p.jpg", state=Photo.State.INDEXED)
    Face.objects.create(photo=photo, left=0, top=0, width=10, height=10, engine="rekognition", external_id=FACE_A)
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    # A selfie's search, with a lookalike so the photo face is confirmed with SearchUsers too.
    stubber.add_response("associate_faces", associated(SELFIE_FACE), associate_params(event, user(selfie), SELFIE_FACE))
    stubber.add_response(
        "search_faces",
        found(SELFIE_FACE, (f"{photo.pk}:0123456789ab", 74.0), ("selfie-77", 73.0, "attendee-77")),
        search_params(event, SELFIE_FACE, 72.5),
    )
    stubber.add_response(
        "search_users", users_found((user(selfie), 74.0)), search_users_params(event, match_face_id(0), 72.5)
    )
    # A photo's search for its people.
    stubber.add_response("search_users", users_found((user(selfie), 74.0)), search_users_params(event, FACE_A, 72.5))
    # A search by image (find_faces).
    stubber.add_response("detect_faces", detected(1), DETECT_PARAMS)
    stubber.add_response(
        "search_faces_by_image",
        found(None, (str(photo.pk), 74.0)),
        {
            "CollectionId": f"test-event-{event.pk}",
            "Image": {"Bytes": ANY},
            "MaxFaces": 4096,
            "FaceMatchThreshold": 72.5,
            "QualityFilter": "AUTO",
        },
    )

    assert services.photos_near_selfie(engine=engine, selfie=selfie) == {photo.pk: 0.26}
    assert services.selfies_near_photo(engine=engine, photo=photo) == {selfie.pk: 0.26}
    image = Image.new("RGB", (300, 300))
    assert services.photos_near_image(engine=engine, event_id=event.pk, image=image) == {photo.pk: 0.26}
    stubber.assert_no_pending_responses()


def test_without_an_event_similarity_the_server_setting_is_the_threshold(engine, stubber, event):
    photo = make_photo(event, "p.jpg", state=Photo.State.INDEXED)
    Face.objects.create(photo=photo, left=0, top=0, width=10, height=10, engine="rekognition", external_id=FACE_A)
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    other = Event.objects.create(name="Other", slug="other", face_similarity=60.0)  # not this event's
    assert event.face_similarity is None and other.face_similarity == 60.0
    stubber.add_response("associate_faces", associated(SELFIE_FACE), associate_params(event, user(selfie), SELFIE_FACE))
    stubber.add_response(
        "search_faces", found(SELFIE_FACE, (f"{photo.pk}:0123456789ab", 95.0)), search_params(event, SELFIE_FACE, 90.0)
    )
    stubber.add_response("search_users", users_found((user(selfie), 95.0)), search_users_params(event, FACE_A, 90.0))

    assert services.photos_near_selfie(engine=engine, selfie=selfie) == {photo.pk: 0.05}
    assert services.selfies_near_photo(engine=engine, photo=photo) == {selfie.pk: 0.05}
    stubber.assert_no_pending_responses()


def test_an_explicit_tolerance_overrides_the_events_similarity(engine, stubber, event):
    """find_faces --tolerance T asks for (1 - T) x 100 whatever the event's own similarity."""
    Event.objects.filter(pk=event.pk).update(face_similarity=72.5)
    photo = make_photo(event, "p.jpg", state=Photo.State.INDEXED)
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    stubber.add_response("associate_faces", associated(SELFIE_FACE), associate_params(event, user(selfie), SELFIE_FACE))
    stubber.add_response(
        "search_faces", found(SELFIE_FACE, (f"{photo.pk}:0123456789ab", 80.0)), search_params(event, SELFIE_FACE, 75.0)
    )

    assert services.photos_near_selfie(engine=engine, selfie=selfie, tolerance=0.25) == {photo.pk: 0.2}
    stubber.assert_no_pending_responses()


def test_changing_the_events_similarity_in_the_admin_matches_its_selfies_again(
    use_engine, stubber, event, admin_client, run_jobs
):
    photo = make_photo(event, "p.jpg", state=Photo.State.INDEXED)
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition", image=jpeg((300, 400)))
    stubber.add_response("associate_faces", associated(SELFIE_FACE), associate_params(event, user(selfie), SELFIE_FACE))
    stubber.add_response(
        "search_faces", found(SELFIE_FACE, (f"{photo.pk}:0123456789ab", 71.0)), search_params(event, SELFIE_FACE, 70.0)
    )
    form = event_admin_form(event, face_similarity="70")
    with run_jobs():
        response = admin_client.post(reverse("admin:gallery_event_change", args=[event.pk]), form)

    assert response.status_code == 302, response.context_data["adminform"].form.errors
    assert Event.objects.get().face_similarity == 70.0
    selfie.refresh_from_db()
    assert selfie.match_state == Selfie.State.DONE
    assert list(Match.objects.values_list("selfie_id", "photo_id", "distance")) == [(selfie.pk, photo.pk, 0.29)]
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize("value", ["-1", "100.5"])
def test_the_admin_refuses_a_similarity_outside_0_to_100(event, admin_client, value):
    form = event_admin_form(event, face_similarity=value)
    response = admin_client.post(reverse("admin:gallery_event_change", args=[event.pk]), form)

    assert response.status_code == 200
    assert "face_similarity" in response.context_data["adminform"].form.errors
    assert Event.objects.get().face_similarity is None


def test_search_limit_of_4096_faces_is_logged_and_shown_in_the_admin(use_engine, stubber, event, caplog, admin_client):
    """SearchFaces returns at most 4,096 faces and cannot page: reaching it must not go unnoticed."""
    photo = make_photo(event, "p.jpg", state=Photo.State.INDEXED)
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    Selfie.objects.filter(pk=selfie.pk).update(match_state=Selfie.State.PENDING)
    stubber.add_response("associate_faces", associated(SELFIE_FACE), associate_params(event, user(selfie), SELFIE_FACE))
    full = found(SELFIE_FACE, *[(f"{photo.pk}:0123456789ab", 99.0 - n / 1000) for n in range(4096)])
    stubber.add_response("search_faces", full, search_params(event, SELFIE_FACE))

    with caplog.at_level("WARNING", logger="trouvaille.matching"):
        assert services.selfie_match(selfie_id=selfie.pk) == "done"

    selfie.refresh_from_db()
    assert selfie.search_limit_reached
    assert "returned its maximum of 4096 faces" in caplog.text
    assert dict(selfie.matches.values_list("photo_id", "distance")) == {photo.pk: 0.01}
    listing = admin_client.get(reverse("admin:gallery_selfie_changelist") + "?search_limit_reached__exact=1")
    assert f"/admin/gallery/selfie/{selfie.pk}/change/" in listing.content.decode()


def test_a_photo_face_a_lookalike_resembles_more_is_not_given_to_the_selfie(engine, stubber, event, serial):
    """One person per face: with a lookalike enrolled, each photo face found is confirmed with SearchUsers."""
    mine = make_photo(event, "mine.jpg", state=Photo.State.INDEXED)
    theirs = make_photo(event, "theirs.jpg", state=Photo.State.INDEXED)
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    stubber.add_response("associate_faces", associated(SELFIE_FACE), associate_params(event, user(selfie), SELFIE_FACE))
    stubber.add_response(
        "search_faces",
        found(
            SELFIE_FACE,
            (f"{mine.pk}:0123456789ab", 97.0),
            (f"{theirs.pk}:0123456789ab", 93.0),
            ("selfie-77", 91.0, "attendee-77"),  # another attendee's selfie: a lookalike
        ),
        search_params(event, SELFIE_FACE),
    )
    stubber.add_response(
        "search_users", users_found((user(selfie), 97.0)), search_users_params(event, match_face_id(0))
    )
    stubber.add_response(
        "search_users", users_found(("attendee-77", 98.5)), search_users_params(event, match_face_id(1))
    )

    assert services.photos_near_selfie(engine=engine, selfie=selfie) == {mine.pk: 0.03}
    stubber.assert_no_pending_responses()


def test_without_a_lookalike_no_confirmation_is_made(engine, stubber, event):
    photo = make_photo(event, "p.jpg", state=Photo.State.INDEXED)
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    stubber.add_response("associate_faces", associated(SELFIE_FACE), associate_params(event, user(selfie), SELFIE_FACE))
    stubber.add_response(
        "search_faces",
        found(SELFIE_FACE, (f"{photo.pk}:0123456789ab", 95.0), ("selfie-1", 92.0)),  # a selfie face in no user
        search_params(event, SELFIE_FACE),
    )

    # No SearchUsers stubbed: a confirmation would raise UnStubbedResponseError.
    assert services.photos_near_selfie(engine=engine, selfie=selfie) == {photo.pk: 0.05}


@pytest.mark.parametrize("lost_at", ["associate", "search", "collection"])
def test_a_selfie_whose_remote_face_is_gone_is_enrolled_again(use_engine, stubber, event, lost_at):
    """Deleted outside our jobs, the face no longer exists: the stored selfie is enrolled again, not failed."""
    photo = make_photo(event, "p.jpg", state=Photo.State.INDEXED)
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition", image=jpeg((300, 400)))
    Selfie.objects.filter(pk=selfie.pk).update(match_state=Selfie.State.PENDING)
    collection = {"CollectionId": f"test-event-{event.pk}"}
    if lost_at == "associate":
        stubber.add_response(
            "associate_faces",
            associated(SELFIE_FACE, not_found=True),
            associate_params(event, user(selfie), SELFIE_FACE),
        )
    else:
        stubber.add_response(
            "associate_faces", associated(SELFIE_FACE), associate_params(event, user(selfie), SELFIE_FACE)
        )
        code = "InvalidParameterException" if lost_at == "search" else "ResourceNotFoundException"
        stubber.add_client_error(
            "search_faces", code, "face or collection gone", expected_params=search_params(event, SELFIE_FACE)
        )
    enroll = index_params(event, f"selfie-{selfie.pk}", max_faces=1)
    if lost_at == "collection":  # the collection went with the face, and the user with it
        stubber.add_client_error("index_faces", "ResourceNotFoundException", "no collection", expected_params=enroll)
        stubber.add_response("create_collection", {"StatusCode": 200}, collection)
    stubber.add_response("index_faces", indexed((OTHER_FACE, f"selfie-{selfie.pk}", box(0.2, 0.2, 0.5, 0.5))), enroll)
    if lost_at == "collection":
        stubber.add_client_error(
            "associate_faces",
            "ResourceNotFoundException",
            "no user",
            expected_params=associate_params(event, user(selfie), OTHER_FACE),
        )
        stubber.add_response("create_user", {}, {**collection, "UserId": user(selfie)})
    stubber.add_response("associate_faces", associated(OTHER_FACE), associate_params(event, user(selfie), OTHER_FACE))
    stubber.add_response(
        "search_faces", found(OTHER_FACE, (f"{photo.pk}:0123456789ab", 96.0)), search_params(event, OTHER_FACE)
    )

    assert services.selfie_match(selfie_id=selfie.pk) == "done"

    stubber.assert_no_pending_responses()
    selfie.refresh_from_db()
    assert (selfie.external_id, selfie.match_state) == (OTHER_FACE, Selfie.State.DONE)
    assert dict(selfie.matches.values_list("photo_id", "distance")) == {photo.pk: 0.04}


def test_rematch_re_enrolls_a_selfie_whose_remote_face_is_gone(use_engine, stubber, event, run_jobs):
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition", image=jpeg((300, 400)))
    Selfie.objects.filter(pk=selfie.pk).update(match_state=Selfie.State.DONE)
    stubber.add_response(
        "associate_faces", associated(SELFIE_FACE, not_found=True), associate_params(event, user(selfie), SELFIE_FACE)
    )
    stubber.add_response(
        "index_faces",
        indexed((OTHER_FACE, f"selfie-{selfie.pk}", box(0.2, 0.2, 0.5, 0.5))),
        index_params(event, f"selfie-{selfie.pk}", max_faces=1),
    )
    stubber.add_response("associate_faces", associated(OTHER_FACE), associate_params(event, user(selfie), OTHER_FACE))
    stubber.add_response("search_faces", found(OTHER_FACE), search_params(event, OTHER_FACE))
    # The lost face is forgotten too; AWS no longer has it, which is fine.
    stubber.add_response(
        "delete_faces",
        {"UnsuccessfulFaceDeletions": [{"FaceId": SELFIE_FACE, "Reasons": ["FACE_NOT_FOUND"]}]},
        {"CollectionId": f"test-event-{event.pk}", "FaceIds": [SELFIE_FACE]},
    )

    with run_jobs():
        call_command("rematch", event.slug, stdout=io.StringIO())

    stubber.assert_no_pending_responses()
    selfie.refresh_from_db()
    assert (selfie.external_id, selfie.match_state) == (OTHER_FACE, Selfie.State.DONE)


def test_each_photo_face_goes_to_the_one_best_user(use_engine, stubber, event, serial):
    """SearchUsers per face, MaxUsers=1: a face is given to one attendee, recorded for each of their selfies."""
    ana = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    ana_again = make_selfie(event, external_id=OTHER_FACE, engine="rekognition", attendee=ana.attendee)
    bob = make_selfie(event, external_id=FACE_C, engine="rekognition")
    make_selfie(event, engine="dlib")  # enrolled with another engine: not searched for
    photo = make_photo(event, "crowd.jpg", image=jpeg((800, 600)))
    stubber.add_response(
        "index_faces",
        indexed((FACE_A, str(photo.pk), box(0.1, 0.1, 0.2, 0.2)), (FACE_B, str(photo.pk), box(0.6, 0.1, 0.2, 0.2))),
        index_params(event, PhotoRun(photo.pk)),
    )
    # Ana is the best user for face A (MaxUsers=1: Bob, second best, is not even returned).
    stubber.add_response("search_users", users_found((user(ana), 95.0)), search_users_params(event, FACE_A))
    # A deleted attendee's user, still in the collection until its faces are forgotten.
    stubber.add_response("search_users", users_found(("attendee-424242", 99.0)), search_users_params(event, FACE_B))

    assert services.photo_index(photo_id=photo.pk) == "indexed"

    photo.refresh_from_db()
    assert (photo.index_state, photo.face_count, photo.faces_left_out) == (Photo.State.INDEXED, 2, 0)
    assert sorted(Face.objects.filter(photo=photo).values_list("external_id", "engine", "left")) == [
        (FACE_A, "rekognition", 80),
        (FACE_B, "rekognition", 480),
    ]
    assert sorted(Match.objects.values_list("selfie_id", "photo_id", "distance")) == [
        (ana.pk, photo.pk, 0.05),
        (ana_again.pk, photo.pk, 0.05),
    ]
    assert bob.matches.count() == 0


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


def test_search_image_reaching_the_4096_limit_is_logged(engine, stubber, event, caplog):
    photo = make_photo(event, "p.jpg", state=Photo.State.INDEXED)
    stubber.add_response("detect_faces", detected(1), DETECT_PARAMS)
    full = found(None, *[(f"{photo.pk}:0123456789ab", 99.0 - n / 1000) for n in range(4096)])
    stubber.add_response(
        "search_faces_by_image",
        full,
        {
            "CollectionId": f"test-event-{event.pk}",
            "Image": {"Bytes": ANY},
            "MaxFaces": 4096,
            "FaceMatchThreshold": 90.0,
            "QualityFilter": "AUTO",
        },
    )

    with caplog.at_level("WARNING", logger="trouvaille.matching"):
        assert engine.photos_near_image(event_id=event.pk, image=Image.new("RGB", (300, 300))) == {photo.pk: 0.01}
    assert "SearchFacesByImage in event" in caplog.text and "maximum of 4096 faces" in caplog.text


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


def test_forget_faces_takes_selfie_faces_out_of_their_user_first(engine, stubber):
    """DeleteFaces refuses a face that belongs to a user (ASSOCIATED_TO_AN_EXISTING_USER)."""
    collection = {"CollectionId": "test-event-7"}
    stubber.add_response(
        "delete_faces",
        {
            "DeletedFaces": [FACE_A],
            "UnsuccessfulFaceDeletions": [
                {"FaceId": SELFIE_FACE, "UserId": "attendee-3", "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"]},
                {"FaceId": OTHER_FACE, "Reasons": ["FACE_NOT_FOUND"]},  # already gone: nothing to do
            ],
        },
        {**collection, "FaceIds": [FACE_A, SELFIE_FACE, OTHER_FACE]},
    )
    stubber.add_response(
        "disassociate_faces",
        {"DisassociatedFaces": [{"FaceId": SELFIE_FACE}], "UserStatus": "UPDATING"},
        {**collection, "UserId": "attendee-3", "FaceIds": [SELFIE_FACE]},
    )
    stubber.add_response("delete_faces", {"DeletedFaces": [SELFIE_FACE]}, {**collection, "FaceIds": [SELFIE_FACE]})

    engine.forget_faces(event_id=7, external_ids=[FACE_A, SELFIE_FACE, OTHER_FACE])

    stubber.assert_no_pending_responses()


class PeopleClient:
    """A stand-in client answering SearchUsers by FaceId, slowly, counting calls in flight."""

    def __init__(self, answers: dict[str, tuple[str, float] | None], delay: float = 0.02) -> None:
        self.answers, self.delay = answers, delay
        self.lock = threading.Lock()
        self.active = self.peak = 0

    def search_users(self, **params: object) -> dict:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
        answer = self.answers[str(params["FaceId"])]
        return users_found(answer) if answer else users_found()


def test_a_photos_face_searches_run_concurrently_within_the_limit(aws):
    aws.AWS_CONCURRENT_REQUESTS = 3
    face_ids = [f"{n:08x}-3333-4000-8000-000000000000" for n in range(12)]
    answers = {face_id: (f"attendee-{n % 4}", 88.0 + n) if n % 4 else None for n, face_id in enumerate(face_ids)}
    client = PeopleClient(answers)

    found_people = RekognitionEngine(client=client).people_near_faces(event_id=1, face_ids=face_ids)

    assert client.peak == 3  # concurrent, and never more than AWS_CONCURRENT_REQUESTS
    # Each face's answer is its own (faces 0, 4 and 8 match nobody); the best distance per person.
    assert found_people == {"attendee-1": 0.03, "attendee-2": 0.02, "attendee-3": 0.01}


def test_searches_past_half_of_q_timeout_stop_and_the_photo_stays_indexed(use_engine, event, settings, caplog):
    """100 searches under throttling could outlast Q_TIMEOUT; the job stops first and says how to finish."""
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 0.2}  # a budget of 0.1 s
    settings.AWS_CONCURRENT_REQUESTS = 1
    selfie = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    photo = make_photo(event, "crowd.jpg", image=jpeg((800, 600)))
    face_ids = [f"{n:08x}-4444-4000-8000-000000000000" for n in range(20)]
    client = PeopleClient(dict.fromkeys(face_ids, (user(selfie), 95.0)), delay=0.03)
    client.index_faces = lambda **params: indexed(
        *[(f, "x", box(0.04 * n, 0.1, 0.03, 0.03)) for n, f in enumerate(face_ids)]
    )
    use_engine._client = client

    with caplog.at_level("ERROR", logger="trouvaille.matching"):
        assert services.photo_index(photo_id=photo.pk) == "indexed-unmatched"

    photo.refresh_from_db()
    assert (photo.index_state, photo.face_count) == (Photo.State.INDEXED, 20)
    assert "took longer than 0.1 s (half of Q_TIMEOUT); `manage.py rematch` finishes them later" in caplog.text
    assert client.peak == 1
    assert not Match.objects.exists()


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


# --- Opt-outs ("don't show me", issue #13) ---------------------------------------------

OPTOUT_FACE = "99999999-0000-4000-8000-000000000007"


def kept_faces(searched: str | None, *matches: tuple[str, str, float]) -> dict:
    """A SearchFaces(ByImage) response naming the kept faces found: (FaceId, ExternalImageId, Similarity)."""
    return {
        **({"SearchedFaceId": searched} if searched else {}),
        "FaceMatches": [
            {
                "Similarity": similarity,
                "Face": {
                    "FaceId": face_id,
                    "BoundingBox": box(0.1, 0.1, 0.2, 0.2),
                    "ImageId": IMAGE_ID,
                    "ExternalImageId": external,
                    "Confidence": 99.0,
                },
            }
            for face_id, external, similarity in matches
        ],
        "FaceModelVersion": "7.0",
    }


def make_optout(event: Event, *, external_id: str = "") -> Selfie:
    """An opt-out: its own attendee, one photo (enrolled already when external_id is given)."""
    attendee = Attendee.objects.create(event=event, consent_at=timezone.now(), opted_out=True)
    selfie = make_selfie(
        event,
        attendee=attendee,
        image=jpeg((300, 400)),
        external_id=external_id,
        engine="rekognition" if external_id else "",
    )
    if external_id:
        Selfie.objects.filter(pk=selfie.pk).update(match_state=Selfie.State.DONE)
    return selfie


def two_face_photo(event: Event) -> Photo:
    """An indexed photo whose face A is the opted-out person and face B is Bob."""
    photo = make_photo(event, "two.jpg", state=Photo.State.INDEXED, image=jpeg((800, 600)))
    for face_id, left in ((FACE_A, 100), (FACE_B, 500)):
        Face.objects.create(
            photo=photo, left=left, top=100, width=150, height=150, engine="rekognition", external_id=face_id
        )
    return photo


def test_an_optout_wins_its_faces_is_blurred_and_withdrawing_it_shows_them_again(
    use_engine, stubber, event, serial, run_jobs
):
    """An opt-out is enrolled (no Rekognition user), searches the collection with its face at
    the looser of the event's and the server's similarity, and the faces it finds are
    marked, blurred and left out of every attendee's matches, even Ana's, who had the photo."""
    Event.objects.filter(pk=event.pk).update(face_similarity=95.0)  # stricter than the server's 90
    photo = two_face_photo(event)
    ana = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")  # searched for the opted-out person
    bob = make_selfie(event, external_id=FACE_C, engine="rekognition")
    Match.objects.create(selfie=ana, photo=photo, distance=0.02)
    Match.objects.create(selfie=bob, photo=photo, distance=0.03)
    optout = make_optout(event)
    stubber.add_response(
        "index_faces",
        indexed((OPTOUT_FACE, f"selfie-{optout.pk}", box(0.2, 0.2, 0.5, 0.5))),
        index_params(event, f"selfie-{optout.pk}", max_faces=1),
    )
    stubber.add_response(
        "search_faces",
        kept_faces(OPTOUT_FACE, (FACE_A, f"{photo.pk}:0123456789ab", 96.0), (SELFIE_FACE, f"selfie-{ana.pk}", 97.0)),
        search_params(event, OPTOUT_FACE, 90.0),
    )
    # The photo is matched again without face A: Bob keeps it, Ana loses it.
    stubber.add_response("search_users", users_found((user(bob), 97.0)), search_users_params(event, FACE_B, 95.0))

    assert services.selfie_match(selfie_id=optout.pk) == "done"

    stubber.assert_no_pending_responses()  # no AssociateFaces: an opt-out is nobody's user
    optout.refresh_from_db()
    assert (optout.match_state, optout.external_id) == (Selfie.State.DONE, OPTOUT_FACE)
    assert dict(Face.objects.values_list("external_id", "opted_out")) == {FACE_A: True, FACE_B: False}
    assert list(Match.objects.values_list("selfie_id", "photo_id")) == [(bob.pk, photo.pk)]
    photo.refresh_from_db()
    assert photo.display and photo.thumbnail  # made again, face A blurred

    blurred = photo.display.name
    stubber.add_response(
        "delete_faces",
        {"DeletedFaces": [OPTOUT_FACE], "UnsuccessfulFaceDeletions": []},
        {"CollectionId": f"test-event-{event.pk}", "FaceIds": [OPTOUT_FACE]},
    )
    stubber.add_response("search_users", users_found((user(ana), 98.0)), search_users_params(event, FACE_A, 95.0))
    stubber.add_response("search_users", users_found((user(bob), 97.0)), search_users_params(event, FACE_B, 95.0))
    with run_jobs():
        optout.attendee.delete()  # withdrawn with its private link

    stubber.assert_no_pending_responses()
    assert not Face.objects.filter(opted_out=True).exists()
    assert sorted(Match.objects.values_list("selfie_id", flat=True)) == [ana.pk, bob.pk]
    photo.refresh_from_db()
    assert photo.display.name != blurred


def test_selfie_searches_and_find_faces_leave_opted_out_faces_out(use_engine, stubber, event, serial):
    photo = two_face_photo(event)
    Face.objects.filter(external_id=FACE_A).update(opted_out=True)
    alone = make_photo(event, "alone.jpg", state=Photo.State.INDEXED)
    Face.objects.create(photo=alone, left=0, top=0, width=9, height=9, engine="rekognition", external_id=FACE_C)
    searcher = make_selfie(event, external_id=SELFIE_FACE, engine="rekognition")
    stubber.add_response(
        "associate_faces", associated(SELFIE_FACE), associate_params(event, user(searcher), SELFIE_FACE)
    )
    stubber.add_response(
        "search_faces",
        kept_faces(SELFIE_FACE, (FACE_A, f"{photo.pk}:0123456789ab", 99.0), (FACE_C, f"{alone.pk}:0123456789ab", 93.0)),
        search_params(event, SELFIE_FACE),
    )

    assert services.photos_near_selfie(engine=use_engine, selfie=searcher) == {alone.pk: 0.07}

    stubber.add_response("detect_faces", detected(1), {"Image": {"Bytes": ANY}, "Attributes": ["DEFAULT"]})
    stubber.add_response(
        "search_faces_by_image",
        {
            **kept_faces(None, (FACE_A, f"{photo.pk}:0123456789ab", 99.0), (FACE_C, f"{alone.pk}:0123456789ab", 93.0)),
            "SearchedFaceBoundingBox": box(0.2, 0.2, 0.5, 0.5),
            "SearchedFaceConfidence": 99.0,
        },
        {
            "CollectionId": f"test-event-{event.pk}",
            "Image": {"Bytes": ANY},
            "MaxFaces": 4096,
            "FaceMatchThreshold": 90.0,
            "QualityFilter": "AUTO",
        },
    )
    image = Image.open(io.BytesIO(jpeg((300, 400))))
    assert [(found.pk, distance) for found, distance in services.image_search(event=event, image=image)] == [
        (alone.pk, 0.07)
    ]


def test_a_photo_indexed_after_an_optout_is_checked_blurred_and_matched_without_their_face(
    use_engine, stubber, event, serial
):
    make_optout(event, external_id=OPTOUT_FACE)
    bob = make_selfie(event, external_id=FACE_C, engine="rekognition")
    photo = make_photo(event, "later.jpg", image=jpeg((800, 600)))
    stubber.add_response(
        "index_faces",
        indexed((FACE_A, str(photo.pk), box(0.1, 0.1, 0.2, 0.2)), (FACE_B, str(photo.pk), box(0.6, 0.1, 0.2, 0.2))),
        index_params(event, PhotoRun(photo.pk)),
    )
    stubber.add_response(
        "search_faces",
        kept_faces(
            OPTOUT_FACE,
            (FACE_A, f"{photo.pk}:0123456789ab", 99.0),
            (match_face_id(5), "424242:0123456789ab", 95.0),  # a deleted photo's face, not forgotten yet
        ),
        search_params(event, OPTOUT_FACE),
    )
    stubber.add_response("search_users", users_found((user(bob), 97.0)), search_users_params(event, FACE_B))

    assert services.photo_index(photo_id=photo.pk) == "indexed"

    stubber.assert_no_pending_responses()
    assert dict(Face.objects.values_list("external_id", "opted_out")) == {FACE_A: True, FACE_B: False}
    assert list(Match.objects.values_list("selfie_id", flat=True)) == [bob.pk]
    photo.refresh_from_db()
    assert photo.display.name.rsplit("/", 1)[-1] != f"{photo.content_hash}-display.jpg"  # made again, blurred


def test_a_photo_that_cannot_be_checked_against_the_optouts_is_shown_to_nobody(use_engine, stubber, event, serial):
    make_optout(event, external_id=OPTOUT_FACE)
    make_selfie(event, external_id=FACE_C, engine="rekognition")
    photo = make_photo(event, "later.jpg", image=jpeg((800, 600)))
    stubber.add_response(
        "index_faces",
        indexed((FACE_A, str(photo.pk), box(0.1, 0.1, 0.2, 0.2))),
        index_params(event, PhotoRun(photo.pk)),
    )
    stubber.add_client_error("search_faces", "InternalServerError", "try later", http_status_code=500)

    assert services.photo_index(photo_id=photo.pk) == "failed"

    photo.refresh_from_db()
    assert photo.index_state == Photo.State.FAILED and "InternalServerError" in photo.index_error
    assert not Match.objects.exists()
