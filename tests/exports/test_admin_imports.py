"""The import admin through HTTP: a project's "Import binfile" page, the import job list,
the live job page (the export one, told it shows an import) and its Cancel button."""

import io
import json
import re
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from exports import services
from exports.binfile.format import TYPE
from exports.importing.engine import run_import
from exports.models import ImportEvent, ImportJob, JobState
from filesync import services as filesync_services
from filesync.models import File
from tests.conftest import stored_names
from tests.exports.conftest import artifact_bytes, run_to_end
from tests.exports.test_admin import client_for, csrf_client, is_hidden, messages_of, staff
from tests.exports.test_import import THE_JOBS_OWN
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db(transaction=True)  # the part writer checkpoints on a thread

IMPORTS = "/admin/exports/importjob/"


def import_page(project) -> str:
    return f"{IMPORTS}into/{project.pk}/"


def job_page(job) -> str:
    return f"{IMPORTS}{job.pk}/change/"


def upload(data: bytes, name: str = "archive.zip") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/zip")


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def uploaded_archives() -> list[str]:
    return [name for name in stored_names("exports") if name.startswith("imports/")]


@pytest.fixture
def archive(workspace, editor) -> bytes:
    """The workspace's project as a binfile (two designs and their library)."""
    job = run_to_end(
        services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    )
    assert job.state == JobState.SUCCEEDED, job.error_message
    return artifact_bytes(job)


@pytest.fixture
def target(team):
    return filesync_services.create_project(team=team, name="Restored")


@pytest.fixture
def queued(archive, target, editor) -> ImportJob:
    return services.create_import_job(
        user=editor, project=target, upload=io.BytesIO(archive), enqueue=False
    )


@pytest.fixture
def imported(queued) -> ImportJob:
    assert run_import(queued.pk, worker="test-worker") == JobState.SUCCEEDED
    queued.refresh_from_db()
    return queued


# --- the "Import binfile" page of a project --------------------------------------------------


def test_the_project_page_links_to_its_import_page(editor, target):
    html = client_for(staff(editor)).get(f"/admin/filesync/project/{target.pk}/change/")
    assert html.status_code == 200
    assert f'<a href="{import_page(target)}" class="import-binfile-link">Import binfile</a>' in (
        html.content.decode()
    )
    add = client_for(editor).get("/admin/filesync/project/add/").content.decode()
    assert "import-binfile-link" not in add


def test_the_import_page_renders_for_an_editor(editor, target):
    response = client_for(staff(editor)).get(import_page(target))
    assert response.status_code == 200
    assert response.templates[0].name == "admin/exports/import_form.html"
    html = response.content.decode()
    assert '<form method="post" enctype="multipart/form-data" id="import-form">' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert re.search(r'<input type="file" name="archive"[^>]*required', html)
    assert "Restored" in html and f'href="/admin/filesync/project/{target.pk}/change/"' in html
    assert 'id="import-refusal"' not in html


def test_outsiders_get_404_viewers_403_non_staff_the_login(make_user, viewer, editor, target):
    assert client_for(staff(make_user("stan"))).get(import_page(target)).status_code == 404
    assert client_for(staff(viewer)).get(import_page(target)).status_code == 403
    not_staff = client_for(make_user("nick")).get(import_page(target))
    assert not_staff.status_code == 302 and not_staff["Location"].startswith("/admin/login/")
    client = client_for(staff(editor))
    missing = "00000000-0000-0000-0000-000000000000"
    assert client.get(f"{IMPORTS}into/{missing}/").status_code == 404
    assert client.get(f"{IMPORTS}into/not-a-uuid/", follow=True).status_code == 404


def test_a_viewer_cannot_import_by_posting_either(viewer, target, archive):
    client = client_for(staff(viewer))
    before = store_state()
    response = client.post(import_page(target), {"archive": upload(archive)})
    assert response.status_code == 403
    assert store_state() == before


