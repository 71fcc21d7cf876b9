"""The production web tier for real: gunicorn with gunicorn.conf.py, production settings,
whitenoise serving hashed static files, /healthz, JSON access logs."""

from __future__ import annotations

import json
import os
import runpy
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.conftest import ROOT
from tests.pages import attribute_values
from tests.ports import free_port
from tests.test_settings import PRODUCTION


def _get(url: str, host: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host, "X-Forwarded-Proto": "https", **headers})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # loopback test server
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def gunicorn(tmp_path: Path):
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL", "AWS_"))},
        **PRODUCTION,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'web.sqlite3'}",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "CACHE_DIR": str(tmp_path / "cache"),
        # Gunicorn's own variables override gunicorn.conf.py.
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} --no-control-socket",
        "WEB_CONCURRENCY": "2",
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
    base = f"http://127.0.0.1:{port}"
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
    css = next(href for href in attribute_values(page.decode(), "link", "href") if href.startswith("/static/css/"))
    assert css.startswith("/static/css/site.") and css != "/static/css/site.css"  # hashed name from the manifest
    status, stylesheet = _get(f"{base}{css}", "photos.example.org")
    assert status == 200 and b".grid" in stylesheet

    assert _get(f"{base}/", "evil.example.com")[0] == 400  # not in DJANGO_ALLOWED_HOSTS
    token = secrets.token_urlsafe(32)
    referer = {"Referer": f"https://photos.example.org/e/nope/me/{token}/"}
    assert _get(f"{base}/e/nope/me/{token}/", "photos.example.org", **referer)[0] == 404
    # Without the trailing slash (redirected to the slash form), and with a query.
    assert _get(f"{base}/e/nope/me/{token}", "photos.example.org")[0] == 404  # urllib follows the redirect
    assert _get(f"{base}/e/nope/me/{token}?lang=fr", "photos.example.org")[0] == 404

    time.sleep(0.5)  # the access log is written after the response
    text = log.read_text()
    assert token not in text  # private links are never logged, by Django or by gunicorn
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert {line["path"] for line in access} >= {"/healthz", "/e/nope/me/<redacted>/", "/e/nope/me/<redacted>"}
    assert any(line["referer"] == "https://photos.example.org/e/nope/me/<redacted>/" for line in access)
    healthz = next(line for line in access if line["path"] == "/healthz")
    assert healthz["status"] == 200 and healthz["method"] == "GET" and healthz["duration_ms"] >= 0
    requests = [line for line in lines if line["logger"] == "trouvaille.request"]
    assert any(line["path"] == "/e/nope/me/<redacted>" and line["status"] == 301 for line in requests)


def test_the_access_log_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("GUNICORN_ACCESSLOG", "off")
    off = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["logconfig_dict"]
    assert off["loggers"]["gunicorn.access"]["handlers"] == [] and not off["loggers"]["gunicorn.access"]["propagate"]
    monkeypatch.setenv("GUNICORN_ACCESSLOG", "of")
    with pytest.raises(ImproperlyConfigured, match="GUNICORN_ACCESSLOG='of' is not a yes/no value"):
        runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    monkeypatch.delenv("GUNICORN_ACCESSLOG")
    on = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["logconfig_dict"]
    assert on["loggers"]["gunicorn.access"]["handlers"] == ["console"]
