"""What goes into a job's binfile, entry by entry, in the format's fixed order.

The entries are described lazily (name, method, time, planned size, and a function that
yields the bytes), so resuming at entry k skips the first k without reading their content.
All content is read through filesync's `get_file`, from the files the job pinned.
"""

import copy
import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Sum

from exports.binfile import format as binfile
from exports.binfile.zipstream import DEFLATED, STORED, EntryRecord
from exports.exporting.errors import ExportError
from exports.models import ExportJob, LibrariesMode, PinnedFile
from filesync import blobstore
from filesync.models import Blob, File, Snapshot
from filesync.references import asset_references
from filesync.selectors import FileState, PinnedState, get_file

GENERATED_BY = "ferry/1.0"
#: A rough size of a page or metadata entry, for the progress total before anything is read.
JSON_ENTRY_ESTIMATE = 16 * 1024
PAGE_BATCH = 50


@dataclass(frozen=True)
class EntrySpec:
    name: str
    method: int
    when: datetime
    planned_size: int
    chunks: Callable[[], Iterable[bytes]]
    expected_sha256: str = ""  # blobs: the bytes read must hash to the blob's name
    #: Stored blobs: their CRC-32, so the bytes stream after a complete local header
    #: (`planned_size` is then their exact size). Others are built in memory first.
    crc32: Callable[[], int] | None = None


def _json_entry(name: str, when: datetime, document: Callable[[], object]) -> EntrySpec:
    def chunks():
        yield binfile.encode_json(document())

    return EntrySpec(name, DEFLATED, when, JSON_ENTRY_ESTIMATE, chunks)


class PinnedContent:
    """The job's pinned files, read as they were pinned, whatever happened since."""

    def __init__(self, job: ExportJob):
        self.job = job
        pins = list(job.pinned.select_related("file", "snapshot").order_by("position"))
        self.exported = [p for p in pins if p.role != PinnedFile.Role.MERGE_SOURCE]
        self.merge_sources = [p for p in pins if p.role == PinnedFile.Role.MERGE_SOURCE]
        self.states: dict[int, FileState | PinnedState] = {}

    def state(self, pin: PinnedFile) -> FileState | PinnedState:
        """The pinned file, deleted or not, at its pinned revision: its snapshot for a
        snapshot export, else live until an edit preserves the revision, then that."""
        if pin.pk not in self.states:
            try:
                if pin.snapshot is not None:
                    state = get_file(pin.file_id, snapshot=pin.snapshot, include_deleted=True)
                else:
                    state = PinnedState(pin.file_id, pin.revision, lambda: _preserved(pin))
            except File.DoesNotExist:
                raise ExportError(
                    "file_missing", f"File {pin.file_id} no longer exists; it was purged."
                ) from None
            self.states[pin.pk] = state
        return self.states[pin.pk]

    def archive_time(self) -> datetime:
        """Time of the entries that belong to no one file: the newest of the files' times."""
        return max(self.state(pin).modified_at for pin in self.exported)

    def blob_ids(self) -> list[str]:
        return sorted(set().union(*(self.state(pin).blob_ids() for pin in self.exported)))

    def planned_size(self) -> tuple[int, int]:
        """(entries, bytes) the archive is expected to hold, for progress and part size."""
        entries, json_entries = 2, 2
        for pin in self.exported:
            state = self.state(pin)
            count = 1 + len(state.page_ids()) + sum(1 for _ in state.media())
            entries += count
            json_entries += count
        blob_ids = self.blob_ids()
        blob_bytes = Blob.objects.filter(sha256__in=blob_ids).aggregate(n=Sum("size"))["n"] or 0
        return entries + len(blob_ids), blob_bytes + json_entries * JSON_ENTRY_ESTIMATE

    def merge_assets(self) -> dict[str, dict[str, dict]]:
        """{library file id: its assets} for the libraries a `merge` export folds in."""
        return {str(pin.file_id): self.state(pin).assets for pin in self.merge_sources}


def _preserved(pin: PinnedFile) -> Snapshot | None:
    """The snapshot an edit preserved the pin's revision in, if one did since it was read."""
    snapshot_id = PinnedFile.objects.filter(pk=pin.pk).values_list("snapshot_id", flat=True)
    return Snapshot.all_kinds.filter(pk__in=snapshot_id).first()


def _transform(objects: dict, file_id: str, mode: str, libraries: dict) -> dict:
    """Apply the libraries mode to one page's objects (merge: make refs local; detach: drop)."""
    if mode == LibrariesMode.ALL:
        return objects
    result = copy.deepcopy(objects)
    for obj in result.values():
        for reference, target_file, _asset in list(asset_references(obj)):
            if target_file == file_id:
                continue
            if mode == LibrariesMode.DETACH:
                reference.drop(obj)
            elif target_file in libraries:
                reference.set_file(obj, file_id)
    return result


def _merged_assets(state: FileState, file_id: str, libraries: dict) -> dict:
    """The file's assets plus the library assets its pages use (first library wins)."""
    assets = copy.deepcopy(state.assets)
    for page in state.pages():
        for obj in page.objects.values():
            for reference, target_file, asset_id in asset_references(obj):
                source = libraries.get(target_file, {}).get(reference.kind, {})
                if target_file != file_id and asset_id in source:
                    assets.setdefault(reference.kind, {}).setdefault(asset_id, source[asset_id])
    return assets


