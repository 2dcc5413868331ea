import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from exports.models import ExportJob
from exports.selectors import describe_job


class Command(BaseCommand):
    requires_system_checks: list = []  # an operator tool: start fast, like dumpdata
    help = "List export jobs, or show one: state, progress, attempts, artifact, sha256, error."

    def add_arguments(self, parser):
        parser.add_argument("job", nargs="?", help="A job id: show this job only.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")
        parser.add_argument("--limit", type=int, default=50)

    def handle(self, *args, job=None, **options):
        if job:
            try:
                jobs = [ExportJob.objects.select_related("created_by").get(pk=job)]
            except (ExportJob.DoesNotExist, ValidationError):
                raise CommandError(f"No export job with id {job}.") from None
        else:
            jobs = list(ExportJob.objects.select_related("created_by")[: options["limit"]])
        described = [describe_job(j) for j in jobs]
        if options["json"]:
            self.stdout.write(json.dumps(described[0] if job else described, indent=2))
            return
        if job:
            for key, value in described[0].items():
                self.stdout.write(f"{key:>14}: {value}")
            return
        self.stdout.write(
            f"{'id':36}  {'state':9}  {'done':>5}  {'tries':>5}  {'size':>12}  sha256"
        )
        for d in described:
            progress = d["progress"]
            percent = (
                100 * progress["bytes_done"] // progress["bytes_total"]
                if progress["bytes_total"]
                else 0
            )
            artifact = d["artifact"] or {}
            self.stdout.write(
                f"{d['id']}  {d['state']:9}  {percent:>4}%  {d['attempts']:>5}  "
                f"{artifact.get('size') or '':>12}  {(artifact.get('sha256') or '')[:16]}"
            )
