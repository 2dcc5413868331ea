from django.core.management.base import BaseCommand, CommandError

from common.commands.stopping import Stopped, stop_on_signals
from filesync.purge import purge
from filesync.singleton import NotHeld


class Command(BaseCommand):
    help = (
        "Delete for good the files whose grace period is over and that nothing still needs "
        "(an active export, a retention lock, a replica that has not caught up), then the "
        "blobs nothing uses. --dry-run lists them only. SIGINT or SIGTERM stop it within "
        "seconds (exit 1): each file goes in a transaction of its own, so what was purged "
        "stays purged and the next run purges the rest."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, dry_run: bool, **options):
        try:
            with stop_on_signals():
                done = purge(dry_run=dry_run)
        except NotHeld as busy:
            raise CommandError(str(busy)) from None
        except Stopped as stopped:
            raise CommandError(
                f"Stopped by {stopped.signal_name}; the next run purges what is left."
            ) from None
        verb = "would purge" if dry_run else "purged"
        for file in done.files:
            self.stdout.write(
                f"{verb} file {file.id}  {file.name}  (deleted {file.deleted_at:%Y-%m-%d %H:%M})"
            )
        for sha256 in done.blobs:
            self.stdout.write(f"{verb} blob {sha256}")
        self.stdout.write(f"{len(done.files)} file(s) and {len(done.blobs)} blob(s) {verb}.")
