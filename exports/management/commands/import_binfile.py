import os

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError
from django.http import Http404
from tqdm import tqdm

from exports import services
from exports.binfile.format import BinfileError
from exports.importer import run_import
from exports.models import ImportJob, JobState
from filesync.management.lookups import row_with_id, user_named
from filesync.models import Project


class Command(BaseCommand):
    requires_system_checks: list = []  # an operator tool: start fast, like loaddata
    help = (
        "Import a binfile into a project, all or nothing, with a progress bar. On success "
        "each line maps an archive file id to the id of its new copy."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="The binfile (.zip) to import.")
        parser.add_argument("--project", required=True, help="The project to import into.")
        parser.add_argument(
            "--user",
            help="Import as this user: it must edit the project, and references to files "
            "outside the archive are kept only when it can read them (default: no user; "
            "every live file counts as readable).",
        )

    def handle(self, *args, **options):
        job = self._create(options)
        with tqdm(
            total=job.bytes_total or None,
            unit="B",
            unit_scale=True,
            desc="import",
            file=self.stderr._out,
            disable=options["verbosity"] == 0,
        ) as bar:

            def show(progress: ImportJob) -> None:
                bar.total = progress.bytes_total
                bar.update(progress.bytes_done - bar.n)

            run_import(job.pk, worker=f"cli:{os.getpid()}", on_progress=show)
        job.refresh_from_db()
        if job.state != JobState.SUCCEEDED:
            reason = job.error_message or f"the job ended {job.state}"
            raise CommandError(f"Import {job.id} failed ({job.error_code or job.state}): {reason}")
        for source, copy in job.files.items():
            self.stdout.write(f"{source} -> {copy}")

    def _create(self, options) -> ImportJob:
        project = row_with_id(Project, options["project"], "project")
        user = user_named(options["user"])
        try:
            with open(options["path"], "rb") as archive:
                return services.create_import_job(
                    user=user, project=project, upload=archive, enqueue=False
                )
        except OSError as error:
            raise CommandError(f"Cannot read {options['path']}: {error.strerror}") from None
        except BinfileError as error:
            raise CommandError(f"Refused: {error}") from None
        except (PermissionDenied, Http404):
            raise CommandError(f"{user} may not import into that project.") from None
