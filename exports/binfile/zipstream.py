"""A deterministic, streaming, resumable ZIP writer (binfile format 2).

Every local header carries the entry's real CRC-32 and sizes: no data descriptor, so a
streaming reader (Java's ZipInputStream, stream-unzip) knows where each entry ends. An
entry whose CRC and size are known ahead (a stored blob: its row records them) streams
through, checked against them; any other (documents, small blobs to deflate) is gathered
and compressed in memory before its header, so only entries of bounded size may take that
path. The bytes depend only on the entries given: fixed attributes, times from the caller,
no extra fields but ZIP64's. Because an `EntryRecord` holds all the central directory
needs, a writer can start again at any entry boundary from the records of the entries
before it, which is how an export resumes.

The deflated bytes are the exception: they depend on the compressor (zlib's version and
build, the level, the strategy), so `compressor_identity` names it, and a checkpoint
records the name (see exports/exporting/resume.py).
"""

import hashlib
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

STORED = 0
DEFLATED = 8
_MAX32 = 0xFFFF_FFFF
_MAX16 = 0xFFFF
#: An entry with a size this large gets ZIP64 sizes, in its local header's extra field too
#: (APPNOTE 4.3.9.1, 4.5.3); 0xFFFFFFFF itself means "see the extra field".
ZIP64_ENTRY_THRESHOLD = _MAX32
#: The layout every entry has; part of `compressor_identity`, so that a checkpoint written
#: with another layout (format 1: data descriptors) is never continued.
LAYOUT = "binfile 2"
_FLAGS = 0x0800  # bit 11: names are UTF-8; bit 3 (data descriptor) never
_UNIX_FILE_ATTRS = (0o100644 << 16) & 0xFFFF_FFFF
_MADE_BY = (3 << 8) | 45  # Unix, spec 4.5
#: Deflate level 1: about three times faster than 6 on page JSON, for ~15% more bytes.
DEFLATE_LEVEL = 1
#: Raw deflate (no zlib header), 32 KiB window; zlib's default memory level and strategy.
#: Spelled out because they are part of the compressor's identity.
DEFLATE_WBITS = -15
DEFLATE_MEMLEVEL = 8
DEFLATE_STRATEGY = zlib.Z_DEFAULT_STRATEGY
#: JSON-like bytes with near and far repeats, for `compressor_identity` to compress.
_SAMPLE = b"".join(
    b'{"id":"%08x","type":"rect","x":%d,"y":%d,"fill":"#%06x"},'
    % (i * 2654435761 % 2**32, i * 7 % 1000, i * 13 % 977, i * 40503 % 2**24)
    for i in range(2000)
)


def deflater():
    """A raw-deflate compressor with the archive's settings."""
    return zlib.compressobj(
        DEFLATE_LEVEL, zlib.DEFLATED, DEFLATE_WBITS, DEFLATE_MEMLEVEL, DEFLATE_STRATEGY
    )


def compressor_identity() -> str:
    """Names the layout and the deflate this process writes: zlib's runtime version (zlib-ng in its
    compatibility mode says so there), the settings, and a digest of what it makes of a
    fixed sample, which also tells apart two builds behind one version string. Two workers
    with the same name are taken to emit the same bytes for the same input; zlib promises
    no more than that a stream decompresses, so any difference in the name counts."""
    compressor = deflater()
    sample = compressor.compress(_SAMPLE) + compressor.flush()
    return (
        f"{LAYOUT}; zlib {zlib.ZLIB_RUNTIME_VERSION}; level {DEFLATE_LEVEL} wbits {DEFLATE_WBITS} "
        f"memlevel {DEFLATE_MEMLEVEL} strategy {DEFLATE_STRATEGY}; "
        f"sample {hashlib.sha256(sample).hexdigest()[:16]}"
    )


