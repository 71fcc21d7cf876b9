"""Operations: structured logs for jobs and requests, and the health check."""

from __future__ import annotations

import io
import json
import logging

import pytest

from config.logging import ExtraFieldsFilter, JsonFormatter, TextFormatter
from gallery import services

pytestmark = pytest.mark.django_db


def test_job_logs_carry_ids_duration_and_outcome(event, run_jobs, caplog):
    from tests.conftest import jpeg_bytes

    with caplog.at_level(logging.INFO, logger="trouvaille.jobs"), run_jobs():
        services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    record = next(r for r in caplog.records if r.name == "trouvaille.jobs")
    line = json.loads(JsonFormatter().format(record))
    assert line["job"] == "photo_index" and line["outcome"] == "indexed"
    assert isinstance(line["photo_id"], int) and line["duration_ms"] >= 0 and len(line["job_id"]) == 12


def test_request_logs_and_text_format(client, caplog):
    with caplog.at_level(logging.INFO, logger="trouvaille.request"):
        client.get("/e/missing/")
    record = next(r for r in caplog.records if r.name == "trouvaille.request")
    ExtraFieldsFilter().filter(record)
    assert "status=404" in record.extra_fields and "path=/e/missing/" in record.extra_fields
    assert json.loads(JsonFormatter().format(record))["status"] == 404


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


def test_private_link_tokens_are_not_logged(client, caplog):
    with caplog.at_level(logging.INFO):
        client.get("/e/missing/me/SECRET-TOKEN-123/")
    assert any(r.name == "django.request" for r in caplog.records)  # Django's own "Not Found: <path>"
    for record in caplog.records:
        for formatter in (JsonFormatter(), TextFormatter("%(message)s %(extra_fields)s")):
            ExtraFieldsFilter().filter(record)
            assert "SECRET-TOKEN-123" not in formatter.format(record)
    assert "/e/missing/me/<redacted>/" in JsonFormatter().format(caplog.records[-1])


@pytest.mark.parametrize(
    "command",
    [["import_photos", "nope", "."], ["find_faces", "nope", "x.jpg"], ["reindex", "nope"], ["rematch", "nope"]],
)
def test_commands_name_an_unknown_event_and_how_to_create_one(command):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=r"No event with the slug 'nope'\. Create it with `manage.py create_event`"):
        call_command(*command)
