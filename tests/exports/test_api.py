import hashlib

import pytest

from exports import services
from exports.exporting.links import download_path
from exports.models import ExportJob, JobState
from tests.downloads import download, served_by_s3
from tests.exports.conftest import artifact_bytes, run_to_end
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def finished(workspace, editor):
    return run_to_end(
        services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    )


def test_post_answers_202_with_the_job_and_its_links(api_for, editor, workspace):
    response = api_for(editor).post(
        "/api/exports/",
        {"project": str(workspace.project.id), "libraries": "merge"},
        format="json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    job = ExportJob.objects.get(pk=body["id"])
    assert job.created_by == editor and job.libraries == "merge"
    assert body["state"] == "queued" and body["progress"]["items_total"] > 0
    assert body["links"]["events"].endswith(f"/api/exports/{job.id}/events")
    assert response["Location"] == body["links"]["self"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({}, "non_field_errors"),
        ({"files": [], "project": "{project}"}, "files"),
        ({"project": "{project}", "snapshot": "{project}"}, "non_field_errors"),
        ({"project": "{project}", "libraries": "all-of-them"}, "libraries"),
        ({"project": "{project}", "callback_url": "http://169.254.169.254/latest"}, "callback_url"),
        ({"files": ["not-a-uuid"]}, "files"),
    ],
)
def test_bad_requests_answer_400_and_create_nothing(api_for, editor, workspace, payload, field):
    body = {
        k: (
            [x.format(project=workspace.project.id) for x in v]
            if isinstance(v, list)
            else v.format(project=workspace.project.id)
        )
        for k, v in payload.items()
    }
    client = api_for(editor)
    before = store_state()
    response = client.post("/api/exports/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert store_state() == before


def test_foreign_and_unknown_ids_answer_404_and_create_nothing(api_for, outsider, workspace):
    client = api_for(outsider)
    before = store_state()
    for payload in (
        {"project": str(workspace.project.id)},
        {"files": [str(workspace.designs[0].id)]},
        {"files": ["00000000-0000-4000-8000-000000000000"]},
    ):
        assert client.post("/api/exports/", payload, format="json").status_code == 404
    assert store_state() == before


def test_jobs_are_their_owners_and_superusers(api_for, editor, viewer, finished, make_user):
    assert [j["id"] for j in api_for(editor).get("/api/exports/").json()["results"]] == [
        str(finished.id)
    ]
    other = api_for(viewer)
    assert other.get("/api/exports/").json()["results"] == []
    before = store_state()
    for path in (f"/api/exports/{finished.id}/", download_path(finished)):
        assert other.get(path).status_code == 404
    assert other.delete(f"/api/exports/{finished.id}/").status_code == 404
    assert other.post(f"/api/exports/{finished.id}/retry/").status_code == 404
    assert store_state() == before
    staff = api_for(make_user("stella", is_staff=True))
    before = store_state()
    assert staff.get(f"/api/exports/{finished.id}/").status_code == 404
    assert staff.delete(f"/api/exports/{finished.id}/").status_code == 404
    assert store_state() == before
    root = make_user("root", is_staff=True, is_superuser=True)
    assert api_for(root).get(f"/api/exports/{finished.id}/").status_code == 200


def test_download_streams_the_artifact_with_ranges(api_for, editor, finished):
    """On either storage: the filesystem streams the artifact and its ranges itself, S3's
    presigned URL (fetched without our credentials) does."""
    client = api_for(editor)
    detail = client.get(f"/api/exports/{finished.id}/").json()
    assert detail["artifact"]["sha256"] == finished.artifact_sha256
    link = detail["links"]["download"]
    whole = download(client, link)
    assert whole.status == 200 and whole.redirected == served_by_s3()
    assert whole.headers["content-length"] == str(finished.artifact_size)
    assert whole.headers["content-disposition"].startswith('attachment; filename="ferry-Website-')
    assert hashlib.sha256(whole.body).hexdigest() == finished.artifact_sha256
    part = download(client, link, HTTP_RANGE="bytes=100-199")
    assert part.status == 206
    assert part.headers["content-range"] == f"bytes 100-199/{finished.artifact_size}"
    assert part.body == artifact_bytes(finished)[100:200]
    assert download(client, link, HTTP_RANGE=f"bytes={finished.artifact_size}-").status == 416


def test_tampered_and_expired_links_answer_403(api_for, editor, finished, settings):
    client = api_for(editor)
    link = download_path(finished)
    before = store_state()
    assert client.get(link[:-3] + "xyz").status_code == 403
    assert client.get(link.split("?")[0]).status_code == 403
    settings.EXPORT_LINK_TTL_SECONDS = -1
    response = client.get(link)
    assert response.status_code == 403
    assert "expired" in response.json()["detail"]
    assert store_state() == before


def test_delete_cancels_an_active_job(api_for, editor, workspace):
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    response = api_for(editor).delete(f"/api/exports/{job.id}/")
    assert response.status_code == 202
    assert response.json()["state"] == "cancelled"


def test_delete_of_a_finished_job_removes_its_artifact_and_download_says_410(
    api_for, editor, finished
):
    client = api_for(editor)
    link = download_path(finished)
    assert client.delete(f"/api/exports/{finished.id}/").status_code == 204
    finished.refresh_from_db()
    assert finished.state == JobState.EXPIRED
    before = store_state()
    assert client.get(link).status_code == 410
    assert store_state() == before
    from django.core.files.storage import storages

    assert not storages["exports"].exists(finished.artifact_name)


def test_retry_makes_a_new_job_for_a_failed_one_only(api_for, editor, workspace, finished):
    from filesync.blobstore import delete_blob

    client = api_for(editor)
    before = store_state()
    assert client.post(f"/api/exports/{finished.id}/retry/").status_code == 409
    assert store_state() == before
    delete_blob(workspace.media[0].blob_id)
    failed = run_to_end(
        services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    )
    assert failed.state == JobState.FAILED
    response = client.post(f"/api/exports/{failed.id}/retry/")
    assert response.status_code == 202
    again = ExportJob.objects.get(pk=response.json()["id"])
    assert again.retry_of == failed and again.state == JobState.QUEUED
    assert set(again.pinned.values_list("file_id", flat=True)) == set(
        failed.pinned.values_list("file_id", flat=True)
    )


def test_download_of_an_unfinished_job_is_a_conflict(api_for, editor, workspace):
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    client = api_for(editor)
    before = store_state()
    assert client.get(download_path(job)).status_code == 409
    assert store_state() == before
