"""The lease primitive on its own: one holder at a time, and every write fenced by it."""

import pytest
from django.db import transaction
from django.utils import timezone

from common.leases import Lease, LeaseLost, new_holder
from exports.models import ExportJob

pytestmark = pytest.mark.django_db


def take(job, worker: str, seconds: float = 60, **fields) -> Lease | None:
    return Lease.take(
        ExportJob.objects.all(), job.pk, holder=new_holder(worker), seconds=seconds, **fields
    )


def row(job) -> dict:
    return ExportJob.objects.values("worker", "lease_expires_at", "items_done").get(pk=job.pk)


def test_one_holder_at_a_time_until_the_lease_runs_out():
    job = ExportJob.objects.create()
    first = take(job, "a", items_done=1)
    assert first and row(job)["worker"] == first.holder and row(job)["items_done"] == 1
    assert take(job, "b") is None  # held, and not yet run out
    ExportJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    second = take(job, "b")
    assert second and row(job)["worker"] == second.holder


def test_a_holder_that_lost_the_row_writes_nothing():
    job = ExportJob.objects.create()
    stale = take(job, "a")
    ExportJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    current = take(job, "a")  # the same worker name, another hold
    before = row(job)
    with pytest.raises(LeaseLost):
        stale.write(items_done=99)
    with pytest.raises(LeaseLost):
        stale.renew(items_done=99)
    assert not stale.release(items_done=99)
    with pytest.raises(LeaseLost), transaction.atomic():
        stale.lock()
    assert row(job) == before
    current.renew(items_done=5)
    assert row(job)["items_done"] == 5 and row(job)["lease_expires_at"] > before["lease_expires_at"]


def test_release_frees_the_row_and_ends_the_hold():
    job = ExportJob.objects.create()
    lease = take(job, "a")
    assert lease.release(items_done=3)
    assert row(job) == {"worker": "", "lease_expires_at": None, "items_done": 3}
    with pytest.raises(LeaseLost):
        lease.write(items_done=4)
    assert take(job, "b") is not None


def test_holder_tokens_are_unique_and_fit_the_column():
    worker = "w" * 300
    tokens = {new_holder(worker) for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) <= ExportJob._meta.get_field("worker").max_length for t in tokens)
