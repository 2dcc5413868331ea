"""The job kernel's fence: a worker that lost its lease changes nothing, whatever it was
doing when it noticed (failing, being cancelled, checkpointing, publishing, importing).

"Lost" is made the way it happens: another worker takes the job over (its holder token
in the row) while this one is busy, and this one then fails, or carries on."""

import io
import threading

import pytest
from django.db import connection
from django.utils import timezone

from exports import services
from exports.exporting import sinks
from exports.exporting.engine import ExportEngine, run_tick
from exports.importing.engine import ImportEngine, run_import
from exports.jobs.kernel import JobRun
from exports.models import ExportJob, ImportJob, JobEvent, JobState
from tests.exports.conftest import run_to_end
from tests.exports.test_import import export_bytes
from tests.snapshot import store_state, unfinished_uploads
from tests.waiting import patience, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

THIEF = "other-node:4242:abcdef01/0123456789"


def take_over(jobs) -> None:
    """Another worker holds every active job now, as after this one's lease ran out."""
    jobs.objects.filter(state__in=("queued", "running")).update(
        worker=THIEF, lease_expires_at=timezone.now() + timezone.timedelta(minutes=5)
    )


def export(workspace) -> ExportJob:
    return services.create_export_job(project=workspace.project, enqueue=False)


