"""The export jobs admin: a list with state badges, and a live page per job.

The change view is the job's page (progress, events, error, Download, Cancel, Retry),
kept current by exports/static/exports/job.js over the job's WebSocket, or by polling
the API when the socket drops. Cancel and Retry are POSTs that call the services.
Importing this module also adds "Export as binfile" to the file and project admins.
"""

import math

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from filesync.admin import FileAdmin, ProjectAdmin
from filesync.models import Membership

from . import services
from .admin_actions import export_files_as_binfile, export_projects_as_binfile
from .links import download_path
from .models import ACTIVE_STATES, ExportJob, JobState
from .selectors import jobs_for

FileAdmin.actions = [*FileAdmin.actions, export_files_as_binfile]
ProjectAdmin.actions = [*ProjectAdmin.actions, export_projects_as_binfile]

#: Events the job page renders; older ones are counted, not listed (job.js keeps as many).
EVENTS_SHOWN = 200


def visible_jobs(user):
    """jobs_for(user), narrowed for staff who are not superusers to their own jobs and
    their teams' (as the filesync admin scopes everything to the user's teams)."""
    jobs = jobs_for(user).select_related("project")
    if user.is_superuser:
        return jobs
    teams = Membership.objects.filter(user=user).values("team")
    return jobs.filter(Q(created_by=user) | Q(project__team__in=teams))


def percent_done(job: ExportJob) -> int:
    """Whole percent, never rounded up to 100 before the end (job.js computes the same)."""
    if job.state in (JobState.SUCCEEDED, JobState.EXPIRED):
        return 100
    done, total = (
        (job.bytes_done, job.bytes_total) if job.bytes_total else (job.items_done, job.items_total)
    )
    return min(100, math.floor(done * 100 / total)) if total else 0


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s"


def event_summary(kind: str, data: dict) -> str:
    """One line per event (job.js writes the same for events that arrive live)."""
    if kind == "queued":
        return f"{data.get('items_total', 0)} items planned"
    if kind == "progress":
        return (
            f"{data.get('items_done', 0)}/{data.get('items_total', 0)} items, "
            f"{filesizeformat(data.get('bytes_done', 0))} / "
            f"{filesizeformat(data.get('bytes_total', 0))}"
        )
    if kind == "end":
        return f"{filesizeformat(data.get('size', 0))}, sha256 {data.get('sha256', '')[:12]}…"
    if kind == "error":
        return f"{data.get('code')}: {data.get('message')}"
    return ""


@admin.register(ExportJob)
class ExportJobAdmin(admin.ModelAdmin):
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
    search_fields = ["id", "created_by__username"]
    list_select_related = ["created_by", "project"]
    change_form_template = "admin/exports/exportjob/job.html"

    class Media:
        css = {"all": ["exports/job.css"]}

    # Who sees which job is the queryset's business; the site already requires staff.
    def get_queryset(self, request):
        return visible_jobs(request.user)

    def has_module_permission(self, request):
        return True

    def has_view_permission(self, request, obj=None):
        return True

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def may_act(self, request, job: ExportJob) -> bool:
        """Cancel and retry: the job's owner, or whoever may change export jobs."""
        return job.created_by_id == request.user.pk or request.user.has_perm(
            "exports.change_exportjob"
        )

    # --- the list ---------------------------------------------------------------------

    @admin.display(description="job", ordering="id")
    def short_id(self, job):
        return str(job.pk)[:8]

    @admin.display(description="state", ordering="state")
    def state_badge(self, job):
        label = "cancelling" if job.cancel_requested and job.is_active else job.state
        return format_html(
            '<span class="export-badge export-badge--{}">{}</span>', job.state, label
        )

    @admin.display(description="progress")
    def progress(self, job):
        value = percent_done(job)
        return format_html(
            '<progress class="export-mini" max="100" value="{}"></progress> {} %', value, value
        )

    @admin.display(description="size", ordering="artifact_size")
    def size(self, job):
        return filesizeformat(job.artifact_size) if job.artifact_size is not None else "—"

    @admin.display(description="duration")
    def duration(self, job):
        if not job.started_at:
            return "—"
        end = job.finished_at or timezone.now()
        return seconds_text((end - job.started_at).total_seconds())

    # --- the job page, and its buttons --------------------------------------------------

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name=f"{name}_cancel",
            ),
            path(
                "<path:object_id>/retry/",
                self.admin_site.admin_view(self.retry_view),
                name=f"{name}_retry",
            ),
            *super().get_urls(),
        ]

    def job_or_404(self, request, object_id) -> ExportJob:
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise Http404("No such export job.")
        return job

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.job_or_404(request, object_id)
        # Events first, then the job: its state is at least as new as the last event shown.
        total = job.events.count()
        events = list(job.events.order_by("seq")[max(0, total - EVENTS_SHOWN) :])
        job.refresh_from_db()
        for event in events:
            event.summary = event_summary(event.kind, event.data)
        may_act = self.may_act(request, job)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Export {str(job.pk)[:8]}",
            "subtitle": None,
            "opts": self.opts,
            "job": job,
            "percent": percent_done(job),
            "events": events,
            "earlier_events": total - len(events),
            "last_seq": events[-1].seq if events else 0,
            "download": download_path(job) if job.state == JobState.SUCCEEDED else "",
            "may_act": may_act,
            "can_cancel": may_act and job.state in ACTIVE_STATES,
            "can_retry": may_act and job.state in (JobState.FAILED, JobState.CANCELLED),
            "files": job.pinned.select_related("file").order_by("position"),
            "retries": visible_jobs(request.user).filter(retry_of=job).order_by("created_at"),
            "api_url": f"/api/exports/{job.pk}/",
            "socket_path": f"/ws/exports/{job.pk}/",
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.change_form_template, context)

    def _button(self, request, object_id, act):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = self.job_or_404(request, object_id)
        if not self.may_act(request, job):
            raise PermissionDenied
        try:
            job, message = act(job)
        except (ValidationError, Http404, PermissionDenied) as error:
            text = (
                " ".join(error.messages)
                if isinstance(error, ValidationError)
                else "You can no longer read some of this export's files."
            )
            self.message_user(request, text, messages.ERROR)
        else:
            self.message_user(request, message, messages.SUCCESS)
        return redirect(f"{self.admin_site.name}:exports_exportjob_change", job.pk)

    def cancel_view(self, request, object_id):
        def cancel(job):
            job = services.request_cancel(job=job)
            done = job.state == JobState.CANCELLED
            return job, "Export cancelled." if done else "Cancel requested; the worker stops soon."

        return self._button(request, object_id, cancel)

    def retry_view(self, request, object_id):
        def retry(job):
            return services.retry_export(job=job, user=request.user), "Retrying as a new export."

        return self._button(request, object_id, retry)
