"""Reads for the sync protocol: which blobs a user may reach, and the change feed."""

from collections.abc import Iterator

from django.db.models import Q, QuerySet

from ..models import Blob, Change, FeedCursor, MediaObject, SnapshotMedia
from ..selectors import FileState, PageData, files_for, readable_blobs, teams_for


def readable_blob(user, sha256: str) -> Blob | None:
    """The blob if the user may read it (filesync.selectors.readable_blobs); anything else
    looks like it does not exist."""
    return readable_blobs(user).filter(pk=sha256).first()


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


def _page_record(page: PageData) -> dict:
    return {
        "page": {
            "id": str(page.id),
            "index": page.index,
            "name": page.name,
            "objects": page.objects,
        }
    }


def file_content(state: FileState) -> Iterator[dict]:
    """A whole file for a follower, one record at a time: the file with its project, team
    and libraries, each page, each media object, then the revision read again at the end.
    A reader whose first and last revisions differ saw the file change underway."""
    file = state.file
    project = file.project
    yield {
        "file": {
            "id": str(file.pk),
            "name": file.name,
            "is_library": file.is_library,
            "revision": file.revision,
            "data_version": file.data_version,
            "features": file.features,
            "assets": file.assets,
            "created_at": file.created_at.isoformat(),
            "modified_at": file.modified_at.isoformat(),
            "deleted_at": file.deleted_at.isoformat() if file.deleted_at else None,
            "purge_after": file.purge_after.isoformat() if file.purge_after else None,
            "libraries": [str(library) for library in state.library_ids()],
            "project": {"id": str(project.pk), "name": project.name},
            "team": {"id": str(project.team_id), "name": project.team.name},
        }
    }
    # One page per query, and none kept while the next is read: a reader holds one page
    # (PAGE_MAX_BYTES) at a time, however many the file has. A page gone meanwhile (a
    # restore replaced them) is skipped; the revision at the end tells the reader.
    for page_id in state.page_ids():
        yield from map(_page_record, state.pages_with_ids([page_id]))
    media = MediaObject.objects.filter(file=file).order_by("id")
    for row in media.values_list("id", "sha256", "blob_id", "name", "mtype", "width", "height"):
        media_id, sha256, blob_id, name, mtype, width, height = row
        yield {
            "media": {
                "id": str(media_id),
                "sha256": sha256,
                "ready": blob_id is not None,
                "name": name,
                "mtype": mtype,
                "width": width,
                "height": height,
            }
        }
    revision = type(file).objects.filter(pk=file.pk).values_list("revision", flat=True).first()
    yield {"end": {"revision": revision}}
