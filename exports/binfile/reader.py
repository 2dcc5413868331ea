"""Reading a binfile: the manifest first, then every entry checked against digest.json."""

import hashlib
import re
import stat
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from .format import DIGEST, MANIFEST, BinfileError, check_manifest

CHUNK = 1024 * 1024


UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
EXPECTED_NAME = re.compile(
    rf"^(manifest\.json|digest\.json|files/{UUID}\.json|files/{UUID}/(pages|media)/{UUID}\.json"
    r"|blobs/[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class Limits:
    """What a reader accepts before reading a byte of content (zip bombs, huge archives)."""

    max_bytes: int = 10 * 1024**3
    max_entries: int = 1_000_000
    max_ratio: int = 200  # uncompressed / compressed, for entries over 1 MiB
    max_document_bytes: int = 64 * 1024**2  # one JSON entry (a page) is read whole


class BinfileReader:
    def __init__(self, fileobj: BinaryIO, limits: Limits = Limits()):
        try:
            self.zip = zipfile.ZipFile(fileobj)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise BinfileError(f"Not a readable ZIP archive: {error}", code="not_zip") from None
        check_entries(self.zip.infolist(), limits)
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

    def read_json(self, name: str):
        try:
            with self.zip.open(name) as entry:
                return orjson.loads(entry.read())
        except KeyError:
            raise BinfileError(
                f"The archive has no {name}.", code="missing_entry", entry=name
            ) from None
        except orjson.JSONDecodeError as error:
            raise BinfileError(
                f"{name} is not valid JSON: {error}", code="malformed", entry=name
            ) from None
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise BinfileError(
                f"{name} cannot be read: {error}", code="corrupt", entry=name
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
        try:
            with self.zip.open(info) as entry:
                while chunk := entry.read(CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
                    if keep:
                        kept.append(chunk)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise BinfileError(
                f"{info.filename} cannot be read: {error}", code="corrupt", entry=info.filename
            ) from None
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
        return b"".join(kept) if keep else None


def check_entries(infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Refuse hostile archives from their directory alone: unexpected names (zip-slip,
    absolute paths), symlinks, duplicates, too many entries, too many bytes, bombs."""
    if len(infos) > limits.max_entries:
        raise BinfileError(
            f"The archive has {len(infos)} entries; at most {limits.max_entries} are accepted.",
            code="too_many_entries",
        )
    seen, total = set(), 0
    for info in infos:
        name = info.filename
        if not EXPECTED_NAME.match(name):
            raise BinfileError(
                f"Unexpected entry name {name!r}.", code="unexpected_entry", entry=name
            )
        if name in seen:
            raise BinfileError(f"{name} appears twice.", code="duplicate_entry", entry=name)
        seen.add(name)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BinfileError(f"{name} is a symbolic link.", code="symlink_entry", entry=name)
        if name.endswith(".json") and info.file_size > limits.max_document_bytes:
            raise BinfileError(
                f"{name} declares {info.file_size} bytes; a document may have at most "
                f"{limits.max_document_bytes}.",
                code="too_large",
                entry=name,
            )
        total += info.file_size
        if total > limits.max_bytes:
            raise BinfileError(
                f"The archive expands past {limits.max_bytes} bytes.", code="too_large", entry=name
            )
        if info.file_size > 1024**2 and info.file_size > limits.max_ratio * max(
            1, info.compress_size
        ):
            raise BinfileError(
                f"{name} expands {info.file_size // max(1, info.compress_size)}x; at most "
                f"{limits.max_ratio}x is accepted (zip bomb?).",
                code="compression_ratio",
                entry=name,
            )
