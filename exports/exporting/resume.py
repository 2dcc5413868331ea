"""Where an export resumes when the worker taking it over compresses differently.

A checkpoint holds the archive's first `flushed` bytes: whole entries (their records), then
the beginning of the entry in progress. A resume regenerates that entry from its start and
drops the bytes already written, which is exact only if this worker emits the same bytes
as the one that wrote them. Stored bytes (local headers, stored blobs, the central
directory) depend only on the content; deflated ones also on the compressor,
and zlib promises nothing about its output across versions and builds (zlib-ng, others).

So a worker whose compressor is not the one the checkpoint names moves back to the latest
part boundary that no deflated entry spans: there, every byte after the boundary is either
stored, or belongs to a deflated entry it compresses whole. Nothing is compressed to decide
this: records say each finished entry's method and extent, the archive's plan the method
of the entry in progress.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from exports.binfile.zipstream import STORED, EntryRecord


@dataclass(frozen=True)
class Rewind:
    """Keep the archive's first `offset` bytes: parts 1..`parts`, the first `entries` records."""

    offset: int
    parts: int
    entries: int


def rewind(
    *,
    flushed: int,
    part_size: int,
    records: Sequence[EntryRecord],
    pending_method: int | None,
    hashed_parts: Collection[int],
) -> Rewind | None:
    """Where a worker with another compressor resumes; None when the checkpoint will do.

    `records` are the finished entries, in order; `pending_method` is the method of the entry
    after them (None when every entry is finished); `hashed_parts` the part numbers whose
    archive hash state was saved, the only boundaries (besides 0) a resume can start from.
    """
    boundary = records[-1].end if records else 0
    spans = [(r.offset, r.end) for r in records if r.method != STORED]
    if boundary < flushed and pending_method not in (None, STORED):
        spans.append((boundary, flushed + 1))  # ends somewhere after the checkpoint
    if not any(start < flushed < end for start, end in spans):
        return None
    starts = sorted({0, *(n * part_size for n in hashed_parts)}, reverse=True)
    offset = next(  # 0 always qualifies: no entry starts before it
        offset
        for offset in starts
        if offset < flushed and not any(start < offset < end for start, end in spans)
    )
    return Rewind(
        offset=offset,
        parts=offset // part_size,
        entries=sum(1 for r in records if r.end <= offset),
    )
