"""Edits never fail an export: the archive holds each file as the job pinned it.

The expected bytes come from an export of the same files run before any edit: exports
are deterministic, so an export that raced edits must be byte-identical to it.
"""

import io
import os
import threading
from datetime import timedelta

import pytest
from django.contrib.admin import site
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import RequestFactory
from django.utils import timezone

from exports import services
from exports.models import ExportJob, JobState, PinnedFile
from exports.tasks import maintain
from filesync import services as filesync_services
from filesync.models import File, Snapshot
from filesync.purge import unused_blobs
from tests.exports.conftest import read_archive, run_to_end

pytestmark = pytest.mark.django_db(transaction=True)


def export(**kwargs) -> ExportJob:
    return services.create_export_job(enqueue=False, **kwargs)


def preserved() -> list[Snapshot]:
    return list(Snapshot.all_kinds.filter(kind=Snapshot.Kind.PRESERVED))


def entries(job) -> dict[str, bytes]:
    _, archive = read_archive(job)
    return {name: archive.read(name) for name in archive.namelist()}


def assert_same_archive(job, expected) -> None:
    assert job.state == JobState.SUCCEEDED, job.error_message
    assert entries(job) == entries(expected)  # a readable diff first, then the bytes
    assert job.artifact_sha256 == expected.artifact_sha256


def picture() -> io.BytesIO:
    return io.BytesIO(b"\x89PNG\r\n\x1a\n" + os.urandom(50_000))


def save_in_admin(admin_user, file: File, **changes) -> None:
    """What the admin's change form does on save (its view wraps it in a transaction)."""
    request = RequestFactory().post("/")
    request.user = admin_user
    for name, value in changes.items():
        setattr(file, name, value)
    with transaction.atomic():
        site._registry[File].save_model(request, file, None, change=True)


def editing(edits):
    """An on_progress hook that makes the next edit each time the export reports progress:
    between two entries, in the middle of a file's entries and between ticks alike."""
    pending = list(edits)

    def next_edit(_job) -> None:
        # Progress is reported from the part writer's thread too: edit from the worker's.
        if pending and threading.current_thread() is threading.main_thread():
            pending.pop(0)()

    next_edit.pending = pending
    return next_edit


def run_editing(job, hook) -> ExportJob:
    from exports.exporting.engine import run_tick

    for _ in range(1000):
        outcome = run_tick(job.pk, worker="test-worker", tick_seconds=0, on_progress=hook)
        if outcome != "running":
            break
        hook(job)  # and between ticks
    job.refresh_from_db()
    return job


def test_pages_added_and_deleted_media_and_names_changed_throughout_an_export(
    workspace, admin_user
):
    first, second = workspace.designs
    before = filesync_services.create_snapshot(file=second, label="three pages")
    filesync_services.add_page(file=second, name="Draft", objects={})
    filesync_services.add_media(
        file=second, name="extra.png", stream=picture(), content_type="image/png"
    )
    expected = run_to_end(export(project=workspace.project))
    job = export(project=workspace.project)
    hook = editing(
        [
            lambda: filesync_services.add_page(file=first, name="Late page", objects={}),
            # Deletes the draft page and the extra media, and replaces every page.
            lambda: filesync_services.restore_snapshot(snapshot=before),
            lambda: filesync_services.update_file(file=first, name="Renamed", assets={}),
            lambda: filesync_services.add_media(
                file=first, name="late.png", stream=picture(), content_type="image/png"
            ),
            lambda: save_in_admin(admin_user, File.objects.get(pk=first.pk), features=["x"]),
            lambda: filesync_services.add_page(file=workspace.library, name="Lib", objects={}),
            lambda: filesync_services.add_page(file=second, name="Again", objects={}),
            lambda: filesync_services.update_file(file=second, name="Renamed too"),
        ]
    )
    hook(job)  # before the first tick, too
    job = run_editing(job, hook)
    assert_same_archive(job, expected)
    assert not hook.pending, "the export ended before every edit was made"
    assert preserved() == []
    assert not PinnedFile.objects.filter(snapshot__isnull=False).exists()
    # The edits all landed.
    first.refresh_from_db()
    assert (first.name, first.features, first.pages.count(), first.media.count()) == (
        "Renamed",
        ["x"],
        4,
        2,
    )
    assert second.pages.count() == 4 and second.media.count() == 1


