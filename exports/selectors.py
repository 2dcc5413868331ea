"""Reads of export and import jobs, shared by the API, the admin and the commands."""

from django.db.models import QuerySet

from .models import Event, ExportJob, ImportJob, Job


def _visible(jobs: QuerySet, user) -> QuerySet:
    """Staff see every job; anyone else their own."""
    jobs = jobs.select_related("created_by")
    return jobs if user.is_staff else jobs.filter(created_by=user)


def jobs_for(user) -> QuerySet[ExportJob]:
    return _visible(ExportJob.objects.all(), user)


def imports_for(user) -> QuerySet[ImportJob]:
    return _visible(ImportJob.objects.select_related("project"), user)


def events_after(jobs: type[Job], job_id, seq: int) -> QuerySet[Event]:
    events = jobs._meta.get_field("events").related_model
    return events.objects.filter(job_id=job_id, seq__gt=seq).order_by("seq")


def describe_job(job: ExportJob) -> dict:
    """A job as operators and clients see it."""
    return {
        "id": str(job.id),
        "state": job.state,
        "libraries": job.libraries,
        "created_by": job.created_by.get_username() if job.created_by else None,
        "progress": {
            "items_done": job.items_done,
            "items_total": job.items_total,
            "bytes_done": job.bytes_done,
            "bytes_total": job.bytes_total,
            "parts_done": job.parts_done,
        },
        "attempts": job.attempts,
        "ticks": job.ticks,
        "part_writes": job.part_writes,
        "bytes_replayed": job.bytes_replayed,
        "parts_rewritten": job.parts_rewritten,
        "artifact": {
            "name": job.artifact_name,
            "size": job.artifact_size,
            "sha256": job.artifact_sha256,
            "expires_at": job.expires_at.isoformat() if job.expires_at else None,
        }
        if job.artifact_name
        else None,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
