from django.apps import AppConfig


class ResearchConfig(AppConfig):
    """The research-brief workflow: its steps live in tasks.py (autodiscovered by
    Procrastinate's Django integration), its fake model provider in providers.py."""

    name = "example_project.research"
    label = "research"
    verbose_name = "Example research brief"
