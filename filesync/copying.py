"""Writing copies of files under new ids, with every cross-file reference relinked.

Import, duplicate and restore-into-a-new-file all end here: they describe what to copy
(`FileCopy`, content streamed page by page) and how ids map (`Relink`), and `write_copy`
writes it. The reference fields come from `references.py`, the one declared list.
"""

from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from uuid import UUID, uuid4

import orjson
from django.db.models import JSONField, Value
from django.db.models.functions import Cast

from .feed import record_changes
from .models import DATA_VERSION, ChangeKind, File, FileLibrary, MediaObject, Page, Project
from .references import ASSET_REFERENCES, MEDIA_REFERENCE
from .selectors import MediaData, PageData, files_for

BULK_BATCH = 500
#: The object keys a reference can live in; an object with none of them is copied as is.
REFERENCE_FIELDS = frozenset(r.field for r in ASSET_REFERENCES) | {MEDIA_REFERENCE}


@dataclass
class Relink:
    """How ids map in one copy. Files copied together get new ids (`files`), and so do
    their media (`media`). A reference to a file outside the copy stays when that file is
    in `kept` (the copier can read it) and is dropped otherwise (detached)."""

    files: dict[str, str] = field(default_factory=dict)
    media: dict[str, str] = field(default_factory=dict)
    kept: Container[str] = frozenset()

    @classmethod
    def fresh(
        cls, file_ids: Iterable, media_ids: Iterable, kept: Container[str] = frozenset()
    ) -> "Relink":
        """New random ids for every file and media object in the copy."""
        return cls(
            files={str(f): str(uuid4()) for f in file_ids},
            media={str(m): str(uuid4()) for m in media_ids},
            kept=kept,
        )

    def target(self, file_id) -> str | None:
        """Where a reference to `file_id` points after the copy; None to detach it."""
        file_id = str(file_id)
        if file_id in self.files:
            return self.files[file_id]
        return file_id if file_id in self.kept else None

    def objects(self, objects: dict) -> dict:
        """A page's objects with their references rewritten (the input is left as it was)."""
        result = {}
        for object_id, original in objects.items():
            obj = result[object_id] = dict(original)
            if obj.keys().isdisjoint(REFERENCE_FIELDS):  # nothing to relink: a cheap test
                continue
            for reference in ASSET_REFERENCES:  # each in a field of its own
                if reference.field not in obj or (found := reference.get(obj)) is None:
                    continue
                file_id = found[0]
                target = self.target(file_id)
                if target is None:
                    reference.drop(obj)
                elif target != file_id:
                    reference.set_file(obj, target)
            image = obj.get(MEDIA_REFERENCE)
            if image is not None and str(image) in self.media:
                obj[MEDIA_REFERENCE] = self.media[str(image)]
        return result


class ReadableFiles:
    """The live files `user` may read (every live file when user is None), as `Relink.kept`.

    Asked one referenced id at a time and remembered, so a copy does not list every file
    a user can read (or, for a system copy, every file there is) to keep a handful.
    """

    def __init__(self, user=None):
        self._files = (
            File.objects.filter(deleted_at__isnull=True) if user is None else files_for(user)
        )
        self._known: dict[str, bool] = {}

    def __contains__(self, file_id) -> bool:
        key = str(file_id)
        if key not in self._known:
            try:
                UUID(key)
            except ValueError:
                self._known[key] = False
            else:
                self._known[key] = self._files.filter(pk=key).exists()
        return self._known[key]


@dataclass(frozen=True)
class FileCopy:
    """What one copied file is made of. `pages` and `media` are iterated once, in order."""

    source_id: str
    name: str
    is_library: bool
    features: list
    assets: dict
    pages: Iterable[PageData]
    media: Iterable[MediaData]


def write_copy(*, project: Project, copy: FileCopy, relink: Relink) -> File:
    """Create the copy under its new id. Content must already be valid and at the current
    data version; media blobs must be stored. Runs inside the caller's transaction."""
    file = File.objects.create(
        id=UUID(relink.files[copy.source_id]),
        project=project,
        name=copy.name,
        is_library=copy.is_library,
        features=copy.features,
        assets=copy.assets,
        data_version=DATA_VERSION,
    )
    replace_pages(
        file, (page._replace(objects=relink.objects(page.objects)) for page in copy.pages)
    )
    bulk_create_batched(
        MediaObject,
        (
            MediaObject(
                id=UUID(relink.media[str(media.id)]),
                file=file,
                blob_id=media.blob_id,
                sha256=media.blob_id,
                name=media.name,
                mtype=media.mtype,
                width=media.width,
                height=media.height,
            )
            for media in copy.media
        ),
    )
    return file


def finish_copies(copies: list[File], relations: Iterable[tuple], relink: Relink) -> None:
    """Recreate file-uses-library links between the copies (or to kept libraries), then
    tell the feed of the copies and their links. Last, just before the caller commits:
    taking feed seqs locks the feed for every writer until the commit."""
    wanted = []
    for file_id, library_id in relations:
        file_target, library_target = relink.target(file_id), relink.target(library_id)
        if file_target is None or library_target is None or file_target == library_target:
            continue
        wanted.append((file_target, library_target))
    libraries = {
        str(pk)
        for pk in File.objects.filter(
            pk__in={library for _, library in wanted}, is_library=True
        ).values_list("pk", flat=True)
    }
    links = [
        FileLibrary(file_id=file_id, library_id=library_id)
        for file_id, library_id in wanted
        if library_id in libraries  # only a library can be used as one; others detach
    ]
    FileLibrary.objects.bulk_create(links, ignore_conflicts=True)
    files = {str(copy.pk): copy for copy in copies}
    record_changes(
        [
            *((ChangeKind.FILE_CREATED, copy, None) for copy in copies),
            *(
                (
                    ChangeKind.LIBRARY_LINKED,
                    files[str(link.file_id)],
                    {"library": str(link.library_id)},
                )
                for link in links
            ),
        ]
    )


def replace_pages(file: File, pages: Iterable[PageData]) -> None:
    """The file's pages become these, under their own (file-local) ids, written as they
    stream a batch at a time."""
    file.pages.all().delete()
    bulk_create_batched(
        Page,
        (
            Page(
                file=file, page_id=p.id, index=p.index, name=p.name, object_map=json_text(p.objects)
            )
            for p in pages
        ),
    )


def json_text(value) -> Cast:
    """A JSONField's value written as orjson's text: the field's own encoding is the
    standard library's, several times slower over a page of objects. Content reaching a
    copy was validated, so orjson can write it; read back, it is the same value."""
    return Cast(Value(orjson.dumps(value).decode()), output_field=JSONField())


def bulk_create_batched(model, rows: Iterable) -> None:
    """Insert rows as they stream, a batch at a time, so memory holds one batch."""
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BULK_BATCH:
            model.objects.bulk_create(batch)
            batch.clear()
    if batch:
        model.objects.bulk_create(batch)
