"""Reads. `get_file` is the one way to read a file's content, live or at a snapshot."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple, TypeVar
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
MEDIA_BATCH = 500

T = TypeVar("T")


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
        """When this content was last changed: the snapshot's time for a snapshot people
        took, the file's own time for one that preserved a revision for its readers."""
        if self.snapshot:
            return self.snapshot.file_modified_at or self.snapshot.created_at
        return self.file.modified_at

    def _page_rows(self) -> tuple[QuerySet, str]:
        if self.snapshot:
            return SnapshotPage.objects.filter(snapshot=self.snapshot), "page_id"
        return Page.objects.filter(file=self.file), "page_id"

    def pages(self, batch: int = PAGE_BATCH) -> Iterator[PageData]:
        return _in_batches(self.page_batch, -1, attrgetter("index"), batch)

    def page_batch(self, after_index: int, batch: int = PAGE_BATCH) -> list[PageData]:
        """The next `batch` pages after the page at `after_index` (-1: from the start)."""
        rows, id_field = self._page_rows()
        fields = (id_field, "index", "name", "object_map")
        chunk = rows.filter(index__gt=after_index).order_by("index").values_list(*fields)[:batch]
        return [PageData(*row) for row in chunk]

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

    def media(self, batch: int = MEDIA_BATCH) -> Iterator[MediaData]:
        return _in_batches(self.media_batch, None, attrgetter("id"), batch)

    def media_batch(self, after_id: UUID | None, batch: int = MEDIA_BATCH) -> list[MediaData]:
        """The next `batch` media in id order after `after_id` (None: from the start)."""
        if self.snapshot:
            rows, id_field = SnapshotMedia.objects.filter(snapshot=self.snapshot), "media_id"
        else:
            rows, id_field = MediaObject.objects.filter(file=self.file), "id"
        if after_id is not None:
            rows = rows.filter(**{f"{id_field}__gt": after_id})
        fields = (id_field, "blob_id", "name", "mtype", "width", "height")
        return [MediaData(*row) for row in rows.order_by(id_field).values_list(*fields)[:batch]]

    def blob_ids(self) -> set[str]:
        """The blobs of the file's media (pending media have none)."""
        if self.snapshot:
            rows = SnapshotMedia.objects.filter(snapshot=self.snapshot)
        else:
            rows = MediaObject.objects.filter(file=self.file, blob__isnull=False)
        return set(rows.values_list("blob_id", flat=True))

    def library_ids(self) -> list[UUID]:
        return list(
            self.file.library_links.order_by("library_id").values_list("library_id", flat=True)
        )


class PinnedState:
    """A file as it was at a pinned revision, whatever happens to it while it is read.

    The file is read live while it stays at that revision. The write that moves it on
    first preserves the revision in a snapshot, in the same transaction
    (filesync.preserving), and `preserved()` then names that snapshot. So each read is
    made live and trusted only if nothing was preserved by the time it ended; otherwise
    it is made again from the snapshot, where every later read goes. What it returns is
    the pinned revision's content either way, so it may be kept: FileState's reads, with
    the file's own fields read once.
    """

    def __init__(self, file_id: UUID, revision: int, preserved: Callable[[], Snapshot | None]):
        self.file_id, self.revision, self._preserved = file_id, revision, preserved
        self._frozen: FileState | None = None
        self.file, self.name, self.data_version, self.features, self.assets, self.modified_at = (
            self._read(
                lambda s: (s.file, s.name, s.data_version, s.features, s.assets, s.modified_at)
            )
        )

    def _read(self, read: Callable[[FileState], T]) -> T:
        if self._frozen is None:
            live = get_file(self.file_id, include_deleted=True)
            value = read(live)
            snapshot = self._preserved()
            if snapshot is None:
                if live.revision != self.revision:  # a write that did not preserve first
                    raise RuntimeError(
                        f"File {self.file_id} moved from revision {self.revision} to "
                        f"{live.revision} without preserving it for its readers."
                    )
                return value
            self._frozen = FileState(file=live.file, snapshot=snapshot)
        return read(self._frozen)

    def page_ids(self) -> list[UUID]:
        return self._read(FileState.page_ids)

    def pages_with_ids(self, page_ids: list[UUID]) -> list[PageData]:
        return self._read(lambda state: state.pages_with_ids(page_ids))

    def pages(self, batch: int = PAGE_BATCH) -> Iterator[PageData]:
        last = -1
        while True:
            chunk = self._read(lambda state, after=last: state.page_batch(after, batch))
            yield from chunk
            if len(chunk) < batch:
                return
            last = chunk[-1].index

    def media(self, batch: int = MEDIA_BATCH) -> Iterator[MediaData]:
        last = None
        while True:
            chunk = self._read(lambda state, after=last: state.media_batch(after, batch))
            yield from chunk
            if len(chunk) < batch:
                return
            last = chunk[-1].id

    def blob_ids(self) -> set[str]:
        return self._read(FileState.blob_ids)


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


def _in_batches(next_batch: Callable, start, key: Callable, batch: int) -> Iterator:
    """Every row, `batch` at a time, each batch read from after the last row of the one
    before (by `key`): memory stays one batch, whatever the size of the file."""
    after = start
    while True:
        chunk = next_batch(after, batch)
        yield from chunk
        if len(chunk) < batch:
            return
        after = key(chunk[-1])
