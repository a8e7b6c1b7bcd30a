"""The annotation app's Django configuration."""

from django.apps import AppConfig


class AnnotateConfig(AppConfig):
    name = "annotate"
    verbose_name = "Annotation"

    def ready(self):
        from .panels import register
        from .review_views import quality_panel

        register(quality_panel)
