"""Hostile archives: refused with a 4xx or a failed job naming the problem, nothing written.

Each archive is a real export rewritten with `zipfile`, as an attacker would make it, with
one thing changed (ZIP header fields by struct surgery on the bytes zipfile wrote).
digest.json is recomputed unless the case is about the digest, so the check under test is
the one that fires. Reader-level cases on hand-made archives live in
test_binfile_codec.py; these go through the API, the service and the import job.
"""

import hashlib
import io
import json
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from uuid import uuid4

import pytest

from exports.binfile import format as binfile
from exports.models import ImportEvent, ImportJob, JobState
from filesync import blobstore
from filesync import services as filesync_services
from filesync.models import DATA_VERSION, Blob, File, FileLibrary, MediaObject
from tests.conftest import stored_names
from tests.exports.test_import import THE_JOBS_OWN, export_bytes, import_bytes
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db(transaction=True)

REGULAR = stat.S_IFREG | 0o644
SYMLINK = stat.S_IFLNK | 0o777
CHUNK = 1024**2
BOMB_BYTES = 1024**3


@dataclass
class Entry:
    name: str
    data: bytes = b""
    mode: int = REGULAR
    zeros: int = 0  # when set, the entry is this many zero bytes, written as a stream


class Rewrite:
    """An export's entries, to change one thing and zip again."""

    def __init__(self, data: bytes):
        self.source_size = len(data)
        with zipfile.ZipFile(io.BytesIO(data)) as source:
            self.entries = [
                Entry(info.filename, source.read(info))
                for info in source.infolist()
                if info.filename != binfile.DIGEST
            ]
            self.digest = source.read(binfile.DIGEST)
        self.stale_digest = False  # keep the export's digest.json instead of recomputing it
        self.cut = False  # cut the built archive in the middle
        self.surgery: list[Callable[[bytes], bytes]] = []  # on the built archive's bytes

    def first(self, part: str) -> str:
        return next(e.name for e in self.entries if part in e.name)

    def entry(self, name: str) -> Entry:
        return next(e for e in self.entries if e.name == name)

    def edit_json(self, name: str, change: Callable[[dict], None]) -> None:
        entry = self.entry(name)
        document = json.loads(entry.data)
        change(document)
        entry.data = binfile.encode_json(document)

    def add(self, entry: Entry, *, before: str = binfile.DIGEST) -> None:
        at = next((n for n, e in enumerate(self.entries) if e.name == before), len(self.entries))
        self.entries.insert(at, entry)

    def remove(self, name: str) -> None:
        self.entries.remove(self.entry(name))

    def design_of(self, entry_name: str) -> str:
        """The file document of the file an entry belongs to."""
        return binfile.file_entry(entry_name.split("/")[1].removesuffix(".json"))

    def fresh_digest(self) -> bytes:
        listed = {}
        for entry in self.entries:
            if entry.zeros:
                listed[entry.name] = {"sha256": entry.name.split("/")[-1], "size": entry.zeros}
            else:
                sha256 = hashlib.sha256(entry.data).hexdigest()
                listed[entry.name] = {"sha256": sha256, "size": len(entry.data)}
        return binfile.encode_json({"entries": listed})

    def build(self) -> bytes:
        out = io.BytesIO()
        digest = self.digest if self.stale_digest else self.fresh_digest()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns of a duplicate name; so be it
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
                for entry in [*self.entries, Entry(binfile.DIGEST, digest)]:
                    info = zipfile.ZipInfo(entry.name, date_time=(2024, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = entry.mode << 16
                    if not entry.zeros:
                        archive.writestr(info, entry.data)
                        continue
                    zeros = bytes(CHUNK)
                    with archive.open(info, "w", force_zip64=True) as stream:
                        for _ in range(entry.zeros // CHUNK):
                            stream.write(zeros)
        data = out.getvalue()
        for operation in self.surgery:
            data = operation(data)
        return data


#: Where a 2-byte field sits in a local header and in a central-directory record.
LOCAL_FIELDS = {"version": 4, "flags": 6, "method": 8}
CENTRAL_FIELDS = {"version": 6, "flags": 8, "method": 10}


def header_offsets(data: bytes, name: str) -> tuple[int, int]:
    """(local header, central-directory record) offsets of the entry `name`."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        local, at = archive.getinfo(name).header_offset, archive.start_dir
    while True:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, at + 28)
        if data[at + 46 : at + 46 + name_length] == name.encode():
            return local, at
        at += 46 + name_length + extra_length + comment_length


def set_fields(name: str, *, central_only: bool = False, **fields: int):
    """Surgery: overwrite header fields of one entry, in its local header and its record in
    the central directory (or only there)."""

    def operation(data: bytes) -> bytes:
        local, central = header_offsets(data, name)
        out = bytearray(data)
        for field, value in fields.items():
            struct.pack_into("<H", out, central + CENTRAL_FIELDS[field], value)
            if not central_only:
                struct.pack_into("<H", out, local + LOCAL_FIELDS[field], value)
        return bytes(out)

    return operation


def rename_local(name: str, other: str):
    """Surgery: the local header names `other` (of the same length); the directory `name`."""

    def operation(data: bytes) -> bytes:
        local, _ = header_offsets(data, name)
        out = bytearray(data)
        out[local + 30 : local + 30 + len(other)] = other.encode()
        return bytes(out)

    return operation


def swap_records(first: str, second: str):
    """Surgery: two adjacent central-directory records change places (their local entries
    stay where they are), so the directory lists them out of offset order."""

    def operation(data: bytes) -> bytes:
        _, at = header_offsets(data, first)
        _, then = header_offsets(data, second)
        end = then + 46 + sum(struct.unpack_from("<HHH", data, then + 28))
        return data[:at] + data[then:end] + data[at:then] + data[end:]

    return operation


def nest(document: bytes, key: str, depth: int) -> bytes:
    """The document with a value `depth` arrays deep first under its object `key` (by
    hand: orjson will not write one past 255 levels)."""
    opening = f'"{key}":{{'.encode()
    assert opening in document
    deep = b'"deep":{"type":"group","children":' + b"[" * depth + b"]" * depth + b"}"
    empty = f'"{key}":{{}}'.encode() in document
    return document.replace(opening, opening + deep + (b"" if empty else b","), 1)


def page_of_many_objects(page: dict, count: int) -> bytes:
    """The page with `count` objects of 26 bytes of JSON each, none of them wrong."""
    objects = b",".join(b'"o%07d":{"type":"rect"}' % n for n in range(count))
    head = binfile.encode_json({k: v for k, v in page.items() if k != "objects"})
    return head[:-1] + b',"objects":{' + objects + b"}}"


def fifield_bomb(count: int, kernel_bytes: int) -> bytes:
    """David Fifield's overlapping-entry zip bomb ("A better zip bomb", 2019): one deflated
    kernel of zeros, and `count` entries each of whose data quotes the next entry's local
    header in a stored deflate block, then runs on into that entry's data. Every entry
    expands to the whole kernel; the archive grows by a few bytes an entry."""
    names = [
        binfile.blob_entry(hashlib.sha256(str(n).encode()).hexdigest()).encode()
        for n in range(count)
    ]
    zeros = bytes(kernel_bytes)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = deflate.compress(zeros) + deflate.flush()  # the last entry's data: the kernel
    later: list[bytes] = []  # local headers after the entry being made, each quoted
    records = []
    for n in reversed(range(count)):
        quoted = b"".join(later)
        sizes = (zlib.crc32(zeros, zlib.crc32(quoted)), len(data), len(quoted) + kernel_bytes)
        header = struct.pack(
            "<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, *sizes, len(names[n]), 0
        )
        header += names[n]
        records.append((names[n], sizes))
        later.insert(0, header)
        if n:
            data = b"\x00" + struct.pack("<HH", len(header), len(header) ^ 0xFFFF) + header + data
    body = later[0] + data
    directory, offset = b"", 0
    for (name, sizes), header in zip(reversed(records), later, strict=True):
        directory += (
            struct.pack(
                "<4s6H3I5H2I",
                b"PK\x01\x02",
                20,
                20,
                0,
                8,
                0,
                0x21,
                *sizes,
                len(name),
                0,
                0,
                0,
                0,
                REGULAR << 16,
                offset,
            )
            + name
        )
        offset += len(header) + 5
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, count, count, len(directory), len(body), 0)
    return body + directory + end


def zeros_blob(size: int) -> Entry:
    """Zeros under a blob's name (not their hash: the directory is refused before that)."""
    return Entry(binfile.blob_entry(hashlib.sha256(b"zeros").hexdigest()), zeros=size)


# Directory and manifest: refused by POST /api/imports/ before any job exists.
# Each edit changes the archive (and maybe settings) and returns the entry it names.


def zip_slip_parent(archive, settings):
    archive.add(Entry("../evil.json", b"{}"))
    return "../evil.json"


def zip_slip_nested(archive, settings):
    archive.add(Entry("files/../../x.json", b"{}"), before=archive.first("/pages/"))
    return "files/../../x.json"


def absolute_path(archive, settings):
    archive.add(Entry("/etc/passwd", b"root:x:0:0::/root:/bin/sh\n"))
    return "/etc/passwd"


def symlink(archive, settings):
    page = archive.entry(archive.first("/pages/"))
    page.mode, page.data = SYMLINK, b"/etc/passwd"
    return page.name


def duplicate(archive, settings):
    page = archive.entry(archive.first("/pages/"))
    archive.add(Entry(page.name, b'{"evil": true}'), before=page.name)
    return page.name


def zip_bomb(archive, settings):
    """1 GiB of zeros in one entry: about 1 MiB deflated, 1000x."""
    bomb = zeros_blob(BOMB_BYTES)
    archive.add(bomb)
    return bomb.name


def expands_too_far(archive, settings):
    """Small enough to upload, declaring more bytes than the server accepts."""
    settings.IMPORT_MAX_BYTES = archive.source_size + 1024**2
    padding = zeros_blob(2 * 1024**2)
    archive.add(padding)
    return padding.name


def upload_too_large(archive, settings):
    settings.IMPORT_MAX_BYTES = 1024
    return ""


def too_many_entries(archive, settings):
    settings.IMPORT_MAX_ENTRIES = len(archive.entries)  # digest.json is one more
    return ""


def truncated(archive, settings):
    archive.cut = True
    return ""


def newer_format(archive, settings):
    archive.edit_json(binfile.MANIFEST, lambda m: m.update(format_version=99))
    return binfile.MANIFEST


def unknown_type(archive, settings):
    archive.edit_json(binfile.MANIFEST, lambda m: m.update(type="penpot/binfile"))
    return binfile.MANIFEST


def digest_entry_not_an_object(archive, settings):
    digest = json.loads(archive.fresh_digest())
    digest["entries"][binfile.MANIFEST] = "nope"
    archive.digest, archive.stale_digest = binfile.encode_json(digest), True
    return binfile.DIGEST


def many_megabyte_entries(archive, settings):
    """300 entries of 1 MiB of zeros, about 1 KiB each deflated: 300 MiB from a few hundred
    KiB, each entry small enough to pass a ratio check kept for large entries."""
    blobs = [
        Entry(binfile.blob_entry(hashlib.sha256(b"%d" % n).hexdigest()), zeros=CHUNK)
        for n in range(300)
    ]
    for blob in blobs:
        archive.add(blob)
    return blobs[0].name


def version_past_zipfile(archive, settings):
    """Version 9.9 needed: Python's zipfile refuses it while reading the directory."""
    name = archive.first("/pages/")
    archive.surgery.append(set_fields(name, central_only=True, version=99))
    return name


def version_past_zip64(archive, settings):
    name = archive.first("/pages/")
    archive.surgery.append(set_fields(name, version=51))
    return name


def encrypted_manifest(archive, settings):
    archive.surgery.append(set_fields(binfile.MANIFEST, flags=0x0001))
    return binfile.MANIFEST


def encrypted_page(archive, settings):
    name = archive.first("/pages/")
    archive.surgery.append(set_fields(name, flags=0x0001))
    return name


def compressed_with(method: int):
    """Deflate64 (9), Zstandard (93), AES (99): methods zipfile cannot, or should not, read."""

    def edit(archive, settings):
        name = archive.first("/pages/")
        archive.surgery.append(set_fields(name, method=method))
        return name

    edit.__name__ = f"method_{method}"
    return edit


def local_name_differs(archive, settings):
    name = archive.first("/pages/")
    other = name[:-6] + ("1" if name[-6] == "0" else "0") + ".json"
    archive.surgery.append(rename_local(name, other))
    return name


def listed_out_of_order(archive, settings):
    name = archive.first("/pages/")
    after = archive.entries[archive.entries.index(archive.entry(name)) + 1].name
    archive.surgery.append(swap_records(name, after))
    return name


def deep_manifest(archive, settings):
    manifest = archive.entry(binfile.MANIFEST)
    manifest.data = nest(manifest.data, "source", 300)
    return binfile.MANIFEST


def oversized_page(archive, settings):
    """650,000 objects: a 16.9 MB page, about 1.7 MB deflated."""
    page = archive.entry(archive.first("/pages/"))
    page.data = page_of_many_objects(json.loads(page.data), 650_000)
    return page.name


REFUSED = [
    pytest.param(zip_slip_parent, 400, "unexpected_entry", "", id="zip-slip-parent"),
    pytest.param(zip_slip_nested, 400, "unexpected_entry", "", id="zip-slip-nested"),
    pytest.param(absolute_path, 400, "unexpected_entry", "", id="absolute-path"),
    pytest.param(symlink, 400, "symlink_entry", "", id="symlink"),
    pytest.param(duplicate, 400, "duplicate_entry", "", id="duplicate-name"),
    pytest.param(zip_bomb, 400, "compression_ratio", "", id="zip-bomb-1GiB"),
    pytest.param(expands_too_far, 413, "too_large", "", id="expands-past-limit"),
    pytest.param(upload_too_large, 413, "too_large", "", id="upload-past-limit"),
    pytest.param(too_many_entries, 400, "too_many_entries", "", id="too-many-entries"),
    pytest.param(truncated, 400, "not_zip", "", id="truncated"),
    pytest.param(newer_format, 400, "newer_version", "format_version", id="newer-format"),
    pytest.param(unknown_type, 400, "unknown_type", "type", id="unknown-type"),
    pytest.param(many_megabyte_entries, 400, "compression_ratio", "", id="300-entries-of-1MiB"),
    pytest.param(version_past_zipfile, 400, "unsupported_version", "", id="version-9.9"),
    pytest.param(version_past_zip64, 400, "unsupported_version", "", id="version-5.1"),
    pytest.param(encrypted_manifest, 400, "encrypted_entry", "", id="encrypted-manifest"),
    pytest.param(encrypted_page, 400, "encrypted_entry", "", id="encrypted-page"),
    *(
        pytest.param(compressed_with(method), 400, "unsupported_method", "", id=f"method-{method}")
        for method in (9, 93, 99)
    ),
    pytest.param(local_name_differs, 400, "name_mismatch", "", id="local-name-differs"),
    pytest.param(listed_out_of_order, 400, "overlapping_entries", "", id="out-of-order"),
    pytest.param(deep_manifest, 400, "too_deep", "source", id="manifest-300-deep"),
    pytest.param(oversized_page, 413, "too_large", "", id="page-of-650000-objects"),
    pytest.param(
        digest_entry_not_an_object,
        400,
        "invalid_document",
        "entries.manifest.json",
        id="digest-entry-not-an-object",
    ),
]


# Content: accepted at upload, then judged by the job, which fails and writes nothing.


def digest_differs(archive):
    """Same size, other bytes: only the sha256 can tell."""
    page = archive.entry(archive.first("/pages/"))
    assert b'"Page 0"' in page.data
    page.data = page.data.replace(b'"Page 0"', b'"Page X"')
    archive.stale_digest = True
    return page.name, "sha256"


def manifest_names_a_ghost(archive):
    ghost = {
        "id": str(uuid4()),
        "name": "Ghost",
        "revision": 1,
        "data_version": DATA_VERSION,
        "features": [],
        "is_library": False,
    }
    archive.edit_json(binfile.MANIFEST, lambda m: m["files"].append(ghost))
    return binfile.MANIFEST, "files"


def malformed_page(archive):
    page = archive.entry(archive.first("/pages/"))
    page.data = b'{"id": "' + page.data[:40]
    return page.name, ""


def spaceship(archive):
    name = archive.first("/pages/")
    archive.edit_json(name, lambda p: p["objects"].update(ufo={"type": "spaceship"}))
    return name, "objects"


def media_without_blob(archive):
    name = archive.first("/media/")
    archive.edit_json(name, lambda m: m.update(blob="f" * 64))
    return name, "blob"


def blob_not_its_hash(archive):
    blob = archive.entry(archive.first("blobs/"))
    blob.data = b"\x89PNG\r\n\x1a\n" + b"something else entirely"
    return blob.name, "sha256"


def newer_data_version(archive):
    def bump(document):
        for file in document.get("files", [document]):
            file["data_version"] = DATA_VERSION + 1

    archive.edit_json(binfile.MANIFEST, bump)
    for entry in list(archive.entries):
        if entry.name.count("/") == 1 and entry.name.startswith("files/"):
            archive.edit_json(entry.name, bump)
    return binfile.MANIFEST, "files[0].data_version"


def unsupported_feature(archive):
    name = archive.design_of(archive.first("/pages/"))
    archive.edit_json(name, lambda f: f.update(features=["warp-drive"]))
    return name, "features"


def file_outside_the_manifest(archive):
    """A whole file document, well formed, for a file the manifest does not name."""
    source = archive.design_of(archive.first("/pages/"))
    stranger = str(uuid4())
    document = json.loads(archive.entry(source).data)
    document.update(id=stranger, pages=[], media=[])
    name = binfile.file_entry(stranger)
    archive.add(Entry(name, binfile.encode_json(document)), before=archive.first("blobs/"))
    return name, "(entry)"


def page_not_listed(archive):
    page = archive.first("/pages/")
    file = archive.design_of(page)
    page_id = page.split("/")[-1].removesuffix(".json")
    archive.edit_json(file, lambda f: f["pages"].remove(page_id))
    return file, "pages"


def media_width_overflows(archive):
    """Fits JSON's integers, not a database column: refused by the check, not the write."""
    name = archive.first("/media/")
    archive.edit_json(name, lambda m: m.update(width=2**64 - 1))
    return name, "width"


def page_index_overflows(archive):
    name = archive.first("/pages/")
    archive.edit_json(name, lambda p: p.update(index=2**31))
    return name, "index"


def listed_page_missing(archive):
    page = archive.first("/pages/")
    archive.remove(page)
    return archive.design_of(page), "pages"


def page_nested_300_deep(archive):
    name = archive.first("/pages/")
    archive.entry(name).data = nest(archive.entry(name).data, "objects", 300)
    return name, "objects"


FAILED = [
    pytest.param(digest_differs, "digest_mismatch", id="sha256-differs-from-digest"),
    pytest.param(manifest_names_a_ghost, "missing_entry", id="manifest-file-without-entry"),
    pytest.param(malformed_page, "malformed", id="malformed-page-json"),
    pytest.param(spaceship, "invalid_document", id="object-breaks-content-rules"),
    pytest.param(media_without_blob, "invalid_document", id="media-blob-without-entry"),
    pytest.param(blob_not_its_hash, "digest_mismatch", id="blob-bytes-not-its-name"),
    pytest.param(newer_data_version, "newer_data_version", id="newer-data-version"),
    pytest.param(unsupported_feature, "invalid_document", id="unsupported-feature"),
    pytest.param(file_outside_the_manifest, "unexpected_entry", id="file-not-in-manifest"),
    pytest.param(listed_page_missing, "missing_entry", id="listed-page-missing"),
    pytest.param(page_not_listed, "unexpected_entry", id="page-not-listed"),
    pytest.param(media_width_overflows, "invalid_document", id="media-width-overflows"),
    pytest.param(page_index_overflows, "invalid_document", id="page-index-overflows"),
    pytest.param(page_nested_300_deep, "too_deep", id="page-300-deep"),
]


@pytest.fixture
def original(workspace, editor) -> bytes:
    """The workspace exported, then its media and blobs gone from this server, so that an
    import storing the archive's blobs would show in the blob storage."""
    data = export_bytes(user=editor, project=workspace.project, libraries="all")
    blobs = [media.blob_id for media in workspace.media]
    MediaObject.objects.filter(file__project=workspace.project).delete()
    for sha256 in blobs:
        Blob.objects.filter(pk=sha256).delete()
        blobstore.delete_blob(sha256)
    return data


@pytest.fixture
def target(team):
    return filesync_services.create_project(team=team, name="Restored")


@pytest.mark.parametrize("edit, status, code, field", REFUSED)
def test_a_hostile_directory_or_manifest_is_refused_at_upload(
    original, target, editor, api_for, settings, edit, status, code, field
):
    archive = Rewrite(original)
    entry = edit(archive, settings)
    data = archive.build()
    if archive.cut:
        data = data[: len(data) // 2]
    client = api_for(editor)
    before = store_state()

    response = client.post(
        "/api/imports/", {"project": str(target.id), "file": io.BytesIO(data)}, format="multipart"
    )

    assert response.status_code == status, response.content
    body = response.json()
    assert (body["code"], body["entry"], body["field"]) == (code, entry, field)
    assert body["detail"]
    assert store_state() == before


@pytest.mark.parametrize("edit, code", FAILED)
def test_hostile_content_fails_the_job_and_writes_nothing(original, target, editor, edit, code):
    archive = Rewrite(original)
    entry, field = edit(archive)
    data = archive.build()
    before = store_state(ignore=THE_JOBS_OWN)

    job = import_bytes(data, project=target, user=editor)

    assert job.state == JobState.FAILED
    assert job.error_code == code, job.error_message
    assert entry in job.error_message
    assert list(ImportJob.objects.values_list("pk", flat=True)) == [job.pk]
    kinds = list(ImportEvent.objects.filter(job=job).values_list("kind", flat=True))
    assert kinds[0] == "queued" and kinds[-1] == "error" and kinds.count("error") == 1
    error = ImportEvent.objects.get(job=job, kind="error").data
    assert (error["code"], error["entry"], error["field"]) == (code, entry, field)
    assert store_state(ignore=THE_JOBS_OWN) == before


def test_the_rewritten_export_imports_when_nothing_is_changed(original, target, editor):
    """The rewriting alone (zipfile, other times, other compression) breaks nothing: the
    cases above fail for the one thing each changes."""
    blobs = stored_names("blobs")

    job = import_bytes(Rewrite(original).build(), project=target, user=editor)

    assert job.state == JobState.SUCCEEDED, job.error_message
    assert File.objects.filter(project=target).count() == len(job.files) > 0
    assert set(blobs) < set(stored_names("blobs"))


def test_a_relation_to_a_file_that_is_no_library_is_dropped(original, target, editor, workspace):
    """FileLibrary only ever points at a library, whatever a manifest claims."""
    first, second = (str(d.id) for d in workspace.designs)
    archive = Rewrite(original)
    archive.edit_json(binfile.MANIFEST, lambda m: m["relations"].append([first, second]))

    job = import_bytes(archive.build(), project=target, user=editor)

    assert job.state == JobState.SUCCEEDED, job.error_message
    links = FileLibrary.objects.filter(file_id=job.files[first])
    assert [str(pk) for pk in links.values_list("library_id", flat=True)] == [
        job.files[str(workspace.library.id)]
    ]


def test_an_overlapping_entry_zip_bomb_is_refused(target, editor, api_for):
    """Fifield's bomb: 280 entries sharing one kernel, 270 MiB from 62 KB, every entry under
    1 MiB and readable by zipfile. Refused by its layout: the second entry starts inside
    the first one's data."""
    data = fifield_bomb(280, 1_000_000)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        assert len(data) < 64 * 1024 and sum(i.file_size for i in infos) > 260 * 1024**2
        assert max(i.file_size for i in infos) < 1024**2
        assert archive.read(infos[0]).endswith(archive.read(infos[1]))  # shared bytes
    client = api_for(editor)
    before = store_state()

    response = client.post(
        "/api/imports/", {"project": str(target.id), "file": io.BytesIO(data)}, format="multipart"
    )

    assert response.status_code == 400, response.content
    body = response.json()
    assert (body["code"], body["entry"], body["field"]) == (
        "overlapping_entries",
        infos[1].filename,
        "",
    )
    assert store_state() == before
