"""Admin screens for the document store. Actions call the same services as the API."""

from django.contrib import admin, messages
from django.db.models import Count
from django.utils.html import format_html
from django.utils.translation import ngettext

from . import services
from .models import (
    Blob,
    File,
    FileLibrary,
    MediaObject,
    Membership,
    Page,
    Project,
    Snapshot,
    Team,
)
from .selectors import files_for, projects_for, teams_for


class TeamScopedAdmin(admin.ModelAdmin):
    """Staff who are not superusers see only what their teams hold."""

    def scope(self, request):
        raise NotImplementedError

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(pk__in=self.scope(request).values("pk"))


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(TeamScopedAdmin):
    list_display = ["name", "member_count", "project_count", "created_at"]
    search_fields = ["name", "id"]
    inlines = [MembershipInline]

    def scope(self, request):
        return teams_for(request.user)

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
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role"]
    list_filter = ["role"]
    search_fields = ["user__username", "team__name"]
    autocomplete_fields = ["user", "team"]


@admin.register(Project)
class ProjectAdmin(TeamScopedAdmin):
    list_display = ["name", "team", "created_at"]
    list_filter = ["team"]
    search_fields = ["name", "id", "team__name"]
    autocomplete_fields = ["team"]

    def scope(self, request):
        return projects_for(request.user)


class PageInline(admin.TabularInline):
    model = Page
    fields = ["index", "name", "object_count"]
    readonly_fields = ["index", "name", "object_count"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="objects")
    def object_count(self, page):
        return len(page.object_map)


class MediaInline(admin.TabularInline):
    model = MediaObject
    fields = ["name", "mtype", "width", "height", "blob"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class SnapshotInline(admin.TabularInline):
    model = Snapshot
    fields = ["label", "revision", "created_by", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


class LibraryInline(admin.TabularInline):
    model = FileLibrary
    fk_name = "file"
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
    list_filter = [DeletionStateFilter, "is_library", "project__team"]
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
    actions = ["soft_delete", "restore", "snapshot"]
    date_hierarchy = "modified_at"

    def scope(self, request):
        return files_for(request.user, include_deleted=True)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("project")
            .annotate(page_total=Count("pages"))
        )

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

    @admin.action(description="Move selected files to the trash", permissions=["change"])
    def soft_delete(self, request, queryset):
        files = list(queryset.filter(deleted_at__isnull=True))
        for file in files:
            services.soft_delete_file(file=file)
        self.message_user(
            request,
            ngettext("%d file moved to the trash.", "%d files moved to the trash.", len(files))
            % len(files),
            messages.SUCCESS,
        )

    @admin.action(description="Restore selected files from the trash", permissions=["change"])
    def restore(self, request, queryset):
        files = list(queryset.filter(deleted_at__isnull=False))
        for file in files:
            services.restore_file(file=file)
        self.message_user(
            request,
            ngettext("%d file restored.", "%d files restored.", len(files)) % len(files),
            messages.SUCCESS,
        )

    @admin.action(description="Take a snapshot of selected files", permissions=["change"])
    def snapshot(self, request, queryset):
        files = list(queryset)
        for file in files:
            services.create_snapshot(file=file, label="from admin", user=request.user)
        self.message_user(
            request,
            ngettext("%d snapshot taken.", "%d snapshots taken.", len(files)) % len(files),
            messages.SUCCESS,
        )


@admin.register(Page)
class PageAdmin(admin.ModelAdmin):
    list_display = ["name", "file", "index"]
    search_fields = ["name", "id", "file__name"]
    raw_id_fields = ["file"]


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    list_display = ["sha256", "size", "content_type", "created_at", "touched_at"]
    list_filter = ["content_type"]
    search_fields = ["sha256"]
    readonly_fields = ["sha256", "size", "content_type", "created_at", "touched_at"]

    def has_add_permission(self, request):
        return False


@admin.register(MediaObject)
class MediaObjectAdmin(admin.ModelAdmin):
    list_display = ["name", "file", "mtype", "width", "height", "blob"]
    list_filter = ["mtype"]
    search_fields = ["name", "id", "blob__sha256", "file__name"]
    raw_id_fields = ["file", "blob"]


@admin.register(FileLibrary)
class FileLibraryAdmin(admin.ModelAdmin):
    list_display = ["file", "library", "created_at"]
    search_fields = ["file__name", "library__name"]
    autocomplete_fields = ["file", "library"]


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
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
    actions = ["restore"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Restore selected snapshots (new revision)", permissions=["change"])
    def restore(self, request, queryset):
        snapshots = list(queryset)
        for snapshot in snapshots:
            services.restore_snapshot(snapshot=snapshot)
        self.message_user(request, f"{len(snapshots)} snapshot(s) restored.", messages.SUCCESS)
