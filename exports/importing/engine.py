"""The import engine: a binfile back into a project, whole or not at all.

Three phases under one lease. 1. Check: every entry against digest.json and every
document against the format and the store's content rules, reading each entry once;
nothing is written until all of it passed. 2. Store the blobs (content-addressed, so a
retry or another import finds them there; if the import never commits they stay
unreferenced and the blob GC removes them after its grace period). 3. Write every file,
page, media object and library link in one transaction, relinked through one `Relink`.
A worker killed in phase 3 leaves nothing behind: the database rolls the transaction back
and the job, its lease expired, runs again from phase 1.

The job kernel's heartbeat thread renews the lease on its own connection, since phase 3
can be long and its writes are invisible to other workers until it commits.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from common.limits import DOCUMENT_ENVELOPE_DEPTH, MAX_JSON_DEPTH
from exports.binfile import documents
from exports.binfile import format as binfile
from exports.binfile.format import MANIFEST, BinfileError
from exports.binfile.reader import BinfileReader, Limits
from exports.exporting.sinks import exports_storage
from exports.jobs.kernel import Engine, describe_error, run_job
from exports.models import ImportJob
from filesync import blobstore
from filesync.content import validate_assets, validate_features, validate_objects
from filesync.copying import FileCopy, ReadableFiles, Relink, finish_copies, write_copy
from filesync.datamigrations import UnknownDataVersion, upgrade_assets, upgrade_objects
from filesync.models import DATA_VERSION, Blob
from filesync.selectors import MediaData, PageData
from filesync.services import store_blob

logger = logging.getLogger(__name__)


def import_limits() -> Limits:
    return Limits(
        max_bytes=settings.IMPORT_MAX_BYTES,
        max_entries=settings.IMPORT_MAX_ENTRIES,
        max_ratio=settings.IMPORT_MAX_RATIO,
        max_document_bytes=settings.IMPORT_MAX_DOCUMENT_BYTES,
        max_depth=MAX_JSON_DEPTH + DOCUMENT_ENVELOPE_DEPTH,
    )


@dataclass
class _FilePlan:
    id: str
    data_version: int
    document: dict | None = None
    pages: set = field(default_factory=set)
    media: set = field(default_factory=set)
    indexes: set = field(default_factory=set)


@dataclass
class ArchivePlan:
    """What a checked archive holds: enough to write it without judging anything again."""

    files: dict[str, _FilePlan]
    relations: list[tuple[str, str]]
    blob_types: dict[str, str] = field(default_factory=dict)
    media_blobs: dict[str, tuple[str, str]] = field(default_factory=dict)


def _store_rule(check: Callable, value, entry: str, field_name: str) -> None:
    """Judge content by the store's own rules; a refusal names the entry and the field."""
    try:
        check(value)
    except ValidationError as error:
        documents.fail(entry, field_name, "; ".join(error.messages))


def _upgrade(upgrade: Callable, value, version: int, entry: str, field_name: str):
    try:
        return upgrade(value, version)
    except UnknownDataVersion as error:
        documents.fail(entry, field_name, str(error), code="unknown_data_version")