def _file_document(state: FileState, content: PinnedContent, mode: str) -> dict:
    file_id = str(state.file.id)
    assets = (
        _merged_assets(state, file_id, content.merge_assets())
        if mode == LibrariesMode.MERGE
        else state.assets
    )
    return {
        "id": file_id,
        "name": state.name,
        "revision": state.revision,
        "data_version": state.data_version,
        "features": state.features,
        "is_library": state.file.is_library,
        "assets": assets,
        "created_at": state.file.created_at.isoformat(),
        "modified_at": state.modified_at.isoformat(),
        "pages": [str(page_id) for page_id in state.page_ids()],
        "media": [str(media.id) for media in state.media()],
    }


def _manifest(job: ExportJob, content: PinnedContent) -> dict:
    files = []
    for pin in content.exported:
        state = content.state(pin)
        files.append(
            {
                "id": str(pin.file_id),
                "name": state.name,
                "revision": state.revision,
                "data_version": state.data_version,
                "features": state.features,
                "is_library": state.file.is_library,
            }
        )
    return binfile.manifest(
        generated_by=GENERATED_BY,
        source={"server": settings.FERRY_SERVER_NAME},
        libraries=job.libraries,
        files=files,
        relations=[
            [str(r.file_id), str(r.library_id)]
            for r in job.relations.order_by("file_id", "library_id")
        ],
    )


class _PageLoader:
    """Loads a file's pages a batch at a time, as the entries ask for them in order."""

    def __init__(self, state: FileState, page_ids: list):
        self.state = state
        self.page_ids = page_ids
        self.loaded: dict = {}

    def get(self, position: int):
        page_id = self.page_ids[position]
        if page_id not in self.loaded:
            batch = self.page_ids[position : position + PAGE_BATCH]
            self.loaded = {page.id: page for page in self.state.pages_with_ids(batch)}
        return self.loaded[page_id]


def _file_entries(job: ExportJob, content: PinnedContent, pin: PinnedFile) -> Iterator[EntrySpec]:
    """A file's entries, as pinned."""
    state = content.state(pin)
    file_id = str(pin.file_id)
    when = state.modified_at
    mode = job.libraries
    yield _json_entry(
        binfile.file_entry(file_id), when, lambda: _file_document(state, content, mode)
    )
    libraries = {str(p.file_id) for p in content.merge_sources}
    page_ids = state.page_ids()
    loader = _PageLoader(state, page_ids)
    for position, page_id in enumerate(page_ids):

        def page_document(position=position):
            page = loader.get(position)
            return {
                "id": str(page.id),
                "index": page.index,
                "name": page.name,
                "objects": _transform(page.objects, file_id, mode, libraries),
            }

        yield _json_entry(binfile.page_entry(file_id, page_id), when, page_document)
    for media in state.media():
        document = {
            "id": str(media.id),
            "name": media.name,
            "mtype": media.mtype,
            "width": media.width,
            "height": media.height,
            "blob": media.blob_id,
        }
        yield _json_entry(binfile.media_entry(file_id, media.id), when, lambda d=document: d)


def _blob_entries(content: PinnedContent, when: datetime) -> Iterator[EntrySpec]:
    blobs = Blob.objects.filter(sha256__in=content.blob_ids()).order_by("sha256")
    for sha256, size, content_type, crc32 in blobs.values_list(
        "sha256", "size", "content_type", "crc32"
    ):
        method = binfile.blob_method(content_type, size)
        yield EntrySpec(
            binfile.blob_entry(sha256),
            method,
            when,
            size,
            lambda sha256=sha256: blobstore.iter_blob(sha256),
            expected_sha256=sha256,
            crc32=(lambda sha256=sha256, crc32=crc32: blob_crc32(sha256, crc32))
            if method == STORED
            else None,
        )


def blob_crc32(sha256: str, recorded: int | None) -> int:
    """The blob's CRC-32 for its local header. A blob stored before CRCs were recorded gets
    one pass over its bytes, on first use; the CRC is kept only if the bytes still hash to
    the blob's name, so a corrupt copy never vouches for itself."""
    if recorded is not None:
        return recorded
    crc, sha = 0, hashlib.sha256()
    for chunk in blobstore.iter_blob(sha256):
        crc = zlib.crc32(chunk, crc)
        sha.update(chunk)
    if sha.hexdigest() != sha256:
        raise blob_corrupt(sha256)
    Blob.objects.filter(sha256=sha256, crc32__isnull=True).update(crc32=crc)
    return crc


def blob_corrupt(sha256: str) -> ExportError:
    return ExportError(
        "blob_corrupt",
        f"Blob {sha256} in storage no longer matches its sha256 or CRC-32. "
        "Restore it from a backup or a replica, then retry.",
    )


def planned_size(job: ExportJob) -> tuple[int, int]:
    return PinnedContent(job).planned_size()


def archive_entries(
    job: ExportJob, *, digest_records: Callable[[], list[EntryRecord]]
) -> Iterator[EntrySpec]:
    """Every entry in order; digest.json last, made from the records written before it."""
    content = PinnedContent(job)
    when = content.archive_time()
    yield _json_entry(binfile.MANIFEST, when, lambda: _manifest(job, content))
    for pin in content.exported:
        yield from _file_entries(job, content, pin)
    yield from _blob_entries(content, when)
    yield _json_entry(binfile.DIGEST, when, lambda: binfile.digest(digest_records()))
