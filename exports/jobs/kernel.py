"""Leases on jobs, export and import alike: one worker at a time, and a dead worker's job
is taken over once its lease runs out."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from exports.models import ACTIVE_STATES, Job, JobState


class LeaseLost(Exception):
    """Another worker holds the job now; this one must stop writing at once."""


class Cancelled(Exception):
    """Someone asked the job to stop; its worker noticed between two pieces of work."""


def lease_until(now=None):
    return (now or timezone.now()) + timedelta(seconds=settings.EXPORT_LEASE_SECONDS)


def acquire_lease(jobs: type[Job], job_id, worker: str) -> Job | None:
    """Take the job if it is active and nobody holds a live lease on it."""
    now = timezone.now()
    taken = (
        jobs.objects.filter(pk=job_id, state__in=ACTIVE_STATES)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
        .update(
            state=JobState.RUNNING,
            lease_expires_at=lease_until(now),
            heartbeat_at=now,
            ticks=F("ticks") + 1,
            # A first run, or a takeover from a worker that died holding the lease.
            attempts=F("attempts")
            + Case(When(worker="", ticks__gt=0, then=Value(0)), default=Value(1)),
            worker=worker,
            started_at=Case(
                When(started_at__isnull=True, then=Value(now)), default=F("started_at")
            ),
        )
    )
    return jobs.objects.get(pk=job_id) if taken else None


def renew_lease(job: Job, worker: str, **fields) -> None:
    """Prove the worker is alive (and save `fields`); LeaseLost if it no longer holds it."""
    now = timezone.now()
    if (
        not type(job)
        .objects.filter(pk=job.pk, worker=worker)
        .update(heartbeat_at=now, lease_expires_at=lease_until(now), **fields)
    ):
        raise LeaseLost


def release_lease(job: Job, worker: str) -> None:
    type(job).objects.filter(pk=job.pk, worker=worker).update(worker="", lease_expires_at=None)


def stalled_jobs(jobs: type[Job]) -> list:
    """Jobs no worker is moving: a lease that expired (its worker died), or no lease and no
    sign of life for a whole lease period (its queued task was lost). Each is marked as
    requeued, so the next look leaves it a lease period to start."""
    now = timezone.now()
    lease = timedelta(seconds=settings.EXPORT_LEASE_SECONDS)
    quiet = Q(heartbeat_at__lt=now - lease) | Q(
        heartbeat_at__isnull=True, created_at__lt=now - lease
    )
    stalled = (
        jobs.objects.filter(state__in=ACTIVE_STATES)
        .filter(Q(lease_expires_at__lt=now) | (Q(lease_expires_at__isnull=True) & quiet))
        .filter(Q(requeued_at__isnull=True) | Q(requeued_at__lt=now - lease))
    )
    job_ids = list(stalled.values_list("id", flat=True))
    jobs.objects.filter(pk__in=job_ids).update(requeued_at=now)
    return job_ids
