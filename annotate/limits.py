"""Request size limits, enforced before a body is read: a middleware that answers 413 from the
declared length alone, and an upload handler that stops a file the moment it passes the limit
(for a length within the slack left for form fields). Each error names the limit and its setting."""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpResponse, JsonResponse

FORM_FIELDS_SLACK = 64 * 1024  # a multipart body carries a few form fields beside the file


def human(size: int) -> str:
    """1024 -> '1 KB', 1048576 -> '1 MB' (binary units, as the settings are)."""
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


def upload_limit_message(size: int | None = None) -> str:
    said = f"The upload is {human(size)}; t" if size else "T"
    return f"{said}he limit is {human(settings.PREFLOOP_MAX_UPLOAD_BYTES)} (PREFLOOP_MAX_UPLOAD_MB). Nothing was imported."


def body_limit_message(size: int) -> str:
    return (f"The request body is {human(size)}; the limit is {human(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)} "
            "(PREFLOOP_API_MAX_BODY_MB). Send fewer items per request.")


class RequestSizeLimitMiddleware:
    """413 for a body whose declared length is over its limit: file uploads (multipart) against
    PREFLOOP_MAX_UPLOAD_BYTES, any other body against DATA_UPLOAD_MAX_MEMORY_SIZE."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if request.content_type == "multipart/form-data":
            if length > settings.PREFLOOP_MAX_UPLOAD_BYTES + FORM_FIELDS_SLACK:
                return self._refuse(request, upload_limit_message(length))
        elif settings.DATA_UPLOAD_MAX_MEMORY_SIZE is not None and length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return self._refuse(request, body_limit_message(length))
        return self.get_response(request)

    @staticmethod
    def _refuse(request, message: str) -> HttpResponse:
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": message}, status=413)
        return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Streams an upload to a temporary file and stops at PREFLOOP_MAX_UPLOAD_BYTES; the request
    then carries `upload_too_large` for the view to answer with the limit."""

    def new_file(self, *args, **kwargs):
        self.received = 0
        return super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.PREFLOOP_MAX_UPLOAD_BYTES:
            self.request.upload_too_large = True
            self.file.close()
            raise StopUpload(connection_reset=True)
        return super().receive_data_chunk(raw_data, start)
