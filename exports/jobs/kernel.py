"""The job kernel: what running an export and running an import have in common.

A worker takes the job's lease under a holder token of its own (`common.leases`), a
heartbeat thread keeps the lease alive, the engine's work looks for a cancel or a lost
lease between two pieces of work, progress goes out at a bounded rate, and the job ends
exactly once: succeeded, failed or cancelled. Every one of those writes, and the clean-up
of checkpoints and shared storage that follows a failure, is fenced by the lease: a
worker that stalled past its lease (SIGSTOP, a long pause, a storage call that hung) and
woke up after another worker took the job over changes nothing. Engines supply only
their work (`Engine`).
"""

import logging
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import timedelta
from typing import ClassVar

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from common.leases import Lease, LeaseLost, new_holder
from filesync.blobstore import BlobMissing

from ..models import ACTIVE_STATES, EventKind, Job, JobState
from .events import record_event

logger = logging.getLogger(__name__)

__all__ = ["Cancelled", "Engine", "JobRun", "LeaseLost", "OutOfTime", "run_job", "stalled_jobs"]

#: How often, at most, the work asks the database whether it was cancelled or lost its lease.
CHECK_SECONDS = 1.0


class Cancelled(Exception):
    """Someone asked the job to stop; its worker noticed between two pieces of work."""


class OutOfTime(Exception):
    """The tick's budget is spent and the checkpoint written: give the job back, queue it."""


def describe_error(error: Exception) -> dict:
    """The error event of a failed job: a stable `code` clients key on, a message for people."""
    code = getattr(error, "code", None)
    if isinstance(code, str) and code:
        return {"code": code, "message": getattr(error, "message", None) or str(error)}
    if isinstance(error, BlobMissing):
        message = f"{error} Restore it from a backup or a replica, then retry."
        return {"code": "blob_missing", "message": message}
    if isinstance(error, (BotoCoreError, ClientError, OSError)):
        message = f"The storage refused a write or a read: {error}"
        return {"code": "storage_error", "message": message}
    if isinstance(error, DatabaseError):
        return {"code": "database_error", "message": f"The database failed: {error}"}
    message = f"Unexpected error ({type(error).__name__}); see the worker's log."
    return {"code": "internal_error", "message": message}


class JobRun:
    """One worker's hold on one job, from taking its lease to its end."""

    def __init__(
        self, lease: Lease, job: Job, on_progress: Callable[[Job], None] | None = None
    ) -> None:
        self.lease, self.job, self.on_progress = lease, job, on_progress
        self.last_check = self.last_progress = 0.0
        self.heartbeat_lost = threading.Event()

    @classmethod
    def take(cls, jobs: type[Job], job_id, worker: str, on_progress=None) -> "JobRun | None":
        """Hold the job if it is active and nobody holds a live lease on it."""
        now = timezone.now()
        lease = Lease.take(
            jobs.objects.filter(state__in=ACTIVE_STATES),
            job_id,
            holder=new_holder(worker),
            seconds=settings.EXPORT_LEASE_SECONDS,
            state=JobState.RUNNING,
            heartbeat_at=now,
            ticks=F("ticks") + 1,
            # A first run, or a takeover from a worker that died holding the lease; a job
            # given back at the end of a tick continues the same attempt.
            attempts=F("attempts")
            + Case(When(worker="", ticks__gt=0, then=Value(0)), default=Value(1)),
            started_at=Case(
                When(started_at__isnull=True, then=Value(now)), default=F("started_at")
            ),
        )
        return cls(lease, jobs.objects.get(pk=job_id), on_progress) if lease else None

    @property
    def holder(self) -> str:
        return self.lease.holder

    def write(self, **fields) -> None:
        """A fenced write to the job's row (a checkpoint, a phase's figures)."""
        self.lease.write(**fields)

    def check(self) -> None:
        """Between two pieces of work: Cancelled or LeaseLost, asked about once a second."""
        if self.heartbeat_lost.is_set():
            raise LeaseLost
        now = time.monotonic()
        if now - self.last_check < CHECK_SECONDS:
            return
        self.last_check = now
        cancel = self.lease.held().values_list("cancel_requested", flat=True).first()
        if cancel is None:
            raise LeaseLost
        if cancel:
            raise Cancelled

    def progress(self, *, force: bool = False, phase: str = "", **figures) -> None:
        """Save the job's figures and tell its listeners, at most every
        EXPORT_PROGRESS_INTERVAL unless forced. `figures` override the job's own counters
        (a part checkpointed on another thread reports what was done when it was cut)."""
        now = time.monotonic()
        if not force and now - self.last_progress < settings.EXPORT_PROGRESS_INTERVAL:
            return
        self.last_progress = now
        job = self.job
        data = {
            "items_done": job.items_done,
            "items_total": job.items_total,
            "bytes_done": job.bytes_done,
            "bytes_total": max(job.bytes_total, job.bytes_done),
            **figures,
        }
        with transaction.atomic():
            self.lease.write(**data)
            record_event(job, EventKind.PROGRESS, {"phase": phase, **data} if phase else data)
        if self.on_progress:
            self.on_progress(job)

    def succeed(self, event: dict, **fields) -> None:
        """Inside the engine's final transaction: the job succeeded (LeaseLost, rolling that
        transaction back, if the job is no longer this worker's)."""
        if not self.lease.release(state=JobState.SUCCEEDED, finished_at=timezone.now(), **fields):
            raise LeaseLost
        record_event(self.job, EventKind.END, event)

    def end(self, engine: "Engine", state: str, kind: str, data: dict) -> bool:
        """Fail or cancel, once: the job's row, the engine's checkpoint rows and the event in
        one transaction, then the engine's shared storage; nothing if the lease is lost."""
        with transaction.atomic():
            if not self.lease.release(
                state=state,
                finished_at=timezone.now(),
                error_code=data.get("code", ""),
                error_message=data.get("message", ""),
            ):
                return False
            engine.discard()
            record_event(self.job, kind, data)
        try:
            engine.release_storage()
        except Exception:  # the reapers remove abandoned parts and sources later
            logger.warning("%s: could not clean up its storage", self, exc_info=True)
        return True

    def give_back(self) -> None:
        """Stop holding the job, keeping its checkpoint, for the next worker to resume."""
        self.lease.release()

    @contextmanager
    def heartbeat(self):
        """Renew the lease every third of its length on a thread (and connection) of its
        own while the block runs: long steps (a blob read, a transaction that writes a
        whole import) keep the job. A whole process that stops (SIGSTOP, a machine that
        froze) stops its heartbeat too, and the job is taken over when the lease runs
        out; a worker stuck for good is killed by the cluster's task timeout."""
        stopped = threading.Event()

        def beat() -> None:
            try:
                while not stopped.wait(self.lease.seconds / 3):
                    try:
                        self.lease.renew(heartbeat_at=timezone.now())
                    except LeaseLost:
                        self.heartbeat_lost.set()
                        return
                    except DatabaseError:  # SQLite is locked while a big write commits
                        logger.info("%s: heartbeat deferred", self, exc_info=True)
            finally:
                connection.close()

        thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{self.job.pk}")
        thread.start()
        try:
            yield
        finally:
            stopped.set()
            thread.join()

    def __str__(self) -> str:
        return f"{self.job._meta.verbose_name} {self.job.pk}"