class _Checker:
    """Phase 1: reads every entry once, in archive order, and judges each document."""

    def __init__(self, reader: BinfileReader):
        self.reader = reader
        manifest = reader.manifest
        files = documents.manifest_files(manifest, current_version=DATA_VERSION)
        self.plan = ArchivePlan(
            files={f["id"]: _FilePlan(f["id"], f["data_version"]) for f in files},
            relations=documents.manifest_relations(manifest, {f["id"] for f in files}),
        )
        self.blob_entries = {}

    def check(self, on_progress: Callable[[int], None]) -> ArchivePlan:
        names = set(self.reader.names())
        for file_id in self.plan.files:
            if binfile.file_entry(file_id) not in names:
                documents.fail(
                    MANIFEST,
                    "files",
                    f"names file {file_id}, which has no {binfile.file_entry(file_id)}.",
                    code="missing_entry",
                )
        for name in names:
            if name.startswith("blobs/"):
                self.blob_entries[name.removeprefix("blobs/")] = self.reader.digest.get(name, {})
        self.reader.verify(on_document=self._document, on_progress=on_progress)
        self._cross_check()
        return self.plan

    def _document(self, name: str, data: bytes) -> None:
        if name in (MANIFEST, binfile.DIGEST):
            return
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise BinfileError(
                f"{name} is not valid JSON: {error}", code="malformed", entry=name
            ) from None
        parts = name.removesuffix(".json").split("/")
        plan = self.plan.files.get(parts[1])
        if plan is None:
            documents.fail(
                name, "(entry)", "belongs to no file of the manifest.", "unexpected_entry"
            )
        if len(parts) == 2:
            self._file(plan, name, document)
        elif parts[2] == "pages":
            self._page(plan, name, parts[3], document)
        else:
            self._media(plan, name, parts[3], document)

    def _file(self, plan: _FilePlan, name: str, document) -> None:
        checked = documents.file_document(document, name, plan.id)
        if checked["data_version"] != plan.data_version:
            documents.fail(name, "data_version", "differs from the manifest's.")
        _store_rule(validate_features, checked["features"], name, "features")
        checked["assets"] = _upgrade(
            upgrade_assets, checked["assets"], plan.data_version, name, "assets"
        )
        _store_rule(validate_assets, checked["assets"], name, "assets")
        plan.document = checked

    def _page(self, plan: _FilePlan, name: str, page_id: str, document) -> None:
        checked = documents.page_document(document, name, page_id)
        if checked["index"] in plan.indexes:
            documents.fail(name, "index", f"{checked['index']} is used by another page.")
        plan.indexes.add(checked["index"])
        objects = _upgrade(upgrade_objects, checked["objects"], plan.data_version, name, "objects")
        _store_rule(validate_objects, objects, name, "objects")
        plan.pages.add(page_id)

    def _media(self, plan: _FilePlan, name: str, media_id: str, document) -> None:
        checked = documents.media_document(document, name, media_id)
        if checked["blob"] not in self.blob_entries:
            documents.fail(name, "blob", f"names blob {checked['blob']}, which has no entry.")
        if media_id in self.plan.media_blobs:
            documents.fail(name, "id", "another file of the archive has this media id.")
        self.plan.media_blobs[media_id] = (plan.id, checked["blob"])
        self.plan.blob_types.setdefault(checked["blob"], checked["mtype"])
        plan.media.add(media_id)

    def _cross_check(self) -> None:
        """Each file lists exactly the pages and media the archive holds for it, and every
        blob is named by its own sha256."""
        for plan in self.plan.files.values():
            entry = binfile.file_entry(plan.id)
            for kind in ("pages", "media"):
                listed, present = set(plan.document[kind]), getattr(plan, kind)
                if missing := sorted(listed - present):
                    documents.fail(
                        entry,
                        kind,
                        f"lists {missing[0]}, which has no entry.",
                        code="missing_entry",
                    )
                if extra := sorted(present - listed):
                    documents.fail(
                        entry,
                        kind,
                        f"does not list {extra[0]}, which has an entry.",
                        code="unexpected_entry",
                    )
        for sha256, expected in self.blob_entries.items():
            if expected.get("sha256") != sha256:
                documents.fail(
                    binfile.blob_entry(sha256),
                    "sha256",
                    "the bytes do not hash to the entry's name.",
                    code="digest_mismatch",
                )


@contextmanager
def open_source(job: ImportJob) -> Iterator[BinaryIO]:
    handle = (
        exports_storage().open(job.source_name, "rb")
        if job.source_name
        else blobstore.open_blob(job.source_blob)
    )
    try:
        yield handle
    finally:
        handle.close()


def run_import(
    job_id, *, worker: str, on_progress: Callable[[ImportJob], None] | None = None
) -> str:
    """Run the import to its end. Returns what became of it: a JobState, or 'busy'/'lost'."""
    return run_job(ImportEngine, job_id, worker=worker, on_progress=on_progress)


def remove_source(job: ImportJob) -> None:
    """An uploaded archive goes when its job ends; a blob source is left to the blob GC."""
    if job.source_name:
        exports_storage().delete(job.source_name)


