"""Export and import jobs: create (pin the plan, take the upload), cancel, and the
housekeeping the scheduler runs."""

import base64
import logging
import os
import secrets
from datetime import timedelta
from typing import BinaryIO
from uuid import UUID, uuid4

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File as DjangoFile
from django.db import transaction
from django.utils import timezone

from filesync.access import require_team_role
from filesync.models import Blob, File, FileLibrary, MediaObject, Project, Role, Snapshot

from .binfile.format import BinfileError
from .binfile.reader import BinfileReader
from .exporting.archive import planned_size
from .exporting.engine import ExportEngine
from .exporting.sinks import IMPORTS, PARTIALS, exports_storage, uses_s3
from .importing.engine import ImportEngine, import_limits, remove_source
from .jobs.events import record_event
from .jobs.kernel import cancel_unheld, stalled_jobs
from .jobs.queue import enqueue_export, enqueue_import
from .models import (
    ACTIVE_STATES,
    EventKind,
    ExportJob,
    ImportJob,
    Job,
    JobState,
    LibrariesMode,
    PinnedFile,
    PinnedRelation,
    WebhookSecret,
)

logger = logging.getLogger(__name__)


def _linked_libraries(file_ids: set[UUID]) -> list[tuple[UUID, UUID]]:
    return list(
        FileLibrary.objects.filter(file_id__in=file_ids).values_list("file_id", "library_id")
    )


def _library_closure(file_ids: set[UUID]) -> tuple[set[UUID], list[tuple[UUID, UUID]]]:
    """Libraries used by the files, transitively, and every link among them all."""
    seen, frontier, links = set(file_ids), set(file_ids), set()
    while frontier:
        found = _linked_libraries(frontier)
        links.update(found)
        frontier = {library for _, library in found} - seen
        seen |= frontier
    return seen - file_ids, sorted(links)


def _files_to_export(*, file_ids, project, snapshot) -> list[tuple[File, Snapshot | None]]:
    if sum(x is not None and x != [] for x in (file_ids, project, snapshot)) != 1:
        raise ValidationError("Give exactly one of: files, a project, a snapshot.")
    if snapshot is not None:
        return [(snapshot.file, snapshot)]
    if project is not None:
        files = list(project.files.filter(deleted_at__isnull=True).order_by("id"))
        if not files:
            raise ValidationError({"project": "The project has no files to export."})
        return [(file, None) for file in files]
    files = {f.id: f for f in File.objects.filter(pk__in=file_ids, deleted_at__isnull=True)}
    if missing := [str(i) for i in file_ids if UUID(str(i)) not in files]:
        raise ValidationError({"files": f"No such file: {', '.join(missing)}."})
    return [(files[i], None) for i in sorted(files)]


NO_WEBHOOK_SECRET = (
    "Callbacks are signed with your webhook secret, and you have none yet: make one with "
    "POST /api/webhook-secret/ (or ask an operator to run manage.py webhook_secret --user "
    "NAME), then create the export again."
)


