"""Admin actions "Export as binfile" on files and projects (attached by admin/exports.py).

Like Django's delete-selected action: the first POST (from the changelist) answers a small
form for the libraries mode; its POST (with `confirm`) creates the job through the service
and redirects to the job's page. exports depends on filesync, never the reverse.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from .. import services
from ..models import LibrariesMode


class ExportForm(forms.Form):
    libraries = forms.ChoiceField(
        choices=LibrariesMode.choices,
        initial=LibrariesMode.ALL,
        widget=forms.RadioSelect,
        label="Libraries",
    )


def _problem(error: Exception) -> str:
    if isinstance(error, Http404):
        return "You cannot read some of these files; nothing was exported."
    if isinstance(error, PermissionDenied):
        return str(error) or "You may not export these files."
    return " ".join(error.messages)


def _ask(modeladmin, request, queryset, action: str, form: ExportForm):
    opts = modeladmin.model._meta
    return TemplateResponse(
        request,
        "admin/exports/export_form.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": "Export as binfile",
            "opts": opts,
            "queryset": queryset,
            "objects_name": opts.verbose_name_plural if len(queryset) > 1 else opts.verbose_name,
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "form": form,
        },
    )


def _export(modeladmin, request, queryset, action: str, create):
    """Ask for the mode, then `create(libraries)` -> jobs; errors become admin messages."""
    if not queryset:  # what was picked is not in the user's changelist (not theirs)
        modeladmin.message_user(request, "There is nothing here you can export.", messages.ERROR)
        return None
    form = ExportForm(request.POST if "confirm" in request.POST else None)
    if not form.is_valid():
        return _ask(modeladmin, request, queryset, action, form)
    try:
        jobs = create(form.cleaned_data["libraries"])
    except (Http404, PermissionDenied, ValidationError) as error:
        modeladmin.message_user(request, _problem(error), messages.ERROR)
        return None
    site = modeladmin.admin_site.name
    if len(jobs) == 1:
        modeladmin.message_user(request, "Export queued.", messages.SUCCESS)
        return redirect(f"{site}:exports_exportjob_change", jobs[0].pk)
    modeladmin.message_user(request, f"{len(jobs)} exports queued.", messages.SUCCESS)
    return redirect(f"{site}:exports_exportjob_changelist")


@admin.action(description="Export as binfile", permissions=["view"])
def export_files_as_binfile(modeladmin, request, queryset):
    """One job for all the selected files."""
    files = list(queryset.order_by("pk"))
    return _export(
        modeladmin,
        request,
        files,
        "export_files_as_binfile",
        lambda libraries: [
            services.create_export_job(
                user=request.user, file_ids=[f.pk for f in files], libraries=libraries
            )
        ],
    )


def _project_job(user, project, libraries):
    try:
        return services.create_export_job(user=user, project=project, libraries=libraries)
    except ValidationError as error:
        raise ValidationError(f"{project.name}: {' '.join(error.messages)}") from None


@admin.action(description="Export as binfile", permissions=["view"])
def export_projects_as_binfile(modeladmin, request, queryset):
    """One job per selected project; if one of them cannot be exported, none is."""
    projects = list(queryset.order_by("name", "pk"))

    def create(libraries):
        with transaction.atomic():  # all or none; each job is queued once all are made
            return [_project_job(request.user, project, libraries) for project in projects]

    return _export(modeladmin, request, projects, "export_projects_as_binfile", create)
