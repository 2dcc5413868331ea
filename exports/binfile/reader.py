"""Reading a binfile: the manifest first, then every entry checked against digest.json."""

import hashlib
import json
import zipfile
import zlib
from typing import BinaryIO

from .format import DIGEST, MANIFEST, BinfileError, check_manifest

CHUNK = 1024 * 1024


class BinfileReader:
    def __init__(self, fileobj: BinaryIO):
        try:
            self.zip = zipfile.ZipFile(fileobj)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise BinfileError(f"Not a readable ZIP archive: {error}", code="not_zip") from None
        self.manifest = check_manifest(self.read_json(MANIFEST))
        digest = self.read_json(DIGEST)
        entries = digest.get("entries") if isinstance(digest, dict) else None
        if not isinstance(entries, dict):
            raise BinfileError("digest.json has no entries table.", entry=DIGEST, field="entries")
        self.digest: dict[str, dict] = entries

    def names(self) -> list[str]:
        return [info.filename for info in self.zip.infolist()]

    def read_json(self, name: str):
        try:
            with self.zip.open(name) as entry:
                return json.load(entry)
        except KeyError:
            raise BinfileError(
                f"The archive has no {name}.", code="missing_entry", entry=name
            ) from None
        except (ValueError, UnicodeDecodeError) as error:
            raise BinfileError(
                f"{name} is not valid JSON: {error}", code="malformed", entry=name
            ) from None
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise BinfileError(
                f"{name} cannot be read: {error}", code="corrupt", entry=name
            ) from None

    def verify(self) -> None:
        """Every entry is listed in digest.json with its size and sha256, and matches it."""
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
            self._check_entry(info, expected)
        if missing := sorted(set(self.digest) - present):
            raise BinfileError(
                f"digest.json lists {missing[0]}, which the archive lacks.",
                code="missing_entry",
                entry=missing[0],
            )

    def _check_entry(self, info: zipfile.ZipInfo, expected: dict) -> None:
        sha = hashlib.sha256()
        size = 0
        try:
            with self.zip.open(info) as entry:
                while chunk := entry.read(CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
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
