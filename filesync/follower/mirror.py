"""One download: fetch a file from the leader, its missing blobs verified, and write it
here exactly as the leader has it (same ids, revision and deletion state).

The file comes whole from `GET /api/sync/files/<id>` (JSON lines: the file, its pages,
its media, then its revision read again); a file that changed underway is fetched again.
Blobs are verified by sha256 before they are stored. The write is one transaction
(taking the feed's lock first, like the feed applier, so the two never deadlock) that
ends by finishing the claim, so a download that was cancelled (the file was deleted on
the leader meanwhile) or taken over writes nothing.
"""

from dataclasses import dataclass
from pathlib import Path

import orjson
from django.conf import settings
from django.db import transaction
from django.utils.dateparse import parse_datetime

from common.leases import Lease
from filesync import blobstore
from filesync.client import SyncClient, SyncError
from filesync.copying import replace_pages
from filesync.feed import lock_feed, record_change
from filesync.models import Blob, ChangeKind, File, FileLibrary, MediaObject, Project, Team
from filesync.preserving import preserve_pinned
from filesync.selectors import PageData
from filesync.services import store_blob

from . import services
from .models import Download, PendingLink


class Gone(Exception):
    """The leader has no such file for us (purged, or no longer visible)."""


class Retry(Exception):
    """A failure that may pass: the file changed underway, a blob arrived corrupted..."""


class Refused(Exception):
    """A failure that will not pass by retrying (the leader refuses us)."""


@dataclass
class Fetched:
    file: dict
    pages: list[dict]
    media: list[dict]

    @property
    def revision(self) -> int:
        return self.file["revision"]


def fetch(client: SyncClient, file_id) -> Fetched:
    try:
        response = client.request("GET", f"/api/sync/files/{file_id}")
    except SyncError as error:
        if error.status == 404:
            raise Gone(str(error)) from None
        raise Refused(str(error)) from None
    records = [orjson.loads(line) for line in response.content.splitlines() if line]
    if not records or "file" not in records[0] or "end" not in records[-1]:
        raise Retry(f"Incomplete answer for file {file_id}.")
    fetched = Fetched(
        file=records[0]["file"],
        pages=[r["page"] for r in records if "page" in r],
        media=[r["media"] for r in records if "media" in r],
    )
    if records[-1]["end"]["revision"] != fetched.revision:
        raise Retry(f"File {file_id} changed while it was fetched.")
    return fetched


def staging(download: Download) -> Path:
    """Where a download's blobs land before they are stored: one directory per row, so the
    next attempt at the row (after a worker died mid-blob) resumes the partial blob."""
    return Path(settings.FILE_UPLOAD_TEMP_DIR) / "follower" / str(download.pk)


def fetch_blobs(client: SyncClient, fetched: Fetched, claim: services.Claim) -> int:
    """Store the ready blobs this follower lacks, each verified; the bytes fetched.
    LeaseLost as soon as a renewal finds the claim gone."""
    fetched_bytes = 0
    wanted = {m["sha256"]: m["mtype"] for m in fetched.media if m["ready"]}
    have = set(Blob.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    for sha256, content_type in sorted(wanted.items()):
        if sha256 in have and blobstore.blob_exists(sha256):
            continue
        target = staging(claim.download) / sha256
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # The claim is renewed as each piece arrives: a blob that takes longer
            # than the lease must not look abandoned to the other workers.
            client.download(
                sha256,
                target,
                progress=lambda held, before=fetched_bytes: claim.lease.renew(
                    bytes_done=before + held
                ),
                verify=False,  # here, with the CRC-32 in the same pass
            )
        except SyncError as error:
            raise Retry(f"Blob {sha256}: {error}") from None
        with open(target, "rb") as stream:
            digest = blobstore.digest_stream(stream)
            if digest.sha256 != sha256:
                target.unlink()
                raise Retry(f"Downloaded bytes do not hash to {sha256}; removed them.")
            stream.seek(0)
            store_blob(
                stream=blobstore.StagedFile(stream),
                content_type=content_type,
                verified=digest,
            )
        target.unlink(missing_ok=True)  # moved into the store already, or copied there
        fetched_bytes += digest.size
        claim.lease.renew(bytes_done=fetched_bytes)
    return fetched_bytes


def write(fetched: Fetched, lease: Lease) -> File:
    """Make the local file what the leader sent, then finish the claim, in one transaction
    (rolled back by the LeaseLost of a claim no longer held)."""
    attrs = fetched.file
    with transaction.atomic():
        lock_feed()  # first, as the feed applier does: one lock order, no deadlock
        local = File.objects.select_for_update().filter(pk=attrs["id"]).first()
        if local is not None and local.revision > fetched.revision:
            services.finish(lease, fetched.revision)  # a newer copy is here
            return local
        if local is not None:
            preserve_pinned(local)
        team, _ = Team.objects.update_or_create(
            pk=attrs["team"]["id"], defaults={"name": attrs["team"]["name"]}
        )
        project, _ = Project.objects.update_or_create(
            pk=attrs["project"]["id"], defaults={"team": team, "name": attrs["project"]["name"]}
        )
        file, created = File.objects.update_or_create(
            pk=attrs["id"],
            defaults={
                "project": project,
                "name": attrs["name"],
                "is_library": attrs["is_library"],
                "revision": attrs["revision"],
                "data_version": attrs["data_version"],
                "features": attrs["features"],
                "assets": attrs["assets"],
                "deleted_at": parse_datetime(attrs["deleted_at"] or ""),
                "purge_after": parse_datetime(attrs["purge_after"] or ""),
            },
        )
        File.objects.filter(pk=file.pk).update(
            created_at=parse_datetime(attrs["created_at"]),
            modified_at=parse_datetime(attrs["modified_at"]),
        )
        replace_pages(
            file, (PageData(p["id"], p["index"], p["name"], p["objects"]) for p in fetched.pages)
        )
        _write_media(file, fetched.media)
        _write_links(file, attrs["libraries"])
        record_change(
            kind=ChangeKind.FILE_CREATED if created else ChangeKind.FILE_UPDATED, file=file
        )
        services.finish(lease, fetched.revision)
    return file


def _write_media(file: File, media: list[dict]) -> None:
    file.media.exclude(pk__in=[m["id"] for m in media]).delete()
    for item in media:
        MediaObject.objects.update_or_create(
            pk=item["id"],
            defaults={
                "file": file,
                "sha256": item["sha256"],
                "blob_id": item["sha256"] if item["ready"] else None,
                "name": item["name"],
                "mtype": item["mtype"],
                "width": item["width"],
                "height": item["height"],
            },
        )


def _write_links(file: File, libraries: list[str]) -> None:
    """Links to libraries already here are made; the others wait as PendingLinks, made
    when their library arrives (this file may be such a library for others)."""
    file.library_links.exclude(library_id__in=libraries).delete()
    PendingLink.objects.filter(file_id=file.pk).exclude(library_id__in=libraries).delete()
    present = set(File.objects.filter(pk__in=libraries).values_list("pk", flat=True))
    for library in libraries:
        if any(str(pk) == library for pk in present):
            FileLibrary.objects.get_or_create(file=file, library_id=library)
        else:
            PendingLink.objects.get_or_create(file_id=file.pk, library_id=library)
    waiting = PendingLink.objects.filter(library_id=file.pk)
    users = set(File.objects.filter(pk__in=waiting.values("file_id")).values_list("pk", flat=True))
    for link in waiting.filter(file_id__in=users):
        FileLibrary.objects.get_or_create(file_id=link.file_id, library=file)
    waiting.filter(file_id__in=users).delete()
