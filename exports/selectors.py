"""Reads of export and import jobs, shared by the API, the admin and the commands."""

from django.db.models import QuerySet

from .models import Event, ExportJob, ImportJob, Job, WebhookSecret


def _visible(jobs: QuerySet, user) -> QuerySet:
    """The one rule for jobs, used by the API, the event streams and the admin alike: a
    job is seen, and acted on, by whoever started it, and by superusers. Staff status
    opens the admin, not other people's jobs: an export holds whatever its creator could
    read, and an import writes with its creator's rights."""
    jobs = jobs.select_related("created_by", "project")
    if not user.is_authenticated:
        return jobs.none()
    return jobs if user.is_superuser else jobs.filter(created_by=user)


def jobs_for(user) -> QuerySet[ExportJob]:
    return _visible(ExportJob.objects.all(), user)


def imports_for(user) -> QuerySet[ImportJob]:
    return _visible(ImportJob.objects.all(), user)


def events_after(jobs: type[Job], job_id, seq: int) -> QuerySet[Event]:
    events = jobs._meta.get_field("events").related_model
    return events.objects.filter(job_id=job_id, seq__gt=seq).order_by("seq")


def _describe(job: Job) -> dict:
    """What every job shows: state, owner, progress, attempts, error and times."""
    return {
        "id": str(job.id),
        "state": job.state,
        "created_by": job.created_by.get_username() if job.created_by else None,
        "progress": {
            "items_done": job.items_done,
            "items_total": job.items_total,
            "bytes_done": job.bytes_done,
            "bytes_total": job.bytes_total,
        },
        "attempts": job.attempts,
        "ticks": job.ticks,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def describe_job(job: ExportJob) -> dict:
    """An export as operators and clients see it."""
    document = _describe(job)
    document["progress"]["parts_done"] = job.parts_done
    document.update(
        libraries=job.libraries,
        part_writes=job.part_writes,
        bytes_replayed=job.bytes_replayed,
        parts_rewritten=job.parts_rewritten,
        artifact={
            "name": job.artifact_name,
            "size": job.artifact_size,
            "sha256": job.artifact_sha256,
            "expires_at": job.expires_at.isoformat() if job.expires_at else None,
        }
        if job.artifact_name
        else None,
    )
    return document


def describe_import(job: ImportJob) -> dict:
    """An import as operators and clients see it; `files` maps archive ids to new ones."""
    document = _describe(job)
    document.update(
        project=str(job.project_id) if job.project_id else None,
        source={"blob": job.source_blob or None, "size": job.source_size},
        files=job.files,
    )
    return document


def describe_callback(job: ExportJob) -> dict | None:
    """Where the delivery of an export's callback stands, for its owner and operators."""
    if not job.callback_url:
        return None
    next_at = job.callback_next_attempt_at
    return {
        "url": job.callback_url,
        "state": job.callback_state or "pending",
        "attempts": job.callback_attempts,
        "next_attempt_at": next_at.isoformat() if next_at else None,
    }


def webhook_secret_for(user) -> WebhookSecret | None:
    return WebhookSecret.objects.filter(user=user).first() if user else None
