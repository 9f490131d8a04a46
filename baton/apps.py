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
            tasks,  # noqa: F401  (registers baton's own periodic tasks)
        )

        broadcast.connect()
