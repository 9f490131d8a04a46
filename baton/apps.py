from django.apps import AppConfig


class BatonConfig(AppConfig):
    name = "baton"
    label = "baton"
    verbose_name = "baton workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # App loading: Django loads apps.py before any app is ready, and advises ready()
        # for modules that connect signal handlers and register checks and tasks.
        from baton import (
            broadcast,
            checks,  # noqa: F401  (registers the system checks)
            tasks,
            tracing,
        )

        broadcast.connect()
        tracing.connect()
        # Never raises: an invalid BATON keeps the default and the checks report it.
        tasks.schedule_sweep()