@pytest.mark.parametrize(
    ("entries", "code", "entry", "field"),
    [
        ({"../evil.json": b"{}"}, "unexpected_entry", "../evil.json", ""),
        (
            {"manifest.json": json.dumps({"type": TYPE, "format_version": 99})},
            "newer_version",
            "manifest.json",
            "format_version",
        ),
        (None, "not_zip", "", ""),
    ],
    ids=["zip-slip", "newer-format", "not-a-zip"],
)
def test_a_refused_upload_shows_why_and_imports_nothing(
    editor, target, entries, code, entry, field
):
    data = zip_of(entries) if entries else b"not a zip at all"
    client = client_for(staff(editor))
    before = store_state()
    response = client.post(import_page(target), {"archive": upload(data)})
    assert response.status_code == 200
    html = response.content.decode()
    assert f'<strong id="import-refusal-code">{code}</strong>' in html
    assert "nothing was imported" in html
    if entry:
        assert f"entry <code>{entry}</code>" in html
    if field:
        assert f"field <code>{field}</code>" in html
    assert 'id="import-form"' in html  # the form again, to pick another file
    assert store_state() == before


def test_no_file_is_a_form_error(editor, target):
    client = client_for(staff(editor))
    before = store_state()
    response = client.post(import_page(target), {})
    assert response.status_code == 200 and "This field is required." in response.content.decode()
    assert store_state() == before


def test_a_good_upload_queues_the_job_and_opens_its_page(editor, target, archive):
    client, token = csrf_client(staff(editor))
    before = store_state()
    assert client.post(import_page(target), {"archive": upload(archive)}).status_code == 403
    assert store_state() == before

    response = client.post(
        import_page(target), {"archive": upload(archive), "csrfmiddlewaretoken": token}
    )

    job = ImportJob.objects.get()
    assert response.status_code == 302 and response["Location"] == job_page(job)
    assert (job.project, job.created_by, job.state) == (target, editor, JobState.QUEUED)
    assert job.source_size == len(archive) and uploaded_archives() == [f"imports/{job.pk}.binfile"]
    page = client.get(job_page(job))
    assert page.status_code == 200 and "Import queued." in messages_of(page)
    html = page.content.decode()
    assert 'data-kind="import"' in html and 'data-state="queued"' in html
    assert not is_hidden(html, "job-cancel")


# --- the job page ---------------------------------------------------------------------------


def test_the_page_of_a_finished_import_has_progress_events_and_the_new_files(
    admin_client, imported, target
):
    response = admin_client.get(job_page(imported))
    assert response.status_code == 200
    assert response.templates[0].name == "admin/exports/exportjob/job.html"
    html = response.content.decode()
    assert f"<h1>Import {str(imported.pk)[:8]}</h1>" in html
    assert f'href="{IMPORTS}"' in html  # the breadcrumbs lead to the import job list
    assert 'id="job-state" class="export-badge export-badge--succeeded">succeeded<' in html
    assert '<progress id="job-progress" max="100" value="100">' in html
    assert f"{imported.items_total} / {imported.items_total}</span> items" in html
    assert f'data-api="/api/imports/{imported.pk}/"' in html
    assert f'data-socket="/ws/imports/{imported.pk}/"' in html
    assert 'data-file-url="/admin/filesync/file/__id__/change/"' in html
    assert 'src="/static/exports/job.js"' in html

    events = list(ImportEvent.objects.filter(job=imported).order_by("seq"))
    assert [int(s) for s in re.findall(r'<li data-seq="(\d+)"', html)] == [e.seq for e in events]
    assert f'data-after="{events[-1].seq}"' in html
    assert re.search(r"<strong>progress</strong> check: \d+/\d+ items, ", html)
    assert re.search(r"<strong>progress</strong> write: \d+/\d+ items, ", html)
    assert "<strong>end</strong> 3 files imported" in html

    assert not is_hidden(html, "job-files")
    copies = File.objects.filter(project=target)
    assert {str(f.pk) for f in copies} == set(imported.files.values())
    for copy in copies:
        assert f'<a href="/admin/filesync/file/{copy.pk}/change/">{copy.name}</a>' in html
    for source in imported.files:
        assert f"from {source}" in html
    assert f'<a href="/admin/filesync/project/{target.pk}/change/">Restored</a>' in html

    # No download, no retry for an import; nothing to cancel once it ended.
    assert 'id="job-download"' not in html and 'id="job-retry"' not in html
    assert is_hidden(html, "job-cancel")
    assert re.search(r'<div id="job-error" class="export-error" hidden>', html)


