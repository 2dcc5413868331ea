from django.apps import AppConfig


class ExportsConfig(AppConfig):
    name = "exports"
    verbose_name = "Exports"

    def ready(self) -> None:
        from filesync.preserving import register_pin_keeper
        from filesync.purge import register_purge_guard

        from .exporting.preserved import keep_pinned_revision
        from .models import ACTIVE_STATES, PinnedFile

        def pinned_by_active_exports(files):
            return PinnedFile.objects.filter(file__in=files, job__state__in=ACTIVE_STATES).values(
                "file_id"
            )

        register_purge_guard(pinned_by_active_exports)
        register_pin_keeper(keep_pinned_revision)
