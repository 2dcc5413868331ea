import hashlib
import json

import pytest
from django.utils import timezone

from exports import services
from exports.exporting.engine import run_tick
from exports.exporting.sinks import artifact_name, exports_storage, uses_s3
from exports.jobs.kernel import JobRun
from exports.models import ExportEntry, ExportJob, ExportPart, JobEvent, JobState
from filesync import services as filesync_services
from filesync.models import Blob
from tests.exports.conftest import artifact_bytes, read_archive, run_to_end
from tests.snapshot import store_state, unfinished_uploads

pytestmark = pytest.mark.django_db(transaction=True)

#: What a job that fails or is cancelled legitimately writes: its own row (state, error)
#: and its events, checked apart from the rest, which must be as before it ran.
THE_JOBS_OWN = ("exports.ExportJob", "exports.JobEvent")


def export(**kwargs) -> ExportJob:
    return services.create_export_job(enqueue=False, **kwargs)


def test_project_export_holds_every_entry_in_order(workspace):
    job = run_to_end(export(project=workspace.project))
    assert job.state == JobState.SUCCEEDED, job.error_message
    reader, archive = read_archive(job)
    names = reader.names()
    assert names[0] == "manifest.json" and names[-1] == "digest.json"
    blob_names = [n for n in names if n.startswith("blobs/")]
    assert names[-1 - len(blob_names) : -1] == blob_names == sorted(blob_names)
    design = workspace.designs[0]
    design.refresh_from_db()
    file_doc = json.loads(archive.read(f"files/{design.id}.json"))
    assert file_doc["revision"] == design.revision
    assert len(file_doc["pages"]) == 3
    for page_id in file_doc["pages"]:
        assert f"files/{design.id}/pages/{page_id}.json" in names
    manifest = reader.manifest
    assert {f["id"] for f in manifest["files"]} == {
        str(f.id) for f in (*workspace.designs, workspace.library)
    }
    assert sorted(manifest["relations"]) == sorted(
        [str(d.id), str(workspace.library.id)] for d in workspace.designs
    )
    assert archive.getinfo(blob_names[0]).compress_type == 0  # PNG: stored, not deflated
    assert job.artifact_sha256 == hashlib.sha256(artifact_bytes(job)).hexdigest()
    assert job.artifact_size == len(artifact_bytes(job))
    assert not ExportEntry.objects.exists() and not ExportPart.objects.exists()


def test_two_exports_of_unchanged_data_are_byte_identical(workspace):
    first = run_to_end(export(project=workspace.project))
    second = run_to_end(export(project=workspace.project))
    assert first.artifact_sha256 == second.artifact_sha256
    assert artifact_bytes(first) == artifact_bytes(second)


def test_an_export_cut_into_ticks_equals_an_uninterrupted_one(workspace):
    whole = run_to_end(export(project=workspace.project))
    ticked = run_to_end(export(project=workspace.project), tick_seconds=0)
    assert ticked.ticks > 2
    assert ticked.artifact_sha256 == whole.artifact_sha256
    assert ticked.part_writes == ticked.parts_done  # a tick ends after a part: nothing redone
    assert ticked.attempts == 1


class WorkerDied(BaseException):
    """Stands for kill -9: nothing in the engine catches it, the lease stays held."""


def test_a_job_whose_worker_died_resumes_losing_at_most_one_part(workspace, monkeypatch):
    whole = run_to_end(export(project=workspace.project))
    job = export(project=workspace.project)
    from exports.exporting import sinks

    for sink_class in (sinks.FilesystemSink, sinks.S3MultipartSink):
        original = sink_class.write_part

        def dies_at_part_3(self, number, data, original=original):
            if number == 3:
                original(self, number, data)  # the part lands, the checkpoint never does
                raise WorkerDied
            return original(self, number, data)

        monkeypatch.setattr(sink_class, "write_part", dies_at_part_3)
    with pytest.raises(WorkerDied):
        run_tick(job.pk, worker="doomed")
    monkeypatch.undo()

    assert run_tick(job.pk, worker="other") == "busy"  # the dead worker's lease still holds
    ExportJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    job = run_to_end(job)
    assert job.state == JobState.SUCCEEDED, job.error_message
    assert job.artifact_sha256 == whole.artifact_sha256
    assert job.attempts == 2
    assert job.parts_rewritten == 1  # part 3 landed but was never checkpointed: redone
    assert job.part_writes == job.parts_done  # every other part was written once
    assert job.bytes_replayed > 0


