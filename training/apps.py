from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self):
        from annotate.panels import register

        from .head_views import head_panel
        from .panels import rounds_panel

        register(rounds_panel)
        register(head_panel)