def test_an_edit_preserves_the_revision_once_and_only_for_the_export_that_pinned_it(workspace):
    first, second = workspace.designs
    job = export(file_ids=[first.pk])
    filesync_services.add_page(file=first, name="One", objects={})
    filesync_services.add_page(file=first, name="Two", objects={})  # already preserved
    filesync_services.add_page(file=second, name="Not exported", objects={})
    [kept] = preserved()
    pin = PinnedFile.objects.get(job=job, file=first)
    assert (pin.snapshot_id, kept.file_id, kept.revision) == (kept.pk, first.pk, pin.revision)
    # Not anyone's to see, restore or copy.
    assert not Snapshot.objects.exists() and not first.snapshots.exists()
    with pytest.raises(ValidationError):
        filesync_services.restore_snapshot(snapshot=kept)
    with pytest.raises(ValidationError):
        filesync_services.restore_snapshot_as_new_file(snapshot=kept)
    assert run_to_end(job).state == JobState.SUCCEEDED
    assert preserved() == []
    assert PinnedFile.objects.get(pk=pin.pk).snapshot_id is None


def test_edits_with_no_export_running_preserve_nothing(workspace):
    first, _ = workspace.designs
    finished = run_to_end(export(file_ids=[first.pk]))  # pinned this very revision, ended
    assert finished.state == JobState.SUCCEEDED
    filesync_services.add_page(file=first, name="Page", objects={})
    filesync_services.update_file(file=first, name="Renamed")
    filesync_services.add_media(file=first, name="p.png", stream=picture(), content_type="x/y")
    assert Snapshot.all_kinds.count() == 0


def test_two_exports_of_the_same_revision_share_one_preservation(workspace):
    first, _ = workspace.designs
    expected = run_to_end(export(project=workspace.project))
    one, two = export(project=workspace.project), export(project=workspace.project)
    filesync_services.add_page(file=first, name="Late", objects={})
    [kept] = preserved()
    assert set(PinnedFile.objects.filter(file=first).values_list("job_id", "snapshot_id")) == {
        (expected.pk, None),
        (one.pk, kept.pk),
        (two.pk, kept.pk),
    }
    assert_same_archive(run_to_end(one, tick_seconds=0), expected)
    assert preserved() == [kept]  # the other export still reads it
    filesync_services.update_file(file=first, name="Once more")  # not preserved again
    assert preserved() == [kept]
    assert_same_archive(run_to_end(two, tick_seconds=0), expected)
    assert preserved() == []


def test_a_cancelled_export_releases_what_was_preserved_for_it(workspace):
    first, _ = workspace.designs
    job = export(project=workspace.project)
    filesync_services.add_page(file=first, name="Late", objects={})
    assert len(preserved()) == 1
    assert services.request_cancel(job=job).state == JobState.CANCELLED
    assert preserved() == []


def test_maintenance_sweeps_a_preservation_its_export_no_longer_reads(workspace):
    """An edit that preserved while its export was ending leaves one behind: swept."""
    first, _ = workspace.designs
    job = export(project=workspace.project)
    filesync_services.add_page(file=first, name="Late", objects={})
    ExportJob.objects.filter(pk=job.pk).update(state=JobState.FAILED)
    assert maintain()["preserved_released"] == 1
    assert preserved() == [] and not PinnedFile.objects.filter(snapshot__isnull=False).exists()
    assert maintain()["preserved_released"] == 0


def test_media_removed_during_an_export_keeps_its_blob_until_the_export_ends(workspace):
    first, _ = workspace.designs
    before = filesync_services.create_snapshot(file=first, label="without the extra")
    extra = filesync_services.add_media(
        file=first, name="extra.png", stream=picture(), content_type="image/png"
    )
    expected = run_to_end(export(file_ids=[first.pk]))
    job = export(file_ids=[first.pk])
    filesync_services.restore_snapshot(snapshot=before)  # would have removed the media...
    assert not first.media.filter(pk=extra.pk).exists()
    Snapshot.objects.filter(file=first).delete()  # users' snapshots would hold it too
    later = timezone.now() + timedelta(days=365)
    assert extra.blob_id not in unused_blobs(later).values_list("pk", flat=True)
    assert_same_archive(run_to_end(job, tick_seconds=0), expected)
    assert extra.blob_id in unused_blobs(later).values_list("pk", flat=True)
