from rest_framework.routers import DefaultRouter

from common.api.ids import UUID_RE as UUID

from . import views

router = DefaultRouter()
router.include_format_suffixes = False
router.register("teams", views.TeamViewSet, basename="team")
router.register("projects", views.ProjectViewSet, basename="project")
router.register("files", views.FileViewSet, basename="file")
router.register(rf"files/(?P<file_id>{UUID})/pages", views.PageViewSet, basename="page")
router.register(rf"files/(?P<file_id>{UUID})/media", views.MediaViewSet, basename="media")
router.register(rf"files/(?P<file_id>{UUID})/snapshots", views.SnapshotViewSet, basename="snapshot")
urlpatterns = router.urls
