"""The scheduled housekeeping: stalled jobs back on the queue, expiry, abandoned parts."""

from datetime import timedelta

import pytest
from django.core.files.storage import storages
from django.utils import timezone
from django_q.brokers import get_broker

from exports import services
from exports.exporting.engine import run_tick
from exports.models import ExportJob, JobState
from exports.tasks import maintain
from tests.exports.conftest import run_to_end

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker():
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


def test_only_stalled_jobs_go_back_on_the_queue(workspace, broker, settings):
    settings.EXPORT_LEASE_SECONDS = 60
    fresh = services.create_export_job(project=workspace.project, enqueue=False)
    dead = services.create_export_job(project=workspace.project, enqueue=False)
    lost = services.create_export_job(project=workspace.project, enqueue=False)
    long_ago = timezone.now() - timedelta(minutes=5)
    ExportJob.objects.filter(pk=dead.pk).update(
        state=JobState.RUNNING, worker="gone", lease_expires_at=long_ago, heartbeat_at=long_ago
    )
    ExportJob.objects.filter(pk=lost.pk).update(created_at=long_ago)

    assert maintain()["requeued"] == 2
    queued = {task[1] for task in broker.dequeue()} | {task[1] for task in broker.dequeue()}
    assert broker.queue_size() == 0 and len(queued) == 2
    assert maintain()["requeued"] == 0  # not again within a lease period
    assert fresh.pk not in set(
        ExportJob.objects.filter(requeued_at__isnull=False).values_list("pk", flat=True)
    )


def test_expired_artifacts_are_deleted_and_their_jobs_expire(workspace, broker):
    job = run_to_end(services.create_export_job(project=workspace.project, enqueue=False))
    assert storages["exports"].exists(job.artifact_name)
    ExportJob.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert maintain()["expired"] == 1
    job.refresh_from_db()
    assert job.state == JobState.EXPIRED and not storages["exports"].exists(job.artifact_name)


def test_parts_of_jobs_that_are_no_longer_active_are_removed(workspace, broker):
    job = services.create_export_job(project=workspace.project, enqueue=False)
    assert run_tick(job.pk, worker="w", tick_seconds=0) == JobState.RUNNING
    ExportJob.objects.filter(pk=job.pk).update(state=JobState.FAILED)  # as if it crashed hard
    active = services.create_export_job(project=workspace.project, enqueue=False)
    assert run_tick(active.pk, worker="w", tick_seconds=0) == JobState.RUNNING
    assert maintain()["abandoned_parts_removed"] == 1
    assert run_to_end(active).state == JobState.SUCCEEDED  # the active job's parts stayed
