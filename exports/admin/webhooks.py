"""Webhook secrets in the admin: who has one and since when, never the value (shown once
to its owner when made; see exports/api/webhooks.py)."""

from django.contrib import admin

from common.admin import ReadOnlyAdmin

from ..models import WebhookSecret


@admin.register(WebhookSecret)
class WebhookSecretAdmin(ReadOnlyAdmin):
    fields = ["user", "created_at"]
    readonly_fields = fields
    list_display = fields
    list_select_related = ["user"]
    search_fields = ["user__username"]
