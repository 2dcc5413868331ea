from django.core.management.base import BaseCommand

from filesync.purge import purge_files


class Command(BaseCommand):
    help = (
        "Delete for good the files whose grace period is over and that nothing still needs "
        "(e.g. an export that pinned them). --dry-run lists them only."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, dry_run: bool, **options):
        files = purge_files(dry_run=dry_run)
        verb = "would purge" if dry_run else "purged"
        for file in files:
            self.stdout.write(
                f"{verb} {file.id}  {file.name}  (deleted {file.deleted_at:%Y-%m-%d %H:%M})"
            )
        self.stdout.write(f"{len(files)} file(s) {verb}.")
