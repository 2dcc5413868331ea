"""The export jobs' admin (Download and Retry on the job's page), and "Export as binfile" on
the file and project admins (actions.py): importing this module adds the action to both.
exports depends on filesync, never the reverse.
"""

from django.contrib import admin
from django.template.defaultfilters import filesizeformat
from django.urls import path

from filesync.admin import FileAdmin, ProjectAdmin

from .. import services
from ..exporting.links import download_path
from ..models import ExportJob, JobState
from ..selectors import jobs_for
from .actions import export_files_as_binfile, export_projects_as_binfile
from .jobs import JobAdmin

FileAdmin.actions = [*FileAdmin.actions, export_files_as_binfile]
ProjectAdmin.actions = [*ProjectAdmin.actions, export_projects_as_binfile]


@admin.register(ExportJob)
class ExportJobAdmin(JobAdmin):
    kind = "export"
    list_display = [
        "short_id",
        "state_badge",
        "progress",
        "size",
        "duration",
        "created_by",
        "project",
        "created_at",
    ]
    list_filter = ["state", "libraries", "created_at"]

    def get_queryset(self, request):
        return jobs_for(request.user)

    @admin.display(description="size", ordering="artifact_size")
    def size(self, job):
        return filesizeformat(job.artifact_size) if job.artifact_size is not None else "—"

    def get_urls(self):
        return [
            path(
                "<path:object_id>/retry/",
                self.admin_site.admin_view(self.retry_view),
                name=self.url_name("retry"),
            ),
            *super().get_urls(),
        ]

    def job_context(self, request, job: ExportJob) -> dict:
        return {
            "download": download_path(job) if job.state == JobState.SUCCEEDED else "",
            "can_retry": job.state in (JobState.FAILED, JobState.CANCELLED),
            "files": job.pinned.select_related("file").order_by("position"),
            "retries": jobs_for(request.user).filter(retry_of=job).order_by("created_at"),
        }

    def retry_view(self, request, object_id):
        def retry(job):
            return services.retry_export(job=job, user=request.user), "Retrying as a new export."

        return self._button(request, object_id, retry)
