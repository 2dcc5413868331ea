from django.urls import path
from rest_framework.routers import SimpleRouter

from .. import sse
from . import imports, views, webhooks

router = SimpleRouter()
router.register("exports", views.ExportJobViewSet, basename="export")
router.register("imports", imports.ImportJobViewSet, basename="import")

urlpatterns = [
    path("exports/<uuid:job_id>/events", sse.job_events, name="export-events"),
    path("imports/<uuid:job_id>/events", sse.job_events, {"kind": "import"}, name="import-events"),
    path("webhook-secret/", webhooks.WebhookSecretView.as_view(), name="webhook-secret"),
    *router.urls,
]
