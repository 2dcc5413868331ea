"""The import jobs admin, and the "Import binfile" page of a project.

The job list and the live job page are the export ones (`JobAdmin`: the same template and
job.js), told they show an import: its phases, the files it made, where its archive was
wrong. There is no Download or Retry; Cancel is the same POST. The import page takes an
upload from an editor of the project's team, refuses a hostile archive there and then
(nothing is stored) and otherwise opens the new job's page. The project's change page
links to it (templates/admin/filesync/project/change_form.html).
"""

from django import forms
from django.contrib import admin, messages
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from filesync.access import require_team_role
from filesync.models import File, Project, Role

from .. import services
from ..binfile.format import BinfileError
from ..models import EventKind, ImportJob
from ..selectors import imports_for
from .jobs import JobAdmin, error_place


class ImportForm(forms.Form):
    archive = forms.FileField(label="Binfile", help_text="A .zip archive exported by Ferry.")


@admin.register(ImportJob)
class ImportJobAdmin(JobAdmin):
    kind = "import"
    list_display = [
        "short_id",
        "state_badge",
        "progress",
        "project",
        "created_by",
        "created_at",
        "duration",
    ]
    list_filter = ["state", "created_at"]

    def get_queryset(self, request):
        return imports_for(request.user)

    def get_urls(self):
        return [
            path(
                "into/<uuid:project_id>/",
                self.admin_site.admin_view(self.import_view),
                name=self.url_name("import"),
            ),
            *super().get_urls(),
        ]

    def job_context(self, request, job: ImportJob) -> dict:
        error = job.events.filter(kind=EventKind.ERROR).order_by("-seq").first()
        return {
            "new_files": self.new_files(job),
            "error_place": error_place(error.data) if error else "",
            "file_url": reverse(f"{self.admin_site.name}:filesync_file_change", args=["__id__"]),
        }

    def new_files(self, job: ImportJob) -> list[dict]:
        """The files the import made, in the archive's order of ids, with their names while
        they still exist."""
        names = dict(File.objects.filter(pk__in=job.files.values()).values_list("pk", "name"))
        names = {str(pk): name for pk, name in names.items()}
        return [
            {
                "source": source,
                "id": new,
                "name": names.get(new, ""),
                "url": reverse(f"{self.admin_site.name}:filesync_file_change", args=[new]),
            }
            for source, new in sorted(job.files.items())
        ]

    # --- the "Import binfile" page of a project ------------------------------------------

    def import_view(self, request, project_id):
        project = get_object_or_404(Project.objects.select_related("team"), pk=project_id)
        require_team_role(request.user, project.team_id, Role.EDITOR)  # 404 outside, 403 viewer
        posted = request.method == "POST"
        form = ImportForm(request.POST, request.FILES) if posted else ImportForm()
        refusal = None
        if posted and form.is_valid():
            try:
                job = services.create_import_job(
                    user=request.user, project=project, upload=form.cleaned_data["archive"]
                )
            except BinfileError as error:
                refusal = error
            else:
                self.message_user(request, "Import queued.", messages.SUCCESS)
                return redirect(f"{self.admin_site.name}:{self.url_name('change')}", job.pk)
        return TemplateResponse(
            request,
            "admin/exports/import_form.html",
            {
                **self.admin_site.each_context(request),
                "title": "Import binfile",
                "subtitle": None,
                "opts": self.opts,
                "project_opts": Project._meta,
                "project": project,
                "form": form,
                "refusal": refusal,
            },
        )
