from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from common.commands.lookups import user_named
from common.commands.stopping import Stopped, stop_on_signals
from filesync.demo import WorkspaceSize, build_workspace


class Command(BaseCommand):
    help = (
        "Build a demo workspace of the given size, the same for the same --seed. "
        "Prints the project id as the last line. SIGINT or SIGTERM stop it within seconds "
        "(exit 1) with nothing of the workspace written, so the next run builds it whole."
    )

    def add_arguments(self, parser):
        parser.add_argument("--files", type=int, default=10)
        parser.add_argument("--pages", type=int, default=3)
        parser.add_argument("--objects", type=int, default=50)
        parser.add_argument("--media-mb", type=float, default=2.0)
        parser.add_argument("--libraries", type=int, default=1)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--owner", help="Username made owner of the demo team.")

    def handle(self, *args, **options):
        for name in ("files", "pages", "objects", "media_mb", "libraries"):
            if options[name] < 0:
                raise CommandError(f"--{name.replace('_', '-')} must not be negative.")
        owner = user_named(options["owner"])
        size = WorkspaceSize(
            files=options["files"],
            pages=options["pages"],
            objects=options["objects"],
            media_mb=options["media_mb"],
            libraries=options["libraries"],
            seed=options["seed"],
        )
        with tqdm(
            total=size.files,
            unit="file",
            desc="seeding",
            file=self.stderr._out,
            disable=options["verbosity"] == 0,
        ) as bar:
            try:
                with stop_on_signals():
                    project, created = build_workspace(size, owner=owner, progress=bar.update)
            except Stopped as stopped:
                raise CommandError(
                    f"Stopped by {stopped.signal_name}; nothing was written."
                ) from None
        if not created:
            self.stderr.write("That workspace exists already; nothing to do.")
        self.stdout.write(str(project.id))
