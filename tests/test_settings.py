"""Settings come from the environment; unsafe production settings refuse to start."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

from tests.conftest import ROOT

PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "photos.example.org",
}

_DUMP = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({
    "DEBUG": s.DEBUG, "SECRET_KEY": s.SECRET_KEY, "DATABASES": s.DATABASES, "STORAGES": s.STORAGES,
    "Q_CLUSTER": s.Q_CLUSTER, "CACHES": s.CACHES,
}, default=str))
"""


def _env(extra: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL", "AWS_"))}
    return {**keep, "DJANGO_SETTINGS_MODULE": "config.settings", **extra}


def dump(**extra: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _DUMP], cwd=ROOT, env=_env(extra), capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def manage(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=_env(extra), capture_output=True, text=True
    )


def test_embedded_defaults():
    values = dump()
    db = values["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE" and db["OPTIONS"]["timeout"] >= 20
    assert values["Q_CLUSTER"]["orm"] == "default"
    assert values["STORAGES"]["default"]["BACKEND"].endswith("FileSystemStorage")
    q = values["Q_CLUSTER"]
    assert q["timeout"] < q["retry"] and q["max_attempts"] > 0 and q["recycle"] > 0


def test_production_services_from_the_environment():
    values = dump(
        **PRODUCTION,
        DATABASE_URL="postgres://trouvaille:pw@db.internal:5432/trouvaille",
        REDIS_URL="redis://cache.internal:6379/0",
        AWS_STORAGE_BUCKET_NAME="event-photos",
    )
    db = values["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.postgresql" and db["CONN_MAX_AGE"] > 0 and db["CONN_HEALTH_CHECKS"]
    assert values["Q_CLUSTER"]["redis"] == "redis://cache.internal:6379/0" and "orm" not in values["Q_CLUSTER"]
    assert values["CACHES"]["default"]["BACKEND"].endswith("RedisCache")
    media = values["STORAGES"]["default"]
    assert media["BACKEND"] == "storages.backends.s3.S3Storage"
    assert media["OPTIONS"]["bucket_name"] == "event-photos"
    assert media["OPTIONS"]["querystring_auth"] is True and media["OPTIONS"]["default_acl"] is None


def test_secrets_can_come_from_files(tmp_path):
    secret = secrets.token_urlsafe(50)
    (tmp_path / "key").write_text(secret + "\n")
    production = {k: v for k, v in PRODUCTION.items() if k != "DJANGO_SECRET_KEY"}
    assert dump(**production, DJANGO_SECRET_KEY_FILE=str(tmp_path / "key"))["SECRET_KEY"] == secret


def test_unsafe_production_settings_refuse_to_start():
    result = manage("check", DJANGO_DEBUG="0")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr and "DJANGO_ALLOWED_HOSTS" in result.stderr


def test_check_deploy_is_clean_under_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr


def test_production_static_files_get_hashed_names(tmp_path):
    result = manage("collectstatic", "--noinput", "-v", "0", STATIC_ROOT=str(tmp_path), **PRODUCTION)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "staticfiles.json").read_text())
    hashed = manifest["paths"]["css/site.css"]
    assert hashed != "css/site.css" and (tmp_path / hashed).exists() and (tmp_path / f"{hashed}.gz").exists()
