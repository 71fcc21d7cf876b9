"""The face engine interface: questions about images, never about our database.

An engine answers "which faces are in this image" (with an embedding, or the id
under which a hosted engine keeps the face). It is given the ids it needs and
never reads our rows: the matching services (matching.services, with
matching.index for stored embeddings) own every query, decide which faces are
candidates and which answers still stand.

Embedding engines (dlib, fake) turn faces into vectors that we store and search
with numpy (matching.index). Hosted engines (Rekognition) keep faces in their own
collection per event and also answer "which kept faces are near this one".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class FoundFace:
    """A face, with its box in pixels of the upright image it was found in."""

    left: int
    top: int
    width: int
    height: int
    embedding: np.ndarray | None = None
    external_id: str = ""

    @property
    def area(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class PhotoFaces:
    """The faces an engine found and kept in a photo, and those it saw but left out.

    `left_out` counts the left-out faces by reason (a face may have several
    reasons, so the counts can add up to more than `left_out_count`).
    """

    faces: list[FoundFace]
    left_out_count: int = 0
    left_out: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PhotoMatches:
    """Photo id -> best distance; `limit_reached` when the engine may have cut weaker matches off."""

    distances: dict[int, float]
    limit_reached: bool = False


class FaceGone(Exception):
    """A hosted engine no longer keeps a face whose id we stored (deleted outside our jobs)."""


class FaceEngine(ABC):
    name: ClassVar[str]

    @abstractmethod
    def index_photo(self, *, event_id: int, photo_id: int, image: Image) -> PhotoFaces:
        """Every face in an event photo, kept under the photo's id if the engine keeps faces."""

    @abstractmethod
    def enroll_selfie(self, *, event_id: int, selfie_id: int, image: Image) -> FoundFace | None:
        """The largest face of a selfie (kept if the engine keeps faces), or None when there is none."""

    def forget_faces(self, *, event_id: int, external_ids: list[str]) -> None:  # noqa: B027 - optional hook
        """Drop faces the engine keeps remotely; embedding engines keep none."""

    def forget_event(self, *, event_id: int) -> None:  # noqa: B027 - optional hook
        """Drop everything the engine keeps remotely for an event."""


class EmbeddingEngine(FaceEngine):
    """An engine that turns faces into vectors; matching.index searches them."""

    @abstractmethod
    def detect(self, image: Image) -> list[FoundFace]:
        """Every face with its embedding."""

    def index_photo(self, *, event_id: int, photo_id: int, image: Image) -> PhotoFaces:
        return PhotoFaces(faces=self.detect(image))

    def enroll_selfie(self, *, event_id: int, selfie_id: int, image: Image) -> FoundFace | None:
        return largest(self.detect(image))

    def probe(self, image: Image) -> np.ndarray | None:
        """The embedding of the largest face in an image (searched, not enrolled), or None."""
        face = largest(self.detect(image))
        return None if face is None else face.embedding


class HostedEngine(FaceEngine):
    """An engine that keeps faces in a collection per event and searches them there.

    Selfie faces are grouped by person (an opaque id the services derive from
    the attendee), so a photo face is searched against people, not every face.
    Answers carry the ids the faces and people were kept under; whether those
    photos and selfies still exist (and are indexed) is for the matching
    services to check. Methods given a kept face id raise FaceGone when the
    engine no longer has that face.

    Thresholds of the searches: `tolerance` is a distance given explicitly (a
    command's --tolerance), converted by the engine; otherwise `similarity` is
    the engine's own score threshold (0-100, the event's face_similarity);
    neither: the server's setting.
    """

    @abstractmethod
    def person_add_face(self, *, event_id: int, person_id: str, face_id: str) -> None:
        """Make the kept selfie face `face_id` one of the person's faces (nothing to do if it is)."""

    @abstractmethod
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
        """Photo faces near the person's kept selfie face `face_id`, each face kept only if
        no other person is nearer to it; `hidden` faces (opted out) are nobody's."""

    @abstractmethod
    def photo_faces_near_face(self, *, event_id: int, face_id: str, similarity: float | None = None) -> set[str]:
        """Ids of the kept photo faces near the kept face `face_id` (an opt-out's), whoever else is near them."""

    @abstractmethod
    def people_near_faces(
        self, *, event_id: int, face_ids: list[str], tolerance: float | None = None, similarity: float | None = None
    ) -> dict[str, float]:
        """Person id -> best distance: each kept photo face goes to the one nearest person, if any is near."""

    @abstractmethod
    def photos_near_image(
        self,
        *,
        event_id: int,
        image: Image,
        tolerance: float | None = None,
        similarity: float | None = None,
        hidden: frozenset[str] = frozenset(),
    ) -> dict[int, float]:
        """Photo id -> best distance for the largest face in an image, which is not kept;
        `hidden` faces (opted out) are left out."""


def largest(faces: list[FoundFace]) -> FoundFace | None:
    return max(faces, key=lambda face: face.area, default=None)
