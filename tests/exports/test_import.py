"""Import: a binfile comes back whole, relinked, or not at all."""

import io
import json
import zipfile
import zlib

import pytest
from django.core.management import call_command

from exports import services
from exports.binfile.reader import BinfileReader
from exports.importing.engine import run_import
from exports.models import ImportEvent, ImportJob, JobState
from filesync import blobstore
from filesync import services as filesync_services
from filesync.models import Blob, File, FileLibrary, MediaObject, Page
from tests.conftest import stored_names
from tests.exports.conftest import artifact_bytes, run_to_end
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db(transaction=True)

#: What a failed import legitimately writes: its own row (state, error) and its events,
#: checked apart from the rest, which must not change.
THE_JOBS_OWN = ("exports.ImportJob", "exports.ImportEvent")

#: What a re-export may change about a file document: when and at which revision.
VOLATILE = {"created_at", "modified_at", "revision"}


def export_bytes(*, user=None, **what) -> bytes:
    job = run_to_end(services.create_export_job(user=user, enqueue=False, **what))
    assert job.state == JobState.SUCCEEDED, job.error_message
    return artifact_bytes(job)


def import_bytes(data: bytes, *, project, user=None) -> ImportJob:
    job = services.create_import_job(
        user=user, project=project, upload=io.BytesIO(data), enqueue=False
    )
    run_import(job.pk, worker="test-worker")
    job.refresh_from_db()
    return job


def documents(data: bytes, ids: dict[str, str] | None = None) -> dict:
    """The archive's documents by entry name, ids translated through `ids` (new → old),
    without what a re-export may change."""
    reader, archive = read_archive_bytes(data)
    translated = {}
    for name in reader.names():
        if not name.endswith(".json") or name == "digest.json":
            continue
        text = archive.read(name).decode()
        for new, old in (ids or {}).items():
            text = text.replace(new, old)
            name = name.replace(new, old)
        document = json.loads(text)
        if name.startswith("files/") and name.count("/") == 1:
            document = {k: v for k, v in document.items() if k not in VOLATILE}
            document["media"] = sorted(document["media"])  # listed by id; copies get new ids
        if name == "manifest.json":
            document["files"] = sorted(
                ({k: v for k, v in f.items() if k not in VOLATILE} for f in document["files"]),
                key=lambda f: f["id"],
            )
            document["relations"] = sorted(document["relations"])
        translated[name] = document
    return translated


def read_archive_bytes(data: bytes):
    reader = BinfileReader(io.BytesIO(data))
    reader.verify()
    return reader, zipfile.ZipFile(io.BytesIO(data))


def inverse(job: ImportJob) -> dict[str, str]:
    """new id → archive id, for files and their media."""
    ids = {new: old for old, new in job.files.items()}
    for old_file, new_file in job.files.items():
        old_media = MediaObject.objects.filter(file_id=old_file).order_by("id")
        new_media = {m.name: str(m.id) for m in MediaObject.objects.filter(file_id=new_file)}
        ids.update({new_media[m.name]: str(m.id) for m in old_media if m.name in new_media})
    return ids


@pytest.mark.parametrize("mode", ["all", "merge", "detach"])
def test_export_then_import_gives_the_same_files_under_new_ids(workspace, editor, team, mode):
    original = export_bytes(user=editor, project=workspace.project, libraries=mode)
    target = filesync_services.create_project(team=team, name="Restored")

    job = import_bytes(original, project=target, user=editor)

    assert job.state == JobState.SUCCEEDED, job.error_message
    copies = File.objects.filter(project=target)
    assert {str(f.id) for f in copies} == set(job.files.values())
    assert not set(job.files) & set(job.files.values())
    again = export_bytes(user=editor, project=target, libraries=mode)
    assert documents(again, inverse(job)) == documents(original)


