"""Where a tus upload's bytes wait until the whole is in and verified: in the blobs storage
itself, so any node can take the next PATCH and no node keeps anything another needs.

- Filesystem: a staging file under `uploads/` in the blobs storage's directory; the last
  PATCH moves it onto the blob's name (a rename, no copy).
- S3: one multipart upload onto the blob's own key per tus upload. A part is at least
  5 MiB (but the last) while a PATCH may be any size, so the bytes short of a part wait in
  the row (`Upload.tail`) and go out with the next part; the last PATCH sends the rest as
  the last part and completes the upload, which makes the blob's object: written once.

A PATCH holds the row under a lease (common.leases), and every row write it makes is
fenced. Its writes to storage cannot be fenced by the database, so each layout makes the
late writes of a PATCH that lost its lease land where nothing reads them:
- S3: a PATCH may only use part numbers below the ceiling its claim wrote; a PATCH taking
  a stalled one over starts at that ceiling, and only the parts the row lists are
  completed, so a late part is discarded with the multipart upload's leftovers.
- Filesystem: a PATCH taking a stalled one over copies the bytes the row vouches for into
  a new staging file and names it in the row; the late writes go to the old file, which
  it unlinks.
Anything left by a crash between creating staged bytes and naming them in a row is swept
by `sweep` (run with the reaping of expired uploads), once it is clearly abandoned.
"""

import os
import secrets
from contextlib import suppress
from datetime import timedelta

from botocore.exceptions import ClientError
from django.utils import timezone

from common.leases import Lease, LeaseLost

from ..blobstore import StagedFile, blob_storage, write_blob
from ..models import Upload, blob_storage_name

DIRECTORY = "uploads"
MIN_PART = 8 * 1024 * 1024
#: Parts an upload uses when no PATCH is interrupted; S3 allows 10,000, and each PATCH
#: taken over leaves unused the numbers it reserved (at most this many).
PLANNED_PARTS = 500
MAX_PARTS = 10_000
#: Staged bytes no row names are swept once this old (a creation or takeover between
#: staging and naming them takes moments).
ABANDONED_AFTER = timedelta(hours=1)


def uses_s3() -> bool:
    return hasattr(blob_storage(), "bucket_name")