class Engine:
    """The work of one kind of job, run under a `JobRun`."""

    jobs: ClassVar[type[Job]]

    def __init__(self, run: JobRun, **options) -> None:
        self.run, self.job = run, run.job

    def work(self) -> None:
        """Do the job, calling `run.check()` between pieces of work and ending with
        `run.succeed(...)` inside the transaction that makes the result visible."""
        raise NotImplementedError

    def describe(self, error: Exception) -> dict:
        return describe_error(error)

    def discard(self) -> None:
        """Inside the transaction that fails or cancels the job: drop checkpoint rows."""

    def release_storage(self) -> None:
        """After a failure or cancel committed: remove what the job left in storage."""


def run_job(
    engine: type[Engine],
    job_id,
    *,
    worker: str,
    on_progress: Callable[[Job], None] | None = None,
    requeue: Callable[[object], None] | None = None,
    **options,
) -> str:
    """Run the job under a lease until it ends or its tick is over. Returns what became of
    it: a JobState, 'busy' (another worker holds it) or 'lost' (taken over meanwhile)."""
    run = JobRun.take(engine.jobs, job_id, worker, on_progress)
    if run is None:
        return "busy"
    work = engine(run, **options)
    outcome = JobState.SUCCEEDED
    try:
        with run.heartbeat():
            work.work()
    except OutOfTime:
        run.give_back()
        if requeue:
            requeue(run.job.pk)
        return JobState.RUNNING
    except LeaseLost:
        outcome = "lost"
    except KeyboardInterrupt:  # a command stopped by a signal: the next worker resumes it
        run.give_back()
        raise
    except Cancelled:
        outcome = JobState.CANCELLED
        if not run.end(work, JobState.CANCELLED, EventKind.CANCELLED, {}):
            outcome = "lost"
    except Exception as error:  # every failure ends as an error event, never a broken result
        data = work.describe(error)
        outcome = "lost"
        if run.end(work, JobState.FAILED, EventKind.ERROR, data):
            outcome = JobState.FAILED
            internal = data["code"] == "internal_error"
            logger.log(
                logging.ERROR if internal else logging.WARNING,
                "%s failed: %s",
                run,
                data["message"],
                exc_info=internal,
            )
    if outcome == "lost":
        logger.warning("%s: lease lost by %s, which changed nothing more", run, run.holder)
    return outcome


def cancel_unheld(engine: type[Engine], job: Job) -> bool:
    """Cancel a job no worker holds now (queued, or between two ticks): True if done here;
    False if a worker holds it, which then stops at its next check."""
    run = JobRun.take(type(job), job.pk, "canceller")
    if run is None:
        return False
    return run.end(engine(run), JobState.CANCELLED, EventKind.CANCELLED, {})


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
