"""Reads for the sync protocol: which blobs a user may reach, and the change feed."""

from django.db.models import Q, QuerySet

from ..models import Blob, Change, FeedCursor, MediaObject, SnapshotMedia
from ..selectors import files_for, teams_for


def readable_blob(user, sha256: str) -> Blob | None:
    """A blob the user may read: used by a file they can see (live or in a snapshot), or
    uploaded by them. Anything else looks like it does not exist."""
    blob = Blob.objects.filter(pk=sha256).first()
    if blob is None or user.is_superuser or blob.created_by_id == user.pk:
        return blob
    files = files_for(user, include_deleted=True)
    used = (
        MediaObject.objects.filter(blob=blob, file__in=files).exists()
        or SnapshotMedia.objects.filter(blob=blob, snapshot__file__in=files).exists()
    )
    return blob if used else None


def blob_references(sha256: str) -> bool:
    return (
        MediaObject.objects.filter(blob_id=sha256).exists()
        or SnapshotMedia.objects.filter(blob_id=sha256).exists()
    )


def feed_position() -> int:
    return FeedCursor.objects.filter(pk=1).values_list("last_seq", flat=True).first() or 0


def changes_for(user, *, since: int, limit: int) -> QuerySet[Change]:
    teams = teams_for(user).values("pk")
    return Change.objects.filter(Q(team_id__in=teams), seq__gt=since).order_by("seq")[:limit]


def pending_for(user, sha256: str) -> bool:
    """Some file the user can see waits for a blob with this sha256."""
    return MediaObject.objects.filter(
        sha256=sha256, blob__isnull=True, file__in=files_for(user, include_deleted=True)
    ).exists()
