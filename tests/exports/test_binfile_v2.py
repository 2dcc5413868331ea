"""Binfile format 2: every local header complete (CRC-32 and sizes, no data descriptor), the
CRC-32 of older blobs filled in on first use, corrupt blobs still failing the export, and
format 1 archives still importing."""

import io
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from exports import services
from exports.binfile import format as binfile
from exports.binfile.reader import BinfileReader
from exports.binfile.zipstream import STORED
from exports.models import JobState
from filesync import services as filesync_services
from filesync.blobstore import open_blob, write_blob
from filesync.models import Blob, File, MediaObject
from tests.exports.conftest import run_to_end
from tests.exports.test_binfile_codec import BLOB, binfile_bytes
from tests.exports.test_import import export_bytes, import_bytes, read_archive_bytes

pytestmark = pytest.mark.django_db(transaction=True)

V1_FIXTURE = Path(__file__).parent / "fixtures" / "v1.binfile"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg">' + b"<rect/>" * 500 + b"</svg>"


def add_svg(file: File) -> MediaObject:
    """A blob that is deflated, not stored: built in memory before its header."""
    return filesync_services.add_media(
        file=file, name="drawing.svg", stream=io.BytesIO(SVG), content_type="image/svg+xml"
    )


def walk_local_headers(data: bytes) -> list[tuple[str, int, int, int, int]]:
    """Read the archive front to back as a streaming reader does, trusting only each local
    header: (name, flags, crc, compressed, size) per entry, up to the central directory."""
    found, at = [], 0
    while data[at : at + 4] == b"PK\x03\x04":
        _, _, flags, method, _, _, crc, compressed, size, name_length, extra_length = (
            struct.unpack_from("<4sHHHHHIIIHH", data, at)
        )
        name = data[at + 30 : at + 30 + name_length].decode()
        start = at + 30 + name_length + extra_length
        body = data[start : start + compressed]
        content = zlib.decompress(body, -15) if method == 8 else body
        assert (len(content), zlib.crc32(content)) == (size, crc), name
        found.append((name, flags, crc, compressed, size))
        at = start + compressed  # no descriptor: the next header follows the data
    assert data[at : at + 4] == b"PK\x01\x02", "the central directory follows the entries"
    return found


def test_every_local_header_holds_the_crc_and_sizes(workspace, editor):
    add_svg(workspace.designs[0])
    data = export_bytes(user=editor, project=workspace.project)
    reader, archive = read_archive_bytes(data)
    assert reader.manifest["format_version"] == 2
    walked = walk_local_headers(data)
    assert [w[0] for w in walked] == reader.names()
    assert reader.names()[-1] == binfile.DIGEST
    for name, flags, crc, compressed, size in walked:
        info = archive.getinfo(name)
        assert flags == 0x0800, name  # UTF-8 names; never bit 3, a data descriptor
        assert (crc, compressed, size) == (info.CRC, info.compress_size, info.file_size)
    svg = f"blobs/{MediaObject.objects.get(name='drawing.svg').blob_id}"
    assert archive.getinfo(svg).compress_type == zipfile.ZIP_DEFLATED
    assert archive.read(svg) == SVG


def test_a_blob_without_a_crc_gets_one_on_first_use_and_the_same_bytes(workspace, editor):
    """Blobs stored before CRCs were recorded: one read pass, kept; the archive is the one
    an export with every CRC recorded writes."""
    Blob.objects.update(crc32=None)
    first = export_bytes(user=editor, project=workspace.project)
    for blob in Blob.objects.all():
        with open_blob(blob.sha256) as stream:
            assert blob.crc32 == zlib.crc32(stream.read())
    assert export_bytes(user=editor, project=workspace.project) == first


def test_a_corrupt_blob_without_a_crc_fails_the_export_and_records_none(workspace, editor):
    sha = workspace.media[0].blob_id
    Blob.objects.update(crc32=None)
    write_blob(sha, io.BytesIO(b"\x89PNG not the same bytes"))
    job = export_job(workspace, editor)
    assert (job.state, job.error_code) == (JobState.FAILED, "blob_corrupt")
    assert sha in job.error_message
    assert Blob.objects.get(pk=sha).crc32 is None


def test_a_blob_that_does_not_match_its_recorded_crc_fails_the_export(workspace, editor):
    """Its header went out with the recorded CRC-32; bytes that disagree fail the job rather
    than publish an archive whose entry does not check."""
    sha = workspace.media[1].blob_id
    with open_blob(sha) as stream:
        right = zlib.crc32(stream.read())
    Blob.objects.filter(pk=sha).update(crc32=right ^ 1)
    job = export_job(workspace, editor)
    assert (job.state, job.error_code) == (JobState.FAILED, "blob_corrupt")
    assert sha in job.error_message


def test_a_format_1_archive_with_data_descriptors_still_imports(project, editor):
    """tests/exports/fixtures/v1.binfile: written by the format 1 writer (flag bit 3, CRC
    and sizes after each entry's data): two designs and a library, a PNG stored, an SVG
    deflated."""
    data = V1_FIXTURE.read_bytes()
    reader, archive = read_archive_bytes(data)
    assert reader.manifest["format_version"] == 1
    assert all(info.flag_bits & 0x0008 for info in archive.infolist())
    job = import_bytes(data, project=project, user=editor)
    assert job.state == JobState.SUCCEEDED, job.error_message
    assert len(job.files) == 3
    imported = MediaObject.objects.filter(file_id__in=job.files.values())
    assert imported.count() == 3
    for media in imported:
        with open_blob(media.blob_id) as stream:
            assert stream.read() == archive.read(f"blobs/{media.blob_id}")


def export_job(workspace, editor):
    return run_to_end(
        services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    )


@pytest.mark.parametrize("field, at", [("crc", 14), ("compressed size", 18), ("size", 22)])
def test_a_local_header_that_disagrees_with_the_directory_is_refused(field, at):
    """A streaming reader trusts the local header, an importer the directory: an archive
    where they differ would read as two different things, so it is refused."""
    data = bytearray(binfile_bytes(extra=[(BLOB, b"abc", STORED)]))
    header = data.index(BLOB.encode()) - 30  # its first mention is its local header
    assert data[header : header + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, header + at, struct.unpack_from("<I", data, header + at)[0] ^ 1)
    with pytest.raises(binfile.BinfileError) as refused:
        BinfileReader(io.BytesIO(bytes(data)))
    assert (refused.value.code, refused.value.entry) == ("corrupt", BLOB)
