"""django-q2 entry points: thin wrappers that log and call the services."""

from __future__ import annotations

import logging
import time

from matching import services
from matching.engines import get_engine

logger = logging.getLogger("trouvaille.jobs")


def _run(job: str, func, **ids: int) -> str:
    started = time.monotonic()
    outcome = "error"
    try:
        outcome = func(**ids)
        return outcome
    finally:
        logger.info(
            job,
            extra={"job": job, **ids, "outcome": outcome, "duration_ms": round((time.monotonic() - started) * 1000, 1)},
        )


def photo_index_task(photo_id: int) -> str:
    return _run("photo_index", services.photo_index, photo_id=photo_id)


def selfie_match_task(selfie_id: int) -> str:
    return _run("selfie_match", services.selfie_match, selfie_id=selfie_id)


def faces_forget_task(event_id: int, external_ids: list[str]) -> None:
    get_engine().forget_faces(event_id=event_id, external_ids=external_ids)


def event_forget_task(event_id: int) -> None:
    get_engine().forget_event(event_id=event_id)