def dos_datetime(when: datetime) -> tuple[int, int]:
    """(time, date) in MS-DOS form; ZIP cannot say anything before 1980."""
    if when.year < 1980:
        return 0, (0 << 9) | (1 << 5) | 1
    return (
        (when.hour << 11) | (when.minute << 5) | (when.second // 2),
        ((when.year - 1980) << 9) | (when.month << 5) | when.day,
    )


@dataclass(frozen=True)
class EntryRecord:
    name: str
    offset: int
    method: int
    dos_time: int
    dos_date: int
    crc: int
    compressed_size: int
    size: int
    sha256: str
    zip64: bool

    @property
    def end(self) -> int:
        header = 30 + len(self.name.encode()) + (20 if self.zip64 else 0)
        return self.offset + header + self.compressed_size


class EntryMismatch(ValueError):
    """Streamed bytes that are not the size or CRC-32 their local header already declared."""


class ZipStream:
    """Writes entries one after another from `offset`, after the `records` already written."""

    def __init__(self, *, offset: int = 0, records: Iterable[EntryRecord] = ()):
        self.offset = offset
        self.records: list[EntryRecord] = list(records)

    def entry(
        self,
        name: str,
        chunks: Iterable[bytes],
        *,
        method: int,
        when: datetime,
        size: int | None = None,
        crc32: int | None = None,
    ) -> Iterator[bytes]:
        """Yield the entry's bytes; its record is appended once the last byte is out.

        With `size` and `crc32` (a stored entry known ahead) the chunks stream through and
        must match them, or `EntryMismatch` is raised, before any byte past `size` is out.
        Without, the chunks are gathered (and deflated) in memory first."""
        if crc32 is None:
            yield from self._gathered(name, b"".join(chunks), method=method, when=when)
            return
        if method != STORED or size is None:
            raise ValueError(f"{name}: only a stored entry of known size streams")
        start = self.offset
        yield self._out(_local_header(name, method, when, crc32, size, size))
        crc, done = 0, 0
        sha = hashlib.sha256()
        for chunk in chunks:
            done += len(chunk)
            if done > size:
                raise EntryMismatch(f"{name}: more than the {size} bytes declared")
            crc = zlib.crc32(chunk, crc)
            sha.update(chunk)
            yield self._out(chunk)
        if done != size or crc != crc32:
            raise EntryMismatch(
                f"{name}: {done} bytes with CRC-32 {crc:08x}; declared {size}, {crc32:08x}"
            )
        self._record(name, start, method, when, crc, size, size, sha.hexdigest())

    def _gathered(self, name: str, data: bytes, *, method: int, when: datetime) -> Iterator[bytes]:
        crc = zlib.crc32(data)
        if method == DEFLATED:
            compressor = deflater()
            body = compressor.compress(data) + compressor.flush()
        else:
            body = data
        start = self.offset
        yield self._out(_local_header(name, method, when, crc, len(body), len(data)))
        yield self._out(body)
        sha256 = hashlib.sha256(data).hexdigest()
        self._record(name, start, method, when, crc, len(body), len(data), sha256)

    def _record(self, name, offset, method, when, crc, compressed, size, sha256) -> None:
        dos_time, dos_date = dos_datetime(when)
        zip64 = _needs_zip64(size, compressed)
        self.records.append(
            EntryRecord(
                name, offset, method, dos_time, dos_date, crc, compressed, size, sha256, zip64
            )
        )

    def finish(self) -> Iterator[bytes]:
        """The central directory and the end records, ZIP64 where the sizes demand it."""
        directory_start = self.offset
        for record in self.records:
            yield self._out(_central_header(record))
        directory_size = self.offset - directory_start
        count = len(self.records)
        if count > _MAX16 or directory_start > _MAX32 or directory_size > _MAX32:
            zip64_end = self.offset
            yield self._out(
                struct.pack(
                    "<IQHHIIQQQQ",
                    0x06064B50,
                    44,
                    _MADE_BY,
                    45,
                    0,
                    0,
                    count,
                    count,
                    directory_size,
                    directory_start,
                )
            )
            yield self._out(struct.pack("<IIQI", 0x07064B50, 0, zip64_end, 1))
        yield self._out(
            struct.pack(
                "<IHHHHIIH",
                0x06054B50,
                0,
                0,
                min(count, _MAX16),
                min(count, _MAX16),
                min(directory_size, _MAX32),
                min(directory_start, _MAX32),
                0,
            )
        )

    def _out(self, data: bytes) -> bytes:
        self.offset += len(data)
        return data


def _needs_zip64(size: int, compressed: int) -> bool:
    return max(size, compressed) >= ZIP64_ENTRY_THRESHOLD


def _local_header(
    name: str, method: int, when: datetime, crc: int, compressed: int, size: int
) -> bytes:
    """The local header, complete: a reader needs nothing after the data to read it. ZIP64
    sizes go in the extra field (original size first), both 32-bit fields 0xFFFFFFFF."""
    zip64 = _needs_zip64(size, compressed)
    dos_time, dos_date = dos_datetime(when)
    encoded = name.encode()
    extra = struct.pack("<HHQQ", 0x0001, 16, size, compressed) if zip64 else b""
    return (
        struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            45 if zip64 else 20,
            _FLAGS,
            method,
            dos_time,
            dos_date,
            crc,
            _MAX32 if zip64 else compressed,
            _MAX32 if zip64 else size,
            len(encoded),
            len(extra),
        )
        + encoded
        + extra
    )


def _central_header(record: EntryRecord) -> bytes:
    encoded = record.name.encode()
    fields = []
    if record.zip64:
        fields += [record.size, record.compressed_size]
    if record.offset > _MAX32:
        fields.append(record.offset)
    extra = struct.pack(f"<HH{len(fields)}Q", 0x0001, 8 * len(fields), *fields) if fields else b""
    return (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            _MADE_BY,
            45 if record.zip64 or record.offset > _MAX32 else 20,
            _FLAGS,
            record.method,
            record.dos_time,
            record.dos_date,
            record.crc,
            _MAX32 if record.zip64 else record.compressed_size,
            _MAX32 if record.zip64 else record.size,
            len(encoded),
            len(extra),
            0,
            0,
            0,
            _UNIX_FILE_ATTRS,
            _MAX32 if record.offset > _MAX32 else record.offset,
        )
        + encoded
        + extra
    )
