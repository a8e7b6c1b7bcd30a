"""What a request gets while the database is unreachable (restart, failover, network cut): a
short 503 with Retry-After, as JSON on the API and a plain page elsewhere, never a 500 with a
traceback. Django closes the broken connection when the request ends (it is marked unusable),
and CONN_HEALTH_CHECKS makes the next request open a fresh one once the server is back."""

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.views.defaults import server_error

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
MESSAGE = "The database is unavailable for a moment; please retry shortly."
PAGE = ("<!doctype html><html><head><title>Service unavailable</title></head><body>"
        f"<h1>Service unavailable</h1><p>{MESSAGE}</p></body></html>")


def database_unavailable_response(request) -> HttpResponse:
    if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
        response = JsonResponse({"detail": MESSAGE}, status=503)
    else:
        response = HttpResponse(PAGE, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def server_error_or_unavailable(request, template_name="500.html"):
    """handler500: an outage met outside a view (in a middleware) is a 503 too."""
    if isinstance(sys.exc_info()[1], OperationalError | InterfaceError):
        return database_unavailable_response(request)
    return server_error(request, template_name)


class DatabaseUnavailableMiddleware:
    """Turns a lost database connection raised by a view into a 503 (see the module's docstring)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.warning("database unavailable on %s %s: %s", request.method, request.path,
                       str(exception).splitlines()[0] if str(exception) else type(exception).__name__)
        return database_unavailable_response(request)