def create_export_job(
    *,
    user=None,
    file_ids: list[UUID] | None = None,
    project: Project | None = None,
    snapshot: Snapshot | None = None,
    libraries: str = LibrariesMode.ALL,
    callback_url: str = "",
    retry_of: ExportJob | None = None,
    enqueue: bool = True,
) -> ExportJob:
    """Pin what the job will export, so its work and its total are known up front.

    `user=None` is an operator at the command line; anyone else must be able to read
    every file (an outsider gets a 404, as for any file they cannot see).
    """
    if callback_url and not WebhookSecret.objects.filter(user=user).exists():
        raise ValidationError({"callback_url": NO_WEBHOOK_SECRET})
    if libraries not in LibrariesMode.values:
        raise ValidationError({"libraries": f"Must be one of {', '.join(LibrariesMode.values)}."})
    chosen = _files_to_export(file_ids=file_ids, project=project, snapshot=snapshot)
    if user is not None:
        for team_id in {file.project.team_id for file, _ in chosen}:
            require_team_role(user, team_id)
    exported = {file.id for file, _ in chosen}
    live = [file.id for file, snap in chosen if snap is None]
    if MediaObject.objects.filter(file_id__in=live, blob__isnull=True).exists():
        raise ValidationError(
            {"files": "Some media are still uploading (pending); export once they are ready."}
        )
    extra, links = _library_closure(exported) if libraries != LibrariesMode.DETACH else (set(), [])
    if libraries == LibrariesMode.MERGE:
        extra = {library for file, library in _linked_libraries(exported)} - exported
        links = []
    role = (
        PinnedFile.Role.LIBRARY if libraries == LibrariesMode.ALL else PinnedFile.Role.MERGE_SOURCE
    )
    pins = [(file, snap, PinnedFile.Role.FILE) for file, snap in chosen] + [
        (file, None, role) for file in File.objects.filter(pk__in=extra).order_by("id")
    ]
    with transaction.atomic():
        # Each file's revision is read under its row's lock, taken in id order as every
        # multi-file lock is: an edit racing this either moved it first, or, waiting for
        # the lock, finds the pins and preserves what they pinned (filesync.preserving).
        revisions = dict(
            File.objects.select_for_update()
            .filter(pk__in=[file.pk for file, _, _ in pins])
            .order_by("pk")
            .values_list("pk", "revision")
        )
        job = ExportJob.objects.create(
            created_by=user,
            project=project or chosen[0][0].project,
            libraries=libraries,
            callback_url=callback_url,
            retry_of=retry_of,
        )
        PinnedFile.objects.bulk_create(
            PinnedFile(
                job=job,
                position=n,
                file=file,
                snapshot=snap,
                role=pin_role,
                revision=snap.revision if snap else revisions[file.pk],
            )
            for n, (file, snap, pin_role) in enumerate(pins)
        )
        PinnedRelation.objects.bulk_create(
            PinnedRelation(job=job, file_id=file_id, library_id=library_id)
            for file_id, library_id in links
        )
        job.items_total, job.bytes_total = planned_size(job)
        job.save(update_fields=["items_total", "bytes_total"])
        record_event(job, EventKind.QUEUED, {"items_total": job.items_total})
        if enqueue:
            transaction.on_commit(lambda: enqueue_export(job.pk))
    return job


def request_cancel(*, job: Job) -> Job:
    """Cancel now if no worker holds the job; else ask its worker, which stops within a second."""
    if job.state not in ACTIVE_STATES:
        raise ValidationError(
            f"The job is {job.state}; only a queued or running job can be cancelled."
        )
    jobs = type(job)
    jobs.objects.filter(pk=job.pk).update(cancel_requested=True)
    cancel_unheld(ExportEngine if isinstance(job, ExportJob) else ImportEngine, job)
    job.refresh_from_db()
    return job


def retry_export(*, job: ExportJob, user=None) -> ExportJob:
    """A new job for the same files, mode and callback, pinned at their current revisions."""
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise ValidationError(
            f"Only a failed or cancelled export can be retried; this one is {job.state}."
        )
    pins = list(job.pinned.filter(role=PinnedFile.Role.FILE).select_related("snapshot"))
    snapshot = pins[0].snapshot if len(pins) == 1 else None
    if snapshot is not None and snapshot.kind != Snapshot.Kind.USER:
        snapshot = None  # a revision kept for the job while it ran: the file is what it exported
    return create_export_job(
        user=user,
        file_ids=None if snapshot else [pin.file_id for pin in pins],
        snapshot=snapshot,
        libraries=job.libraries,
        callback_url=job.callback_url,
        retry_of=job,
    )


def delete_artifact(*, job: ExportJob) -> None:
    """Delete a finished job's artifact now; its download then answers 410."""
    if job.state == JobState.SUCCEEDED:
        exports_storage().delete(job.artifact_name)
        ExportJob.objects.filter(pk=job.pk, state=JobState.SUCCEEDED).update(
            state=JobState.EXPIRED, expires_at=timezone.now()
        )


def requeue_stalled_jobs() -> list[UUID]:
    """Queue again the export and import jobs no worker is moving (see `stalled_jobs`).
    Jobs waiting their turn in a healthy queue are left alone; a duplicate is harmless
    anyway, since the lease lets only one worker in."""
    requeued = []
    for jobs, enqueue in ((ExportJob, enqueue_export), (ImportJob, enqueue_import)):
        for job_id in stalled_jobs(jobs):
            logger.info("%s %s: stalled, queued again", jobs._meta.verbose_name, job_id)
            enqueue(job_id)
            requeued.append(job_id)
    return requeued


