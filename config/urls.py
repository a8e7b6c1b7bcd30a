"""The root URL map: pages, API, admin."""

from django.contrib import admin
from django.urls import include, path

from .health import health

urlpatterns = [
    path("healthz/", health, name="health"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("annotate.api_urls")),
    path("api/v1/", include("training.api_urls")),
    path("", include("training.urls")),
    path("", include("annotate.urls")),
]

handler500 = "config.middleware.server_error_or_unavailable"