def test_a_second_worker_cannot_take_a_held_job(workspace):
    job = export(project=workspace.project)
    assert JobRun.take(ExportJob, job.pk, "first") is not None
    assert run_tick(job.pk, worker="second") == "busy"
    job.refresh_from_db()
    assert job.worker.startswith("first/")


def test_events_tell_the_story_in_order(workspace):
    job = run_to_end(export(project=workspace.project))
    events = list(JobEvent.objects.filter(job=job).order_by("seq"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].kind == "queued" and events[-1].kind == "end"
    assert any(e.kind == "progress" for e in events)
    assert events[-1].data["sha256"] == job.artifact_sha256
    progress = [e.data["bytes_done"] for e in events if e.kind == "progress"]
    assert progress == sorted(progress)


def test_a_file_soft_deleted_during_its_export_still_exports(workspace):
    job = export(project=workspace.project)
    filesync_services.soft_delete_file(file=workspace.designs[0])
    filesync_services.unlink_library(file=workspace.designs[1], library=workspace.library)
    job = run_to_end(job, tick_seconds=0)
    assert job.state == JobState.SUCCEEDED, job.error_message
    reader, _ = read_archive(job)
    assert f"files/{workspace.designs[0].id}.json" in reader.names()
    assert len(reader.manifest["relations"]) == 2  # as pinned, before the unlink


def test_a_blob_missing_from_storage_fails_with_its_code(workspace):
    from filesync.blobstore import delete_blob

    assert not Blob.objects.filter(crc32=None).exists()  # every store path records it
    delete_blob(workspace.media[1].blob_id)
    job = export(project=workspace.project)
    before = store_state(ignore=THE_JOBS_OWN)
    job = run_to_end(job)
    assert job.state == JobState.FAILED
    assert job.error_code == "blob_missing"
    assert workspace.media[1].blob_id in job.error_message
    error = JobEvent.objects.filter(job=job).last()
    assert error.kind == "error" and error.data["code"] == "blob_missing"
    assert store_state(ignore=THE_JOBS_OWN) == before


def test_cancel_of_a_queued_job_is_immediate(workspace):
    job = services.request_cancel(job=export(project=workspace.project))
    assert job.state == JobState.CANCELLED
    assert JobEvent.objects.filter(job=job).last().kind == "cancelled"
    assert run_tick(job.pk, worker="late") == "busy"


def test_cancel_of_a_running_job_stops_it_between_entries(workspace):
    assert not Blob.objects.filter(crc32=None).exists()  # every store path records it
    job = export(project=workspace.project)
    before = store_state(ignore=THE_JOBS_OWN)
    assert run_tick(job.pk, worker="w", tick_seconds=0) == "running"
    if uses_s3():  # the upload the cancel must abort
        assert unfinished_uploads("exports") == [
            exports_storage()._normalize_name(artifact_name(job.pk))
        ]
    ExportJob.objects.filter(pk=job.pk).update(
        worker="w2", lease_expires_at=timezone.now() + timezone.timedelta(minutes=1)
    )
    job = services.request_cancel(job=job)
    assert job.state == JobState.RUNNING and job.cancel_requested
    ExportJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    job = run_to_end(job)
    assert job.state == JobState.CANCELLED
    assert store_state(ignore=THE_JOBS_OWN) == before
    ended = store_state()
    with pytest.raises(Exception, match="only a queued or running job"):
        services.request_cancel(job=job)
    assert store_state() == ended


def test_merge_mode_copies_used_library_assets_and_makes_references_local(workspace):
    job = run_to_end(export(file_ids=[workspace.designs[0].id], libraries="merge"))
    reader, archive = read_archive(job)
    design = workspace.designs[0]
    assert [f["id"] for f in reader.manifest["files"]] == [str(design.id)]
    assert reader.manifest["relations"] == []
    doc = json.loads(archive.read(f"files/{design.id}.json"))
    assert doc["assets"]["components"] == {"btn": {"name": "Button"}}
    assert doc["assets"]["colors"] == {"red": {"name": "Red", "color": "#ff0000"}}
    page = json.loads(archive.read(f"files/{design.id}/pages/{doc['pages'][0]}.json"))
    assert page["objects"]["c"]["component_file"] == str(design.id)
    assert page["objects"]["f"]["fill_color_ref"] == {"file": str(design.id), "id": "red"}
    assert page["objects"]["t"]["typography_ref"]["file"] == str(design.id)


def test_detach_mode_drops_cross_file_references(workspace):
    job = run_to_end(export(file_ids=[workspace.designs[0].id], libraries="detach"))
    reader, archive = read_archive(job)
    design = workspace.designs[0]
    doc = json.loads(archive.read(f"files/{design.id}.json"))
    page = json.loads(archive.read(f"files/{design.id}/pages/{doc['pages'][0]}.json"))
    objects = page["objects"]
    assert "component_file" not in objects["c"] and "component_id" not in objects["c"]
    assert "fill_color_ref" not in objects["f"] and "typography_ref" not in objects["t"]
    assert objects["l"]["fill_color_ref"]["file"] == str(design.id)  # local refs stay
    assert objects["i"]["image"] == str(workspace.media[0].id)


def test_all_mode_includes_libraries_transitively(workspace, project):
    base = filesync_services.create_file(project=project, name="Base library", is_library=True)
    filesync_services.link_library(file=workspace.library, library=base)
    job = run_to_end(export(file_ids=[workspace.designs[0].id]))
    reader, _ = read_archive(job)
    assert {f["id"] for f in reader.manifest["files"]} == {
        str(workspace.designs[0].id),
        str(workspace.library.id),
        str(base.id),
    }
    assert sorted(reader.manifest["relations"]) == sorted(
        [
            [str(workspace.designs[0].id), str(workspace.library.id)],
            [str(workspace.library.id), str(base.id)],
        ]
    )


def test_a_snapshot_exports_the_file_as_it_was(workspace):
    design = workspace.designs[0]
    snapshot = filesync_services.create_snapshot(file=design, label="v1")
    filesync_services.add_page(file=design, name="after the snapshot")
    job = run_to_end(export(snapshot=snapshot, libraries="detach"))
    reader, archive = read_archive(job)
    doc = json.loads(archive.read(f"files/{design.id}.json"))
    assert doc["revision"] == snapshot.revision
    assert len(doc["pages"]) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one"),
        ({"file_ids": ["00000000-0000-4000-8000-000000000000"]}, "No such file"),
        ({"libraries": "everything", "file_ids": []}, "libraries"),
    ],
)
def test_bad_requests_create_no_job(workspace, kwargs, message):
    from django.core.exceptions import ValidationError

    before = store_state()
    with pytest.raises(ValidationError, match=message):
        export(**kwargs)
    assert store_state() == before


