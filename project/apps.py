from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project itself as an app, so that its system checks are registered at startup."""

    name = "project"
    verbose_name = "Ferry"

    def ready(self):
        from . import checks  # noqa: F401  (registers the checks)
