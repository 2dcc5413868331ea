import os
import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from common.commands.lookups import row_with_id, user_named
from common.commands.stopping import Stopped, stop_on_signals
from exports import services
from exports.exporting.engine import run_tick
from exports.exporting.links import download_path
from exports.exporting.sinks import artifact_location, copy_artifact
from exports.models import ExportJob, JobState, LibrariesMode
from exports.selectors import events_after
from filesync.models import Project, Snapshot

POLL_SECONDS = 0.2


class Command(BaseCommand):
    requires_system_checks: list = []  # an operator tool: start fast, like dumpdata
    help = (
        "Export files to a binfile. Runs the export engine here with a progress bar, or, "
        "with --queue, hands it to the workers and follows its events. On success the last "
        "line is the artifact's sha256 and location. SIGINT or SIGTERM stop it within "
        "seconds (exit 1): an export run here keeps its checkpoint and gives its lease "
        "back, for the workers to resume; a queued one goes on in the workers."
    )

    def add_arguments(self, parser):
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("--project", help="Export every file of this project.")
        what.add_argument("--file", nargs="+", dest="files", help="Export these files.")
        what.add_argument("--snapshot", help="Export a file as it was at this snapshot.")
        parser.add_argument("--libraries", choices=LibrariesMode.values, default="all")
        parser.add_argument("--out", help="Also copy the artifact to this path.")
        parser.add_argument("--queue", action="store_true", help="Run in the workers.")
        parser.add_argument("--user", help="Username the job belongs to (default: none).")

    def handle(self, *args, **options):
        job = self._create(options)
        if options["queue"]:
            self.stdout.write(str(job.id))
            self.stdout.flush()
        with stop_on_signals():
            try:
                if options["queue"]:
                    job = self._follow(job, options["verbosity"])
                else:
                    job = self._run_here(job, options["verbosity"])
            except Stopped as stopped:
                raise CommandError(
                    _stopped_message(job, stopped, queued=options["queue"])
                ) from None
        if job.state != JobState.SUCCEEDED:
            reason = job.error_message or f"the job ended {job.state}"
            raise CommandError(f"Export {job.id} failed ({job.error_code or job.state}): {reason}")
        self.stdout.write(f"download: {download_path(job)}")
        location = artifact_location(job.artifact_name)
        if options["out"]:
            copy_artifact(job.artifact_name, options["out"])
            location = os.path.abspath(options["out"])
        self.stdout.write(f"{job.artifact_sha256}  {location}")

    def _create(self, options) -> ExportJob:
        user = user_named(options["user"])
        try:
            return services.create_export_job(
                user=user,
                file_ids=options["files"],
                project=row_with_id(Project, options["project"], "project"),
                snapshot=row_with_id(Snapshot, options["snapshot"], "snapshot"),
                libraries=options["libraries"],
                enqueue=options["queue"],
            )
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None

    def _bar(self, job: ExportJob, verbosity: int) -> tqdm:
        return tqdm(
            total=job.bytes_total,
            unit="B",
            unit_scale=True,
            desc="export",
            file=self.stderr._out,
            disable=verbosity == 0,
        )

    def _run_here(self, job: ExportJob, verbosity: int) -> ExportJob:
        """Tick the job here to its end; stopped, it gives its lease back (its checkpoint,
        written after every part, stays for the worker that resumes it)."""
        worker = f"cli:{os.getpid()}"
        with self._bar(job, verbosity) as bar:

            def show(progress: ExportJob) -> None:
                bar.total = max(bar.total, progress.bytes_done)
                bar.update(progress.bytes_done - bar.n)

            # Stopped, the tick gives the job back (the kernel sees the KeyboardInterrupt).
            while run_tick(job.pk, worker=worker, on_progress=show) == JobState.RUNNING:
                pass
            return _settle(bar, job)

    def _follow(self, job: ExportJob, verbosity: int) -> ExportJob:
        """Read the job's events from the database until a terminal one arrives."""
        seq = 0
        with self._bar(job, verbosity) as bar:
            while True:
                for event in events_after(ExportJob, job.pk, seq):
                    seq = event.seq
                    if event.kind == "progress":
                        bar.total = max(bar.total, event.data["bytes_total"])
                        bar.update(event.data["bytes_done"] - bar.n)
                    elif event.kind in ("end", "error", "cancelled"):
                        return _settle(bar, job)
                time.sleep(POLL_SECONDS)


def _stopped_message(job: ExportJob, stopped: Stopped, *, queued: bool) -> str:
    if queued:
        return f"Stopped by {stopped.signal_name}; export {job.id} goes on in the workers."
    job.refresh_from_db()
    return (
        f"Stopped by {stopped.signal_name}; export {job.id} keeps its checkpoint "
        f"({job.bytes_flushed} bytes) and is left to the workers to resume."
    )


def _settle(bar: tqdm, job: ExportJob) -> ExportJob:
    """Close the bar on the job's final figures (the planned total was an estimate)."""
    job.refresh_from_db()
    if job.state == JobState.SUCCEEDED:
        bar.total = job.bytes_done
    bar.update(max(0, job.bytes_done - bar.n))
    return job
