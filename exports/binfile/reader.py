"""Reading a binfile: the manifest first, then every entry checked against digest.json."""

import hashlib
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from common.limits import text_deeper_than

from .format import DIGEST, MANIFEST, BinfileError, check_manifest

CHUNK = 1024 * 1024


UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
EXPECTED_NAME = re.compile(
    rf"^(manifest\.json|digest\.json|files/{UUID}\.json|files/{UUID}/(pages|media)/{UUID}\.json"
    r"|blobs/[0-9a-f]{64})$"
)


#: The ZIP features a binfile uses, and so all a reader accepts: stored or deflated entries,
#: nothing newer than ZIP64 (version 4.5 needed to extract), no encryption (flag bits 0
#: and 6) and no patched data (bit 5).
METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
MAX_VERSION_NEEDED = 45
REFUSED_FLAGS = 0x0001 | 0x0020 | 0x0040
LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
CENTRAL_RECORD = struct.Struct("<4sHHHHHHIIIHHHHHII")
LOCAL_SIGNATURE = b"PK\x03\x04"
DATA_DESCRIPTOR = 0x0008
ZIP64_MARK = 0xFFFF_FFFF
#: The smallest data descriptor (CRC and two 32-bit sizes, no signature).
SHORTEST_DESCRIPTOR = 12
#: digest.json holds a line of about 200 bytes per entry; more is not a digest.
DIGEST_BYTES_PER_ENTRY = 256

JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


@dataclass(frozen=True)
class Limits:
    """What a reader accepts before reading a byte of content (zip bombs, huge archives)."""

    max_bytes: int = 10 * 1024**3
    max_entries: int = 1_000_000
    max_ratio: int = 200  # uncompressed / compressed, for any entry over ratio_floor
    ratio_floor: int = 16 * 1024  # small JSON may compress better; it cannot add up to much
    max_document_bytes: int = 4 * 1024**2  # a JSON document (a page) is read and parsed whole
    max_depth: int = 65  # nesting of a JSON document: 64 for content, 1 for the document