def test_references_point_at_the_copies_and_links_are_relinked(workspace, editor, team):
    archive = export_bytes(user=editor, project=workspace.project, libraries="all")
    target = filesync_services.create_project(team=team, name="Restored")

    job = import_bytes(archive, project=target, user=editor)

    library_copy = job.files[str(workspace.library.id)]
    design_copy = job.files[str(workspace.designs[0].id)]
    page = Page.objects.filter(file_id=design_copy).first()
    picture = MediaObject.objects.get(file_id=design_copy)
    assert page.object_map["c"]["component_file"] == library_copy
    assert page.object_map["f"]["fill_color_ref"]["file"] == library_copy
    assert page.object_map["l"]["fill_color_ref"]["file"] == design_copy
    assert page.object_map["i"]["image"] == str(picture.id)
    assert picture.blob_id == workspace.media[0].blob_id
    assert FileLibrary.objects.filter(file_id=design_copy, library_id=library_copy).exists()


def test_references_to_libraries_outside_the_archive(workspace, editor, outsider):
    """Kept when the importer can read the library, detached when it cannot."""
    design = workspace.designs[0]
    # Unlinked, the library stays out of the archive while the pages still use it.
    filesync_services.unlink_library(file=design, library=workspace.library)
    archive_all = export_bytes(user=editor, file_ids=[design.id], libraries="all")

    readable = import_bytes(archive_all, project=workspace.project, user=editor)
    copy = readable.files[str(design.id)]
    objects = Page.objects.filter(file_id=copy).first().object_map
    assert objects["c"]["component_file"] == str(workspace.library.id)

    own = filesync_services.create_team(name="Elsewhere", owner=outsider)
    elsewhere = filesync_services.create_project(team=own, name="Theirs")
    foreign = import_bytes(archive_all, project=elsewhere, user=outsider)
    assert foreign.state == JobState.SUCCEEDED, foreign.error_message
    copy = foreign.files[str(design.id)]
    objects = Page.objects.filter(file_id=copy).first().object_map
    assert "component_file" not in objects["c"] and "fill_color_ref" not in objects["f"]
    assert objects["l"]["fill_color_ref"]["file"] == copy
    assert not FileLibrary.objects.filter(file_id=copy).exists()


def test_the_job_tells_its_story_and_drops_the_uploaded_archive(workspace, editor, team):
    archive = export_bytes(user=editor, project=workspace.project)
    job = import_bytes(archive, project=workspace.project, user=editor)

    kinds = list(ImportEvent.objects.filter(job=job).values_list("kind", flat=True))
    assert kinds[0] == "queued" and kinds[-1] == "end" and "progress" in kinds
    phases = [e.data["phase"] for e in ImportEvent.objects.filter(job=job, kind="progress")]
    assert phases[-1] == "write" and "check" in phases
    assert job.items_done == job.items_total > 0
    assert not [n for n in stored_names("exports") if n.startswith("imports/")]


def test_a_broken_archive_fails_the_job_and_writes_nothing(workspace, editor):
    archive = bytearray(export_bytes(user=editor, project=workspace.project))
    before = store_state(ignore=THE_JOBS_OWN)
    reader, _ = read_archive_bytes(bytes(archive))
    page_name = next(n for n in reader.names() if "/pages/" in n)
    info = reader.zip.getinfo(page_name)
    # Flip a byte inside the page's compressed data: the entry no longer matches digest.json.
    at = info.header_offset + 30 + len(info.filename) + 5
    archive[at] ^= 0xFF

    job = import_bytes(bytes(archive), project=workspace.project, user=editor)

    assert job.state == JobState.FAILED
    assert job.error_code in ("digest_mismatch", "corrupt")
    error = ImportEvent.objects.get(job=job, kind="error").data
    assert error["entry"] == page_name
    assert list(ImportJob.objects.values_list("pk", flat=True)) == [job.pk]
    assert store_state(ignore=THE_JOBS_OWN) == before


