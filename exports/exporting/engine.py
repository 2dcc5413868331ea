"""The export engine: one tick of work on one job, under the job kernel's lease.

A tick resumes from the job's checkpoint, streams the archive into the part sink,
checkpoints after every part, and stops when the archive is published or when its time
budget is spent (the kernel then gives the job back and queues another tick). Failing,
cancelling, heartbeats and progress events are the kernel's. Deterministic output makes
a resumed archive byte-identical to an uninterrupted one; a worker whose deflate differs
from the one the checkpoint names first moves back to where it need not splice two
deflate streams (resume.py).
"""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from datetime import timedelta
from itertools import islice

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from exports.binfile.zipstream import (
    LAYOUT,
    EntryMismatch,
    EntryRecord,
    ZipStream,
    compressor_identity,
)
from exports.exporting.archive import archive_entries, blob_corrupt, planned_size
from exports.exporting.links import download_path
from exports.exporting.partwriter import PartWriter, WrittenPart
from exports.exporting.preserved import release_preserved
from exports.exporting.resume import Rewind, rewind
from exports.exporting.sinks import PartSink, sink_for, uses_s3
from exports.jobs.kernel import Cancelled, Engine, JobRun, LeaseLost, OutOfTime, run_job
from exports.models import ExportEntry, ExportJob, ExportPart
from filesync.resumable_hash import ResumableSha256

MIB = 1024 * 1024
S3_MIN_PART = 5 * MIB
MAX_PARTS = 9_000  # below S3's 10,000, with room for an estimate that fell short


def choose_part_size(bytes_planned: int, *, s3: bool) -> int:
    """The configured part size, grown (in whole MiB) so no archive needs too many parts."""
    floor = max(settings.EXPORT_PART_SIZE, S3_MIN_PART if s3 else 1)
    if bytes_planned <= floor * MAX_PARTS:
        return floor
    return math.ceil(bytes_planned / MAX_PARTS / MIB) * MIB


def run_tick(
    job_id,
    *,
    worker: str,
    tick_seconds: float | None = None,
    requeue: Callable[[object], None] | None = None,
    on_progress: Callable[[ExportJob], None] | None = None,
) -> str:
    """Work on the job for one tick. Returns what became of it: a JobState, or 'busy'/'lost'."""
    return run_job(
        ExportEngine,
        job_id,
        worker=worker,
        requeue=requeue,
        on_progress=on_progress,
        tick_seconds=tick_seconds,
    )


