"""Admin screens for the follower mirror: its downloads and the leader it follows.

Both are read-only: the rows are the follower's own bookkeeping, written by the feed and
the workers. The one thing an operator does is retry failed downloads (services), which
needs the change permission on downloads (superusers have it).
"""

from django.contrib import admin, messages
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.translation import ngettext

from common.admin import ReadOnlyAdmin

from . import services
from .models import Download, DownloadState, Leader
from .selectors import progress

#: Badge colours by download state.
STATE_COLOURS = {
    DownloadState.PENDING: "#6d6d6d",
    DownloadState.DOWNLOADING: "#1565c0",
    DownloadState.DONE: "#2e7d32",
    DownloadState.CANCELLED: "#8d6e63",
    DownloadState.FAILED: "#c62828",
}

ERROR_SHOWN = 80


@admin.register(Download)
class DownloadAdmin(ReadOnlyAdmin):
    list_display = [
        "file_id",
        "state_badge",
        "revisions",
        "attempts",
        "size",
        "short_error",
        "worker",
        "lease_expires_at",
        "updated_at",
    ]
    list_filter = ["state", "leader"]
    search_fields = ["file_id"]
    list_select_related = ["leader"]
    actions = ["retry"]

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.display(description="state", ordering="state")
    def state_badge(self, download):
        return format_html(
            '<span style="color:#fff;background:{};border-radius:3px;padding:1px 6px">{}</span>',
            STATE_COLOURS.get(download.state, "#6d6d6d"),
            download.state,
        )

    @admin.display(description="revision / fetched", ordering="revision")
    def revisions(self, download):
        return f"{download.revision} / {download.fetched_revision}"

    @admin.display(description="bytes", ordering="bytes_done")
    def size(self, download):
        return filesizeformat(download.bytes_done)

    @admin.display(description="last error")
    def short_error(self, download):
        if not download.last_error:
            return "—"
        return format_html(
            '<span title="{}">{}</span>',
            download.last_error,
            Truncator(download.last_error).chars(ERROR_SHOWN),
        )

    @admin.action(description="Retry failed downloads", permissions=["retry"])
    def retry(self, request, queryset):
        count = services.retry_failed(queryset)
        message = ngettext(
            "%d failed download will be retried.", "%d failed downloads will be retried.", count
        )
        self.message_user(request, message % count, messages.SUCCESS if count else messages.INFO)


@admin.register(Leader)
class LeaderAdmin(ReadOnlyAdmin):
    list_display = ["url", "feed_seq", "acked_seq", "replica_id", "last_seen", "downloads"]
    readonly_fields = [
        "url",
        "replica_id",
        "feed_seq",
        "acked_seq",
        "last_seen",
        "created_at",
        "downloads",
    ]

    @admin.display(description="downloads")
    def downloads(self, leader):
        """Counts by state, each linking to the download list filtered to it."""
        counts = progress(leader)
        url = reverse("admin:follower_download_changelist")
        return (
            format_html_join(
                " · ",
                '<a href="{}?leader__id__exact={}&amp;state__exact={}">{} {}</a>',
                (
                    (url, leader.pk, state, state, counts[state])
                    for state in DownloadState.values
                    if counts[state]
                ),
            )
            or "—"
        )
