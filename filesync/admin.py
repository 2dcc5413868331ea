"""Admin screens for the document store.

Actions call the same services as the API. Staff who are not superusers see, and may
choose from, only what their own teams hold, and change files only where their team
role is editor or owner (filesync.access).
"""

from collections import defaultdict

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count
from django.utils.html import format_html
from django.utils.translation import ngettext

from . import services
from .access import require_team_role
from .models import (
    Blob,
    File,
    FileLibrary,
    MediaObject,
    Membership,
    Page,
    Project,
    Role,
    Snapshot,
    Team,
)
from .preserving import preserve_pinned
from .selectors import in_teams_of, readable_blobs

#: How to reach the Team from each team-owned model, for scoping querysets and choices.
TEAM_PATHS = {
    Team: "",
    Membership: "team",
    Project: "team",
    File: "project__team",
    Page: "file__project__team",
    MediaObject: "file__project__team",
    Snapshot: "file__project__team",
    FileLibrary: "file__project__team",
}


def require_editor(request, files) -> None:
    """Raise PermissionDenied unless the user edits every team these files belong to."""
    for team_id in {file.project.team_id for file in files}:
        require_team_role(request.user, team_id, Role.EDITOR)


def refused(model_admin, request, error: ValidationError) -> None:
    """Report a service's refusal (nothing was written) as an error message."""
    model_admin.message_user(request, " ".join(error.messages), messages.ERROR)