def test_outsiders_cannot_export_files_they_cannot_see(workspace, outsider):
    from django.http import Http404

    before = store_state()
    with pytest.raises(Http404):
        services.create_export_job(user=outsider, project=workspace.project, enqueue=False)
    assert store_state() == before


def test_blobs_shared_by_files_are_written_once(workspace):
    blob = Blob.objects.get(pk=workspace.media[0].blob_id)
    import io

    filesync_services.add_media(
        file=workspace.designs[1],
        name="same.png",
        stream=io.BytesIO(
            b"".join(__import__("filesync.blobstore", fromlist=["x"]).iter_blob(blob.sha256))
        ),
        content_type="image/png",
    )
    job = run_to_end(export(project=workspace.project))
    reader, _ = read_archive(job)
    assert reader.names().count(f"blobs/{blob.sha256}") == 1


def test_part_size_grows_so_no_archive_needs_more_than_s3s_part_cap(settings):
    from exports.exporting.engine import choose_part_size

    settings.EXPORT_PART_SIZE = 8 * 2**20
    assert choose_part_size(10**9, s3=True) == 8 * 2**20
    for planned in (10**11, 5 * 10**12):
        size = choose_part_size(planned, s3=True)
        assert size % 2**20 == 0 and planned / size < 10_000
    settings.EXPORT_PART_SIZE = 1024
    assert choose_part_size(10**6, s3=True) == 5 * 2**20  # S3's minimum part
    assert choose_part_size(10**6, s3=False) == 1024


def test_a_blob_corrupted_in_storage_fails_the_export(workspace):
    from filesync.blobstore import write_blob

    assert not Blob.objects.filter(crc32=None).exists()  # every store path records it
    sha = workspace.media[0].blob_id
    write_blob(sha, __import__("io").BytesIO(b"\x89PNG not the same bytes"))
    job = export(project=workspace.project)
    before = store_state(ignore=THE_JOBS_OWN)
    job = run_to_end(job)
    assert job.state == JobState.FAILED
    assert job.error_code == "blob_corrupt" and sha in job.error_message
    assert store_state(ignore=THE_JOBS_OWN) == before
