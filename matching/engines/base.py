"""The face engine interface.

An engine finds faces in photos and selfies and answers "which photos show this
selfie's face" and "which selfies are in this photo". Embedding engines (dlib)
keep vectors in our database and search them with numpy (see matching.index);
hosted engines (Rekognition) keep faces in their own collections.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

    from gallery.models import Event, Photo, Selfie


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


class FaceEngine(ABC):
    name: ClassVar[str]

    @abstractmethod
    def index_photo(self, *, photo: Photo, image: Image) -> list[FoundFace]:
        """Every face in an event photo, stored by the engine if it keeps faces."""

    @abstractmethod
    def enroll_selfie(self, *, selfie: Selfie, image: Image) -> FoundFace | None:
        """The largest face of a selfie, or None when there is no face."""

    @abstractmethod
    def match_selfie(self, *, selfie: Selfie, tolerance: float | None = None) -> dict[int, float]:
        """Photo id -> best distance, for the enrolled selfie against its event."""

    @abstractmethod
    def match_photo(self, *, photo: Photo, tolerance: float | None = None) -> dict[int, float]:
        """Selfie id -> best distance, for an indexed photo against its event's selfies."""

    @abstractmethod
    def search_image(self, *, event: Event, image: Image, tolerance: float | None = None) -> dict[int, float]:
        """Photo id -> best distance for the largest face in an image (no enrollment)."""

    def forget_faces(self, *, event_id: int, external_ids: list[str]) -> None:  # noqa: B027 - optional hook
        """Drop faces the engine keeps remotely; embedding engines keep none."""

    def forget_event(self, *, event_id: int) -> None:  # noqa: B027 - optional hook
        """Drop everything the engine keeps remotely for an event."""


class EmbeddingEngine(FaceEngine):
    """An engine that turns faces into vectors; matching runs on our own index."""

    @abstractmethod
    def detect(self, image: Image) -> list[FoundFace]:
        """Every face with its embedding."""

    def index_photo(self, *, photo: Photo, image: Image) -> list[FoundFace]:
        return self.detect(image)

    def enroll_selfie(self, *, selfie: Selfie, image: Image) -> FoundFace | None:
        return largest(self.detect(image))

    def match_selfie(self, *, selfie: Selfie, tolerance: float | None = None) -> dict[int, float]:
        from matching import index

        return index.photos_near(event_id=selfie.event_id, engine=self.name, probe=selfie.vector(), tolerance=tolerance)

    def match_photo(self, *, photo: Photo, tolerance: float | None = None) -> dict[int, float]:
        from matching import index

        return index.selfies_near(photo=photo, engine=self.name, tolerance=tolerance)

    def search_image(self, *, event: Event, image: Image, tolerance: float | None = None) -> dict[int, float]:
        from matching import index

        face = largest(self.detect(image))
        if face is None or face.embedding is None:
            return {}
        return index.photos_near(event_id=event.pk, engine=self.name, probe=face.embedding, tolerance=tolerance)


def largest(faces: list[FoundFace]) -> FoundFace | None:
    return max(faces, key=lambda face: face.area, default=None)
