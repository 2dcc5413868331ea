"""Resumable uploads (the tus protocol's core, creation, checksum, termination, expiration).

Bytes wait in the blobs storage (filesync.sync.staging) until the upload is complete and
its sha256 verified; then they become the blob, without a second copy. The row holds all
a PATCH needs to go on (offset, running hash, staging), so any node may take any PATCH.
One PATCH at a time per upload: it holds the row under a lease (common.leases), and
every write it makes is fenced, so a PATCH that lost its claim changes nothing (409).
"""

import base64
import hashlib
import io
import os
import socket
import time
import uuid
import zlib
from datetime import timedelta
from typing import BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from common.leases import Lease, LeaseLost, new_holder

from .. import blobstore, services
from ..models import Upload
from ..resumable_hash import ResumableSha256
from ..selectors import readable_blobs
from . import staging

CHUNK = 1024 * 1024
EMPTY = hashlib.sha256(b"").hexdigest()
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
MISMATCH = "The uploaded bytes do not hash to the sha256 given at creation."
NODE = f"{socket.gethostname()}:{os.getpid()}"


class UploadError(Exception):
    """A refused request, with the HTTP status tus gives it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def create_upload(*, owner, length: int, sha256: str, metadata: dict) -> Upload:
    if length > settings.SYNC_MAX_BLOB_BYTES:
        raise UploadError(413, "The upload is larger than this server accepts.")
    now = timezone.now()
    row = {
        "owner": owner,
        "length": length,
        "sha256": sha256,
        "metadata": metadata,
        "expires_at": now + timedelta(seconds=settings.SYNC_UPLOAD_TTL_SECONDS),
    }
    if readable_blobs(owner).filter(pk=sha256).exists():  # nothing to send: they read it already
        return Upload.objects.create(**row, offset=length, completed_at=now)
    if length == 0:  # nothing will come: the empty blob is complete now
        if sha256 != EMPTY:
            raise UploadError(422, MISMATCH)
        services.store_blob(
            stream=io.BytesIO(),
            content_type=_content_type(metadata),
            user=owner,
            verified=blobstore.Digest(EMPTY, 0, 0),
        )
        return Upload.objects.create(**row, completed_at=now)
    upload_id = uuid.uuid4()
    return Upload.objects.create(id=upload_id, **row, **staging.begin(upload_id, sha256))


def _claim(upload: Upload) -> tuple[Lease, bool]:
    """Hold the upload for one PATCH; whether it takes over from one that never let go
    (crashed, or stalled past its lease). The claim reserves the part numbers this PATCH
    may use (staging): past every number a PATCH it takes over from could still use."""
    seen = (
        Upload.objects.filter(pk=upload.pk, completed_at__isnull=True)
        .values("holder", "offset", "next_part", "part_ceiling")
        .first()
    )
    if seen is None:
        raise UploadError(409, "The upload is already complete, or gone.")
    takeover = bool(seen["holder"])
    first = seen["part_ceiling"] if takeover else seen["next_part"]
    ceiling = first + staging.parts_a_patch_may_use(upload.length, upload.length - seen["offset"])
    if ceiling > staging.MAX_PARTS + 1:
        terminate(upload=upload)
        raise UploadError(410, "This upload was interrupted too often to go on; start again.")
    lease = Lease.take(
        Upload.objects.filter(**seen),  # unchanged since read, or somebody else won
        upload.pk,
        holder=new_holder(NODE),
        seconds=settings.SYNC_PATCH_LEASE_SECONDS,
        holder_field="holder",
        until_field="locked_until",
        next_part=first,
        part_ceiling=ceiling,
    )
    if lease is None:
        raise UploadError(423, "Another request is writing to this upload; retry shortly.")
    return lease, takeover


def append(
    *, upload: Upload, offset: int, body: BinaryIO, checksum: tuple[str, bytes] | None
) -> Upload:
    """Write one PATCH body at `offset`; verify its checksum; finish when the last byte is in."""
    lease, takeover = _claim(upload)
    try:
        return _append(upload, lease, takeover, offset, body, checksum)
    except LeaseLost:
        raise UploadError(
            409, "Another request took this upload over; nothing of this one was kept."
        ) from None
    finally:  # no-op if let go already; else the part numbers reserved go back
        lease.release(part_ceiling=F("next_part"))


def _append(upload, lease, takeover, offset, body, checksum) -> Upload:
    upload.refresh_from_db()
    if offset != upload.offset:
        raise UploadError(409, f"Upload-Offset is {offset}; the upload is at {upload.offset}.")
    hasher = CHECKSUMS[checksum[0]]() if checksum else None
    whole = ResumableSha256(upload.hash_state) if upload.hash_state else ResumableSha256()
    crc = _RunningCrc(0 if offset == 0 else upload.crc32)
    staged = staging.resume(upload, lease, takeover=takeover)
    try:
        written = _receive(body, staged, (whole, crc), hasher, lease, room=upload.length - offset)
        if hasher and hasher.digest() != checksum[1]:
            staged.undo()
            raise UploadError(460, "Upload-Checksum does not match; the chunk was discarded.")
        upload.offset, upload.hash_state = offset + written, whole.state()
        upload.crc32 = crc.value
        if upload.offset == upload.length:
            _finish(upload, lease, whole, staged)
            return upload
        kept = {
            "offset": upload.offset,
            "hash_state": upload.hash_state,
            "crc32": upload.crc32,
            **staged.state(),
        }
        if not lease.release(**kept):
            raise LeaseLost
    finally:
        staged.close()
    return upload


class _RunningCrc:
    """The CRC-32 of the upload's bytes so far, resumed from the row; None stays None (an
    upload begun before uploads kept one: its blob's CRC is filled in on first use)."""

    def __init__(self, value: int | None):
        self.value = value

    def update(self, chunk: bytes) -> None:
        if self.value is not None:
            self.value = zlib.crc32(chunk, self.value)