class ExportEngine(Engine):
    """One tick of an export: resume from the checkpoint, stream parts into the sink, and
    publish the archive at the end; a checkpoint after every part."""

    jobs = ExportJob

    def __init__(self, run: JobRun, tick_seconds: float | None = None):
        super().__init__(run)
        budget = settings.EXPORT_TICK_SECONDS if tick_seconds is None else tick_seconds
        self.deadline = time.monotonic() + budget
        self.sink: PartSink | None = sink_for(self.job) if self.job.part_size else None

    def discard(self) -> None:
        ExportEntry.objects.filter(job=self.job).delete()
        ExportPart.objects.filter(job=self.job).delete()
        ExportJob.objects.filter(pk=self.job.pk).update(hash_state=None)
        release_preserved()

    def release_storage(self) -> None:
        if self.sink is not None:
            self.sink.abort()

    def work(self) -> None:
        job = self.job
        if job.cancel_requested:
            raise Cancelled
        if job.part_size == 0:
            self._start()
        else:
            self._take_over_compression()
            beyond = self.sink.resume(job.bytes_flushed)
            if beyond:
                job.parts_rewritten += math.ceil(beyond / job.part_size)
                self.run.write(parts_rewritten=job.parts_rewritten)
        records = [_record(row) for row in job.entries.order_by("index")]
        self.persisted = len(records)
        boundary = records[-1].end if records else 0
        self.drop = job.bytes_flushed - boundary
        self.flushed = self.produced = job.bytes_flushed
        self.hasher = ResumableSha256(job.hash_state) if job.hash_state else ResumableSha256()
        self.etags = list(job.parts.order_by("number").values_list("etag", flat=True))
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.writer = ZipStream(offset=boundary, records=records)
        self.handed = self.persisted
        self.parts = PartWriter(self.sink, self.hasher, self._checkpoint, fence=self._fence)
        try:
            self._write_archive()
        finally:
            self.parts.stop()
        self._publish()

    def _write_archive(self) -> None:
        job = self.job

        entries = archive_entries(job, digest_records=lambda: self.writer.records)
        for index, spec in enumerate(islice(entries, self.persisted, None), start=self.persisted):
            self._between_entries()
            crc32 = spec.crc32() if spec.crc32 else None
            try:
                for chunk in self.writer.entry(
                    spec.name,
                    spec.chunks(),
                    method=spec.method,
                    when=spec.when,
                    size=spec.planned_size if crc32 is not None else None,
                    crc32=crc32,
                ):
                    self._emit(chunk)
            except EntryMismatch:
                raise blob_corrupt(spec.expected_sha256) from None
            if spec.expected_sha256 and self.writer.records[-1].sha256 != spec.expected_sha256:
                raise blob_corrupt(spec.expected_sha256)
            job.items_done = index + 1
        for chunk in self.writer.finish():
            self._emit(chunk)
        if self.buffered:
            self._submit(b"".join(self.buffer))
        self.parts.finish()

    def _start(self) -> None:
        job = self.job
        items, size = planned_size(job)
        job.part_size = choose_part_size(size, s3=uses_s3())
        self.sink = sink_for(job)
        job.sink_state = self.sink.begin()
        job.items_total, job.bytes_total = items, size
        job.compressor = compressor_identity()
        self.run.write(
            part_size=job.part_size,
            sink_state=job.sink_state,
            items_total=items,
            bytes_total=size,
            compressor=job.compressor,
        )

    def _take_over_compression(self) -> None:
        """A worker whose deflate is not the checkpoint's moves the checkpoint back to where
        it re-compresses nothing (exports/exporting/resume.py), then names its own."""
        job = self.job
        ours = compressor_identity()
        if job.compressor == ours:
            return
        hashed = dict(job.parts.exclude(hash_state=None).values_list("number", "hash_state"))
        if job.compressor.startswith(f"{LAYOUT};"):
            back = self._rewind(hashed.keys())
        else:  # written with another layout (format 1's data descriptors): start over
            back = Rewind(offset=0, parts=0, entries=0)
        changes = {"compressor": ours}
        if back:
            state = hashed.get(back.parts)
            changes.update(
                bytes_flushed=back.offset,
                bytes_done=back.offset,
                parts_done=back.parts,
                items_done=back.entries,
                hash_state=bytes(state) if state is not None else None,
            )
        with transaction.atomic():
            self.run.write(**changes)
            if back:
                ExportPart.objects.filter(job=job, number__gt=back.parts).delete()
                ExportEntry.objects.filter(job=job, index__gte=back.entries).delete()
        for name, value in changes.items():
            setattr(job, name, value)

    def _rewind(self, hashed_parts) -> Rewind | None:
        job = self.job
        records = [_record(row) for row in job.entries.order_by("index")]
        boundary = records[-1].end if records else 0
        pending = None
        if boundary < job.bytes_flushed:  # the plan says how the entry in progress is written
            entries = archive_entries(job, digest_records=list)
            spec = next(islice(entries, len(records), None), None)
            pending = spec.method if spec else None
        return rewind(
            flushed=job.bytes_flushed,
            part_size=job.part_size,
            records=records,
            pending_method=pending,
            hashed_parts=hashed_parts,
        )

    def _emit(self, data: bytes) -> None:
        if self.drop:
            cut = min(self.drop, len(data))
            self.drop -= cut
            self.job.bytes_replayed += cut
            data = data[cut:]
        if not data:
            return
        self.buffer.append(data)
        self.buffered += len(data)
        size = self.job.part_size
        if self.buffered < size:
            return
        pending = b"".join(self.buffer)
        whole = len(pending) - len(pending) % size
        self.buffer = [pending[whole:]]
        self.buffered = len(self.buffer[0])
        for start in range(0, whole, size):
            self._submit(pending[start : start + size])

    def _submit(self, part: bytes) -> None:
        """Hand a part to the writer with the entries it completes; stop when out of time."""
        number = self.produced // self.job.part_size + 1
        self.produced += len(part)
        records = self.writer.records
        complete = [r for r in records[self.handed :] if r.end <= self.produced]
        self.handed += len(complete)
        self.parts.submit(number, part, (complete, self.job.items_done, self.job.bytes_replayed))
        if time.monotonic() > self.deadline:
            self.parts.finish()
            raise OutOfTime

    def _checkpoint(self, part: WrittenPart) -> None:
        """On the writer thread, right after the part is durable: record exactly those bytes,
        never a cursor ahead of its data."""
        job = self.job
        complete, items_done, replayed = part.context
        self.flushed += part.size
        self.etags.append(part.etag)
        with transaction.atomic():
            self.run.write(
                bytes_flushed=self.flushed,
                hash_state=part.hash_state,
                bytes_done=self.flushed,
                items_done=items_done,
                parts_done=part.number,
                part_writes=F("part_writes") + 1,
                bytes_replayed=replayed,
            )
            ExportPart.objects.update_or_create(
                job=job,
                number=part.number,
                defaults={"size": part.size, "etag": part.etag, "hash_state": part.hash_state},
            )
            ExportEntry.objects.bulk_create(
                _row(job, self.persisted + i, r) for i, r in enumerate(complete)
            )
        self.persisted += len(complete)
        self.run.progress(items_done=items_done, bytes_done=self.flushed)

    def _fence(self) -> None:
        """Before a part goes to storage: only while this worker holds the job."""
        if not self.run.lease.held().exists():
            raise LeaseLost

    def _between_entries(self) -> None:
        """Cooperative cancel, a lost lease, and progress while parts are slow to fill."""
        self.run.check()
        self.job.bytes_done = self.flushed
        self.run.progress()

    def _publish(self) -> None:
        job = self.job
        sha256 = self.hasher.hexdigest()
        self._fence()
        name = self.sink.publish(self.etags, self.flushed)
        expires_at = timezone.now() + timedelta(seconds=settings.EXPORT_TTL_SECONDS)
        with transaction.atomic():
            self.run.succeed(
                {
                    "artifact": name,
                    "size": self.flushed,
                    "sha256": sha256,
                    "expires_at": expires_at.isoformat(),
                    "download_uri": download_path(job),
                },
                artifact_name=name,
                artifact_size=self.flushed,
                artifact_sha256=sha256,
                expires_at=expires_at,
                items_done=job.items_total,
                bytes_done=self.flushed,
                bytes_total=self.flushed,
                hash_state=None,
            )
            ExportEntry.objects.filter(job=job).delete()
            ExportPart.objects.filter(job=job).delete()
            release_preserved()


def _record(row: ExportEntry) -> EntryRecord:
    return EntryRecord(**{field.name: getattr(row, field.name) for field in fields(EntryRecord)})


def _row(job: ExportJob, index: int, record: EntryRecord) -> ExportEntry:
    return ExportEntry(job=job, index=index, **asdict(record))
