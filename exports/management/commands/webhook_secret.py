from django.core.management.base import BaseCommand

from common.commands.lookups import user_named
from exports import services
from exports.selectors import webhook_secret_for


class Command(BaseCommand):
    help = (
        "Make a user's webhook secret (the key their exports' callbacks are signed with), "
        "replacing any earlier one, and print it: this is the only time it is shown."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="Username the secret belongs to.")

    def handle(self, *args, user, **options):
        owner = user_named(user)
        earlier = webhook_secret_for(owner)
        _, value = services.issue_webhook_secret(user=owner)
        if earlier is not None:
            self.stderr.write(f"Replaced the secret made {earlier.created_at:%Y-%m-%d %H:%M} UTC.")
        self.stdout.write(value)
