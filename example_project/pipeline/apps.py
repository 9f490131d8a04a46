from django.apps import AppConfig


class PipelineConfig(AppConfig):
    """The demo's steps live in tasks.py, which Procrastinate's Django integration imports."""

    name = "example_project.pipeline"
    label = "pipeline"
    verbose_name = "Example pipeline"
