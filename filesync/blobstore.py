"""The `blobs` storage: content-addressed bytes, streamed in and out a chunk at a time."""

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO, NamedTuple

from django.conf import settings
from django.core.files import File as DjangoFile
from django.core.files.storage import storages

from common.http import presigned_download_url

from .models import blob_storage_name


class Digest(NamedTuple):
    sha256: str
    size: int


def blob_storage():
    return storages["blobs"]


def digest_stream(stream: BinaryIO) -> Digest:
    """Hash a stream chunk by chunk; the caller decides where the stream is positioned."""
    hasher = hashlib.sha256()
    size = 0
    while chunk := stream.read(settings.BLOB_CHUNK_SIZE):
        hasher.update(chunk)
        size += len(chunk)
    return Digest(hasher.hexdigest(), size)


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
    hasher = hashlib.sha256()
    size = 0
    spool = tempfile.NamedTemporaryFile(dir=directory, delete=False)
    try:
        with spool:
            while chunk := body.read(settings.BLOB_CHUNK_SIZE):
                hasher.update(chunk)
                spool.write(chunk)
                size += len(chunk)
        with open(spool.name, "rb") as staged:
            yield Received(StagedFile(staged), Digest(hasher.hexdigest(), size))
    finally:
        with suppress(FileNotFoundError):
            os.remove(spool.name)
