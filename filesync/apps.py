from django.apps import AppConfig


class FilesyncConfig(AppConfig):
    name = "filesync"
    verbose_name = "Document store"
