"""A resume by a worker whose deflate differs from the one that wrote the checkpoint.

The pure decision (exports/exporting/resume.py) first, then whole exports on the sink the
run uses (filesystem, or S3 multipart in services mode), killed at part 3 the way
test_engine's dead-worker test does, and resumed with another deflate.
"""

import base64
import hashlib
import io
import os
import struct
import zlib
from dataclasses import fields

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from exports import services
from exports.binfile import zipstream
from exports.binfile.format import MAX_DEFLATED_BLOB
from exports.binfile.zipstream import DEFLATED, STORED, EntryRecord, compressor_identity
from exports.exporting import sinks
from exports.exporting.engine import run_tick
from exports.exporting.resume import Rewind, rewind
from exports.models import ExportEntry, ExportJob, ExportPart, JobState
from filesync import services as filesync_services
from tests.exports.conftest import artifact_bytes, read_archive, run_to_end
from tests.exports.test_binfile_codec import check_with_tools

PART = 1000


def entry(start: int, end: int, method: int) -> EntryRecord:
    """A finished entry over [start, end): a one-letter name, so a 31-byte header."""
    return EntryRecord("e", start, method, 0, 0, 0, end - start - 31, 0, "", False)


def test_a_stored_entry_straddling_the_checkpoint_needs_no_rewind():
    records = [entry(0, 500, DEFLATED), entry(500, 1200, DEFLATED)]
    assert (
        rewind(
            flushed=2000,
            part_size=PART,
            records=records,
            pending_method=STORED,
            hashed_parts={1, 2},
        )
        is None
    )


def test_a_checkpoint_on_an_entry_boundary_or_in_the_central_directory_needs_no_rewind():
    records = [entry(0, 1500, DEFLATED), entry(1500, 2000, DEFLATED)]
    # The next entry starts right at the checkpoint: nothing of it was written.
    assert (
        rewind(
            flushed=2000, part_size=PART, records=records, pending_method=DEFLATED, hashed_parts={1}
        )
        is None
    )
    # Every entry is finished; the central directory depends on the records only.
    assert (
        rewind(
            flushed=2300, part_size=PART, records=records, pending_method=None, hashed_parts={1, 2}
        )
        is None
    )


def test_a_deflated_entry_straddling_the_checkpoint_moves_back_into_a_stored_one():
    records = [entry(0, 200, DEFLATED), entry(200, 1800, STORED)]
    assert rewind(
        flushed=3000, part_size=PART, records=records, pending_method=DEFLATED, hashed_parts={1, 2}
    ) == Rewind(offset=1000, parts=1, entries=1)  # 2000 is in the pending entry, 1000 stored


def test_a_finished_deflated_entry_spanning_a_boundary_pushes_further_back():
    records = [entry(0, 900, STORED), entry(900, 1100, DEFLATED), entry(1100, 1300, STORED)]
    assert rewind(
        flushed=2000, part_size=PART, records=records, pending_method=DEFLATED, hashed_parts={1, 2}
    ) == Rewind(offset=0, parts=0, entries=0)


def test_a_boundary_where_a_deflated_entry_starts_or_ends_is_safe():
    records = [entry(0, 1000, DEFLATED), entry(1000, 1500, STORED)]
    assert rewind(
        flushed=2000, part_size=PART, records=records, pending_method=DEFLATED, hashed_parts={1, 2}
    ) == Rewind(offset=1000, parts=1, entries=1)


def test_only_parts_whose_hash_state_was_saved_can_be_resumed_from():
    records = [entry(0, 10, DEFLATED), entry(10, 2500, STORED)]
    kwargs = dict(flushed=3000, part_size=PART, records=records, pending_method=DEFLATED)
    assert rewind(**kwargs, hashed_parts={1, 2, 3}) == Rewind(offset=2000, parts=2, entries=1)
    assert rewind(**kwargs, hashed_parts={1}) == Rewind(offset=1000, parts=1, entries=1)
    assert rewind(**kwargs, hashed_parts=()) == Rewind(offset=0, parts=0, entries=0)


