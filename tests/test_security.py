"""Content-Security-Policy on every page, and admin logins throttled by django-axes."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from pathlib import Path

import django.contrib.admin
import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from gallery import services
from tests.conftest import jpeg_bytes, upload
from tests.pages import tags

pytestmark = pytest.mark.django_db


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


def inline_code(html: str) -> list[str]:
    """Everything in a page that a policy without 'unsafe-inline' would block."""
    allowed_styles = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]["style-src"]
    found = []
    for tag, attrs, text in tags(html):
        found += [f"<{tag} {name}=...>" for name in attrs if name.startswith("on") or name == "style"]
        if (attrs.get("href") or "").startswith("javascript:"):
            found.append(f"<{tag} href=javascript:...>")
        if tag == "script" and "src" not in attrs and text.strip():
            found.append(f"<script>{text.strip()[:60]}")
        if tag == "style" and f"'sha256-{sha256(text)}'" not in allowed_styles:
            found.append(f"<style>{text.strip()[:60]}")
    return found


def sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def assert_strict(response) -> None:
    directives = policy(response)
    assert directives["script-src"] == ["'self'"] and directives["object-src"] == ["'none'"]
    assert "'unsafe-inline'" not in str(directives) and "'unsafe-eval'" not in str(directives)
    assert directives["frame-ancestors"] == ["'none'"] and directives["base-uri"] == ["'none'"]
    if response["Content-Type"].startswith("text/html"):
        assert inline_code(response.content.decode()) == [], response.request["PATH_INFO"]


def test_attendee_pages_are_strict_and_have_no_inline_code(client, run_jobs):
    event = services.event_create(name="Gala", slug="gala", code="Sunset-42")
    with run_jobs():
        services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    pages = [client.get("/"), client.get(f"/e/{event.slug}/"), client.get("/e/nope/")]  # home, code form, 404
    pages.append(client.post(f"/e/{event.slug}/", {"code": "wrong"}))
    pages.append(client.post(f"/e/{event.slug}/", {"code": "Sunset-42"}, follow=True))  # the selfie form
    with run_jobs():
        selfie = {"image": upload("me.jpg", jpeg_bytes()), "consent": "on"}
        client.post(reverse("gallery:selfie_upload", args=[event.slug]), selfie)
    pages.append(client.get(reverse("gallery:me", args=[event.slug])))
    assert b"We found you in 1 photo" in pages[-1].content  # the gallery, with its forms
    pages.append(client.get(reverse("gallery:me_status", args=[event.slug])))
    for response in pages:
        assert_strict(response)


def test_admin_pages_are_strict_and_have_no_inline_code(admin_client, event, run_jobs):
    with run_jobs():
        services.photo_import(event=event, name="a.jpg", fileobj=io.BytesIO(jpeg_bytes()))
    urls = [reverse("admin:index"), reverse("admin:gallery_event_upload", args=[event.pk])]
    for model in admin.site._registry:
        info = model._meta.app_label, model._meta.model_name
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        urls.append(reverse("admin:{}_{}_add".format(*info)))
        first = model._default_manager.first()
        if first is not None:
            urls.append(reverse("admin:{}_{}_change".format(*info), args=[first.pk]))
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code in {200, 403}, url  # 403: models that cannot be added by hand
        assert_strict(response)
    assert_strict(Client().get(reverse("admin:login")))


def test_the_admin_style_allowed_by_hash_is_djangos():
    """The one inline <style> Django's admin writes (a change list without actions)."""
    template = Path(django.contrib.admin.__file__).parent / "templates/admin/change_list.html"
    (style,) = re.findall(r"<style>(.*?)</style>", template.read_text(), re.DOTALL)
    assert f"'sha256-{sha256(style)}'" in settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]["style-src"]


def test_photos_from_s3_are_allowed_as_images():
    from tests.test_settings import PRODUCTION, manage

    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.CONTENT_SECURITY_POLICY['DIRECTIVES']['img-src'])",
        **PRODUCTION,
        AWS_STORAGE_BUCKET_NAME="event-photos",
        AWS_S3_REGION_NAME="eu-west-3",
    )
    assert "https://event-photos.s3.eu-west-3.amazonaws.com" in result.stdout, result.stderr
    assert "'self'" in result.stdout and "https://event-photos.s3.amazonaws.com" in result.stdout


# --- Admin logins ---------------------------------------------------------------------------


@pytest.fixture
def organizer(db) -> User:
    return User.objects.create_superuser("organizer", "o@example.org", "right-password-123")


def login(client: Client, password: str, address: str = "203.0.113.7"):
    return client.post(
        reverse("admin:login"),
        {"username": "organizer", "password": password, "next": reverse("admin:index")},
        REMOTE_ADDR=address,
    )


def test_wrong_admin_passwords_get_locked_out(client, organizer):
    answers = [login(client, f"guess-{n}").status_code for n in range(30)]
    limit = settings.AXES_FAILURE_LIMIT
    assert answers[: limit - 1] == [200] * (limit - 1)  # the form again, with its error
    assert answers[limit - 1 :] == [429] * (30 - limit + 1)  # then refused without checking
    locked = login(client, "right-password-123")
    assert locked.status_code == 429 and "_auth_user_id" not in client.session  # even the right one
    assert "too many" in locked.content.decode().lower()
    # Another address is not affected: nobody can lock an organizer out from elsewhere.
    assert login(Client(), "right-password-123", address="198.51.100.9").status_code == 302


def test_a_lockout_ends_after_the_cool_off(client, organizer, settings):
    from axes.models import AccessAttempt
    from django.db.models import F

    for n in range(settings.AXES_FAILURE_LIMIT):
        login(client, f"guess-{n}")
    assert login(client, "right-password-123").status_code == 429
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME)  # time passes
    assert login(client, "right-password-123").status_code == 302


def test_a_successful_login_forgets_earlier_mistakes(client, organizer, settings):
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, f"guess-{n}")
    assert login(client, "right-password-123").status_code == 302
    client.logout()
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, f"again-{n}").status_code == 200  # counted from zero again