class TeamScopedChoices:
    """Foreign-key choices limited to the user's teams (a staff user picks only their own)."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if (team_path := TEAM_PATHS.get(db_field.related_model)) is not None:
            kwargs["queryset"] = in_teams_of(
                db_field.related_model.objects.all(), request.user, team_path
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class TeamScopedAdmin(TeamScopedChoices, admin.ModelAdmin):
    def get_queryset(self, request):
        return in_teams_of(super().get_queryset(request), request.user, TEAM_PATHS[self.model])


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(TeamScopedAdmin):
    list_display = ["name", "member_count", "project_count", "created_at"]
    search_fields = ["name", "id"]
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_total=Count("memberships", distinct=True),
                project_total=Count("projects", distinct=True),
            )
        )

    @admin.display(description="members", ordering="member_total")
    def member_count(self, team):
        return team.member_total

    @admin.display(description="projects", ordering="project_total")
    def project_count(self, team):
        return team.project_total


@admin.register(Membership)
class MembershipAdmin(TeamScopedAdmin):
    list_display = ["user", "team", "role"]
    list_filter = ["role"]
    search_fields = ["user__username", "team__name"]
    autocomplete_fields = ["user", "team"]


@admin.register(Project)
class ProjectAdmin(TeamScopedAdmin):
    list_display = ["name", "team", "created_at"]
    # Only the teams in view, so a staff user's sidebar names no other team.
    list_filter = [("team", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "id", "team__name"]
    autocomplete_fields = ["team"]
    actions = ["duplicate"]

    @admin.action(description="Duplicate selected projects", permissions=["change"])
    def duplicate(self, request, queryset):
        projects = list(queryset.select_related("team"))
        for team_id in {project.team_id for project in projects}:
            require_team_role(request.user, team_id, Role.EDITOR)
        try:
            with transaction.atomic():
                for project in projects:
                    services.duplicate_project(project=project, user=request.user)
        except ValidationError as error:
            return refused(self, request, error)
        message = ngettext("%d project duplicated.", "%d projects duplicated.", len(projects))
        self.message_user(request, message % len(projects), messages.SUCCESS)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class PageInline(ReadOnlyInline):
    model = Page
    fields = ["index", "name", "object_count"]
    readonly_fields = fields
    show_change_link = True

    @admin.display(description="objects")
    def object_count(self, page):
        return len(page.object_map)


class MediaInline(ReadOnlyInline):
    model = MediaObject
    fields = ["name", "mtype", "width", "height", "blob"]
    readonly_fields = fields


class SnapshotInline(ReadOnlyInline):
    model = Snapshot
    fields = ["label", "revision", "created_by", "created_at"]
    readonly_fields = fields
    show_change_link = True


class LibraryInline(TeamScopedChoices, admin.TabularInline):
    """Links are added and removed through the services (see FileAdmin.save_formset)."""

    model = FileLibrary
    fk_name = "file"
    fields = ["library"]
    extra = 0
    autocomplete_fields = ["library"]
    verbose_name = "library used"
    verbose_name_plural = "libraries used"


class DeletionStateFilter(admin.SimpleListFilter):
    title = "deletion state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("deleted", "Deleted (awaiting purge)")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


@admin.register(File)
class FileAdmin(TeamScopedAdmin):
    list_display = [
        "name",
        "project",
        "is_library",
        "revision",
        "page_count",
        "deletion_state",
        "modified_at",
    ]
    list_filter = [
        DeletionStateFilter,
        "is_library",
        ("project__team", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["name", "id", "project__name"]
    readonly_fields = [
        "id",
        "revision",
        "data_version",
        "created_at",
        "modified_at",
        "deleted_at",
        "purge_after",
    ]
    fields = [
        "id",
        "project",
        "name",
        "is_library",
        "features",
        "assets",
        "revision",
        "data_version",
        "created_at",
        "modified_at",
        "deleted_at",
        "purge_after",
    ]
    autocomplete_fields = ["project"]
    inlines = [LibraryInline, PageInline, MediaInline, SnapshotInline]
    actions = ["soft_delete", "restore", "snapshot", "duplicate"]
    date_hierarchy = "modified_at"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("project")
            .annotate(page_total=Count("pages"))
        )

    def save_model(self, request, obj, form, change):
        """A change here is content too: exports that pinned the revision keep it first."""
        if change:
            preserve_pinned(obj)
        super().save_model(request, obj, form, change)

    def save_formset(self, request, form, formset, change):
        if formset.model is not FileLibrary:
            return super().save_formset(request, form, formset, change)
        links = formset.save(commit=False)
        for link in formset.deleted_objects:
            services.unlink_library(file=link.file, library=link.library)
        for link in links:
            if link.pk:
                FileLibrary.objects.filter(pk=link.pk).delete()
            services.link_library(file=form.instance, library=link.library)

    @admin.display(description="pages", ordering="page_total")
    def page_count(self, file):
        return file.page_total

    @admin.display(description="state", ordering="deleted_at")
    def deletion_state(self, file):
        if not file.is_deleted:
            return format_html('<span style="color:#2e7d32">{}</span>', "active")
        return format_html(
            '<span style="color:#c62828">deleted</span> · purge after {}',
            file.purge_after.strftime("%Y-%m-%d %H:%M"),
        )

    def _apply(self, request, files, service, message: tuple[str, str]) -> None:
        require_editor(request, files)
        for file in files:
            service(file)
        self.message_user(request, ngettext(*message, len(files)) % len(files), messages.SUCCESS)

    @admin.action(description="Move selected files to the trash", permissions=["change"])
    def soft_delete(self, request, queryset):
        self._apply(
            request,
            list(queryset.filter(deleted_at__isnull=True)),
            lambda file: services.soft_delete_file(file=file),
            ("%d file moved to the trash.", "%d files moved to the trash."),
        )

    @admin.action(description="Restore selected files from the trash", permissions=["change"])
    def restore(self, request, queryset):
        self._apply(
            request,
            list(queryset.filter(deleted_at__isnull=False)),
            lambda file: services.restore_file(file=file),
            ("%d file restored.", "%d files restored."),
        )

    @admin.action(description="Take a snapshot of selected files", permissions=["change"])
    def snapshot(self, request, queryset):
        self._apply(
            request,
            list(queryset),
            lambda file: services.create_snapshot(file=file, label="from admin", user=request.user),
            ("%d snapshot taken.", "%d snapshots taken."),
        )

    @admin.action(description="Duplicate selected files", permissions=["change"])
    def duplicate(self, request, queryset):
        """Each copy goes next to its file; files of one project are copied together, so
        references between them point at the copies."""
        files = list(queryset.filter(deleted_at__isnull=True).select_related("project"))
        require_editor(request, files)
        by_project = defaultdict(list)
        for file in files:
            by_project[file.project].append(file)
        try:
            with transaction.atomic():
                for project, group in by_project.items():
                    services.duplicate_files(files=group, project=project, user=request.user)
        except ValidationError as error:
            return refused(self, request, error)
        message = ngettext("%d file duplicated.", "%d files duplicated.", len(files))
        self.message_user(request, message % len(files), messages.SUCCESS)
        if skipped := queryset.filter(deleted_at__isnull=False).count():
            self.message_user(
                request,
                ngettext(
                    "%d file in the trash was not duplicated.",
                    "%d files in the trash were not duplicated.",
                    skipped,
                )
                % skipped,
                messages.WARNING,
            )


@admin.register(Page)
class PageAdmin(TeamScopedAdmin):
    list_display = ["name", "file", "index"]
    search_fields = ["name", "id", "file__name"]
    raw_id_fields = ["file"]


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    """Blobs are shared across teams by content: staff see those the API would serve them
    (selectors.readable_blobs, the one rule for bytes), superusers all of them."""

    list_display = ["sha256", "size", "content_type", "created_at", "touched_at"]
    list_filter = ["content_type"]
    search_fields = ["sha256"]
    readonly_fields = ["sha256", "size", "content_type", "created_at", "touched_at"]

    def get_queryset(self, request):
        return readable_blobs(request.user)

    def has_module_permission(self, request):
        return True

    def has_view_permission(self, request, obj=None):
        return True

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return False


@admin.register(MediaObject)
class MediaObjectAdmin(TeamScopedAdmin):
    list_display = ["name", "file", "mtype", "width", "height", "blob"]
    list_filter = ["mtype"]
    search_fields = ["name", "id", "blob__sha256", "file__name"]
    raw_id_fields = ["file", "blob"]


@admin.register(FileLibrary)
class FileLibraryAdmin(TeamScopedAdmin):
    list_display = ["file", "library", "created_at"]
    search_fields = ["file__name", "library__name"]
    autocomplete_fields = ["file", "library"]


@admin.register(Snapshot)
class SnapshotAdmin(TeamScopedAdmin):
    list_display = ["__str__", "file", "revision", "created_by", "created_at"]
    search_fields = ["label", "id", "file__name"]
    readonly_fields = [
        "file",
        "label",
        "revision",
        "name",
        "data_version",
        "features",
        "assets",
        "created_by",
        "created_at",
    ]
    actions = ["restore", "restore_as_new_file"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Restore over the current file", permissions=["change"])
    def restore(self, request, queryset):
        """A new revision with the snapshot's content; the content it replaces is kept in a
        snapshot taken just before."""
        snapshots = list(queryset.select_related("file__project").order_by("created_at"))
        require_editor(request, [snapshot.file for snapshot in snapshots])
        if len({snapshot.file_id for snapshot in snapshots}) < len(snapshots):
            self.message_user(
                request, "Choose one snapshot per file to restore over it.", messages.ERROR
            )
            return
        try:
            with transaction.atomic():
                for snapshot in snapshots:
                    services.restore_snapshot(snapshot=snapshot, user=request.user)
        except ValidationError as error:
            return refused(self, request, error)
        self.message_user(request, f"{len(snapshots)} snapshot(s) restored.", messages.SUCCESS)
        self.message_user(
            request,
            "The content they replaced is kept in snapshots labelled “Before restoring …”.",
            messages.INFO,
        )

    @admin.action(description="Restore as a new file", permissions=["change"])
    def restore_as_new_file(self, request, queryset):
        snapshots = list(queryset.select_related("file__project"))
        require_editor(request, [snapshot.file for snapshot in snapshots])
        with transaction.atomic():
            copies = [
                services.restore_snapshot_as_new_file(snapshot=snapshot, user=request.user)
                for snapshot in snapshots
            ]
        names = ", ".join(f"“{copy.name}”" for copy in copies)
        message = ngettext("Restored as a new file: %s.", "Restored as new files: %s.", len(copies))
        self.message_user(request, message % names, messages.SUCCESS)
