from django.urls import path
from rest_framework.routers import SimpleRouter

from .. import sse
from . import views

router = SimpleRouter()
router.register("exports", views.ExportJobViewSet, basename="export")

urlpatterns = [
    path("exports/<uuid:job_id>/events", sse.job_events, name="export-events"),
    *router.urls,
]
