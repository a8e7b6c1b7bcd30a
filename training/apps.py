"""The training app: jobs, checkpoints and runners. At start it registers every job kind, connects
what listens to a job's end, and adds the rounds panel to the project page."""

from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self):
        from annotate.panels import register, register_import_origin

        from . import kinds, listeners, quality_signals
        from .head_views import head_panel
        from .panels import generated_imports, rounds_panel

        kinds.register_all()
        listeners.connect()
        quality_signals.connect()
        register(rounds_panel)
        register(head_panel)
        register_import_origin(generated_imports)
