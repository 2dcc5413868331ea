from django.apps import AppConfig


class FollowerConfig(AppConfig):
    name = "filesync.follower"
    label = "follower"
    verbose_name = "Follower"
    default_auto_field = "django.db.models.BigAutoField"
