"""Sending stored media to a browser, after the caller's access check."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.core.files.storage import FileSystemStorage
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.utils.http import content_disposition_header
from zipstream import ZIP_STORED, ZipStream


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


_CHUNK = 256 * 1024


def _file_chunks(file: FieldFile) -> Iterator[bytes]:
    """The stored file's bytes, a chunk at a time, opened only when first read.

    S3 objects are streamed from the GET response itself: django-storages'
    File.read would first download the whole object to a temporary file.
    """
    if isinstance(file.storage, FileSystemStorage):
        with file.storage.open(file.name, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk
        return
    remote = file.storage.open(file.name, "rb")
    try:
        body = remote.obj.get()["Body"]
        yield from body.iter_chunks(_CHUNK)
    finally:
        remote.close()


def zip_response(files: Iterable[tuple[str, FieldFile]], *, filename: str) -> StreamingHttpResponse:
    """A zip of stored files streamed as it is built: one chunk in memory at a time, nothing on disk.

    `files` ((name in the zip, file) pairs) is read lazily, one file at a time.
    Photos are already compressed (JPEG): stored, not deflated, costs no CPU.
    """

    def generate() -> Iterator[bytes]:
        stream = ZipStream(compress_type=ZIP_STORED)
        for arcname, file in files:
            stream.add(_file_chunks(file), arcname)
            yield from stream.all_files()
        yield from stream.finalize()

    response = StreamingHttpResponse(generate(), content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Cache-Control"] = "private, no-store"
    return response