class ImportEngine(Engine):
    jobs = ImportJob

    def describe(self, error: Exception) -> dict:
        if isinstance(error, BinfileError):
            return {
                "code": error.code,
                "message": str(error),
                "entry": error.entry,
                "field": error.field,
            }
        return describe_error(error)

    def release_storage(self) -> None:
        remove_source(self.job)

    def work(self) -> None:
        if self.job.project_id is None:
            raise BinfileError("The project to import into was deleted.", code="project_missing")
        if self.job.source_blob:  # in use: keep it clear of the blob GC's grace period
            Blob.objects.filter(pk=self.job.source_blob).update(touched_at=timezone.now())
        with open_source(self.job) as source:
            reader = BinfileReader(source, import_limits())
            # digest.json is read up front, not checked as an entry: it is not counted.
            entries = [i for i in reader.zip.infolist() if i.filename != binfile.DIGEST]
            blob_bytes = sum(i.file_size for i in entries if i.filename.startswith("blobs/"))
            self.job.items_total = len(entries)
            self.job.bytes_total = sum(i.file_size for i in entries) + blob_bytes
            self.job.items_done = self.job.bytes_done = 0
            plan = _Checker(reader).check(self._checked)
            self._store_blobs(reader, plan)
            self.run.progress(phase="write", force=True)
            self._write(reader, plan)

    def _checked(self, size: int) -> None:
        self.job.items_done += 1
        self.job.bytes_done += size
        self._between("check")

    def _between(self, phase: str) -> None:
        self.run.check()
        self.run.progress(phase=phase)

    def _store_blobs(self, reader: BinfileReader, plan: ArchivePlan) -> None:
        """Each blob stored with the CRC-32 the archive's directory gives it: trusted
        because zipfile checked it against the bytes, as they were hashed in phase 1 (a
        mismatch fails the read), and checks it again as they are stored."""
        for sha256, content_type in sorted(plan.blob_types.items()):
            name = binfile.blob_entry(sha256)
            size = reader.digest[name]["size"]
            crc32 = reader.zip.getinfo(name).CRC
            with reader.zip.open(name) as stream:
                store_blob(
                    stream=stream,
                    content_type=content_type,
                    user=self.job.created_by,
                    verified=blobstore.Digest(sha256, size, crc32),
                )
            self.job.bytes_done += size
            self._between("store")

    def _write(self, reader: BinfileReader, plan: ArchivePlan) -> None:
        job = self.job
        relink = Relink.fresh(plan.files, plan.media_blobs, kept=ReadableFiles(self.job.created_by))
        with transaction.atomic():
            copies = []
            for file_plan in plan.files.values():
                self.run.check()
                copies.append(
                    write_copy(
                        project=job.project,
                        copy=_file_copy(reader, file_plan, plan),
                        relink=relink,
                    )
                )
                if len(copies) == 1:
                    # The only sign of life phase 3 gives: its rows and events stay invisible
                    # until the commit. Names the worker, whose death now rolls it all back.
                    logger.info(
                        "import %s: worker %s is writing %d files in one transaction",
                        job.pk,
                        self.run.holder,
                        len(plan.files),
                    )
            finish_copies(copies, plan.relations, relink)
            self.run.succeed(
                {"project": str(job.project_id), "files": relink.files},
                files=relink.files,
                items_done=job.items_total,
                bytes_done=job.bytes_total,
            )
        remove_source(job)


def _file_copy(reader: BinfileReader, file_plan: _FilePlan, plan: ArchivePlan) -> FileCopy:
    document = file_plan.document
    version = file_plan.data_version

    def pages() -> Iterator[PageData]:
        for page_id in document["pages"]:
            page = reader.read_json(binfile.page_entry(file_plan.id, page_id), verified=True)
            yield PageData(
                page_id, page["index"], page["name"], upgrade_objects(page["objects"], version)
            )

    def media() -> Iterator[MediaData]:
        for media_id in document["media"]:
            item = reader.read_json(binfile.media_entry(file_plan.id, media_id), verified=True)
            yield MediaData(
                media_id, item["blob"], item["name"], item["mtype"], item["width"], item["height"]
            )

    return FileCopy(
        source_id=file_plan.id,
        name=document["name"],
        is_library=document["is_library"],
        features=document["features"],
        assets=document["assets"],
        pages=pages(),
        media=media(),
    )
