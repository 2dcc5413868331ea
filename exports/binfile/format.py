"""Binfile format v2: entry names, JSON encoding, and the manifest and digest documents.

See docs/binfile.md. Pure Python: nothing here knows of Django.
"""

from collections.abc import Iterable

import orjson

from .zipstream import DEFLATED, STORED, EntryRecord

TYPE = "ferry/binfile"
#: 2: every local header holds the CRC-32 and sizes (1 had data descriptors). Both import.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
DIGEST = "digest.json"
LIBRARY_MODES = ("all", "merge", "detach")

#: Media types whose bytes are already compressed: stored, not deflated again.
PRECOMPRESSED_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/gif",
        "image/avif",
        "image/heic",
        "application/zip",
        "application/gzip",
        "application/x-7z-compressed",
        "application/x-bzip2",
        "application/x-xz",
        "application/zstd",
        "application/pdf",
        "video/mp4",
        "video/webm",
        "audio/mpeg",
        "audio/ogg",
        "font/woff",
        "font/woff2",
    }
)


class BinfileError(Exception):
    """A binfile that cannot be read; `entry` and `field` say where, when known."""

    def __init__(self, message: str, *, code: str = "invalid", entry: str = "", field: str = ""):
        super().__init__(message)
        self.code = code
        self.entry = entry
        self.field = field


def encode_json(document) -> bytes:
    """Deterministic JSON: sorted keys, compact separators, UTF-8 (orjson, for speed)."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


#: A blob is deflated in memory before its header (its compressed size goes there), so only
#: up to this size; a larger one is stored, streamed with the CRC-32 its row records.
MAX_DEFLATED_BLOB = 16 * 1024 * 1024


def is_precompressed(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() in PRECOMPRESSED_TYPES


def blob_method(content_type: str, size: int) -> int:
    """Deflate only what is not compressed already and fits in memory."""
    if is_precompressed(content_type) or size > MAX_DEFLATED_BLOB:
        return STORED
    return DEFLATED


def file_entry(file_id) -> str:
    return f"files/{file_id}.json"


def page_entry(file_id, page_id) -> str:
    return f"files/{file_id}/pages/{page_id}.json"


def media_entry(file_id, media_id) -> str:
    return f"files/{file_id}/media/{media_id}.json"


def blob_entry(sha256: str) -> str:
    return f"blobs/{sha256}"


def manifest(
    *, generated_by: str, source: dict, libraries: str, files: list[dict], relations: list
) -> dict:
    return {
        "type": TYPE,
        "format_version": FORMAT_VERSION,
        "generated_by": generated_by,
        "source": source,
        "options": {"libraries": libraries},
        "files": files,
        "relations": relations,
    }


def digest(records: Iterable[EntryRecord]) -> dict:
    return {
        "entries": {r.name: {"sha256": r.sha256, "size": r.size} for r in records},
    }


def check_manifest(document) -> dict:
    """Refuse what this reader cannot read, with a reason a person can act on."""
    found = document.get("type") if isinstance(document, dict) else None
    if found != TYPE:
        raise BinfileError(
            f"Not a Ferry binfile: type is {found!r}, expected {TYPE!r}.",
            code="unknown_type",
            entry=MANIFEST,
            field="type",
        )
    version = document.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BinfileError(
            "format_version must be a positive integer.",
            code="invalid",
            entry=MANIFEST,
            field="format_version",
        )
    if version > FORMAT_VERSION:
        raise BinfileError(
            f"This binfile has format version {version}; this server reads up to "
            f"{FORMAT_VERSION}. Upgrade Ferry to import it.",
            code="newer_version",
            entry=MANIFEST,
            field="format_version",
        )
    return document
