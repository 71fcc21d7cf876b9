"""Shared fixtures: isolated media, inline jobs, sample faces, image factories, a real qcluster."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from PIL import Image

from gallery.models import Attendee, Event, Selfie
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "gallery" / "sample_photos"
LABELS: dict[str, dict] = json.loads((SAMPLES / "labels.json").read_text())
# Three photos: Biden in two of them (one a group photo), Kit Harington in the third.
BIDEN_TWICE_AND_KIT = [
    SAMPLES / "groups/two_people.jpg",
    SAMPLES / "people/biden/biden.jpg",
    SAMPLES / "people/kit_harington/kit1.jpg",
]
# Biden's selfie for them: a photo that is not indexed, nor a shot of the same
# capture (biden.jpg is a crop of two_people.jpg).
BIDEN_SELFIE = SAMPLES / "people/biden/biden2.jpg"
# Browser tests use Debian's Chromium through pytest-playwright's fixtures; Playwright
# never downloads a browser of its own.
CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}
PEOPLE = sorted({person for entry in LABELS.values() for person in entry["people"]})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: pytest-playwright's Playwright lives for the rest of the
    session, and while it does every test looks like async code to Django."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    """Every page starts on a phone; pass other options to `new_context(...)`, not these."""
    return {**browser_context_args, "viewport": PHONE, "accept_downloads": True}


@pytest.fixture(scope="session")
def playwright(django_db_setup, playwright):
    """pytest-playwright's Playwright, started once the test database exists.

    Its sync API keeps an asyncio event loop running in this thread (in a greenlet)
    until the end of the session, so Django's ORM believes every later call comes
    from async code and raises SynchronousOnlyOperation. Nothing is actually
    concurrent: the tests' ORM calls run between browser steps, never inside the
    loop. So the check is lifted from here on, for the browser tests only: they run
    last (pytest_collection_modifyitems above).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield playwright


@pytest.fixture
def browser_connections() -> Iterator[None]:
    """For browser tests: closes the ORM connections opened while Playwright's loop ran.

    Django sees an async context there and gives those calls connections of their
    own; left open, they keep the PostgreSQL test database from being dropped.
    """
    yield
    from django.db import connections

    connections.close_all()


def jobs_inline(settings, inline: bool) -> None:
    """Run queued jobs inline (django-q2's sync mode) or hand them to the broker."""
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": inline}


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path: Path) -> None:
    """Every test gets its own media folder; jobs run inline unless a test says otherwise."""
    settings.MEDIA_ROOT = tmp_path / "media"
    jobs_inline(settings, True)
    settings.FACE_BACKEND = "fake"
    if not settings.REDIS_URL:
        # django-q2 keeps cluster heartbeats in this cache: a cluster running
        # elsewhere on the machine must not look like this test's cluster.
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": str(tmp_path / "cache"),
            }
        }
    else:
        # Redis outlives the test (and the run): a key prefix of its own.
        settings.CACHES = {
            "default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"},
        }


@pytest.fixture(autouse=True)
def _default_language() -> Iterator[None]:
    """LocaleMiddleware leaves the last request's language active in the thread:
    a French request in one test must not turn the next test's messages French."""
    from django.utils import translation

    yield
    translation.deactivate()


@pytest.fixture
def dlib_engine(settings) -> None:
    settings.FACE_BACKEND = "dlib"


@pytest.fixture
def event(db) -> Event:
    return Event.objects.create(name="Summer party", slug="summer")


def selfie_row(event: Event, **fields: object) -> Selfie:
    """A selfie row made directly (no upload, no job), with an attendee of its own."""
    from django.utils import timezone

    now = timezone.now()
    attendee = Attendee.objects.create(event=event, consent_at=now)
    return Selfie.objects.create(event=event, attendee=attendee, consent_at=fields.pop("consent_at", now), **fields)


def event_admin_form(event: Event, **changes: object) -> dict:
    """The event's admin form as posted unchanged, with these changes."""
    form = {
        "name": event.name,
        "slug": event.slug,
        "date": event.date.isoformat(),
        "access_code": event.access_code,
        "published": "on" if event.published else "",
        "retention_days": str(event.retention_days),
        "watermark_text": event.watermark_text,
        "watermark_position": event.watermark_position,
        "watermark_opacity": str(event.watermark_opacity),
        "accent_colour": event.accent_colour,
    }
    return {**form, **changes}


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


CLUSTER_APP = "trouvaille-test-qcluster"


def database_url() -> str:
    """The URL of the database the tests are using right now (the test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    # Named, so teardown can wait for exactly these sessions to end.
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return f"postgres://{auth}@{host}/{db['NAME']}?application_name={CLUSTER_APP}"


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

    Jobs are queued for real (not inline) on the configured broker: the ORM
    queue in the test database, or Redis when REDIS_URL is set.
    """
    jobs_inline(settings, False)
    processes: list[subprocess.Popen] = []
    log = tmp_path / "qcluster.log"

    def start(**extra_env: str) -> subprocess.Popen:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "CACHE_DIR": str(tmp_path / "cache"),
            "FACE_BACKEND": settings.FACE_BACKEND,
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
            # One SIGTERM to the main process only, as systemd's KillMode=mixed
            # does: it stops its workers itself. Signalling the whole group
            # interrupts that shutdown and can leave the main process hanging.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything left of that cluster
    if log.exists():
        sys.stderr.write(log.read_text()[-4000:])
    _wait_for_other_sessions_to_end()
    connection.close()


def _wait_for_other_sessions_to_end() -> None:
    """PostgreSQL ends a killed client's session asynchronously; the test database
    can only be dropped at the end of the run once the cluster's sessions are gone."""
    if connection.vendor != "postgresql":
        return
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s"

    def alone() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(query, [CLUSTER_APP])
            return cursor.fetchone()[0] == 0

    wait_for(alone, timeout=15, what="the qcluster's database sessions to end")


def corrupt_jpeg() -> bytes:
    """A real photo cut off halfway: the header reads fine, the pixels do not."""
    data = sample("people/obama/obama.jpg").read_bytes()
    return data[: len(data) // 2]


# --- A real S3 API on loopback (moto's standalone server) ------------------------------

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3-compatible HTTP server in a thread on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_storage(s3_server: str, settings, monkeypatch) -> dict[str, str]:
    """Media on a fresh private bucket of the loopback S3 server. Returns the env a subprocess needs."""

    import boto3

    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    bucket = f"trouvaille-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    settings.AWS_STORAGE_BUCKET_NAME = bucket
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": s3_server,
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": 300,
                "signature_version": "s3v4",
                "file_overwrite": False,
            },
        },
    }
    return {**S3_CREDENTIALS, "AWS_STORAGE_BUCKET_NAME": bucket, "AWS_S3_ENDPOINT_URL": s3_server}
