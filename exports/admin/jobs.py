"""What the export and the import job admins share: the list's columns and the job's page.

The change view is the job's page (progress, events, error, Cancel; for exports Download
and Retry), kept current by exports/static/exports/job.js over the job's WebSocket, or by
polling the API when the socket drops. Cancel (and Retry) are POSTs that call the services.
The two kinds subclass `JobAdmin` in exports.py and imports.py beside this module.
"""

import math

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.defaultfilters import filesizeformat, pluralize
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from common.admin import ReadOnlyAdmin

from .. import services
from ..models import ACTIVE_STATES, Job, JobState

#: Events the job page renders; older ones are counted, not listed (job.js keeps as many).
EVENTS_SHOWN = 200


def percent_done(job: Job) -> int:
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
    """One line per event, export or import by what its data holds (job.js writes the
    same for events that arrive live)."""
    if kind == "queued":
        return f"{data['items_total']} items planned" if "items_total" in data else ""
    if kind == "progress":
        counts = (
            f"{data.get('items_done', 0)}/{data.get('items_total', 0)} items, "
            f"{filesizeformat(data.get('bytes_done', 0))} / "
            f"{filesizeformat(data.get('bytes_total', 0))}"
        )
        return f"{data['phase']}: {counts}" if data.get("phase") else counts
    if kind == "end" and "files" in data:
        count = len(data["files"])
        return f"{count} file{pluralize(count)} imported"
    if kind == "end":
        return f"{filesizeformat(data.get('size', 0))}, sha256 {data.get('sha256', '')[:12]}…"
    if kind == "error":
        text = f"{data.get('code')}: {data.get('message')}"
        where = error_place(data)
        return f"{text} ({where})" if where else text
    return ""


def error_place(data: dict) -> str:
    """Where an import's error lies: "entry files/…json, field pages", or ""."""
    return ", ".join(f"{key} {data[key]}" for key in ("entry", "field") if data.get(key))


class JobAdmin(ReadOnlyAdmin):
    """What the export and the import job admins share: the list's columns, the job page
    (admin/exports/exportjob/job.html with job.js) and its Cancel button."""

    #: "export" or "import": the job page's words, its API document and its WebSocket.
    kind = ""
    search_fields = ["id", "created_by__username"]
    list_select_related = ["created_by", "project"]
    change_form_template = "admin/exports/exportjob/job.html"

    class Media:
        css = {"all": ["exports/job.css"]}

    # Who sees which job is the queryset's business; the site already requires staff.
    def has_module_permission(self, request):
        return True

    def has_view_permission(self, request, obj=None):
        return True

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

    @admin.display(description="duration")
    def duration(self, job):
        if not job.started_at:
            return "—"
        end = job.finished_at or timezone.now()
        return seconds_text((end - job.started_at).total_seconds())

    # --- the job page, and its buttons --------------------------------------------------

    def url_name(self, view: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{view}"

    def get_urls(self):
        return [
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name=self.url_name("cancel"),
            ),
            *super().get_urls(),
        ]

    def job_or_404(self, request, object_id) -> Job:
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise Http404(f"No such {self.kind} job.")
        return job

    def job_context(self, request, job: Job) -> dict:
        """What a kind of job adds to its page (exports: Download, Retry; imports: files)."""
        return {}

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.job_or_404(request, object_id)
        # Events first, then the job: its state is at least as new as the last event shown.
        total = job.events.count()
        events = list(job.events.order_by("seq")[max(0, total - EVENTS_SHOWN) :])
        job.refresh_from_db()
        for event in events:
            event.summary = event_summary(event.kind, event.data)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{self.kind.capitalize()} {str(job.pk)[:8]}",
            "subtitle": None,
            "opts": self.opts,
            "kind": self.kind,
            "job": job,
            "percent": percent_done(job),
            "events": events,
            "earlier_events": total - len(events),
            "last_seq": events[-1].seq if events else 0,
            "can_cancel": job.state in ACTIVE_STATES,
            "api_url": f"/api/{self.kind}s/{job.pk}/",
            "socket_path": f"/ws/{self.kind}s/{job.pk}/",
            **self.job_context(request, job),
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.change_form_template, context)

    def _button(self, request, object_id, act):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = self.job_or_404(request, object_id)
        try:
            job, message = act(job)
        except (ValidationError, Http404, PermissionDenied) as error:
            text = (
                " ".join(error.messages)
                if isinstance(error, ValidationError)
                else f"You can no longer read some of this {self.kind}'s files."
            )
            self.message_user(request, text, messages.ERROR)
        else:
            self.message_user(request, message, messages.SUCCESS)
        return redirect(f"{self.admin_site.name}:{self.url_name('change')}", job.pk)

    def cancel_view(self, request, object_id):
        def cancel(job):
            job = services.request_cancel(job=job)
            done = job.state == JobState.CANCELLED
            noun = self.kind.capitalize()
            return job, f"{noun} cancelled." if done else "Cancel requested; the worker stops soon."

        return self._button(request, object_id, cancel)