class BinfileReader:
    def __init__(self, fileobj: BinaryIO, limits: Limits = Limits()):
        self.limits = limits
        try:
            self.zip = zipfile.ZipFile(fileobj)
        except NotImplementedError as error:  # a directory record needs a version past 6.3
            raise BinfileError(
                f"{error}: at most {MAX_VERSION_NEEDED / 10:.1f} (ZIP64) is accepted.",
                code="unsupported_version",
                entry=first_entry_needing_more(fileobj),
            ) from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise BinfileError(f"Not a readable ZIP archive: {error}", code="not_zip") from None
        infos = self.zip.infolist()
        check_entries(infos, limits)
        check_layout(fileobj, infos, self.zip.start_dir)
        check_sizes(infos, limits)
        self.manifest = check_manifest(self.read_json(MANIFEST))
        digest = self.read_json(DIGEST)
        entries = digest.get("entries") if isinstance(digest, dict) else None
        if not isinstance(entries, dict):
            raise BinfileError("digest.json has no entries table.", entry=DIGEST, field="entries")
        for name, expected in entries.items():
            if not (
                isinstance(expected, dict)
                and isinstance(expected.get("size"), int)
                and isinstance(expected.get("sha256"), str)
            ):
                raise BinfileError(
                    f"digest.json: {name} needs a size and a sha256.",
                    code="invalid_document",
                    entry=DIGEST,
                    field=f"entries.{name}",
                )
        self.digest: dict[str, dict] = entries

    def names(self) -> list[str]:
        return [info.filename for info in self.zip.infolist()]

    def read_json(self, name: str, *, verified: bool = False):
        """The entry parsed. Its depth is judged first, unless `verified`: this reader's
        `verify` judged those very bytes already (an import reading its pages again)."""
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise BinfileError(
                f"The archive has no {name}.", code="missing_entry", entry=name
            ) from None
        data = b"".join(self._inflate(info))
        if not verified:
            check_depth(name, data, self.limits.max_depth)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise BinfileError(
                f"{name} is not valid JSON: {error}", code="malformed", entry=name
            ) from None

    def _inflate(self, info: zipfile.ZipInfo) -> Iterator[bytes]:
        """The entry's bytes, a chunk at a time, never more than its declared size: the
        directory's checks of that size (limits, ratio) then bound what is inflated too."""
        left = info.file_size
        try:
            with self.zip.open(info) as entry:
                while chunk := entry.read(min(CHUNK, left + 1)):
                    left -= len(chunk)
                    if left < 0:
                        raise BinfileError(
                            f"{info.filename} inflates past the {info.file_size} bytes it "
                            "declares.",
                            code="corrupt",
                            entry=info.filename,
                        )
                    yield chunk
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise BinfileError(
                f"{info.filename} cannot be read: {error}", code="corrupt", entry=info.filename
            ) from None

    def verify(
        self,
        on_document: Callable[[str, bytes], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Every entry is listed in digest.json with its size and sha256, and matches it.

        Entries are read once: each JSON document, once verified, goes to `on_document`
        (name, bytes) so a caller can validate it without a second read; `on_progress`
        hears of the bytes read.
        """
        present = set()
        for info in self.zip.infolist():
            if info.filename == DIGEST:
                continue
            present.add(info.filename)
            expected = self.digest.get(info.filename)
            if expected is None:
                raise BinfileError(
                    f"{info.filename} is not listed in digest.json.",
                    code="unlisted_entry",
                    entry=info.filename,
                )
            document = self._check_entry(info, expected, keep=info.filename.endswith(".json"))
            if on_document and document is not None:
                on_document(info.filename, document)
            if on_progress:
                on_progress(info.file_size)
        if missing := sorted(set(self.digest) - present):
            raise BinfileError(
                f"digest.json lists {missing[0]}, which the archive lacks.",
                code="missing_entry",
                entry=missing[0],
            )

    def _check_entry(self, info: zipfile.ZipInfo, expected: dict, *, keep: bool) -> bytes | None:
        """Hash the entry against digest.json; return its bytes when `keep` (a document)."""
        sha = hashlib.sha256()
        size = 0
        kept = []
        for chunk in self._inflate(info):
            sha.update(chunk)
            size += len(chunk)
            if keep:
                kept.append(chunk)
        if size != expected.get("size"):
            raise BinfileError(
                f"{info.filename} has {size} bytes; digest.json says {expected.get('size')}.",
                code="digest_mismatch",
                entry=info.filename,
                field="size",
            )
        if sha.hexdigest() != expected.get("sha256"):
            raise BinfileError(
                f"{info.filename} does not match its sha256 in digest.json.",
                code="digest_mismatch",
                entry=info.filename,
                field="sha256",
            )
        if not keep:
            return None
        document = b"".join(kept)
        check_depth(info.filename, document, self.limits.max_depth)
        return document


def check_entries(infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Refuse hostile archives from their directory alone: too many entries, unexpected
    names (zip-slip, absolute paths), symlinks, duplicates, ZIP features a binfile never
    uses (encryption, other methods, newer versions)."""
    if len(infos) > limits.max_entries:
        raise BinfileError(
            f"The archive has {len(infos)} entries; at most {limits.max_entries} are accepted.",
            code="too_many_entries",
        )
    seen = set()
    for info in infos:
        name = info.orig_filename
        if not EXPECTED_NAME.match(name):
            raise BinfileError(
                f"Unexpected entry name {name!r}.", code="unexpected_entry", entry=name
            )
        if name in seen:
            raise BinfileError(f"{name} appears twice.", code="duplicate_entry", entry=name)
        seen.add(name)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BinfileError(f"{name} is a symbolic link.", code="symlink_entry", entry=name)
        check_zip_features(name, info.flag_bits, info.compress_type, info.extract_version)


def check_sizes(infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    """The bytes the archive expands to, in all (max_bytes) and entry by entry."""
    total = 0
    for info in infos:
        total += info.file_size
        if total > limits.max_bytes:
            raise BinfileError(
                f"The archive expands past {limits.max_bytes} bytes.",
                code="too_large",
                entry=info.filename,
            )
        check_size(info, limits, digest_bytes=DIGEST_BYTES_PER_ENTRY * len(infos) + 4096)


def check_zip_features(name: str, flags: int, method: int, version_needed: int) -> None:
    """What Python's zipfile would refuse with a bare exception, or read only with a
    password, is refused here by name."""
    if flags & REFUSED_FLAGS:
        raise BinfileError(
            f"{name} is encrypted or patched (flags {flags:#06x}); binfiles never are.",
            code="encrypted_entry",
            entry=name,
        )
    if method not in METHODS:
        raise BinfileError(
            f"{name} uses compression method {method}; only stored (0) and deflate (8) "
            "are accepted.",
            code="unsupported_method",
            entry=name,
        )
    if version_needed > MAX_VERSION_NEEDED:
        raise BinfileError(
            f"{name} needs ZIP version {version_needed / 10:.1f} to extract; at most "
            f"{MAX_VERSION_NEEDED / 10:.1f} (ZIP64) is accepted.",
            code="unsupported_version",
            entry=name,
        )


def check_size(info: zipfile.ZipInfo, limits: Limits, *, digest_bytes: int) -> None:
    """A document is parsed whole, so its size is bounded (digest.json by the entries it
    lists); any entry past the ratio floor may expand at most max_ratio times."""
    name = info.filename
    if name == DIGEST:
        document_limit = digest_bytes
    elif name.endswith(".json"):
        document_limit = limits.max_document_bytes
    else:
        document_limit = None
    if document_limit is not None and info.file_size > document_limit:
        raise BinfileError(
            f"{name} declares {info.file_size} bytes; a document may have at most "
            f"{document_limit}.",
            code="too_large",
            entry=name,
        )
    if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(
        1, info.compress_size
    ):
        raise BinfileError(
            f"{name} expands {info.file_size // max(1, info.compress_size)}x; at most "
            f"{limits.max_ratio}x is accepted (zip bomb?).",
            code="compression_ratio",
            entry=name,
        )


def check_layout(fileobj: BinaryIO, infos: list[zipfile.ZipInfo], directory_offset: int) -> None:
    """Each entry's local header and data lie in a span of their own, in directory order,
    before the directory: overlapping entries (one compressed kernel counted by many
    entries, the "better zip bomb") and a local header naming another entry are refused."""
    end = 0
    for info in infos:
        name = info.orig_filename
        if info.header_offset < end:
            raise BinfileError(
                f"{name} starts inside the entry before it, or before it in the archive.",
                code="overlapping_entries",
                entry=name,
            )
        fileobj.seek(info.header_offset)
        header = fileobj.read(LOCAL_HEADER.size)
        if len(header) < LOCAL_HEADER.size or header[:4] != LOCAL_SIGNATURE:
            raise BinfileError(
                f"{name} has no local header where the directory says.",
                code="corrupt",
                entry=name,
            )
        (
            _,
            version_needed,
            flags,
            method,
            _,
            _,
            crc,
            compressed,
            size,
            name_length,
            extra_length,
        ) = LOCAL_HEADER.unpack(header)
        local_name = fileobj.read(name_length)
        if local_name != name.encode("utf-8" if info.flag_bits & 0x0800 else "cp437"):
            raise BinfileError(
                f"{name} is named {local_name!r} in its local header.",
                code="name_mismatch",
                entry=name,
            )
        check_zip_features(name, flags, method, version_needed)
        if method != info.compress_type:
            raise BinfileError(
                f"{name}: its local header and the directory differ on the method.",
                code="corrupt",
                entry=name,
            )
        if not flags & DATA_DESCRIPTOR:
            extra = fileobj.read(extra_length)
            if local_sizes(crc, compressed, size, extra) != (
                info.CRC,
                info.compress_size,
                info.file_size,
            ):
                raise BinfileError(
                    f"{name}: its local header and the directory differ on the CRC-32 or "
                    "sizes, so readers that stream and readers that seek would read "
                    "different bytes.",
                    code="corrupt",
                    entry=name,
                )
        end = (
            info.header_offset
            + LOCAL_HEADER.size
            + name_length
            + extra_length
            + info.compress_size
            + (SHORTEST_DESCRIPTOR if flags & DATA_DESCRIPTOR else 0)
        )
        if end > directory_offset:
            raise BinfileError(
                f"{name} runs into the central directory.",
                code="overlapping_entries",
                entry=name,
            )


def local_sizes(crc: int, compressed: int, size: int, extra: bytes) -> tuple[int, int, int]:
    """(CRC-32, compressed size, size) a local header without a data descriptor declares:
    a 0xFFFFFFFF size is in the ZIP64 extra field, which holds the original size first,
    then the compressed one, each only if its header field says so (APPNOTE 4.5.3)."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, at)
        if at + 4 + length > len(extra):
            break
        if kind == 0x0001:
            values = list(struct.unpack_from(f"<{length // 8}Q", extra, at + 4))
            if size == ZIP64_MARK and values:
                size = values.pop(0)
            if compressed == ZIP64_MARK and values:
                compressed = values.pop(0)
            break
        at += 4 + length
    return crc, compressed, size


def first_entry_needing_more(fileobj: BinaryIO) -> str:
    """The name of the first directory record needing a version past MAX_VERSION_NEEDED:
    zipfile refuses one while it reads the directory, without naming it, so the directory
    is walked again here, found as zipfile finds it."""
    end = zipfile._EndRecData(fileobj)
    size = end[zipfile._ECD_SIZE]
    start = end[zipfile._ECD_LOCATION] - size
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    fileobj.seek(start)
    directory = fileobj.read(size)
    at = 0
    while at + CENTRAL_RECORD.size <= len(directory):
        record = CENTRAL_RECORD.unpack_from(directory, at)
        version_needed, flags, name_length = record[2] & 0xFF, record[3], record[10]
        name = directory[at + CENTRAL_RECORD.size :][:name_length]
        if version_needed > MAX_VERSION_NEEDED:
            return name.decode("utf-8" if flags & 0x0800 else "cp437", "replace")
        at += CENTRAL_RECORD.size + name_length + record[11] + record[12]
    return ""


def check_depth(name: str, data: bytes, max_depth: int) -> None:
    """Refuse a document nested deeper than max_depth before it is parsed, at the cost of a
    few passes in C over its bytes."""
    if text_deeper_than(data, max_depth):
        raise BinfileError(
            f"{name} nests deeper than {max_depth} levels.",
            code="too_deep",
            entry=name,
            field=_deep_field(data, max_depth),
        )


def _deep_field(data: bytes, max_depth: int) -> str:
    """The top-level key under which a document first nests past max_depth."""
    depth, key = 0, ""
    for token in JSON_TOKEN.finditer(data):
        text = token.group()
        if text[:1] == b'"':
            if depth == 1:
                key = text[1:-1].decode("utf-8", "replace")
        elif text in b"[{":
            depth += 1
            if depth > max_depth:
                return key
        else:
            depth -= 1
    return key
