"""Operations: structured logs for jobs and requests, and the health check."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from logging.config import DictConfigurator

import pytest

from config.logging import logging_config
from gallery import services
from tests.conftest import ROOT, wait_for
from tests.ports import free_port

pytestmark = pytest.mark.django_db


def render(record: logging.LogRecord, fmt: str = "json") -> str:
    """The line the configured console handler writes for this record (its formatter and filters)."""
    config = DictConfigurator(logging_config(level="INFO", fmt=fmt, jobs_level="INFO"))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(config.configure_formatter(config.config["formatters"][fmt]))
    for name in config.config["handlers"]["console"]["filters"]:
        handler.addFilter(config.configure_filter(config.config["filters"][name]))
    handler.handle(record)
    return stream.getvalue()


def test_job_logs_carry_ids_duration_and_outcome(event, run_jobs, caplog):
    from tests.conftest import jpeg_bytes

    with caplog.at_level(logging.INFO, logger="trouvaille.jobs"), run_jobs():
        services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    record = next(r for r in caplog.records if r.name == "trouvaille.jobs")
    line = json.loads(render(record))
    assert line["job"] == "photo_index" and line["outcome"] == "indexed"
    assert isinstance(line["photo_id"], int) and line["duration_ms"] >= 0 and len(line["job_id"]) == 12


def test_request_logs_and_text_format(client, caplog):
    with caplog.at_level(logging.INFO, logger="trouvaille.request"):
        client.get("/e/missing/")
    record = next(r for r in caplog.records if r.name == "trouvaille.request")
    assert "status=404" in render(record, "text") and "path=/e/missing/" in render(record, "text")
    line = json.loads(render(record))
    assert line["status"] == 404 and line["level"] == "INFO" and line["logger"] == "trouvaille.request"


def test_healthz_is_ok_on_the_embedded_setup(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok", "storage": "ok"}}
    assert response["Cache-Control"].startswith("max-age=0")


def test_healthz_reports_an_unreachable_broker_without_secrets(client, settings):
    settings.REDIS_URL = "redis://:hunter2@127.0.0.1:9/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and body["checks"]["broker"].startswith("unreachable")
    assert "hunter2" not in response.content.decode()


@pytest.mark.parametrize("path", ["/e/missing/me/{token}/", "/e/missing/me/{token}", "/e/missing/me/{token}?x=1"])
def test_private_link_tokens_are_not_logged(client, caplog, path):
    token = secrets.token_urlsafe(32)
    with caplog.at_level(logging.INFO):
        client.get(path.format(token=token), HTTP_REFERER=f"https://photos.example.org/e/x/me/{token}/")
    # Not found (Django logs "Not Found: <path>" too), or redirected to the slash form.
    assert "trouvaille.request" in {r.name for r in caplog.records}
    for record in caplog.records:
        for fmt in ("json", "text"):
            assert token not in render(record, fmt)
    request_line = next(r for r in caplog.records if r.name == "trouvaille.request")
    assert json.loads(render(request_line))["path"].startswith("/e/missing/me/<redacted>")


def test_a_token_in_a_traceback_or_encoded_in_a_query_is_redacted():
    token = secrets.token_urlsafe(32)
    try:
        raise ValueError(f"bad link /e/x/me/{token}")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, "", 0, "next=%s", (f"%2Fe%2Fx%2Fme%2F{token}",), None)
        record.exc_info = sys.exc_info()
    for fmt in ("json", "text"):
        line = render(record, fmt)
        assert token not in line and "ValueError" in line and "%2Fme%2F<redacted>" in line


def test_view_names_under_me_stay_readable(client, caplog):
    with caplog.at_level(logging.INFO):
        client.get("/e/missing/me/status")
    assert "/e/missing/me/status" in render(next(r for r in caplog.records if r.name == "trouvaille.request"))


def test_runserver_lines_are_redacted_too(tmp_path):
    """runserver logs 4xx and 5xx lines through django.server, which Django's default
    logging gives a handler of its own: it must go through the redacting one."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL"))},
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CACHE_DIR": str(tmp_path / "cache"),
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    port, token = free_port(), secrets.token_urlsafe(32)
    log = tmp_path / "runserver.log"
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "Quit the server" in log.read_text(), timeout=60, what="runserver")
        for path in (f"/e/nope/me/{token}/", f"/e/nope/me/{token}"):
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)  # loopback test server
        wait_for(lambda: log.read_text().count(" 404 ") >= 2, timeout=10, what="runserver's 404 lines")
    finally:
        server.terminate()
        server.wait(timeout=30)
    text = log.read_text()
    assert token not in text
    assert '"GET /e/nope/me/<redacted>/ HTTP/1.1" 404' in text


@pytest.mark.parametrize(
    "command",
    [["import_photos", "nope", "."], ["find_faces", "nope", "x.jpg"], ["reindex", "nope"], ["rematch", "nope"]],
)
def test_commands_name_an_unknown_event_and_how_to_create_one(command):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=r"No event with the slug 'nope'\. Create it with `manage.py create_event`"):
        call_command(*command)
