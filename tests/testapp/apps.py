import importlib
import os

from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tests.testapp import failpoints

        failpoints.connect()
        # Step modules only some processes import (a deploy that reached some first).
        for module in filter(None, os.environ.get("BATON_TEST_IMPORT", "").split(",")):
            importlib.import_module(module)
        if os.environ.get("BATON_TEST_OTEL_FILE"):
            from tests.testapp import tracing

            tracing.export_to(os.environ["BATON_TEST_OTEL_FILE"])
