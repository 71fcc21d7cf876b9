"""Shared fixtures: isolated media, inline jobs, sample faces, image factories, a real qcluster."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from PIL import Image

from gallery.models import Event

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "gallery" / "sample_photos"
LABELS: dict[str, dict] = json.loads((SAMPLES / "labels.json").read_text())
PEOPLE = sorted({person for entry in LABELS.values() for person in entry["people"]})


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path: Path) -> None:
    """Every test gets its own media folder; jobs run inline unless a test says otherwise."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.JOBS_SYNC = True
    settings.FACE_BACKEND = "fake"


@pytest.fixture
def dlib_engine(settings) -> None:
    settings.FACE_BACKEND = "dlib"


@pytest.fixture
def event(db) -> Event:
    return Event.objects.create(name="Summer party", slug="summer")


def jpeg_bytes(color: tuple[int, int, int] = (200, 60, 60), size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def upload(name: str, data: bytes, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def sample(relative: str) -> Path:
    return SAMPLES / relative


def sample_upload(relative: str) -> SimpleUploadedFile:
    return upload(Path(relative).name, sample(relative).read_bytes())


def files_with(person: str) -> set[str]:
    return {Path(name).name for name, entry in LABELS.items() if person in entry["people"]}


@pytest.fixture
def run_jobs(django_capture_on_commit_callbacks) -> Callable:
    """Context manager: run the jobs queued inside it (inline), after their commit."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


# --- A real qcluster process ----------------------------------------------------------


def database_url() -> str:
    """The URL of the database the tests are using right now (the test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def qcluster(transactional_db, settings, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `manage.py qcluster` against the test database; stopped at teardown.

    Jobs are queued for real (JOBS_SYNC off) on the configured broker: the ORM
    queue in the test database, or Redis when REDIS_URL is set.
    """
    settings.JOBS_SYNC = False
    processes: list[subprocess.Popen] = []
    log = tmp_path / "qcluster.log"

    def start(**extra_env: str) -> subprocess.Popen:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "FACE_BACKEND": settings.FACE_BACKEND,
            "JOBS_SYNC": "0",
            "Q_WORKERS": "2",
            **extra_env,
        }
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    if log.exists():
        sys.stderr.write(log.read_text()[-4000:])
    connection.close()


def corrupt_jpeg() -> bytes:
    """A real photo cut off halfway: the header reads fine, the pixels do not."""
    data = sample("people/obama/obama.jpg").read_bytes()
    return data[: len(data) // 2]
