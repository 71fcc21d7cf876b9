from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from gallery import services
from gallery.links import public_url
from gallery.models import Event

SAMPLES = Path(__file__).resolve().parents[2] / "sample_photos"
PASSWORD_FILE = settings.BASE_DIR / ".demo-admin-password"


class Command(BaseCommand):
    help = "Create the demo event from the bundled sample photos and an admin login (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        password = self._admin_password()
        event = Event.objects.filter(slug="demo").first() or services.event_create(name="Trouvaille demo", slug="demo")
        summary = services.paths_import(event=event, paths=[SAMPLES / "people", SAMPLES / "groups"])
        self.stdout.write(f"Demo event: {summary.describe()}; indexing runs in the job cluster.")
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"  Trouvaille is at   {public_url('/')}"))
        self.stdout.write(self.style.SUCCESS(f"  Demo event:        {public_url(event.get_absolute_url())}"))
        self.stdout.write(
            self.style.SUCCESS(f"  Admin:             {public_url('/admin/')}  user admin, password {password}")
        )
        self.stdout.write(f"  Try a selfie from {SAMPLES / 'people'} (e.g. obama/obama2.jpg).")
        self.stdout.write("")

    def _admin_password(self) -> str:
        """One random password per checkout, kept in a git-ignored file."""
        if PASSWORD_FILE.exists():
            password = PASSWORD_FILE.read_text().strip()
        else:
            password = secrets.token_urlsafe(12)
            PASSWORD_FILE.write_text(password + "\n")
            PASSWORD_FILE.chmod(0o600)
        user, _ = get_user_model().objects.get_or_create(username="admin", defaults={"email": "admin@localhost"})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        return password
