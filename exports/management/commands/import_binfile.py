import os

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError
from django.http import Http404
from tqdm import tqdm

from common.commands.lookups import row_with_id, user_named
from common.commands.stopping import Stopped, stop_on_signals
from exports import services
from exports.binfile.format import BinfileError
from exports.importing.engine import run_import
from exports.models import ACTIVE_STATES, ImportJob, JobState
from filesync.models import Project


class Command(BaseCommand):
    requires_system_checks: list = []  # an operator tool: start fast, like loaddata
    help = (
        "Import a binfile into a project, all or nothing, with a progress bar. On success "
        "each line maps an archive file id to the id of its new copy. SIGINT or SIGTERM "
        "stop it within seconds (exit 1): nothing of the copies is written, and the job "
        "gives its lease back, for the workers to run it again."
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

            worker = f"cli:{os.getpid()}"
            with stop_on_signals():
                try:
                    run_import(job.pk, worker=worker, on_progress=show)
                except Stopped as stopped:  # the kernel gave the job back
                    raise CommandError(_stopped_message(job, stopped)) from None
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


def _stopped_message(job: ImportJob, stopped: Stopped) -> str:
    """The copies are written in one transaction, rolled back by the stop unless it came
    after the commit."""
    job.refresh_from_db()
    if job.state not in ACTIVE_STATES:
        return f"Stopped by {stopped.signal_name}; import {job.id} had ended {job.state}."
    return (
        f"Stopped by {stopped.signal_name}; import {job.id} wrote nothing and is left to the "
        "workers to run again."
    )
