"""Sending stored media to a browser, after the caller's access check."""

from __future__ import annotations

from django.core.files.storage import FileSystemStorage
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect
from django.utils.http import content_disposition_header


def serve_file(file: FieldFile, *, download_name: str | None = None) -> HttpResponse:
    """Local files stream through here; object storage answers a presigned redirect."""
    if not file:
        raise Http404("Not ready yet.")
    if isinstance(file.storage, FileSystemStorage):
        response: HttpResponse = FileResponse(
            file.open("rb"), as_attachment=bool(download_name), filename=download_name or ""
        )
        response["Content-Type"] = "image/jpeg"
    else:
        # Properly quoted (and RFC 5987-encoded for non-ASCII names), as Django's FileResponse does.
        disposition = content_disposition_header(True, download_name) if download_name else None
        parameters = {"ResponseContentDisposition": disposition} if disposition else {}
        response = HttpResponseRedirect(file.storage.url(file.name, parameters=parameters))
        # Well within the presigned URL's lifetime, so a cached redirect never points at an expired URL.
        response["Cache-Control"] = "private, max-age=60"
        return response
    response["Cache-Control"] = "private, max-age=300"
    return response