def part_size(length: int) -> int:
    return max(MIN_PART, -(-length // PLANNED_PARTS))


def parts_a_patch_may_use(length: int, remaining: int) -> int:
    """The most part numbers one PATCH may send: whole parts of its body and the tail
    before it, and the last part. None on the filesystem."""
    return remaining // part_size(length) + 2 if uses_s3() else 0


def begin(upload_id, sha256: str) -> dict:
    """Stage a new upload; the fields its row records the staging in."""
    if uses_s3():
        storage = blob_storage()
        started = _client().create_multipart_upload(
            Bucket=storage.bucket_name, Key=_key(sha256), ContentType="application/octet-stream"
        )
        return {"multipart_id": started["UploadId"]}
    name = _new_name(upload_id)
    open(blob_storage().path(name), "xb").close()
    return {"staged_name": name}


def resume(upload: Upload, lease: Lease, *, takeover: bool):
    """The staging of a claimed upload, ready to take bytes at `upload.offset`."""
    if uses_s3():
        return MultipartStaging(upload, lease)
    return FileStaging(upload, lease, takeover=takeover)


def discard(upload: Upload) -> None:
    """Drop what is staged for an upload whose row is gone."""
    if upload.multipart_id:
        _abort(upload.sha256, upload.multipart_id)
    if upload.staged_name:
        with suppress(FileNotFoundError):
            os.remove(blob_storage().path(upload.staged_name))


def sweep() -> int:
    """Staged bytes no upload row names, abandoned by a crash: removed."""
    cutoff = timezone.now() - ABANDONED_AFTER
    storage = blob_storage()
    removed = 0
    if uses_s3():
        known = set(Upload.objects.exclude(multipart_id="").values_list("multipart_id", flat=True))
        pages = _client().get_paginator("list_multipart_uploads")
        for page in pages.paginate(Bucket=storage.bucket_name, Prefix=storage._normalize_name("")):
            for started in page.get("Uploads", []):
                if started["UploadId"] not in known and started["Initiated"] < cutoff:
                    _client().abort_multipart_upload(
                        Bucket=storage.bucket_name, Key=started["Key"], UploadId=started["UploadId"]
                    )
                    removed += 1
        return removed
    if not storage.exists(DIRECTORY):
        return 0
    known = set(Upload.objects.exclude(staged_name="").values_list("staged_name", flat=True))
    for name in storage.listdir(DIRECTORY)[1]:
        staged = f"{DIRECTORY}/{name}"
        if staged not in known and storage.get_modified_time(staged) < cutoff:
            storage.delete(staged)
            removed += 1
    return removed


class FileStaging:
    """A staging file written in place at the upload's offset."""

    def __init__(self, upload: Upload, lease: Lease, *, takeover: bool):
        self.upload, self.start, self.published = upload, upload.offset, False
        self.name = upload.staged_name
        if takeover:
            self.name = self._copy_committed(lease)
        try:
            self.fd = os.open(self.path, os.O_WRONLY)
        except FileNotFoundError:  # a takeover after our claim moved the upload on
            raise LeaseLost from None
        self.position = self.start

    @property
    def path(self) -> str:
        return blob_storage().path(self.name)

    def _copy_committed(self, lease: Lease) -> str:
        """A new staging file holding the bytes the row vouches for; the old one, which
        a stalled PATCH may still write to, is unlinked once the row names the new."""
        name = _new_name(self.upload.pk)
        with open(blob_storage().path(self.upload.staged_name), "rb") as old:
            with open(blob_storage().path(name), "xb") as new:
                _copy_prefix(old, new, self.upload.offset)
        try:
            lease.write(staged_name=name)
        except LeaseLost:
            os.remove(blob_storage().path(name))
            raise
        os.remove(blob_storage().path(self.upload.staged_name))
        return name

    def write(self, chunk: bytes) -> None:
        os.pwrite(self.fd, chunk, self.position)
        self.position += len(chunk)

    def undo(self) -> None:
        """Drop a refused body's bytes."""
        os.ftruncate(self.fd, self.start)

    def state(self) -> dict:
        """Make the bytes durable; the fields that record them in the row."""
        os.fsync(self.fd)
        return {"staged_name": self.name}

    def close(self) -> None:
        os.close(self.fd)

    def publish(self) -> None:
        """Move the (verified) file onto the blob's name."""
        with open(self.path, "rb") as staged:
            write_blob(self.upload.sha256, StagedFile(staged))
        self.published = True

    def discard(self) -> None:
        if not self.published:
            with suppress(FileNotFoundError):
                os.remove(self.path)


class MultipartStaging:
    """The upload's S3 multipart upload: whole parts sent as bytes come, the rest in
    the row."""

    def __init__(self, upload: Upload, lease: Lease):
        self.upload, self.lease, self.published = upload, lease, False
        self.size = part_size(upload.length)
        self.parts = list(upload.parts)
        self.buffer = bytearray(upload.tail or b"")
        self.number = upload.next_part  # the claim set it (and its ceiling)

    def write(self, chunk: bytes) -> None:
        self.buffer += chunk
        while len(self.buffer) >= self.size:
            self._send(bytes(self.buffer[: self.size]))
            del self.buffer[: self.size]

    def _send(self, data: bytes) -> None:
        """One part, sent only while the lease is held (renewed first), numbered below
        the claim's ceiling."""
        self.lease.renew()
        storage = blob_storage()
        try:
            sent = _client().upload_part(
                Bucket=storage.bucket_name,
                Key=_key(self.upload.sha256),
                UploadId=self.upload.multipart_id,
                PartNumber=self.number,
                Body=data,
            )
        except ClientError as error:
            if _code(error) == "NoSuchUpload":  # terminated or expired under us
                raise LeaseLost from None
            raise
        self.parts.append([self.number, sent["ETag"], len(data)])
        self.number += 1

    def undo(self) -> None:
        """Nothing: parts sent for a refused body are not in the row, so never completed."""

    def state(self) -> dict:
        """The fields that record the parts and the tail in the row; the reserve of part
        numbers ends with this PATCH."""
        return {
            "parts": self.parts,
            "tail": bytes(self.buffer),
            "next_part": self.number,
            "part_ceiling": self.number,
        }

    def close(self) -> None:
        """Nothing held open."""

    def publish(self) -> None:
        """Send the rest as the last part and complete the upload onto the blob's key."""
        if self.buffer or not self.parts:
            self._send(bytes(self.buffer))
            self.buffer.clear()
        _client().complete_multipart_upload(
            Bucket=blob_storage().bucket_name,
            Key=_key(self.upload.sha256),
            UploadId=self.upload.multipart_id,
            MultipartUpload={
                "Parts": [{"PartNumber": number, "ETag": etag} for number, etag, _ in self.parts]
            },
        )
        self.published = True

    def discard(self) -> None:
        if not self.published:
            _abort(self.upload.sha256, self.upload.multipart_id)


def _copy_prefix(source, target, size: int) -> None:
    left = size
    while left and (chunk := source.read(min(left, 1024 * 1024))):
        target.write(chunk)
        left -= len(chunk)
    if left:
        raise LeaseLost  # the row vouches for bytes the file lacks: not ours to go on
    target.flush()
    os.fsync(target.fileno())


def _new_name(upload_id) -> str:
    os.makedirs(blob_storage().path(DIRECTORY), exist_ok=True)
    return f"{DIRECTORY}/{upload_id}.{secrets.token_hex(4)}.part"


def _client():
    return blob_storage().connection.meta.client


def _key(sha256: str) -> str:
    return blob_storage()._normalize_name(blob_storage_name(sha256))


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _abort(sha256: str, multipart_id: str) -> None:
    try:
        _client().abort_multipart_upload(
            Bucket=blob_storage().bucket_name, Key=_key(sha256), UploadId=multipart_id
        )
    except ClientError as error:
        if _code(error) != "NoSuchUpload":
            raise