def test_a_method_it_cannot_tell_counts_as_deflated():
    records = [entry(0, 1500, STORED)]
    for unknown in (DEFLATED, 12, 93):  # bzip2, zstd: anything not stored
        assert rewind(
            flushed=2000, part_size=PART, records=records, pending_method=unknown, hashed_parts={1}
        ) == Rewind(offset=1000, parts=1, entries=0)


# Whole exports ---------------------------------------------------------------------------


class WorkerDied(BaseException):
    """Stands for kill -9: nothing in the engine catches it, the lease stays held."""


def part_size() -> int:
    return max(django_settings.EXPORT_PART_SIZE, 5 * 2**20 if sinks.uses_s3() else 0)


def export(project) -> ExportJob:
    return services.create_export_job(project=project, enqueue=False)


def die_at_part_3(job: ExportJob, monkeypatch) -> ExportJob:
    """Run the job until part 3 lands and its worker dies before checkpointing it."""
    with monkeypatch.context() as patch:
        for sink_class in (sinks.FilesystemSink, sinks.S3MultipartSink):
            original = sink_class.write_part

            def dies_at_part_3(self, number, data, original=original):
                answer = original(self, number, data)
                if number == 3:
                    raise WorkerDied
                return answer

            patch.setattr(sink_class, "write_part", dies_at_part_3)
        with pytest.raises(WorkerDied):
            run_tick(job.pk, worker="doomed")
    job.refresh_from_db()
    assert job.bytes_flushed == 2 * job.part_size
    ExportJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    return job


def pending_entry(job: ExportJob) -> int:
    """Where the entry the checkpoint cut starts: the end of the last one it holds whole."""
    last = ExportEntry.objects.filter(job=job).order_by("index").last()
    boundary = EntryRecord(**{f.name: getattr(last, f.name) for f in fields(EntryRecord)}).end
    assert boundary < job.bytes_flushed
    return boundary


def method_at(data: bytes, offset: int) -> int:
    """The method of the archive's entry whose local header is at `offset`."""
    signature, method = struct.unpack_from("<I4xH", data, offset)
    assert signature == 0x04034B50
    return method


def stored_data(data: bytes, archive, name: str) -> bytes:
    """The bytes an entry holds in the archive (compressed, if it is deflated)."""
    info = archive.getinfo(name)
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length
    return data[start : start + info.compress_size]


def raw_deflate(content: bytes) -> bytes:
    compressor = zipstream.deflater()
    return compressor.compress(content) + compressor.flush()


def another_deflate(monkeypatch) -> str:
    """Make this process's deflate another one: Huffman-only coding, valid raw deflate whose
    bytes differ from the default strategy's on anything with repeats. (Z_FILTERED would not
    do: at level 1 zlib ignores it.) Returns the new compressor's name."""
    before = compressor_identity()
    monkeypatch.setattr(zipstream, "DEFLATE_STRATEGY", zlib.Z_HUFFMAN_ONLY)
    after = compressor_identity()
    assert after != before
    return after


def assert_sound(job: ExportJob, tmp_path) -> None:
    """Every reader accepts the archive, every entry matches digest.json, the sha256 is the
    artifact's."""
    assert job.state == JobState.SUCCEEDED, job.error_message
    data = artifact_bytes(job)
    assert job.artifact_sha256 == hashlib.sha256(data).hexdigest()
    assert job.artifact_size == len(data)
    read_archive(job)  # BinfileReader.verify: every entry's size and sha256 as digest.json says
    check_with_tools(data, tmp_path)
    assert not ExportEntry.objects.filter(job=job).exists()
    assert not ExportPart.objects.filter(job=job).exists()


@pytest.fixture
def text_workspace(project):
    """One file with a PNG (stored) and then, in the archive's blob order, a large text
    blob (deflated) that part 3's checkpoint cuts; the PNG spans the end of part 1."""
    part = part_size()
    design = filesync_services.create_file(project=project, name="Notes")
    # ~1.9 parts deflated; 2.5 parts of text, under MAX_DEFLATED_BLOB at S3's 5 MiB parts
    text = base64.b64encode(os.urandom(int(part * 2.5 * 3 / 4)))
    assert len(text) <= MAX_DEFLATED_BLOB
    text_sha = hashlib.sha256(text).hexdigest()
    while True:  # blobs go in sha256 order: the PNG first
        png = b"\x89PNG\r\n\x1a\n" + os.urandom(int(part * 1.5))
        if hashlib.sha256(png).hexdigest() < text_sha:
            break
    for name, content, content_type in (
        ("photo.png", png, "image/png"),
        ("notes.txt", text, "text/plain"),
    ):
        filesync_services.add_media(
            file=design, name=name, stream=io.BytesIO(content), content_type=content_type
        )
    return project, png, text


