"""Settings come from the environment: what each service variable changes, and what refuses to start."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "photos.example.org",
}

# What a process started with these settings actually uses; nothing here connects anywhere.
_PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.core.cache import caches
from django.core.files.storage import storages
from django.db import connection
from django_q.brokers import get_broker
report = {
    "database": connection.vendor,
    "broker": type(get_broker()).__name__,
    "cache": type(caches["default"]).__name__,
    "storage": type(storages["default"]).__name__,
    "media_url": storages["default"].url("events/1/a.jpg"),
    "secret_key": settings.SECRET_KEY,
}
if connection.vendor == "sqlite":
    with connection.cursor() as cursor:
        report["journal_mode"] = cursor.execute("PRAGMA journal_mode").fetchone()[0]
print(json.dumps(report))
"""


def _env(extra: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL", "AWS_"))}
    return {**keep, "DJANGO_SETTINGS_MODULE": "config.settings", **extra}


def probe(**extra: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, env=_env(extra), capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def manage(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=_env(extra), capture_output=True, text=True
    )


def test_embedded_setup_without_any_service(tmp_path):
    used = probe(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", CACHE_DIR=str(tmp_path / "cache"))
    assert used["database"] == "sqlite" and used["journal_mode"] == "wal"  # readers go on during a write
    assert used["broker"] == "ORM" and used["cache"] == "FileBasedCache" and used["storage"] == "FileSystemStorage"


def test_each_service_variable_switches_its_service():
    used = probe(
        **PRODUCTION,
        DATABASE_URL="postgres://trouvaille:pw@db.internal:5432/trouvaille",
        REDIS_URL="redis://cache.internal:6379/0",
        AWS_STORAGE_BUCKET_NAME="event-photos",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="eu-west-3",
    )
    assert used["database"] == "postgresql" and used["broker"] == "Redis" and used["cache"] == "RedisCache"
    assert used["storage"] == "S3Storage"
    # Private objects reached through short-lived presigned URLs, never a public one.
    assert "event-photos" in used["media_url"] and "X-Amz-Signature=" in used["media_url"]


def test_secrets_can_come_from_files(tmp_path):
    secret = secrets.token_urlsafe(50)
    (tmp_path / "key").write_text(secret + "\n")
    production = {k: v for k, v in PRODUCTION.items() if k != "DJANGO_SECRET_KEY"}
    assert probe(**production, DJANGO_SECRET_KEY_FILE=str(tmp_path / "key"))["secret_key"] == secret


def test_unsafe_production_settings_refuse_to_start():
    result = manage("check", DJANGO_DEBUG="0")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr and "DJANGO_ALLOWED_HOSTS" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SECURE_COOKIES", "flase", "SECURE_COOKIES='flase' is not a yes/no value"),
        ("DJANGO_DEBUG", "nope", "DJANGO_DEBUG='nope' is not a yes/no value"),
        ("Q_WORKERS", "two", "Q_WORKERS='two' is not a valid int"),
        ("FACE_TOLERANCE", "0,6", "FACE_TOLERANCE='0,6' is not a valid float"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml': use json or text"),
    ],
)
def test_unreadable_values_refuse_to_start_with_a_clear_message(variable, value, message):
    result = manage("check", **{**PRODUCTION, variable: value})
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_yes_no_values_are_read_in_every_usual_spelling():
    for value in ("0", "false", "No", "OFF"):
        result = manage("check", "--deploy", **{**PRODUCTION, "SECURE_COOKIES": value})
        # Turning secure cookies off is what Django's deployment check then warns about.
        assert "security.W012" in result.stderr and "security.W016" in result.stderr, value


def test_check_deploy_is_clean_under_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr


def test_production_static_files_get_hashed_names(tmp_path):
    result = manage("collectstatic", "--noinput", "-v", "0", STATIC_ROOT=str(tmp_path), **PRODUCTION)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "staticfiles.json").read_text())
    hashed = manifest["paths"]["css/site.css"]
    assert hashed != "css/site.css" and (tmp_path / hashed).exists() and (tmp_path / f"{hashed}.gz").exists()


def test_every_variable_the_settings_read_is_in_env_example():
    import re

    source = (ROOT / "config" / "settings.py").read_text()
    read = set(re.findall(r'\benv(?:_int|_float|_bool|_list)?\(\s*"([A-Z][A-Z0-9_]*)"', source))
    read |= set(re.findall(r'environ(?:\.get|\.setdefault)?\(\s*"([A-Z][A-Z0-9_]*)"', source))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert len(read) > 50  # the patterns still find the settings
    assert sorted(read - documented) == []
