"""The `blobs` storage: content-addressed bytes, streamed in and out a chunk at a time."""

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from django.conf import settings
from django.core.files import File as DjangoFile
from django.core.files.storage import storages

from .http import presigned_download_url
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


def write_blob(sha256: str, stream: BinaryIO) -> None:
    """Store bytes under their hash. Overwriting is harmless: the name fixes the content."""
    blob_storage().save(blob_storage_name(sha256), DjangoFile(stream, name=sha256))


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
