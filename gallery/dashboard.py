"""What an event's admin page shows about it: indexing progress, faces, selfies, failures.

Reads only; the admin page renders it and its status endpoint sends it as JSON
to static/js/event-dashboard.js, which refreshes the page's numbers while
indexing runs.
"""

from __future__ import annotations

from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce

from gallery.models import Download, Face, Photo, Selfie

FAILURES_SHOWN = 20


def event_status(event_id: int) -> dict[str, int | bool]:
    """Counts for the event: photos by state, faces, selfies, attendees who have photos, downloads, progress."""
    by_state = dict(Photo.objects.filter(event_id=event_id).values_list("index_state").annotate(n=Count("id")))
    photos = {state: by_state.get(state, 0) for state in Photo.State.values}
    total = sum(photos.values())
    finished = photos[Photo.State.INDEXED] + photos[Photo.State.FAILED]
    selfies = Selfie.objects.filter(event_id=event_id)
    downloads = Download.objects.filter(event_id=event_id).aggregate(
        photos=Coalesce(Sum("photos"), 0), zips=Count("id", filter=Q(zip=True))
    )
    return {
        "photos": total,
        **photos,
        "finished": finished,
        "percent": round(100 * finished / total) if total else 100,
        "running": finished < total,
        "faces": Face.objects.filter(photo__event_id=event_id).count(),
        "selfies": selfies.count(),
        "selfies_failed": selfies.failed().count(),
        # Attendees with at least one matched photo: what attendees came for.
        "attendees_found": selfies.filter(matches__isnull=False).values("attendee").distinct().count(),
        # By attendees only (gallery.services.event_downloads_count): photos, zips included, and zips.
        "downloads": downloads["photos"],
        "zip_downloads": downloads["zips"],
    }


def event_failures(event_id: int) -> dict[str, object]:
    """Failed photos: how many per reason, and the first few by name."""
    failed = Photo.objects.filter(event_id=event_id).failed()
    reasons = list(failed.values("index_error").annotate(n=Count("id")).order_by("-n", "index_error")[:10])
    return {
        "reasons": [(row["index_error"] or "—", row["n"]) for row in reasons],
        "photos": list(failed.order_by("original_name", "id")[:FAILURES_SHOWN]),
    }
