"""Part sinks: where an archive's bytes go, a part at a time, until it is published.

A part is durable once `write_part` returns; the engine checkpoints only after that.
Parts are written at fixed offsets (part n starts at (n - 1) * part_size), so a late
write by a worker that lost its lease puts the same bytes in the same place.
"""

import os
from typing import Protocol

from django.core.files.storage import storages

from common.http import presigned_download_url

ARTIFACTS = "artifacts"
PARTIALS = "partial"
#: Uploaded binfiles waiting for their import job.
IMPORTS = "imports"


class PartSink(Protocol):
    def begin(self) -> dict: ...
    def resume(self, flushed: int) -> int: ...
    def write_part(self, number: int, data: bytes) -> str: ...
    def publish(self, etags: list[str], size: int) -> str: ...
    def abort(self) -> None: ...


def exports_storage():
    return storages["exports"]


def artifact_name(job_id) -> str:
    return f"{ARTIFACTS}/{job_id}.zip"


class FilesystemSink:
    """A partial file under the exports storage, renamed into place when whole."""

    def __init__(self, storage, job_id, part_size: int):
        self.storage = storage
        self.part_size = part_size
        self.partial = storage.path(f"{PARTIALS}/{job_id}.zip.part")
        self.name = artifact_name(job_id)

    def begin(self) -> dict:
        os.makedirs(os.path.dirname(self.partial), exist_ok=True)
        with open(self.partial, "wb"):
            pass
        return {}

    def resume(self, flushed: int) -> int:
        """Cut off whatever was written after the last checkpoint; return how much that was."""
        with open(self.partial, "r+b") as partial:
            beyond = max(0, os.fstat(partial.fileno()).st_size - flushed)
            partial.truncate(flushed)
        return beyond

    def write_part(self, number: int, data: bytes) -> str:
        fd = os.open(self.partial, os.O_WRONLY)
        try:
            os.pwrite(fd, data, (number - 1) * self.part_size)
            os.fsync(fd)
        finally:
            os.close(fd)
        return ""

    def publish(self, etags: list[str], size: int) -> str:
        with open(self.partial, "r+b") as partial:
            partial.truncate(size)
        final = self.storage.path(self.name)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(self.partial, final)
        return self.name

    def abort(self) -> None:
        try:
            os.remove(self.partial)
        except FileNotFoundError:
            pass


class S3MultipartSink:
    """An S3 multipart upload, through the client django-storages already configured."""

    def __init__(self, storage, job_id, part_size: int, upload_id: str = ""):
        self.part_size = part_size
        self.client = storage.connection.meta.client
        self.bucket = storage.bucket_name
        self.name = artifact_name(job_id)
        self.key = storage._normalize_name(self.name)
        self.upload_id = upload_id

    def begin(self) -> dict:
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=self.key, ContentType="application/zip"
        )
        self.upload_id = upload["UploadId"]
        return {"upload_id": self.upload_id}

    def resume(self, flushed: int) -> int:
        """Parts past the checkpoint stay until overwritten by the same numbers; their size
        says what a dead worker had written after its last checkpoint."""
        listed = self.client.list_parts(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        done = flushed // self.part_size
        return sum(p["Size"] for p in listed.get("Parts", []) if p["PartNumber"] > done)

    def write_part(self, number: int, data: bytes) -> str:
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        return answer["ETag"]

    def publish(self, etags: list[str], size: int) -> str:
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={
                "Parts": [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(etags, 1)]
            },
        )
        return self.name

    def abort(self) -> None:
        if self.upload_id:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )


def uses_s3() -> bool:
    return hasattr(exports_storage(), "bucket_name")


def sink_for(job) -> PartSink:
    storage = exports_storage()
    if uses_s3():
        return S3MultipartSink(storage, job.id, job.part_size, job.sink_state.get("upload_id", ""))
    return FilesystemSink(storage, job.id, job.part_size)


def artifact_location(name: str) -> str:
    """Where an operator finds the artifact: a path, or an s3:// URI."""
    storage = exports_storage()
    if uses_s3():
        return f"s3://{storage.bucket_name}/{storage._normalize_name(name)}"
    return storage.path(name)


def copy_artifact(name: str, destination) -> None:
    """Stream the artifact out of storage into a local file, a chunk at a time."""
    with exports_storage().open(name, "rb") as artifact, open(destination, "wb") as out:
        while chunk := artifact.read(1024 * 1024):
            out.write(chunk)


def artifact_opener(name: str):
    return lambda: exports_storage().open(name, "rb")


def artifact_presigned_url(name: str, *, filename: str) -> str | None:
    return presigned_download_url(exports_storage(), name, filename=filename)
