"""Reads. `get_file` is the one way to read a file's content, live or at a snapshot."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple
from uuid import UUID

from django.db.models import Exists, OuterRef, QuerySet, Subquery

from .models import (
    Blob,
    BlobHolder,
    File,
    MediaObject,
    Membership,
    Page,
    Project,
    Snapshot,
    SnapshotMedia,
    SnapshotPage,
    Team,
)

PAGE_BATCH = 50


class PageData(NamedTuple):
    id: UUID
    index: int
    name: str
    objects: dict


class MediaData(NamedTuple):
    id: UUID
    blob_id: str
    name: str
    mtype: str
    width: int | None
    height: int | None


@dataclass(frozen=True)
class FileState:
    """A file's content as one reader sees it: live, or frozen at a snapshot.

    Pages and media stream in key order a batch at a time (keyset, never OFFSET), so a
    reader's memory does not grow with the file.
    """

    file: File
    snapshot: Snapshot | None = None

    @property
    def name(self) -> str:
        return self.snapshot.name if self.snapshot else self.file.name

    @property
    def revision(self) -> int:
        return self.snapshot.revision if self.snapshot else self.file.revision

    @property
    def data_version(self) -> int:
        return self.snapshot.data_version if self.snapshot else self.file.data_version

    @property
    def features(self) -> list:
        return self.snapshot.features if self.snapshot else self.file.features

    @property
    def assets(self) -> dict:
        return self.snapshot.assets if self.snapshot else self.file.assets

    @property
    def modified_at(self):
        """When this content was last changed: the snapshot's time for a snapshot."""
        return self.snapshot.created_at if self.snapshot else self.file.modified_at

    def _page_rows(self) -> tuple[QuerySet, str]:
        if self.snapshot:
            return SnapshotPage.objects.filter(snapshot=self.snapshot), "page_id"
        return Page.objects.filter(file=self.file), "page_id"

    def pages(self, batch: int = PAGE_BATCH) -> Iterator[PageData]:
        rows, id_field = self._page_rows()
        fields = (id_field, "index", "name", "object_map")
        last = -1
        while True:
            chunk = list(rows.filter(index__gt=last).order_by("index").values_list(*fields)[:batch])
            yield from (PageData(*row) for row in chunk)
            if len(chunk) < batch:
                return
            last = chunk[-1][1]

    def page_ids(self) -> list[UUID]:
        """Page ids in index order: cheap to list, for readers that load pages one at a time."""
        rows, id_field = self._page_rows()
        return list(rows.order_by("index").values_list(id_field, flat=True))

    def pages_with_ids(self, page_ids: list[UUID]) -> list[PageData]:
        """Those pages, in index order, in one query."""
        rows, id_field = self._page_rows()
        found = rows.filter(**{f"{id_field}__in": page_ids}).order_by("index")
        return [
            PageData(*row) for row in found.values_list(id_field, "index", "name", "object_map")
        ]

    def media(self) -> Iterator[MediaData]:
        if self.snapshot:
            rows = SnapshotMedia.objects.filter(snapshot=self.snapshot).order_by("media_id")
            fields = ("media_id", "blob_id", "name", "mtype", "width", "height")
        else:
            rows = MediaObject.objects.filter(file=self.file).order_by("id")
            fields = ("id", "blob_id", "name", "mtype", "width", "height")
        for row in rows.values_list(*fields).iterator(chunk_size=500):
            yield MediaData(*row)

    def library_ids(self) -> list[UUID]:
        return list(
            self.file.library_links.order_by("library_id").values_list("library_id", flat=True)
        )


def get_file(
    file_id: UUID,
    *,
    snapshot: Snapshot | UUID | None = None,
    include_deleted: bool = False,
    for_update: bool = False,
) -> FileState:
    """Raise File.DoesNotExist (or Snapshot.DoesNotExist) when there is nothing to read."""
    files = File.objects.select_related("project")
    if for_update:
        files = files.select_for_update()
    if not include_deleted:
        files = files.filter(deleted_at__isnull=True)
    file = files.get(pk=file_id)
    if snapshot is not None and not isinstance(snapshot, Snapshot):
        snapshot = Snapshot.objects.get(pk=snapshot, file=file)
    if snapshot is not None and snapshot.file_id != file.pk:
        raise Snapshot.DoesNotExist("That snapshot belongs to another file.")
    return FileState(file=file, snapshot=snapshot)


def in_teams_of(queryset: QuerySet, user, team_path: str) -> QuerySet:
    """Narrow `queryset` to rows of the user's teams; `team_path` leads from its model to Team."""
    if user.is_superuser:
        return queryset
    lookup = f"{team_path}__memberships__user" if team_path else "memberships__user"
    return queryset.filter(**{lookup: user})


def teams_for(user) -> QuerySet[Team]:
    """The user's teams, each annotated with `my_role`."""
    role = Membership.objects.filter(team=OuterRef("pk"), user=user).values("role")[:1]
    return in_teams_of(Team.objects.all(), user, "").annotate(my_role=Subquery(role))


def projects_for(user) -> QuerySet[Project]:
    return in_teams_of(Project.objects.select_related("team"), user, "team")


def files_for(user, *, include_deleted: bool = False) -> QuerySet[File]:
    files = in_teams_of(File.objects.all(), user, "project__team")
    if not include_deleted:
        files = files.filter(deleted_at__isnull=True)
    return files.select_related("project").prefetch_related("library_links")


def held_blobs(user) -> QuerySet[Blob]:
    """Blobs whose bytes the user sent and the server verified (BlobHolder rows)."""
    return Blob.objects.filter(Exists(BlobHolder.objects.filter(blob=OuterRef("pk"), user=user)))


def readable_blobs(user) -> QuerySet[Blob]:
    """The one rule for bytes, used by the sync routes, media, imports and the admin alike:
    a user reads a blob that a file they can see references (live, in the trash or in a
    snapshot), or whose bytes they sent themselves; superusers read every blob.

    Knowing a sha256 grants nothing: a media object that only names one stays pending
    until bytes that hash to it are received from someone entitled (services.store_blob).
    """
    if not user.is_authenticated:
        return Blob.objects.none()
    if user.is_superuser:
        return Blob.objects.all()
    files = files_for(user, include_deleted=True).values("pk")
    return Blob.objects.filter(
        Exists(BlobHolder.objects.filter(blob=OuterRef("pk"), user=user))
        | Exists(MediaObject.objects.filter(blob=OuterRef("pk"), file__in=files))
        | Exists(SnapshotMedia.objects.filter(blob=OuterRef("pk"), snapshot__file__in=files))
    )