def test_imported_blobs_are_stored_with_their_crc(workspace, editor, team):
    """New blobs and blobs stored before CRCs were recorded alike end with the CRC-32 of
    their bytes."""
    archive = export_bytes(user=editor, project=workspace.project)
    sha256 = workspace.media[0].blob_id
    data = b"".join(blobstore.iter_blob(sha256))
    MediaObject.objects.all().delete()
    Blob.objects.all().delete()
    blobstore.delete_blob(sha256)
    target = filesync_services.create_project(team=team, name="Restored")

    assert import_bytes(archive, project=target, user=editor).state == JobState.SUCCEEDED
    assert Blob.objects.get(pk=sha256).crc32 == zlib.crc32(data)

    Blob.objects.update(crc32=None)
    assert import_bytes(archive, project=target, user=editor).state == JobState.SUCCEEDED
    assert Blob.objects.get(pk=sha256).crc32 == zlib.crc32(data)


def test_an_archive_whose_blob_crc_is_wrong_fails_and_writes_nothing(workspace, editor, team):
    """The bytes hash right but the CRC-32 the archive gives them (in the local header and
    the directory alike, as format 2 requires) is not theirs: refused, so the CRC an
    import records is always the bytes' own."""
    archive = bytearray(export_bytes(user=editor, project=workspace.project))
    name = f"blobs/{workspace.media[0].blob_id}"
    for signature, name_at, crc_at in ((b"PK\x03\x04", 30, 14), (b"PK\x01\x02", 46, 16)):
        header = archive.index(signature)
        while archive[header + name_at : header + name_at + len(name)] != name.encode():
            header = archive.index(signature, header + 4)
        archive[header + crc_at] ^= 0xFF  # the entry's CRC-32 field
    target = filesync_services.create_project(team=team, name="Restored")
    before = store_state(ignore=THE_JOBS_OWN)

    job = import_bytes(bytes(archive), project=target, user=editor)

    assert (job.state, job.error_code) == (JobState.FAILED, "corrupt"), job.error_message
    assert ImportEvent.objects.get(job=job, kind="error").data["entry"] == name
    assert store_state(ignore=THE_JOBS_OWN) == before


def test_viewers_and_outsiders_cannot_import(workspace, editor, viewer, outsider, api_for):
    archive = export_bytes(user=editor, project=workspace.project)
    url = "/api/imports/"
    body = lambda: {"project": str(workspace.project.id), "file": io.BytesIO(archive)}  # noqa: E731
    clients = [(api_for(viewer), 403), (api_for(outsider), 404), (api_for(None), 401)]
    before = store_state()
    for client, status in clients:
        assert client.post(url, body(), format="multipart").status_code == status
    assert store_state() == before


def test_post_an_archive_then_follow_it(workspace, editor, outsider, api_for, team):
    archive = export_bytes(user=editor, project=workspace.project)
    target = filesync_services.create_project(team=team, name="Restored")
    client = api_for(editor)

    response = client.post(
        "/api/imports/",
        {"project": str(target.id), "file": io.BytesIO(archive)},
        format="multipart",
    )

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["state"] == "queued" and body["links"]["events"].endswith("/events")
    run_import(body["id"], worker="test-worker")
    done = client.get(f"/api/imports/{body['id']}/").json()
    assert done["state"] == "succeeded"
    assert set(done["files"]) == {str(f.id) for f in File.objects.filter(project=workspace.project)}
    assert File.objects.filter(project=target).count() == len(done["files"])
    assert api_for(None).get(f"/api/imports/{body['id']}/").status_code == 401
    assert api_for(outsider).get(f"/api/imports/{body['id']}/").status_code == 404


def test_a_blob_from_a_resumable_upload_can_be_imported(workspace, editor, outsider, api_for):
    archive = export_bytes(user=editor, project=workspace.project)
    blob = filesync_services.store_blob(
        stream=io.BytesIO(archive), content_type="application/zip", user=editor
    )
    body = {"project": str(workspace.project.id), "blob": blob.sha256}
    stranger = api_for(outsider)
    before = store_state()

    assert stranger.post("/api/imports/", body, format="json").status_code == 404
    assert store_state() == before
    response = api_for(editor).post("/api/imports/", body, format="json")

    assert response.status_code == 202, response.content
    assert run_import(response.json()["id"], worker="w") == JobState.SUCCEEDED


