from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self):
        from annotate.panels import register, register_import_origin

        from .panels import generated_imports, rounds_panel

        register(rounds_panel)
        register_import_origin(generated_imports)