def expire_artifacts() -> int:
    """Delete artifacts past their expiry; their jobs become `expired` (downloads answer 410)."""
    expired = ExportJob.objects.filter(state=JobState.SUCCEEDED, expires_at__lt=timezone.now())
    count = 0
    for job in expired:
        exports_storage().delete(job.artifact_name)
        ExportJob.objects.filter(pk=job.pk, state=JobState.SUCCEEDED).update(state=JobState.EXPIRED)
        count += 1
    return count


def remove_abandoned_parts() -> int:
    """Partial files and multipart uploads left by jobs that are no longer active."""
    active = {
        str(i)
        for i in ExportJob.objects.filter(state__in=ACTIVE_STATES).values_list("id", flat=True)
    }
    removed = 0
    if uses_s3():
        storage = exports_storage()
        client = storage.connection.meta.client
        prefix = storage._normalize_name("artifacts/")
        uploads = client.list_multipart_uploads(Bucket=storage.bucket_name, Prefix=prefix)
        for upload in uploads.get("Uploads", []):
            job_id = os.path.basename(upload["Key"]).removesuffix(".zip")
            if job_id not in active:
                client.abort_multipart_upload(
                    Bucket=storage.bucket_name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                removed += 1
        return removed
    storage = exports_storage()
    if not storage.exists(PARTIALS):
        return 0
    for name in storage.listdir(PARTIALS)[1]:
        if name.removesuffix(".zip.part") not in active:
            storage.delete(f"{PARTIALS}/{name}")
            removed += 1
    return removed


def remove_abandoned_imports() -> int:
    """Uploaded archives no active import will read: their job ended (and its worker died
    before removing them), or never came to be. Fresh ones are left alone, since a job
    row is committed only after its upload is saved."""
    storage = exports_storage()
    if not uses_s3() and not storage.exists(IMPORTS):
        return 0
    active = {
        str(i)
        for i in ImportJob.objects.filter(state__in=ACTIVE_STATES).values_list("id", flat=True)
    }
    settled = timezone.now() - timedelta(seconds=settings.EXPORT_LEASE_SECONDS)
    removed = 0
    for name in storage.listdir(IMPORTS)[1]:
        path = f"{IMPORTS}/{name}"
        if name.removesuffix(".binfile") in active or storage.get_modified_time(path) > settled:
            continue
        storage.delete(path)
        removed += 1
    return removed


def create_import_job(
    *,
    user,
    project: Project,
    upload: BinaryIO | None = None,
    blob: Blob | None = None,
    enqueue: bool = True,
) -> ImportJob:
    """Queue an import of a binfile into `project`, from an upload or a stored blob (what a
    resumable upload became). An upload is refused at once when its directory or manifest
    is (zip-slip, bombs, a newer format...); the rest is judged by the job before it writes.
    """
    if user is not None:
        require_team_role(user, project.team_id, Role.EDITOR)
    if (upload is None) == (blob is None):
        raise ValidationError("Give exactly one of: an uploaded binfile, a blob.")
    job = ImportJob(id=uuid4(), created_by=user, project=project)
    if upload is not None:
        size = upload.seek(0, os.SEEK_END)
        if size > settings.IMPORT_MAX_BYTES:
            raise BinfileError(
                f"The archive has {size} bytes; at most {settings.IMPORT_MAX_BYTES} are accepted.",
                code="too_large",
            )
        upload.seek(0)
        BinfileReader(upload, import_limits())
        upload.seek(0)
        job.source_name = exports_storage().save(f"{IMPORTS}/{job.id}.binfile", DjangoFile(upload))
        job.source_size = size
    else:
        job.source_blob, job.source_size = blob.sha256, blob.size
    try:
        with transaction.atomic():
            job.save(force_insert=True)
            record_event(job, EventKind.QUEUED, {"project": str(project.pk)})
            if enqueue:
                transaction.on_commit(lambda: enqueue_import(job.pk))
    except BaseException:
        remove_source(job)
        raise
    return job


def issue_webhook_secret(*, user) -> tuple[WebhookSecret, str]:
    """A new signing key for the user's callbacks, replacing any earlier one, and its value,
    which the caller shows once: 32 random bytes, `whsec_` and base64 as Standard Webhooks
    writes them (its library verifies, it does not make keys)."""
    value = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    secret, _ = WebhookSecret.objects.update_or_create(
        user=user, defaults={"secret": value, "created_at": timezone.now()}
    )
    return secret, value
