from django.apps import AppConfig


class BatonConfig(AppConfig):
    name = "baton"
    label = "baton"
    verbose_name = "baton workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
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