def test_the_page_of_a_failed_import_names_the_entry_and_field(admin_client, editor, target):
    manifest = {"type": TYPE, "format_version": 1, "files": [], "relations": []}
    data = zip_of({"manifest.json": json.dumps(manifest), "digest.json": '{"entries": {}}'})
    before = store_state(ignore=THE_JOBS_OWN)
    # The directory and the manifest's header pass; the job judges the rest.
    job = services.create_import_job(
        user=editor, project=target, upload=io.BytesIO(data), enqueue=False
    )
    assert run_import(job.pk, worker="test-worker") == JobState.FAILED
    assert store_state(ignore=THE_JOBS_OWN) == before  # its upload went with it
    job.refresh_from_db()
    error = ImportEvent.objects.get(job=job, kind="error").data
    assert (error["code"], error["entry"], error["field"]) == (
        "invalid_document",
        "manifest.json",
        "files",
    )

    html = admin_client.get(job_page(job)).content.decode()
    assert '<div id="job-error" class="export-error">' in html
    assert '<strong id="job-error-code">invalid_document</strong>' in html
    place = "(entry manifest.json, field files)"
    assert f'<span id="job-error-place" class="export-note">{place}</span>' in html
    assert f"<strong>error</strong> invalid_document: {job.error_message} {place}" in html
    assert is_hidden(html, "job-files") and is_hidden(html, "job-cancel")


def test_a_bad_id_is_a_404(admin_client):
    assert admin_client.get(f"{IMPORTS}not-a-uuid/change/").status_code == 404
    missing = "00000000-0000-0000-0000-000000000000"
    assert admin_client.get(f"{IMPORTS}{missing}/change/").status_code == 404


# --- the list -------------------------------------------------------------------------------


def test_the_list_shows_state_progress_project_and_who_asked(admin_client, imported, archive, team):
    other = filesync_services.create_project(team=team, name="Print")
    waiting = services.create_import_job(
        user=None, project=other, upload=io.BytesIO(archive), enqueue=False
    )
    response = admin_client.get(IMPORTS)
    assert response.status_code == 200
    html = response.content.decode()
    headers = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', html)
    for column in ("state_badge", "progress", "project", "created_by", "created_at", "duration"):
        assert column in headers
    assert {job.pk for job in response.context["cl"].result_list} == {imported.pk, waiting.pk}

    def row(job) -> str:
        (match,) = [r for r in re.findall(r"<tr>.*?</tr>", html, re.S) if str(job.pk)[:8] in r]
        return match

    assert 'export-badge--succeeded">succeeded<' in row(imported)
    assert 'value="100"></progress> 100 %' in row(imported)
    assert "Restored" in row(imported) and "eddie" in row(imported)
    assert re.search(r'field-duration">\d+\.\d s<', row(imported))
    assert 'export-badge--queued">queued<' in row(waiting) and "Print" in row(waiting)
    assert 'field-duration">—<' in row(waiting)
    assert "exports/job.css" in html
    assert admin_client.get(f"{IMPORTS}add/").status_code == 403


def test_staff_outside_the_team_see_no_import(make_user, queued):
    client = client_for(staff(make_user("stan")))
    before = store_state()
    assert list(client.get(IMPORTS).context["cl"].result_list) == []
    assert client.get(job_page(queued)).status_code == 404
    assert client.post(f"{IMPORTS}{queued.pk}/cancel/").status_code == 404
    assert store_state() == before


# --- Cancel ---------------------------------------------------------------------------------


def test_cancel_needs_post_and_csrf_then_cancels(editor, queued):
    client, token = csrf_client(staff(editor))
    url = f"{IMPORTS}{queued.pk}/cancel/"

    before = store_state()
    assert client.get(url).status_code == 405
    assert client.post(url).status_code == 403
    assert store_state() == before

    response = client.post(url, {"csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == job_page(queued)
    queued.refresh_from_db()
    assert queued.state == JobState.CANCELLED
    page = client.get(job_page(queued))
    assert "Import cancelled." in messages_of(page)
    assert 'export-badge--cancelled">cancelled<' in page.content.decode()
    assert not uploaded_archives()  # the upload went with the job

    before = store_state()
    again = client.post(url, {"csrfmiddlewaretoken": token}, follow=True)
    assert any("only a queued or running job can be cancelled" in m for m in messages_of(again))
    assert store_state() == before


def test_staff_in_the_team_do_not_see_a_teammates_import(viewer, queued):
    client = client_for(staff(viewer))
    assert client.get(job_page(queued)).status_code == 404
    before = store_state()
    assert client.post(f"{IMPORTS}{queued.pk}/cancel/").status_code == 404
    assert store_state() == before