def on_call(monkeypatch, cls, name: str, nth: int, then, when=lambda: True):
    """Run `then(original, *args)` at the `nth` call of `cls.name` for which `when()` holds
    (the other calls as before)."""
    original = getattr(cls, name)
    calls = []
    due = []

    def patched(*args, **kwargs):
        calls.append(args)
        if not due and when():
            due.append(len(calls) + nth - 1)
        if due and len(calls) == due[0]:
            return then(original, *args, **kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(cls, name, patched)
    return calls


def test_a_worker_that_lost_its_lease_does_not_fail_the_job(workspace, monkeypatch):
    """The issue's case: the storage timed out for the old worker after the new one took
    over. Its failure is nobody's now: no error event, checkpoint and parts stay."""
    job = export(workspace)
    seen = {}

    def steal_then_time_out(original, engine):
        take_over(ExportJob)
        seen["before"] = store_state()
        raise OSError("Read timed out")

    on_call(
        monkeypatch,
        ExportEngine,
        "_between_entries",
        1,
        steal_then_time_out,
        when=lambda: job.parts.exists(),  # a checkpoint the failure would have dropped
    )
    assert run_tick(job.pk, worker="stalled") == "lost"
    assert store_state() == seen["before"]
    job.refresh_from_db()
    assert (job.state, job.worker, job.error_code) == (JobState.RUNNING, THIEF, "")
    assert job.parts.exists()
    if sinks.uses_s3():  # the shared multipart upload is not aborted under the new holder
        assert unfinished_uploads("exports")


def test_a_worker_that_lost_its_lease_does_not_cancel_the_job(workspace, monkeypatch):
    job = export(workspace)
    seen = {}

    def steal_and_ask_to_cancel(original, engine):
        take_over(ExportJob)
        ExportJob.objects.filter(pk=job.pk).update(cancel_requested=True)
        engine.run.last_check = 0  # the next check asks the database at once
        seen["before"] = store_state()
        return original(engine)

    on_call(monkeypatch, ExportEngine, "_between_entries", 4, steal_and_ask_to_cancel)
    assert run_tick(job.pk, worker="stalled") == "lost"
    assert store_state() == seen["before"]
    assert not JobEvent.objects.filter(job=job, kind="cancelled").exists()


def test_a_worker_that_lost_its_lease_writes_no_more_parts_checkpoints_or_progress(
    workspace, monkeypatch
):
    job = export(workspace)
    seen = {}
    sink_class = sinks.S3MultipartSink if sinks.uses_s3() else sinks.FilesystemSink

    def write_then_lose(original, sink, number, data):
        etag = original(sink, number, data)  # this part lands; its checkpoint must not
        take_over(ExportJob)
        seen["before"] = store_state()
        return etag

    writes = on_call(monkeypatch, sink_class, "write_part", 2, write_then_lose)
    assert run_tick(job.pk, worker="stalled") == "lost"
    assert store_state() == seen["before"]
    assert len(writes) == 2  # the fence stopped part 3 before it reached the storage
    assert list(job.parts.values_list("number", flat=True)) == [1]


def test_a_worker_that_lost_its_lease_does_not_publish(workspace, monkeypatch):
    job = export(workspace)
    seen = {}

    def steal_before_publishing(original, engine):
        take_over(ExportJob)
        seen["before"] = store_state()
        return original(engine)

    on_call(monkeypatch, ExportEngine, "_publish", 1, steal_before_publishing)
    assert run_tick(job.pk, worker="stalled") == "lost"
    assert store_state() == seen["before"]
    assert not JobEvent.objects.filter(job=job, kind__in=("end", "error")).exists()
    # The new holder takes it from the checkpoint to the same archive.
    ExportJob.objects.filter(pk=job.pk).update(worker="", lease_expires_at=None)
    assert run_to_end(job).state == JobState.SUCCEEDED


def test_an_import_whose_worker_lost_its_lease_writes_nothing(workspace, editor, monkeypatch):
    data = export_bytes(project=workspace.project)
    job = services.create_import_job(
        project=workspace.project, user=editor, upload=io.BytesIO(data), enqueue=False
    )
    seen = {}

    def steal_then_write(original, engine, reader, plan):
        take_over(ImportJob)
        seen["before"] = store_state()
        return original(engine, reader, plan)

    on_call(monkeypatch, ImportEngine, "_write", 1, steal_then_write)
    assert run_import(job.pk, worker="stalled") == "lost"
    assert store_state() == seen["before"]


def test_a_job_given_back_at_the_end_of_a_tick_continues_the_same_attempt(workspace):
    job = export(workspace)
    assert run_tick(job.pk, worker="first", tick_seconds=0) == JobState.RUNNING
    job = run_to_end(job)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
    assert job.ticks >= 2


def test_each_hold_has_its_own_token(workspace):
    job = export(workspace)
    first = JobRun.take(ExportJob, job.pk, "same-worker")
    first.give_back()
    second = JobRun.take(ExportJob, job.pk, "same-worker")
    assert first.holder != second.holder
    assert not first.lease.release()  # the first hold is over, even for the same worker
    job.refresh_from_db()
    assert job.worker == second.holder


def test_the_heartbeat_keeps_a_busy_worker_s_lease(workspace, monkeypatch, settings):
    """A long step (a blob read that takes its time) does not let the lease run out: the
    heartbeat renews it on its own thread, so no second worker gets in meanwhile."""
    settings.EXPORT_LEASE_SECONDS = 0.9
    job = export(workspace)
    blocked, release = threading.Event(), threading.Event()

    def block(original, engine):
        blocked.set()
        assert release.wait(patience(60))
        return original(engine)

    on_call(monkeypatch, ExportEngine, "_between_entries", 2, block)
    outcome = {}

    def work() -> None:
        try:
            outcome["first"] = run_tick(job.pk, worker="slow")
        finally:
            connection.close()  # this thread's own, or the test database cannot be dropped

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        assert blocked.wait(patience(60))
        first = ExportJob.objects.get(pk=job.pk).lease_expires_at
        wait_for(
            lambda: (
                ExportJob.objects.get(pk=job.pk).lease_expires_at > first
                and ExportJob.objects.get(pk=job.pk).lease_expires_at > timezone.now()
            ),
            timeout=30,
            what="the heartbeat to renew the lease",
        )
        assert run_tick(job.pk, worker="eager") == "busy"
    finally:
        release.set()
        worker.join(patience(120))
    assert outcome["first"] == JobState.SUCCEEDED
