from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from gallery import services
from gallery.management.events import acting_user, add_as_argument, event_by_slug
from gallery.models import Photo


def cluster_running() -> bool:
    """Is any qcluster alive? django-q2 keeps heartbeats in the cache."""
    from django_q.status import Stat

    try:
        return any(stat.status not in ("Stopped", "Stopping") for stat in Stat.get_all())
    except Exception:  # noqa: BLE001 - an unreachable cache means we cannot tell
        return True


class Command(BaseCommand):
    help = "Import photos (files, folders searched recursively, .zip archives) into an event."

    def add_arguments(self, parser: CommandParser) -> None:
        add_as_argument(parser)
        parser.add_argument("slug", help="The event's slug.")
        parser.add_argument(
            "paths", nargs="+", type=Path, metavar="PATH", help="Photo files, folders or .zip archives."
        )
        parser.add_argument("--wait", action="store_true", help="Wait until every imported photo is indexed or failed.")
        parser.add_argument(
            "--stall-timeout",
            type=float,
            default=60.0,
            help="With --wait: give up after this many seconds without progress (default 60).",
        )

    def handle(
        self,
        *args: object,
        slug: str,
        paths: list[Path],
        wait: bool,
        stall_timeout: float,
        as_user: str | None,
        **options: object,
    ) -> None:
        event = event_by_slug(slug, user=acting_user(as_user))
        missing = [str(path) for path in paths if not path.exists()]
        if missing:
            raise CommandError(f"No such file or folder: {', '.join(missing)}")

        files = list(services.expand_paths(paths))
        with tqdm(total=len(files), unit="file", desc="Importing", disable=None, file=self.stderr) as bar:
            # The files found once for the bar; paths_import takes them as they are.
            summary = services.paths_import(event=event, paths=files, on_file=lambda path, result: bar.update(1))
        for name, reason in summary.rejected:
            self.stderr.write(f"  rejected {name}: {reason}")
        self.stdout.write(self.style.SUCCESS(f"{event.slug}: {summary.describe()}."))
        if wait and summary.created:
            self._wait(summary.created, stall_timeout)

    def _wait(self, photo_ids: list[int], stall_timeout: float) -> None:
        if not cluster_running():
            self.stderr.write(
                "No job cluster seems to be running; photos wait in the queue until one starts "
                "(`python manage.py qcluster`). Waiting anyway..."
            )
        photos = Photo.objects.filter(id__in=photo_ids)
        done, last_progress = 0, time.monotonic()
        with tqdm(total=len(photo_ids), unit="photo", desc="Indexing", disable=None, file=self.stderr) as bar:
            while done < len(photo_ids):
                time.sleep(0.5)
                now_done = photos.finished().count()
                if now_done > done:
                    bar.update(now_done - done)
                    done, last_progress = now_done, time.monotonic()
                elif time.monotonic() - last_progress > stall_timeout:
                    hint = (
                        "" if cluster_running() else " No job cluster is running: start one with `manage.py qcluster`."
                    )
                    raise CommandError(
                        f"No progress for {stall_timeout:.0f} s; {len(photo_ids) - done} photos not indexed yet.{hint} "
                        "They stay queued and are indexed once a cluster runs."
                    )
        failed = photos.failed()
        for photo in failed:
            self.stderr.write(f"  failed {photo.original_name}: {photo.index_error}")
        faces = sum(photos.values_list("face_count", flat=True))
        self.stdout.write(
            self.style.SUCCESS(f"Indexed {len(photo_ids) - len(failed)} photos ({faces} faces), {len(failed)} failed.")
        )
