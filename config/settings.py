"""Trouvaille settings: one module, driven by environment variables.

Every default is the embedded setup (SQLite, local media, the ORM job broker,
dlib). Production switches parts on with variables documented in `.env.example`;
with DJANGO_DEBUG=0 the unsafe defaults refuse to start (see `_check_production`).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tempfile
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import csp.constants as csp
import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    """A setting from the environment, or from the file named by NAME_FILE.

    The *_FILE form lets secrets come from systemd credentials or mounted
    secret files instead of the process environment.
    """
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        return Path(file_path).read_text().strip()
    return os.environ.get(name, default)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool) -> bool:
    """A yes/no variable. Anything but the usual spellings refuses to start: a typo
    (SECURE_COOKIES=flase) must not silently turn a protection off."""
    value = env(name).strip().lower()
    if not value:
        return default
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise ImproperlyConfigured(f"{name}={value!r} is not a yes/no value: use 1/0, true/false, yes/no or on/off")


def _number(name: str, default: float, kind: type[int] | type[float]) -> float:
    value = env(name).strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a valid {kind.__name__}") from None


def env_int(name: str, default: int) -> int:
    return int(_number(name, default, int))


def env_float(name: str, default: float) -> float:
    return float(_number(name, default, float))


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


# --- Core ---------------------------------------------------------------------

DEBUG = env_bool("DJANGO_DEBUG", True)
_DEV_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"  # noqa: S105 - refused when DEBUG is off
SECRET_KEY = env("DJANGO_SECRET_KEY", _DEV_SECRET_KEY)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
# Public base URL for links and QR codes (e.g. https://photos.example.org). Unset:
# links use the host each request came in on (so any PORT works), and commands
# print bare paths. Set it behind a proxy and whenever e-mails are sent.
SITE_URL = env("SITE_URL", "").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_q",
    "csp",
    "axes",
    "gallery",
    "matching",
    # Django's own widget templates, for the TemplatesSetting form renderer below.
    "django.forms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.logging.RequestLogMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The attendee's language: the switcher's cookie, else the browser's Accept-Language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # First: refuses to authenticate a locked-out client before any password check.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# Form widgets render through TEMPLATES, so a widget template of ours lives in
# templates/ with the others (gallery.admin.StoredFileInput).
FORM_RENDERER = "django.forms.renderers.TemplatesSetting"

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Organizer accounts guard attendees' faces: Django's standard password checks.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

LANGUAGE_CODE = "en"
# Attendee pages, messages and e-mails exist in these languages (catalogs in
# gallery/locale, compiled and committed: see `manage.py catalog`).
LANGUAGES = [("en", "English"), ("fr", "Français")]
LOCALE_PATHS = [BASE_DIR / "gallery" / "locale"]
TIME_ZONE = env("TIME_ZONE", "UTC")

# --- Database -----------------------------------------------------------------

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 600),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the qcluster share one SQLite file: wait for locks
    # instead of failing, and take the write lock at BEGIN so two writers never
    # deadlock upgrading a read lock. WAL lets readers run during a write.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
    # A file, not :memory:, so a qcluster subprocess in the tests sees the test
    # data; one per test run, so two runs on one machine never share it.
    DATABASES["default"]["TEST"] = {
        "NAME": env("TEST_SQLITE_PATH", str(Path(tempfile.gettempdir()) / f"trouvaille-test-{os.getpid()}.sqlite3"))
    }

# --- Cache and jobs -----------------------------------------------------------

REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # A file cache, not local memory: django-q2 keeps cluster heartbeats in the
    # cache, and `import_photos --wait` reads them from another process.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": env("CACHE_DIR", str(BASE_DIR / ".cache")),
        }
    }

Q_CLUSTER = {
    "name": env("Q_CLUSTER_NAME", "trouvaille"),
    "workers": env_int("Q_WORKERS", max(1, os.cpu_count() or 1)),
    # A task may run this long; an index job on one large photo takes seconds.
    "timeout": env_int("Q_TIMEOUT", 300),
    # Must exceed the timeout, or a slow task is handed to a second worker.
    "retry": env_int("Q_RETRY", 360),
    # django-q2's default 0 retries forever. Jobs record their own failures and
    # failures are acknowledged (ack_failures), so this bounds only deliveries of
    # a job whose worker died without answering (ORM broker; Redis has no receipts).
    "max_attempts": env_int("Q_MAX_ATTEMPTS", 3),
    # Restart a worker process after this many tasks so dlib's memory stays bounded.
    "recycle": env_int("Q_RECYCLE", 200),
    "save_limit": env_int("Q_SAVE_LIMIT", 1000),
    "ack_failures": True,
    "catch_up": False,
    "label": "Jobs",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    # Poll the ORM queue often so a selfie is picked up within a second.
    Q_CLUSTER["poll"] = env_float("Q_POLL", 0.5)

# The sweeper (a django-q2 schedule, made at `migrate`) queues again, this often,
# every photo and selfie whose job was lost: claimed longer than Q_TIMEOUT ago by
# a worker that died, or pending with no job in the queue (`reindex --stuck`).
Q_SWEEP_MINUTES = env_int("Q_SWEEP_MINUTES", 5)

# --- Files --------------------------------------------------------------------

STATIC_URL = "/static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(BASE_DIR / "media")))
# Media is never served by URL: every file goes through an access-checked view.
MEDIA_URL = "/media-not-served/"

AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    _media_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env("AWS_S3_ENDPOINT_URL") or None,
            "region_name": env("AWS_S3_REGION_NAME") or env("AWS_DEFAULT_REGION") or None,
            # Private objects, reached only through short-lived presigned URLs.
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": env_int("AWS_QUERYSTRING_EXPIRE", 300),
            # SigV4: required by every region opened since 2014, and by most S3-compatible servers.
            "signature_version": "s3v4",
            "file_overwrite": False,
            "location": env("AWS_LOCATION", ""),
        },
    }
else:
    _media_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _media_storage,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Uploads: the admin accepts many files in one request; each is streamed to disk.
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("UPLOAD_MAX_FILES", 2000)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
PHOTO_MAX_BYTES = env_int("PHOTO_MAX_BYTES", 50 * 1024 * 1024)
PHOTO_MAX_PIXELS = env_int("PHOTO_MAX_PIXELS", 100_000_000)
ARCHIVE_MAX_MEMBERS = env_int("ARCHIVE_MAX_MEMBERS", 20_000)
# Browser uploads arrive in chunks of this size (each stored before it is
# acknowledged); a whole file (a zip archive) may be this large.
UPLOAD_CHUNK_BYTES = env_int("UPLOAD_CHUNK_BYTES", 4 * 1024 * 1024)
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 20 * 1024**3)
# An uploaded zip archive is imported this many files per job, each job queueing the
# next: a job stays well within Q_TIMEOUT however large the archive.
UPLOAD_IMPORT_BATCH = env_int("UPLOAD_IMPORT_BATCH", 200)
if UPLOAD_IMPORT_BATCH < 1:
    raise ImproperlyConfigured("UPLOAD_IMPORT_BATCH must be at least 1.")
if not 64 * 1024 <= UPLOAD_CHUNK_BYTES <= 100 * 1024 * 1024:
    raise ImproperlyConfigured("UPLOAD_CHUNK_BYTES must be between 64 KiB and 100 MiB.")
SELFIE_MAX_BYTES = env_int("SELFIE_MAX_BYTES", 20 * 1024 * 1024)
SELFIE_MAX_SIDE = env_int("SELFIE_MAX_SIDE", 1024)
# Refused above this (any format, read from the header) before anything is decoded:
# more than any phone's selfie, and it bounds the job's decoding memory (a
# progressive JPEG needs ~6 bytes per pixel, whatever the scale it is decoded at).
SELFIE_MAX_PIXELS = env_int("SELFIE_MAX_PIXELS", 24_000_000)
# Selfies one attendee may have at once (side views, glasses): their matches make one gallery.
ATTENDEE_MAX_SELFIES = env_int("ATTENDEE_MAX_SELFIES", 3)
THUMBNAIL_SIDE = env_int("THUMBNAIL_SIDE", 480)
# Served copies (view and download) are re-encoded without EXIF, at most this big.
DISPLAY_MAX_SIDE = env_int("DISPLAY_MAX_SIDE", 3000)

# --- E-mail -------------------------------------------------------------------

# Attendees may ask for their private link by e-mail, and for one message when new
# photos of them turn up. Sent by jobs. Without EMAIL_HOST, messages are printed
# by the job cluster (console backend); with it, sent by SMTP.
EMAIL_HOST = env("EMAIL_HOST")
EMAIL_BACKEND = env(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 20)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Trouvaille <noreply@localhost>")

# --- Faces --------------------------------------------------------------------

FACE_BACKEND = env("FACE_BACKEND", "dlib")
# 0.62 with the rules below (one person per face); 0.6 was the single-threshold
# default. docs/accuracy.md has the measurements behind every default here.
FACE_TOLERANCE = env_float("FACE_TOLERANCE", 0.62)
# Smallest face to find, as a share of the photo's longest side (100 px in 4000 px).
_FACE_MIN_SIZE_RATIO = env_float("FACE_MIN_SIZE_RATIO", 0.025)
FACE_DETECT_UPSAMPLE = env_int("FACE_DETECT_UPSAMPLE", 1)
# dlib's HOG detector finds faces from ~80 px; each upsample halves that. Photos
# are downscaled before detection (its cost grows with pixels) to the size where
# the smallest wanted face is still found: 80 / 2 / 0.025 = 1600 px by default.
FACE_DETECT_MAX_SIDE = env_int("FACE_DETECT_MAX_SIDE", math.ceil(80 / 2**FACE_DETECT_UPSAMPLE / _FACE_MIN_SIZE_RATIO))
FACE_MODEL = env("FACE_MODEL", "hog")
# Each job worker keeps recently searched events' face matrices in memory, up to this
# many bytes (532 bytes a face: 512 of embedding, 8 of photo id, 4 each of squared norm,
# face size and sharpness), so the default holds one event of ~1,000,000 faces or many
# smaller ones. 0 disables it.
FACE_CACHE_MAX_BYTES = env_int("FACE_CACHE_MAX_BYTES", 512 * 1024 * 1024)
if FACE_CACHE_MAX_BYTES < 0:
    raise ImproperlyConfigured("FACE_CACHE_MAX_BYTES must be 0 or more")

# Matching rules (matching/rules.py, docs/accuracy.md). Selfies closer than this
# are one person and share their faces.
FACE_MERGE_DISTANCE = env_float("FACE_MERGE_DISTANCE", 0.4)
# Faces whose box is smaller than this (px) or less sharp than this are matched
# only within FACE_LOW_QUALITY_TOLERANCE.
FACE_MIN_QUALITY_SIZE = env_int("FACE_MIN_QUALITY_SIZE", 40)
FACE_MIN_SHARPNESS = env_float("FACE_MIN_SHARPNESS", 0.05)
FACE_LOW_QUALITY_TOLERANCE = env_float("FACE_LOW_QUALITY_TOLERANCE", 0.6)
# Query expansion: photo faces matched within FACE_PROBE_DISTANCE find faces of
# other photos within FACE_EXPANSION_TOLERANCE of them.
FACE_PROBE_DISTANCE = env_float("FACE_PROBE_DISTANCE", 0.5)
FACE_EXPANSION_TOLERANCE = env_float("FACE_EXPANSION_TOLERANCE", 0.45)
# dlib: a selfie is encoded this many times with random jitter and averaged.
FACE_SELFIE_JITTER = env_int("FACE_SELFIE_JITTER", 1)
# dlib: landmark model for encodings, small (5 points, fast) or large (68 points).
FACE_SELFIE_LANDMARKS = env("FACE_SELFIE_LANDMARKS", "small")
# dlib: how embeddings are computed. numpy runs dlib's own network (its model file)
# with numpy's OpenBLAS: the same embeddings (within 1e-6) for ~1/5 of the CPU of
# dlib-bin, which is built without BLAS (docs/benchmarks.md, section 2); dlib uses
# dlib's encoder. Jittered or 68-point selfie encodings always use dlib's.
FACE_EMBEDDER = env("FACE_EMBEDDER", "numpy")
if FACE_EMBEDDER not in {"numpy", "dlib"}:
    raise ImproperlyConfigured(f"FACE_EMBEDDER={FACE_EMBEDDER!r}: use numpy or dlib")
# One OpenBLAS thread per process: each job worker (Q_WORKERS, one per core) already
# keeps a core busy, and OpenBLAS's own threads would oversubscribe the cores (two
# workers on 2 cores: 10x slower embeddings, measured). OpenBLAS reads this once,
# when numpy is first imported, which in every process (manage.py, gunicorn, the
# cluster's workers) comes after the settings; a value set by the operator wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

AWS_REKOGNITION_REGION = env("AWS_REKOGNITION_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1"
AWS_REKOGNITION_COLLECTION_PREFIX = env("AWS_REKOGNITION_COLLECTION_PREFIX", "trouvaille")
AWS_REKOGNITION_SIMILARITY = env_float("AWS_REKOGNITION_SIMILARITY", 90.0)
# Faces below this quality are dropped by Rekognition (NONE, AUTO, LOW, MEDIUM, HIGH).
AWS_REKOGNITION_QUALITY_FILTER = env("AWS_REKOGNITION_QUALITY_FILTER", "AUTO")
# Longest side sent to Rekognition; above 1920x1080 it needs proportionally bigger faces.
AWS_REKOGNITION_MAX_SIDE = env_int("AWS_REKOGNITION_MAX_SIDE", 1920)
# Concurrent Rekognition calls per worker process, to stay under the account's TPS quota.
AWS_CONCURRENT_REQUESTS = env_int("AWS_CONCURRENT_REQUESTS", 4)
AWS_MAX_ATTEMPTS = env_int("AWS_MAX_ATTEMPTS", 8)


def _check_rekognition() -> None:
    """Refuse values AWS would reject on every call, or that would hang the workers.

    botocore's Stubber checks neither enums nor upper bounds, so tests alone do not
    catch them; checked whatever FACE_BACKEND is, so switching engines later is safe.
    """
    problems = []
    if AWS_REKOGNITION_QUALITY_FILTER not in {"NONE", "AUTO", "LOW", "MEDIUM", "HIGH"}:
        problems.append(
            f"AWS_REKOGNITION_QUALITY_FILTER={AWS_REKOGNITION_QUALITY_FILTER!r} must be NONE, AUTO, LOW, MEDIUM or HIGH"
        )
    if not 0 <= AWS_REKOGNITION_SIMILARITY <= 100:
        problems.append(f"AWS_REKOGNITION_SIMILARITY={AWS_REKOGNITION_SIMILARITY} must be between 0 and 100")
    # Collection ids are "<prefix>-event-<id>": CollectionId allows 1-255 of [a-zA-Z0-9_.-].
    if not re.fullmatch(r"[a-zA-Z0-9_.\-]{1,200}", AWS_REKOGNITION_COLLECTION_PREFIX):
        problems.append(
            f"AWS_REKOGNITION_COLLECTION_PREFIX={AWS_REKOGNITION_COLLECTION_PREFIX!r} must be 1-200 characters "
            "among a-z A-Z 0-9 _ . -"
        )
    if AWS_REKOGNITION_MAX_SIDE != 0 and AWS_REKOGNITION_MAX_SIDE < 80:
        problems.append(f"AWS_REKOGNITION_MAX_SIDE={AWS_REKOGNITION_MAX_SIDE} must be 0 (no cap) or at least 80")
    if AWS_CONCURRENT_REQUESTS < 1:  # a semaphore of 0 blocks every call forever
        problems.append(f"AWS_CONCURRENT_REQUESTS={AWS_CONCURRENT_REQUESTS} must be at least 1")
    if AWS_MAX_ATTEMPTS < 1:
        problems.append(f"AWS_MAX_ATTEMPTS={AWS_MAX_ATTEMPTS} must be at least 1")
    if problems:
        raise ImproperlyConfigured("Invalid Rekognition settings: " + "; ".join(problems))


_check_rekognition()

# --- Security -----------------------------------------------------------------

# Django's defaults stand for the rest: HttpOnly and SameSite=Lax session cookies,
# X-Frame-Options: DENY, nosniff, Referrer-Policy: same-origin.
SESSION_COOKIE_AGE = 60 * 60 * 24 * 90  # attendees come back to new photos for weeks
# The reverse proxies (addresses or networks) in front of the web server: only a
# request coming from one of them has its X-Forwarded-For believed (the last hop
# that is not a trusted proxy is the client) and its X-Forwarded-Proto. Default:
# nginx on the same machine in production (docs/deploy.md); nobody in debug.
if "BEHIND_PROXY" in os.environ:
    raise ImproperlyConfigured(
        "BEHIND_PROXY was replaced by TRUSTED_PROXIES (the proxy addresses to believe, e.g. 127.0.0.1,::1)."
    )


def _networks(name: str, default: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(item, strict=False) for item in env_list(name, default)]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from exc


TRUSTED_PROXIES = _networks("TRUSTED_PROXIES", "" if DEBUG else "127.0.0.1,::1")
# Event codes tried per event in CODE_ATTEMPT_WINDOW seconds: per visitor (session),
# and per address (larger: a venue's Wi-Fi is one address for hundreds of people).
# Correct codes do not count.
CODE_ATTEMPTS = env_int("CODE_ATTEMPTS", 10)
CODE_ATTEMPTS_PER_ADDRESS = env_int("CODE_ATTEMPTS_PER_ADDRESS", 100)
CODE_ATTEMPT_WINDOW = env_int("CODE_ATTEMPT_WINDOW", 15 * 60)
# The language switcher's choice is kept for a year; it is not sent to other sites.
LANGUAGE_COOKIE_AGE = 60 * 60 * 24 * 365
LANGUAGE_COOKIE_SAMESITE = "Lax"
# Selfie uploads per event in SELFIE_UPLOAD_WINDOW seconds: per visitor (session),
# per address and for the whole event. Above them: 429 and a message to wait.
SELFIE_UPLOADS_PER_CLIENT = env_int("SELFIE_UPLOADS_PER_CLIENT", 10)
SELFIE_UPLOADS_PER_ADDRESS = env_int("SELFIE_UPLOADS_PER_ADDRESS", 300)
SELFIE_UPLOADS_PER_EVENT = env_int("SELFIE_UPLOADS_PER_EVENT", 3000)
SELFIE_UPLOAD_WINDOW = env_int("SELFIE_UPLOAD_WINDOW", 10 * 60)
# A selfie deleted (or replaced) less than this many minutes after it was matched is
# listed on the organizer's audit page: searching for someone, then hiding the search.
AUDIT_QUICK_DELETE_MINUTES = env_int("AUDIT_QUICK_DELETE_MINUTES", 10)
# The pose check of camera-only events (matching.pose, docs/privacy.md): the head's
# turn measured from dlib's landmarks (0 facing, ±1 in profile); frontal photos of
# the sample faces measure 0.15 at most, three-quarter views 0.29 to 0.57. The two
# pictures' embedding distance: 0.33 to 0.42 between frontal and turned photos of
# one person taken on different days, 0.65 or more between two people.
POSE_FRONTAL_MAX_YAW = env_float("POSE_FRONTAL_MAX_YAW", 0.2)
POSE_TURNED_MIN_YAW = env_float("POSE_TURNED_MIN_YAW", 0.3)
POSE_SAME_PERSON_DISTANCE = env_float("POSE_SAME_PERSON_DISTANCE", 0.5)


# Content-Security-Policy (django-csp): scripts and styles only from our own static
# files, no inline code (an injected <script> or style="" does nothing). Images may
# also be data: (the favicon), blob: (the selfie preview) and, with S3, the bucket
# the photo views redirect to.
def _media_origins() -> list[str]:
    if not AWS_STORAGE_BUCKET_NAME:
        return []
    endpoint = urlsplit(env("AWS_S3_ENDPOINT_URL"))
    if endpoint.netloc:  # path-style or virtual-hosted on an S3-compatible server
        return [
            f"{endpoint.scheme}://{endpoint.netloc}",
            f"{endpoint.scheme}://{AWS_STORAGE_BUCKET_NAME}.{endpoint.netloc}",
        ]
    region = _media_storage["OPTIONS"]["region_name"]
    hosts = [f"{AWS_STORAGE_BUCKET_NAME}.s3.amazonaws.com"]
    if region:
        hosts += [f"{AWS_STORAGE_BUCKET_NAME}.s3.{region}.amazonaws.com", f"s3.{region}.amazonaws.com"]
    return [f"https://{host}" for host in hosts]


CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp.SELF],
        "script-src": [csp.SELF],
        # The admin's change list adds one fixed <style> block (only on a list without
        # actions): allowed by its hash, checked against Django's template by the tests.
        "style-src": [csp.SELF, "'sha256-blvLUW3UscWqsXGByNOqdBboM+ShWAuugp2mC/wbafU='"],
        "img-src": [csp.SELF, "data:", "blob:", *_media_origins()],
        "object-src": [csp.NONE],
        "base-uri": [csp.NONE],
        "form-action": [csp.SELF],
        "frame-ancestors": [csp.NONE],
    }
}

# Admin logins (django-axes): after ADMIN_LOGIN_ATTEMPTS wrong passwords from one
# client address, its logins are refused (HTTP 429) for ADMIN_LOGIN_LOCKOUT seconds.
# Per address, not per account, so nobody can lock an organizer out from elsewhere;
# the address is the one the event-code limiter uses (X-Forwarded-For only from TRUSTED_PROXIES).
# `manage.py axes_reset` lifts every lockout; the admin lists attempts and lockouts.
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_ATTEMPTS", 10)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("ADMIN_LOGIN_LOCKOUT", 15 * 60))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_CLIENT_IP_CALLABLE = "gallery.access.client_ip"
AXES_RESET_ON_SUCCESS = True

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    LANGUAGE_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 30)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading commits the whole domain to HTTPS in browsers for months:
        # the operator's decision (SECURE_HSTS_PRELOAD=1), not a default.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    if TRUSTED_PROXIES:
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# --- Logging ------------------------------------------------------------------

LOGGING = logging_config(
    level=env("LOG_LEVEL", "INFO"),
    fmt=env("LOG_FORMAT", "text" if DEBUG else "json"),
    jobs_level=env("Q_LOG_LEVEL", "WARNING"),
)


def _check_production() -> None:
    """Refuse to start a non-debug process with development defaults."""
    problems = []
    if SECRET_KEY == _DEV_SECRET_KEY or len(SECRET_KEY) < 32:
        problems.append("DJANGO_SECRET_KEY must be set to a long random value")
    if not ALLOWED_HOSTS:
        problems.append("DJANGO_ALLOWED_HOSTS must list the public host names")
    if Q_CLUSTER["retry"] <= Q_CLUSTER["timeout"] + 2:
        # A job still running would be delivered to a second worker; and a claim
        # is only known abandoned once Q_TIMEOUT has passed (gallery.models).
        problems.append("Q_RETRY must exceed Q_TIMEOUT by more than 2 seconds")
    if FACE_BACKEND not in {"dlib", "rekognition"}:
        problems.append(f"FACE_BACKEND={FACE_BACKEND!r} is not a production engine (dlib, rekognition)")
    if problems:
        raise ImproperlyConfigured("Unsafe production settings (DJANGO_DEBUG=0): " + "; ".join(problems))


if not DEBUG:
    _check_production()
