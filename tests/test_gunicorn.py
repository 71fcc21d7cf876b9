"""The production web tier for real: gunicorn with gunicorn.conf.py, production settings,
whitenoise serving hashed static files, /healthz, JSON access logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.test_settings import PRODUCTION


def _get(url: str, host: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host, "X-Forwarded-Proto": "https"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # loopback test server
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def gunicorn(tmp_path: Path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL", "AWS_"))},
        **PRODUCTION,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'web.sqlite3'}",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "CACHE_DIR": str(tmp_path / "cache"),
        "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_CONTROL_SOCKET": "off",
    }
    for command in (["migrate", "--noinput", "-v", "0"], ["collectstatic", "--noinput", "-v", "0"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True)
    log = tmp_path / "gunicorn.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://{env['GUNICORN_BIND']}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _get(f"{base}/healthz", "photos.example.org")
            break
        except OSError:
            time.sleep(0.2)
    yield base, log
    process.terminate()
    process.wait(timeout=30)


def test_gunicorn_serves_the_app_with_production_settings(gunicorn):
    base, log = gunicorn
    status, body = _get(f"{base}/healthz", "photos.example.org")
    assert status == 200 and json.loads(body)["status"] == "ok"

    status, page = _get(f"{base}/", "photos.example.org")
    assert status == 200
    css = page.decode().split('href="/static/css/')[1].split('"')[0]
    assert css.startswith("site.") and css != "site.css"  # hashed name from the manifest
    status, stylesheet = _get(f"{base}/static/css/{css}", "photos.example.org")
    assert status == 200 and b".grid" in stylesheet

    assert _get(f"{base}/", "evil.example.com")[0] == 400  # not in DJANGO_ALLOWED_HOSTS
    assert _get(f"{base}/e/nope/me/SECRET-TOKEN-123/", "photos.example.org")[0] == 404

    time.sleep(0.5)  # the access log is written after the response
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert "SECRET-TOKEN-123" not in log.read_text()  # private links are never logged
    assert any(line.get("path") == "/e/nope/me/<redacted>/" for line in lines)
    access = [line for line in lines if line.get("logger") == "gunicorn.access" and line["path"] == "/healthz"]
    assert access and access[0]["status"] == 200 and access[0]["method"] == "GET" and access[0]["duration_ms"] >= 0