def test_a_non_zip_upload_answers_400_and_stores_nothing(workspace, editor, api_for):
    client = api_for(editor)
    before = store_state()
    response = client.post(
        "/api/imports/",
        {"project": str(workspace.project.id), "file": io.BytesIO(b"not a zip at all")},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "not_zip"
    assert store_state() == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"project": "not-a-uuid", "blob": "a" * 64},
        {"project": "{project}"},
        {"project": "{project}", "blob": "not-a-sha"},
        {"project": "{project}", "blob": "a" * 64},
    ],
    ids=["nothing", "bad-project", "no-archive", "bad-blob", "unknown-blob"],
)
def test_an_import_request_without_a_usable_archive_or_project_writes_nothing(
    workspace, editor, api_for, body
):
    client = api_for(editor)
    payload = {k: v.format(project=workspace.project.id) for k, v in body.items()}
    before = store_state()
    response = client.post("/api/imports/", payload, format="json")
    assert response.status_code in (400, 404), response.content
    assert store_state() == before


def test_cancel_a_queued_import(workspace, editor, api_for):
    archive = export_bytes(user=editor, project=workspace.project)
    job = services.create_import_job(
        user=editor, project=workspace.project, upload=io.BytesIO(archive), enqueue=False
    )
    client = api_for(editor)
    response = client.delete(f"/api/imports/{job.id}/")
    assert response.status_code == 202 and response.json()["state"] == "cancelled"
    before = store_state()
    assert run_import(job.pk, worker="late") == "busy"
    assert client.delete(f"/api/imports/{job.id}/").status_code == 409
    assert store_state() == before


def test_import_command(workspace, editor, tmp_path, team):
    path = tmp_path / "archive.zip"
    path.write_bytes(export_bytes(user=editor, project=workspace.project))
    target = filesync_services.create_project(team=team, name="Restored")
    out = io.StringIO()

    call_command("import_binfile", str(path), project=str(target.id), stdout=out, verbosity=0)

    lines = out.getvalue().splitlines()
    assert len(lines) == File.objects.filter(project=target).count() == 3
    assert all(" -> " in line for line in lines)


def test_maintenance_removes_uploads_no_import_will_read(workspace, editor, settings):
    from exports.exporting.sinks import exports_storage
    from exports.tasks import maintain

    archive = export_bytes(user=editor, project=workspace.project)
    waiting = services.create_import_job(
        user=editor, project=workspace.project, upload=io.BytesIO(archive), enqueue=False
    )
    ended = services.create_import_job(
        user=editor, project=workspace.project, upload=io.BytesIO(archive), enqueue=False
    )
    ImportJob.objects.filter(pk=ended.pk).update(state=JobState.FAILED)  # its worker died
    orphan = exports_storage().save("imports/never-a-job.binfile", io.BytesIO(b"x"))
    assert maintain()["abandoned_imports_removed"] == 0  # too fresh: a job may be committing

    settings.EXPORT_LEASE_SECONDS = -1
    assert maintain()["abandoned_imports_removed"] == 2

    left = [n for n in stored_names("exports") if n.startswith("imports/")]
    assert left == [waiting.source_name] and orphan not in left
    assert run_import(waiting.pk, worker="w") == JobState.SUCCEEDED


@pytest.mark.parametrize(
    "make_path, project, message",
    [
        (lambda tmp: tmp / "missing.zip", "target", "Cannot read"),
        (lambda tmp: tmp / "not-a-zip.zip", "target", "Refused"),
        (lambda tmp: tmp / "not-a-zip.zip", "not-a-uuid", "No project with id not-a-uuid"),
    ],
    ids=["missing-file", "not-a-zip", "unknown-project"],
)
def test_import_command_refusals_write_nothing(tmp_path, team, make_path, project, message):
    from django.core.management.base import CommandError

    (tmp_path / "not-a-zip.zip").write_bytes(b"plain text, not an archive")
    target = filesync_services.create_project(team=team, name="Restored")
    project_id = str(target.id) if project == "target" else project
    before = store_state()

    with pytest.raises(CommandError, match=message):
        call_command("import_binfile", str(make_path(tmp_path)), project=project_id, verbosity=0)

    assert store_state() == before
