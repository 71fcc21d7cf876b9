"""The pose check of camera-only events: two pictures, facing then head turned, of one person.

A flat picture (a print or a screen held up to the camera) can be tilted but
not turned: tilting it squeezes the whole face evenly, so the nose stays
halfway between the sides of the face. A real head turning brings the nose
towards one side. So the check asks for a first picture facing the camera and a
second one with the head turned a little, both of exactly one face and of the
same person (docs/privacy.md, "Camera-only mode", says what it does not stop).

Run by the selfie job, before enrolling (matching.services), with dlib's
68-point landmarks whatever the face engine: dlib is always installed, and the
turned picture never leaves the server. Only `frame_faces` touches dlib; the
rest is plain geometry, testable on its own.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.utils.translation import gettext_noop
from PIL import Image

from gallery.images import ImageProblem, fitted

# Pictures are searched at this size: a selfie's face fills much of it.
FRAME_SIDE = 800
# Two pictures whose 32 x 32 grey thumbnails differ by less than this on average
# (0-255) are one picture sent twice: a live camera's two shots, seconds apart
# with the head turned, differ by far more (tens of grey levels where the face moved).
SAME_PICTURE_MAX_DIFFERENCE = 2.0

# Stored in English by the job and translated when shown (the attendee page translates these texts).
SAME_PICTURE = gettext_noop(
    "Your two pictures are the same. Please take the selfie again: face the camera, then turn your head."
)
NO_FACE_FRONT = gettext_noop(
    "We could not find your face in the first picture. Please take the selfie again, facing the camera in good light."
)
NO_FACE_TURNED = gettext_noop(
    "We could not find your face in the second picture. Please take the selfie again and turn your head only a little."
)
MANY_FACES = gettext_noop("Only you should be in the pictures. Please take the selfie again, alone.")
NOT_FACING = gettext_noop("In the first picture, please look straight at the camera. Please take the selfie again.")
NOT_TURNED = gettext_noop(
    "In the second picture, please turn your head a little to one side. Please take the selfie again."
)
NOT_SAME_PERSON = gettext_noop("The two pictures do not show the same person. Please take the selfie again.")


@dataclass(frozen=True)
class FrameFace:
    yaw: float  # turn of the head: 0 facing the camera, towards -1 or 1 turned (see `yaw`)
    embedding: np.ndarray


def yaw(landmarks: dict[str, list[tuple[int, int]]]) -> float:
    """How far the head is turned, from face_recognition's 68-point landmarks: -1 to 1, 0 facing.

    Where the nose tip lies between the two ends of the jaw line (points 0 and
    16, at the ears), measured along the line between them, so a tilted head
    (roll) changes nothing: 0.5 of the way is 0, one end is -1 or 1.
    """
    chin = np.asarray(landmarks["chin"], dtype=float)
    nose_tip = np.asarray(landmarks["nose_bridge"][-1], dtype=float)  # point 30
    start, across = chin[0], chin[-1] - chin[0]
    share = float(np.dot(nose_tip - start, across) / max(float(np.dot(across, across)), 1e-9))
    return 2 * share - 1


def same_picture(first: Image.Image, second: Image.Image) -> bool:
    """The same picture sent twice (or a copy of it, re-encoded or resized)?"""
    pictures = (first, second)
    a, b = (np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BOX), dtype=float) for image in pictures)
    return float(np.abs(a - b).mean()) < SAME_PICTURE_MAX_DIFFERENCE


def frame_faces(image: Image.Image) -> list[FrameFace]:
    """Every face in a picture taken at selfie distance, with its yaw and embedding (dlib)."""
    with warnings.catch_warnings():
        # face_recognition_models imports the deprecated pkg_resources (as in matching.engines.dlib).
        warnings.simplefilter("ignore", UserWarning)
        import face_recognition

    pixels = np.asarray(fitted(image.convert("RGB"), FRAME_SIDE))
    # Faces of at least ~80 px (a tenth of the picture) first, as for selfies; smaller ones only if none.
    boxes = face_recognition.face_locations(pixels, 0) or face_recognition.face_locations(pixels, 1)
    landmarks = face_recognition.face_landmarks(pixels, boxes, model="large")
    embeddings = face_recognition.face_encodings(pixels, boxes, model="large")
    return [
        FrameFace(yaw=yaw(points), embedding=np.asarray(embedding, dtype=np.float32))
        for points, embedding in zip(landmarks, embeddings, strict=True)
    ]


def pose_problem(front: list[FrameFace], turned: list[FrameFace]) -> str | None:
    """What is wrong with the two pictures' faces (a message for the attendee), or None."""
    if not front:
        return NO_FACE_FRONT
    if not turned:
        return NO_FACE_TURNED
    if len(front) > 1 or len(turned) > 1:
        return MANY_FACES
    if abs(front[0].yaw) > settings.POSE_FRONTAL_MAX_YAW:
        return NOT_FACING
    if abs(turned[0].yaw) < settings.POSE_TURNED_MIN_YAW:
        return NOT_TURNED
    if float(np.linalg.norm(front[0].embedding - turned[0].embedding)) > settings.POSE_SAME_PERSON_DISTANCE:
        return NOT_SAME_PERSON
    return None


def pose_check(*, front: Image.Image, turned: Image.Image) -> None:
    """Raise ImageProblem (its message for the attendee) unless the two pictures pass the check."""
    problem = SAME_PICTURE if same_picture(front, turned) else pose_problem(frame_faces(front), frame_faces(turned))
    if problem:
        raise ImageProblem(problem)
