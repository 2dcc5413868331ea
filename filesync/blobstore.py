"""The `blobs` storage: content-addressed bytes, streamed in and out a chunk at a time."""

import hashlib
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO, NamedTuple

from django.conf import settings
from django.core.files import File as DjangoFile
from django.core.files.storage import storages

from common.http import presigned_download_url

from .models import blob_storage_name


class Digest(NamedTuple):
    """What a blob's bytes are known by. `crc32` goes into a binfile's local headers
    (Blob.crc32); None only where it was never computed (a tus upload begun before
    uploads kept a running CRC)."""

    sha256: str
    size: int
    crc32: int | None


class Hashing:
    """The sha256, CRC-32 and size of bytes fed a chunk at a time: one pass for all three
    (hashlib and zlib release the GIL over large chunks)."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.crc32 = 0
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.crc32 = zlib.crc32(chunk, self.crc32)
        self.size += len(chunk)

    def digest(self) -> Digest:
        return Digest(self.sha256.hexdigest(), self.size, self.crc32)


def blob_storage():
    return storages["blobs"]


def digest_stream(stream: BinaryIO) -> Digest:
    """Hash a stream chunk by chunk; the caller decides where the stream is positioned."""
    hashing = Hashing()
    while chunk := stream.read(settings.BLOB_CHUNK_SIZE):
        hashing.update(chunk)
    return hashing.digest()


def seekable_copy(stream: BinaryIO) -> BinaryIO:
    """Return the stream itself if it can be re-read, else a spooled copy of it."""
    if stream.seekable():
        return stream
    spool = tempfile.SpooledTemporaryFile(max_size=settings.BLOB_CHUNK_SIZE)
    shutil.copyfileobj(stream, spool, settings.BLOB_CHUNK_SIZE)
    spool.seek(0)
    return spool


class StagedFile(DjangoFile):
    """A complete local file handed to storage as is: filesystem storage moves it into
    place (a rename on the same filesystem) instead of copying its bytes."""

    def temporary_file_path(self) -> str:
        return self.file.name


def write_blob(sha256: str, stream: BinaryIO) -> None:
    """Store bytes under their hash. Overwriting is harmless: the name fixes the content.
    A stream that is a whole local file (`temporary_file_path`) is moved, not copied."""
    content = stream if hasattr(stream, "temporary_file_path") else DjangoFile(stream, name=sha256)
    blob_storage().save(blob_storage_name(sha256), content)


def blob_exists(sha256: str) -> bool:
    return blob_storage().exists(blob_storage_name(sha256))


class BlobMissing(Exception):
    """A Blob row whose bytes are not in storage: the store lost them."""


def open_blob(sha256: str):
    try:
        return blob_storage().open(blob_storage_name(sha256), "rb")
    except FileNotFoundError:
        raise BlobMissing(f"Blob {sha256} is missing from storage.") from None


def iter_blob(sha256: str) -> Iterator[bytes]:
    """The blob's bytes a chunk at a time, straight from storage (no local spooling)."""
    handle = open_blob(sha256)
    if hasattr(handle, "obj"):  # django-storages' S3File: stream the object's body
        yield from handle.obj.get()["Body"].iter_chunks(settings.BLOB_CHUNK_SIZE)
        return
    with handle:
        while chunk := handle.read(settings.BLOB_CHUNK_SIZE):
            yield chunk


def delete_blob(sha256: str) -> None:
    blob_storage().delete(blob_storage_name(sha256))


def presigned_url(sha256: str, *, filename: str) -> str | None:
    return presigned_download_url(blob_storage(), blob_storage_name(sha256), filename=filename)


class Received(NamedTuple):
    file: StagedFile
    digest: Digest


@contextmanager
def receive(body: BinaryIO, *, directory: str) -> Iterator[Received]:
    """Copy a request body to a local file, hashing it on the way: one pass. The file is
    gone afterwards, moved into the blob store or deleted."""
    hashing = Hashing()
    spool = tempfile.NamedTemporaryFile(dir=directory, delete=False)
    try:
        with spool:
            while chunk := body.read(settings.BLOB_CHUNK_SIZE):
                hashing.update(chunk)
                spool.write(chunk)
        with open(spool.name, "rb") as staged:
            yield Received(StagedFile(staged), hashing.digest())
    finally:
        with suppress(FileNotFoundError):
            os.remove(spool.name)
