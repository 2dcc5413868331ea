from django.urls import path

from . import tus, views

SHA256 = "<str:sha256>"

urlpatterns = [
    path("uploads/", tus.UploadsView.as_view(), name="sync-uploads"),
    path("uploads/<uuid:upload_id>", tus.UploadView.as_view(), name="sync-upload"),
    path("timestamp", views.TimestampView.as_view(), name="sync-timestamp"),
    path("changes", views.changes, name="sync-changes"),
    path("files/<uuid:file_id>", views.FileContentView.as_view(), name="sync-file"),
    path(f"blobs/{SHA256}", views.BlobView.as_view(), name="sync-blob"),
    path(f"blobs/{SHA256}/lock", views.BlobLockView.as_view(), name="sync-blob-lock"),
    path("locks/<uuid:lock_id>", views.LockView.as_view(), name="sync-lock"),
    path("locks/<uuid:lock_id>/keep", views.LockKeepView.as_view(), name="sync-lock-keep"),
    path("replicas", views.ReplicasView.as_view(), name="sync-replicas"),
    path("replicas/<uuid:replica_id>/<str:verb>", views.ReplicaView.as_view(), name="sync-replica"),
]
