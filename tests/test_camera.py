"""Camera-only events (issue #13): the selfie page, the server's refusal of a plain upload,
and the pose check (matching.pose) in the selfie job, with real dlib on the sample faces.

obama.jpg faces the camera (yaw 0.02), obama2.jpg shows him turned (-0.48): the two
pictures of an honest camera-only selfie. kit2.jpg is another person, turned (-0.57).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from PIL import Image

from gallery import services
from gallery.images import ImageProblem, load_rgb
from gallery.models import Event, Selfie
from matching import pose
from tests.conftest import sample, sample_upload, upload

FRONT = "people/obama/obama.jpg"
TURNED = "people/obama/obama2.jpg"
OTHER_TURNED = "people/kit_harington/kit2.jpg"
TWO_PEOPLE = "groups/two_people.jpg"


def _picture(relative: str) -> Image.Image:
    with sample(relative).open("rb") as file:
        return load_rgb(file)


def _refusal(front: Image.Image, turned: Image.Image) -> str:
    with pytest.raises(ImageProblem) as refused:
        pose.pose_check(front=front, turned=turned)
    return str(refused.value)


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return Image.open(buffer)


def _tilted_print(image: Image.Image, *, squeeze: float = 0.75) -> Image.Image:
    """The picture as a flat print turned away from the camera about its vertical axis:
    its right edge recedes (shorter and nearer the middle), seen in perspective."""
    width, height = image.size
    far = (1 - squeeze) * height / 2
    # Where each corner of the print lands: top-left, top-right, bottom-right, bottom-left.
    seen = [(0, 0), (width * squeeze, far), (width * squeeze, height - far), (0, height)]
    corners = [(0, 0), (width, 0), (width, height), (0, height)]
    # PERSPECTIVE maps each output pixel to an input pixel: solve for those 8 coefficients.
    rows, values = [], []
    for (x, y), (u, v) in zip(seen, corners, strict=True):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        values += [u, v]
    coefficients = np.linalg.solve(np.array(rows, dtype=float), np.array(values, dtype=float))
    return image.transform(image.size, Image.Transform.PERSPECTIVE, tuple(coefficients), Image.Resampling.BICUBIC)


# --- The pose check on real faces ----------------------------------------------------------


@pytest.mark.dlib
def test_the_pose_check_accepts_a_frontal_then_a_turned_picture_of_one_person() -> None:
    front, turned = _picture(FRONT), _picture(TURNED)
    [facing] = pose.frame_faces(front)
    [turning] = pose.frame_faces(turned)
    assert abs(facing.yaw) < 0.1 and abs(turning.yaw) > 0.4
    pose.pose_check(front=front, turned=turned)  # no refusal
    pose.pose_check(front=front, turned=turned.transpose(Image.Transpose.FLIP_LEFT_RIGHT))  # either side


@pytest.mark.dlib
def test_the_pose_check_refuses_the_same_picture_twice() -> None:
    front, turned = _picture(FRONT), _picture(TURNED)
    assert _refusal(front, front) == pose.SAME_PICTURE
    assert _refusal(turned, _jpeg(turned.resize((turned.width // 2, turned.height // 2)))) == pose.SAME_PICTURE


@pytest.mark.dlib
def test_the_pose_check_refuses_two_different_people() -> None:
    assert _refusal(_picture(FRONT), _picture(OTHER_TURNED)) == pose.NOT_SAME_PERSON


@pytest.mark.dlib
def test_the_pose_check_refuses_no_face_and_more_than_one_face() -> None:
    blank = Image.new("RGB", (640, 480), (120, 130, 140))
    assert _refusal(blank, _picture(TURNED)) == pose.NO_FACE_FRONT
    assert _refusal(_picture(FRONT), blank) == pose.NO_FACE_TURNED
    assert _refusal(_picture(TWO_PEOPLE), _picture(TURNED)) == pose.MANY_FACES
    assert _refusal(_picture(FRONT), _picture(TWO_PEOPLE)) == pose.MANY_FACES


@pytest.mark.dlib
def test_the_pose_check_refuses_the_wrong_order_and_a_print_turned_towards_the_camera() -> None:
    front = _picture(FRONT)
    assert _refusal(_picture(TURNED), front) == pose.NOT_FACING
    # A print of the frontal photo, held up and then turned away: squeezed in perspective,
    # its nose stays halfway between the sides of the face.
    print_turned = _tilted_print(front)
    [face] = pose.frame_faces(print_turned)
    assert abs(face.yaw) < 0.2
    assert _refusal(front, print_turned) == pose.NOT_TURNED


def test_yaw_is_where_the_nose_lies_between_the_ends_of_the_jaw_whatever_the_tilt() -> None:
    chin = [(0, 50)] + [(50, 100)] * 15 + [(100, 50)]

    def landmarks(nose_x: float, angle: float = 0.0) -> dict:
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        rotate = lambda point: tuple(turn @ np.asarray(point, dtype=float))  # noqa: E731
        return {"chin": [rotate(p) for p in chin], "nose_bridge": [rotate((50, 20)), rotate((nose_x, 60))]}

    assert pose.yaw(landmarks(50)) == pytest.approx(0)
    assert pose.yaw(landmarks(75)) == pytest.approx(0.5)
    assert pose.yaw(landmarks(25)) == pytest.approx(-0.5)
    assert pose.yaw(landmarks(75, angle=0.4)) == pytest.approx(0.5)  # a tilted head (roll)


# --- The selfie page and the server's refusal ------------------------------------------------


@pytest.fixture
def camera_event(db) -> Event:
    return Event.objects.create(name="Night run", slug="night-run", camera_only=True)


def _post(client: Client, event: Event, **files: object) -> object:
    return client.post(reverse("gallery:selfie_upload", args=[event.slug]), {**files, "consent": "on"})


def test_a_camera_only_event_page_offers_the_camera_and_no_file_input(camera_event: Event, event: Event) -> None:
    page = Client().get(reverse("gallery:event", args=[camera_event.slug])).content.decode()
    assert 'type="file"' not in page and "or choose a photo from your device" not in page
    assert "camera-selfie.js" in page and "data-camera-box" in page
    assert "which needs JavaScript" in page  # shown until the scripts run
    regular = Client().get(reverse("gallery:event", args=[event.slug])).content.decode()
    assert 'type="file"' in regular and "camera-selfie.js" not in regular
    privacy = Client().get(reverse("gallery:privacy", args=[camera_event.slug])).content.decode()
    assert "The second picture of your selfie (head turned)" in privacy


def test_a_camera_only_event_refuses_a_selfie_without_its_second_picture(camera_event: Event, settings) -> None:
    response = _post(Client(), camera_event, image=sample_upload(FRONT))
    assert response.status_code == 400
    assert "accepts only selfies taken with the camera on this page" in response.content.decode()
    assert not Selfie.objects.exists()
    assert _selfie_files(settings) == []  # nothing stored

    french = Client(headers={"accept-language": "fr"})
    response = _post(french, camera_event, image=sample_upload(FRONT))
    assert response.status_code == 400
    assert "accepte que les selfies pris avec la caméra de cette page, en deux photos" in response.content.decode()


def test_a_camera_only_event_refuses_an_unreadable_second_picture(camera_event: Event) -> None:
    response = _post(Client(), camera_event, image=sample_upload(FRONT), turned=upload("t.jpg", b"not an image"))
    assert response.status_code == 400
    assert not Selfie.objects.exists()


def test_a_camera_only_selfie_stores_both_pictures_until_its_job_runs(camera_event: Event) -> None:
    client = Client()
    response = _post(client, camera_event, image=sample_upload(FRONT), turned=sample_upload(TURNED))
    assert response.status_code == 302
    selfie = Selfie.objects.get()
    assert selfie.match_state == Selfie.State.PENDING  # the job (not run here) checks the pose
    assert default_storage.exists(selfie.image.name) and default_storage.exists(selfie.turned_image.name)


def test_a_locked_camera_only_event_takes_no_selfie_before_its_code(camera_event: Event) -> None:
    Event.objects.filter(pk=camera_event.pk).update(access_code="Moon-3")
    response = _post(Client(), camera_event, image=sample_upload(FRONT), turned=sample_upload(TURNED))
    assert response.status_code == 404
    assert not Selfie.objects.exists()


def test_deleting_a_selfie_deletes_its_second_picture_too(camera_event: Event, run_jobs) -> None:
    selfie = services.selfie_create(
        event=camera_event, upload=sample_upload(FRONT), turned=sample_upload(TURNED), consent=True
    )
    names = [selfie.image.name, selfie.turned_image.name]
    with run_jobs():
        services.attendee_delete(attendee=selfie.attendee)
    assert not any(default_storage.exists(name) for name in names)


def _selfie_files(settings) -> list[str]:
    """The selfie files in media storage, as storage names."""
    return sorted(str(path.relative_to(settings.MEDIA_ROOT)) for path in settings.MEDIA_ROOT.glob("events/*/selfies/*"))


# --- The selfie job --------------------------------------------------------------------------


@pytest.mark.dlib
def test_a_good_pair_is_enrolled_and_matched_and_its_second_picture_deleted(
    camera_event: Event, dlib_engine, run_jobs, settings
) -> None:
    with run_jobs():
        services.paths_import(
            event=camera_event, paths=[sample("people/obama/obama3.jpg"), sample("people/kit_harington/kit1.jpg")]
        )
    client = Client()
    with run_jobs():
        _post(client, camera_event, image=sample_upload(FRONT), turned=sample_upload(TURNED))
    selfie = Selfie.objects.get()
    assert selfie.match_state == Selfie.State.DONE, selfie.match_error
    assert set(selfie.attendee.photos().values_list("original_name", flat=True)) == {"obama3.jpg"}
    assert selfie.turned_image.name == ""
    assert _selfie_files(settings) == [selfie.image.name]  # the small copy of the first picture only


@pytest.mark.dlib
def test_a_failed_pose_check_fails_the_selfie_with_its_reason_and_offers_to_retry(
    camera_event: Event, dlib_engine, run_jobs, settings
) -> None:
    client = Client()
    with run_jobs():
        _post(client, camera_event, image=sample_upload(FRONT), turned=sample_upload(OTHER_TURNED))
    selfie = Selfie.objects.get()
    assert selfie.match_state == Selfie.State.FAILED
    assert selfie.match_error == pose.NOT_SAME_PERSON
    assert selfie.image.name == "" and selfie.turned_image.name == ""  # neither picture is kept
    assert _selfie_files(settings) == []

    page = client.get(reverse("gallery:me", args=[camera_event.slug])).content.decode()
    assert "The two pictures do not show the same person." in page and "Take another selfie" in page
    assert client.get(reverse("gallery:me_status", args=[camera_event.slug])).json()["state"] == "failed"
    french = client.get(reverse("gallery:me", args=[camera_event.slug]), headers={"accept-language": "fr"})
    assert "Les deux photos ne montrent pas la même personne." in french.content.decode()


@pytest.mark.dlib
def test_a_regular_selfie_skips_the_pose_check(event: Event, dlib_engine, run_jobs) -> None:
    """Events without camera-only mode are unchanged: one picture, enrolled as before."""
    with run_jobs():
        _post(Client(), event, image=upload("s.jpg", sample(FRONT).read_bytes()))
    assert Selfie.objects.get().match_state == Selfie.State.DONE


def test_organizers_turn_camera_only_on_in_the_event_admin(admin_client, event: Event) -> None:
    page = admin_client.get(reverse("admin:gallery_event_change", args=[event.pk])).content.decode()
    assert 'name="camera_only"' in page