def _receive(body: BinaryIO, staged, running, hasher, lease: Lease, *, room: int) -> int:
    """Stream the body into staging and the running hashes of the whole (sha256, CRC-32);
    the lease is renewed as it goes."""
    written, renewed = 0, time.monotonic()
    while chunk := body.read(CHUNK):
        written += len(chunk)
        if written > room:
            staged.undo()
            raise UploadError(413, "The body goes past Upload-Length.")
        for total in running:
            total.update(chunk)
        if hasher:
            hasher.update(chunk)
        staged.write(chunk)
        if time.monotonic() - renewed > lease.seconds / 3:
            lease.renew()
            renewed = time.monotonic()
    return written


def _finish(upload: Upload, lease: Lease, whole: ResumableSha256, staged) -> None:
    """Check the whole against the running hash and make the staged bytes the blob; a
    mismatch leaves nothing behind (422). Done holding the row locked, so no PATCH taking
    over can start while the staged bytes become the blob."""
    digest = whole.hexdigest()
    with transaction.atomic():
        lease.lock()
        if digest == upload.sha256:
            services.register_blob(
                blobstore.Digest(digest, upload.length, upload.crc32),
                write=staged.publish,
                content_type=_content_type(upload.metadata),
                user=upload.owner,
            )
            upload.completed_at = timezone.now()
            lease.release(
                offset=upload.offset,
                hash_state=upload.hash_state,
                crc32=upload.crc32,
                completed_at=upload.completed_at,
                staged_name="",
                multipart_id="",
                parts=[],
                tail=b"",
            )
        else:
            lease.held().delete()
    staged.discard()  # what the blob did not take: all of it, if stored already or wrong
    if digest != upload.sha256:
        raise UploadError(422, MISMATCH)


def terminate(*, upload: Upload) -> None:
    """Delete the upload and its staged bytes. The row goes first, so a PATCH at work on
    it can write nothing more to it."""
    with transaction.atomic():
        row = Upload.objects.select_for_update().filter(pk=upload.pk).first()
        if row is None:
            return
        row.delete()
    staging.discard(row)


def reap_expired() -> int:
    """Expired uploads and their staged bytes, from whichever node runs it; and staged
    bytes a crash left without an upload."""
    expired = list(Upload.objects.filter(expires_at__lt=timezone.now(), completed_at__isnull=True))
    for upload in expired:
        terminate(upload=upload)
    staging.sweep()
    return len(expired)


def _content_type(metadata: dict) -> str:
    return metadata.get("content_type", "application/octet-stream")


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