@pytest.mark.django_db(transaction=True)
def test_another_deflate_rewinds_past_the_deflated_entry_it_would_splice(
    text_workspace, monkeypatch, tmp_path
):
    project, png, text = text_workspace
    job = die_at_part_3(export(project), monkeypatch)
    first = job.compressor
    assert first == compressor_identity()
    assert [p.hash_state is not None for p in job.parts.all()] == [True, True]
    boundary = pending_entry(job)
    ours = another_deflate(monkeypatch)

    job = run_to_end(job)
    assert_sound(job, tmp_path)
    assert job.compressor == ours
    data = artifact_bytes(job)
    reader, archive = read_archive(job)
    png_name, text_name = (f"blobs/{hashlib.sha256(b).hexdigest()}" for b in (png, text))
    png_at = archive.getinfo(png_name).header_offset
    text_at = archive.getinfo(text_name).header_offset
    assert text_at == boundary < 2 * job.part_size < archive.getinfo("digest.json").header_offset
    assert method_at(data, text_at) == DEFLATED and method_at(data, png_at) == STORED
    assert png_at < job.part_size < text_at  # so the resume went back to the end of part 1
    # The text blob is deflated whole by the second worker, not spliced from both.
    assert stored_data(data, archive, text_name) == raw_deflate(text)
    monkeypatch.undo()
    assert stored_data(data, archive, text_name) != raw_deflate(text)
    assert job.parts_rewritten == 2  # part 2 (checkpointed, rewound) and part 3 (never)
    assert job.bytes_replayed == job.part_size - png_at  # the PNG's head, regenerated, dropped


@pytest.mark.django_db(transaction=True)
def test_another_deflate_resumes_inside_a_stored_blob_without_rewinding(
    workspace, monkeypatch, tmp_path
):
    job = die_at_part_3(export(workspace.project), monkeypatch)
    boundary = pending_entry(job)
    ours = another_deflate(monkeypatch)

    job = run_to_end(job)
    assert_sound(job, tmp_path)
    assert job.compressor == ours
    data = artifact_bytes(job)
    assert method_at(data, boundary) == STORED
    assert job.parts_rewritten == 1  # only part 3, which landed but was never checkpointed
    assert job.part_writes == job.parts_done
    assert job.bytes_replayed == 2 * job.part_size - boundary


@pytest.mark.django_db(transaction=True)
def test_a_rewind_by_itself_changes_no_byte(text_workspace, monkeypatch, tmp_path):
    """With the same deflate, a rewind (here forced by a checkpoint that names another one,
    or none, as before compressors were recorded) gives the uninterrupted archive. A
    checkpoint of another layout (format 1, before the layout was named) starts over."""
    project, _png, _text = text_workspace
    whole = run_to_end(export(project))
    for named, hashed_parts, kept_parts in (
        (f"{zipstream.LAYOUT}; zlib 0.9; level 1", True, 1),
        ("zlib 1.3.1; level 1 wbits -15 memlevel 8 strategy 0; sample 0", True, 0),
        ("", False, 0),
    ):
        job = die_at_part_3(export(project), monkeypatch)
        ExportJob.objects.filter(pk=job.pk).update(compressor=named)
        if not hashed_parts:  # a checkpoint written before parts kept their hash state
            ExportPart.objects.filter(job=job).update(hash_state=None)
        job = run_to_end(job)
        assert_sound(job, tmp_path)
        assert job.artifact_sha256 == whole.artifact_sha256
        assert job.compressor == compressor_identity()
        assert job.parts_rewritten == 3 - kept_parts  # every part after the rewind point
