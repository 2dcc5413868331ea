import hashlib
import io
import json

import pytest
from django.core.management import CommandError, call_command

from exports.models import ExportJob, JobState
from tests.exports.conftest import artifact_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args) -> tuple[list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue().splitlines(), err.getvalue()


def test_export_files_runs_inline_and_writes_the_artifact(workspace, tmp_path):
    target = tmp_path / "out.zip"
    lines, err = run("export_files", "--project", str(workspace.project.id), "--out", str(target))
    job = ExportJob.objects.get()
    assert job.state == JobState.SUCCEEDED
    assert lines[-1] == f"{job.artifact_sha256}  {target}"
    assert lines[-2].startswith(f"download: /api/exports/{job.id}/download/?token=")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == job.artifact_sha256
    assert target.read_bytes() == artifact_bytes(job)
    assert "export" in err and "100%" in err


def test_export_files_of_a_snapshot_with_a_mode(workspace):
    from filesync import services

    snapshot = services.create_snapshot(file=workspace.designs[0])
    lines, _ = run("export_files", "--snapshot", str(snapshot.id), "--libraries", "merge")
    job = ExportJob.objects.get()
    assert job.libraries == "merge" and job.pinned.get(role="file").snapshot_id == snapshot.id
    assert lines[-1].startswith(job.artifact_sha256)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--project", "not-a-uuid"], "No project with id not-a-uuid"),
        (["--snapshot", "00000000-0000-4000-8000-000000000000"], "No snapshot"),
        (["--file", "00000000-0000-4000-8000-000000000000"], "No such file"),
        (["--project", "{project}", "--user", "ghost"], "No user named 'ghost'"),
    ],
)
def test_export_files_refuses_bad_arguments_with_one_line(workspace, args, message):
    args = [a.format(project=workspace.project.id) for a in args]
    with pytest.raises(CommandError, match=message):
        run("export_files", *args)
    assert not ExportJob.objects.exists()


def test_export_files_fails_non_zero_with_the_reason(workspace):
    from filesync.blobstore import delete_blob

    delete_blob(workspace.media[0].blob_id)
    with pytest.raises(CommandError, match=r"failed \(blob_missing\)"):
        run("export_files", "--project", str(workspace.project.id))
    assert ExportJob.objects.get().state == JobState.FAILED


def test_export_jobs_lists_and_shows_jobs(workspace):
    run("export_files", "--project", str(workspace.project.id))
    job = ExportJob.objects.get()
    lines, _ = run("export_jobs")
    assert lines[1].startswith(str(job.id)) and "succeeded" in lines[1] and "100%" in lines[1]
    shown = json.loads("\n".join(run("export_jobs", str(job.id), "--json")[0]))
    assert shown["artifact"]["sha256"] == job.artifact_sha256
    assert shown["state"] == "succeeded" and shown["attempts"] == 1
    listed = json.loads("\n".join(run("export_jobs", "--json")[0]))
    assert [j["id"] for j in listed] == [str(job.id)]
    with pytest.raises(CommandError, match="No export job"):
        run("export_jobs", "nope")
