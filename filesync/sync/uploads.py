"""Resumable uploads (the tus protocol's core, creation, checksum, termination, expiration).

Bytes wait in a node-local staging file (FERRY_VAR_DIR/uploads) until the upload is
complete and its sha256 verified; then they go to the blob store like any other blob and
the staging file goes away. One PATCH at a time per upload: a short lease on the row.
"""

import base64
import hashlib
import os
from contextlib import suppress
from datetime import timedelta
from typing import BinaryIO

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .. import blobstore, services
from ..models import Upload
from ..resumable_hash import ResumableSha256
from ..selectors import readable_blobs

CHUNK = 1024 * 1024
EMPTY = hashlib.sha256(b"").hexdigest()
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}


class UploadError(Exception):
    """A refused request, with the HTTP status tus gives it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def staging_path(upload: Upload) -> str:
    directory = settings.SYNC_UPLOAD_DIR
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / f"{upload.pk}.part")


def create_upload(*, owner, length: int, sha256: str, metadata: dict) -> Upload:
    if length > settings.SYNC_MAX_BLOB_BYTES:
        raise UploadError(413, "The upload is larger than this server accepts.")
    now = timezone.now()
    upload = Upload.objects.create(
        owner=owner,
        length=length,
        sha256=sha256,
        metadata=metadata,
        expires_at=now + timedelta(seconds=settings.SYNC_UPLOAD_TTL_SECONDS),
    )
    if readable_blobs(owner).filter(pk=sha256).exists():  # nothing to send: they read it already
        Upload.objects.filter(pk=upload.pk).update(offset=length, completed_at=now)
        upload.refresh_from_db()
    else:
        open(staging_path(upload), "wb").close()
        if length == 0:  # nothing will come: the empty blob is complete now
            _finish(upload)
    return upload


def _claim(upload: Upload) -> None:
    now = timezone.now()
    if (
        not Upload.objects.filter(pk=upload.pk)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .update(locked_until=now + timedelta(seconds=settings.SYNC_PATCH_LEASE_SECONDS))
    ):
        raise UploadError(423, "Another request is writing to this upload; retry shortly.")


def append(
    *, upload: Upload, offset: int, body: BinaryIO, checksum: tuple[str, bytes] | None
) -> Upload:
    """Write one PATCH body at `offset`; verify its checksum; finish when the last byte is in."""
    _claim(upload)
    try:
        upload.refresh_from_db()
        if upload.completed_at:
            raise UploadError(409, "The upload is already complete.")
        if offset != upload.offset:
            raise UploadError(409, f"Upload-Offset is {offset}; the upload is at {upload.offset}.")
        hasher = CHECKSUMS[checksum[0]]() if checksum else None
        whole = ResumableSha256(upload.hash_state) if upload.hash_state else ResumableSha256()
        written = 0
        with open(staging_path(upload), "r+b") as staging:
            staging.seek(offset)
            while chunk := body.read(CHUNK):
                written += len(chunk)
                if offset + written > upload.length:
                    staging.truncate(offset)
                    raise UploadError(413, "The body goes past Upload-Length.")
                staging.write(chunk)
                whole.update(chunk)
                if hasher:
                    hasher.update(chunk)
            if hasher and hasher.digest() != checksum[1]:
                staging.truncate(offset)
                raise UploadError(460, "Upload-Checksum does not match; the chunk was discarded.")
            staging.flush()
            os.fsync(staging.fileno())
        upload.offset = offset + written
        upload.hash_state = whole.state()
        Upload.objects.filter(pk=upload.pk).update(
            offset=upload.offset, hash_state=upload.hash_state
        )
        if upload.offset == upload.length:
            _finish(upload)
        return upload
    finally:
        Upload.objects.filter(pk=upload.pk).update(locked_until=None)


def _finish(upload: Upload) -> None:
    """Check the whole against the running hash and move it into the blob store; a
    mismatch leaves nothing behind (422)."""
    digest = ResumableSha256(upload.hash_state).hexdigest() if upload.hash_state else EMPTY
    if digest != upload.sha256:
        terminate(upload=upload)
        raise UploadError(422, "The uploaded bytes do not hash to the sha256 given at creation.")
    path = staging_path(upload)
    with open(path, "rb") as staged:
        services.store_blob(
            stream=blobstore.StagedFile(staged),
            content_type=upload.metadata.get("content_type", "application/octet-stream"),
            user=upload.owner,
            verified=blobstore.Digest(digest, upload.length),
        )
    with suppress(FileNotFoundError):
        os.remove(path)
    upload.completed_at = timezone.now()
    Upload.objects.filter(pk=upload.pk).update(completed_at=upload.completed_at)


def terminate(*, upload: Upload) -> None:
    try:
        os.remove(staging_path(upload))
    except FileNotFoundError:
        pass
    upload.delete()


def reap_expired() -> int:
    expired = list(Upload.objects.filter(expires_at__lt=timezone.now(), completed_at__isnull=True))
    for upload in expired:
        terminate(upload=upload)
    return len(expired)


def parse_metadata(header: str) -> dict:
    """tus Upload-Metadata: comma-separated `key base64value` pairs."""
    metadata = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, value = pair.partition(" ")
        try:
            metadata[key] = base64.b64decode(value, validate=True).decode() if value else ""
        except (ValueError, UnicodeDecodeError):
            raise UploadError(400, f"Upload-Metadata value of {key!r} is not base64.") from None
    return metadata


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    algorithm, _, value = header.partition(" ")
    if algorithm not in CHECKSUMS:
        raise UploadError(400, f"Unsupported checksum algorithm {algorithm!r}.")
    try:
        return algorithm, base64.b64decode(value, validate=True)
    except ValueError:
        raise UploadError(400, "Upload-Checksum is not base64.") from None
