"""/healthz/: answers 200 "ok" when the app can reach its database (container health checks)."""

from django.db import connection
from django.http import HttpResponse


def health(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse("ok", content_type="text/plain")
