"""The export admin through HTTP: the job list, the job page, its buttons, and the
"Export as binfile" actions on files and projects."""

import io
import re
import zipfile

import httpx
import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.template.defaultfilters import filesizeformat
from django.test import Client, RequestFactory

from exports import services
from exports.admin.actions import export_files_as_binfile
from exports.admin.jobs import percent_done
from exports.models import ExportJob, JobEvent, JobState
from filesync import services as filesync_services
from filesync.admin import FileAdmin
from filesync.blobstore import delete_blob
from filesync.models import File, Project
from tests.exports.conftest import run_to_end
from tests.snapshot import store_state

pytestmark = pytest.mark.django_db(transaction=True)  # the part writer checkpoints on a thread

JOBS = "/admin/exports/exportjob/"
FILES = "/admin/filesync/file/"
PROJECTS = "/admin/filesync/project/"


def job_page(job) -> str:
    return f"{JOBS}{job.pk}/change/"


def staff(user):
    """Make `user` staff (not superuser) with the filesync view/change permissions."""
    user.is_staff = True
    user.save()
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="filesync", codename__regex=r"^(view|change)_"
        )
    )
    return user


def client_for(user, **options) -> Client:
    client = Client(**options)
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def is_hidden(html: str, element_id: str) -> bool:
    return bool(re.search(rf'id="{element_id}"[^>]*\shidden[\s>]', html))


def rows(response) -> list[ExportJob]:
    return list(response.context["cl"].result_list)


@pytest.fixture
def succeeded(workspace, editor):
    return run_to_end(
        services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    )


@pytest.fixture
def failed(workspace, editor):
    """Fails on the second design's media, after some of the archive is written."""
    job = services.create_export_job(
        user=editor, file_ids=[d.pk for d in workspace.designs], libraries="merge", enqueue=False
    )
    delete_blob(workspace.media[1].blob_id)
    return run_to_end(job)


@pytest.fixture
def queued(workspace, editor):
    return services.create_export_job(
        user=editor, file_ids=[workspace.designs[0].pk], enqueue=False
    )


# --- the list -------------------------------------------------------------------------------


def test_list_shows_state_badges_progress_size_duration_and_who_asked(
    admin_client, succeeded, failed, queued
):
    assert (succeeded.state, failed.state) == (JobState.SUCCEEDED, JobState.FAILED)
    response = admin_client.get(JOBS)
    assert response.status_code == 200
    html = response.content.decode()
    headers = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', html)
    for column in ("state_badge", "progress", "size", "duration", "created_by", "created_at"):
        assert column in headers
    assert {job.pk for job in rows(response)} == {succeeded.pk, failed.pk, queued.pk}

    def row(job) -> str:
        (match,) = [r for r in re.findall(r"<tr>.*?</tr>", html, re.S) if str(job.pk)[:8] in r]
        return match

    assert 'class="export-badge export-badge--succeeded">succeeded<' in row(succeeded)
    assert 'value="100"></progress> 100 %' in row(succeeded)
    assert filesizeformat(succeeded.artifact_size) in row(succeeded)
    assert re.search(r'field-duration">\d+\.\d s<', row(succeeded))
    assert "eddie" in row(succeeded)
    assert 'export-badge--failed">failed<' in row(failed)
    assert 'export-badge--queued">queued<' in row(queued)
    assert 'field-duration">—<' in row(queued) and 'field-size">—<' in row(queued)
    assert "exports/job.css" in html


def test_list_filters_and_search(admin_client, succeeded, failed, queued, make_user):
    def listed(**query) -> set:
        return {job.pk for job in rows(admin_client.get(JOBS, query))}

    assert listed(state__exact="failed") == {failed.pk}
    assert listed(state__exact="succeeded") == {succeeded.pk}
    assert listed(libraries__exact="merge") == {failed.pk}
    assert listed(libraries__exact="all") == {succeeded.pk, queued.pk}
    assert listed(q=str(queued.pk)) == {queued.pk}
    assert listed(q=str(queued.pk)[:8]) == {queued.pk}
    assert listed(q="eddie") == {succeeded.pk, failed.pk, queued.pk}
    assert listed(q="nobody") == set()
    html = admin_client.get(JOBS).content.decode()
    assert "By state" in html and "By libraries" in html and "By created at" in html


def test_there_is_no_add_or_delete(admin_client, queued):
    assert admin_client.get(f"{JOBS}add/").status_code == 403
    assert admin_client.get(f"{JOBS}{queued.pk}/delete/").status_code == 403
    assert "delete_selected" not in admin_client.get(JOBS).content.decode()


# --- the job page ---------------------------------------------------------------------------


def test_job_page_of_a_finished_export_has_counts_events_and_download(admin_client, succeeded):
    response = admin_client.get(job_page(succeeded))
    assert response.status_code == 200
    html = response.content.decode()
    assert response.templates[0].name == "admin/exports/exportjob/job.html"
    assert 'class="breadcrumbs"' in html and f'href="{JOBS}"' in html
    assert 'id="job-state" class="export-badge export-badge--succeeded">succeeded<' in html
    assert '<progress id="job-progress" max="100" value="100">' in html
    assert f"{succeeded.items_total} / {succeeded.items_total}</span> items" in html
    size = filesizeformat(succeeded.artifact_size)
    assert f"{size} / {size}" in html
    seqs = list(JobEvent.objects.filter(job=succeeded).values_list("seq", flat=True))
    assert [int(s) for s in re.findall(r'<li data-seq="(\d+)"', html)] == seqs
    assert f'data-after="{seqs[-1]}"' in html
    assert "<strong>end</strong>" in html and "<strong>queued</strong>" in html
    assert succeeded.artifact_sha256 in html
    assert re.search(r'<div id="job-error" class="export-error" hidden>', html)
    assert is_hidden(html, "job-cancel") and is_hidden(html, "job-retry")
    assert 'src="/static/exports/job.js"' in html
    assert f'data-socket="/ws/exports/{succeeded.pk}/"' in html
    assert f'data-api="/api/exports/{succeeded.pk}/"' in html

    href = re.search(r'<a id="job-download" class="[^"]*" href="([^"]+)">Download</a>', html)[1]
    assert href.startswith(f"/api/exports/{succeeded.pk}/download/?token=")
    download = admin_client.get(href.replace("&amp;", "&"))
    if download.status_code == 302:  # S3: a presigned URL, fetched without our session
        body = httpx.get(download["Location"]).content
    else:
        assert download.status_code == 200
        body = b"".join(download.streaming_content)
    assert zipfile.ZipFile(io.BytesIO(body)).testzip() is None


def test_job_page_of_a_failed_export_shows_its_error_and_retry(admin_client, failed):
    html = admin_client.get(job_page(failed)).content.decode()
    assert failed.error_code == "blob_missing"
    assert '<div id="job-error" class="export-error">' in html
    assert '<strong id="job-error-code">blob_missing</strong>' in html
    assert failed.error_message.split(" Restore")[0] in html
    assert "<strong>error</strong> blob_missing: " in html
    assert 'id="job-download" class="button export-download" href="#" hidden' in html
    assert not is_hidden(html, "job-retry")
    assert is_hidden(html, "job-cancel")
    reached = percent_done(failed)  # as far as it got: where depends on the files' order
    assert reached < 100 and f'<progress id="job-progress" max="100" value="{reached}">' in html


def test_job_page_of_a_queued_export_offers_cancel(admin_client, queued):
    html = admin_client.get(job_page(queued)).content.decode()
    assert 'export-badge--queued">queued<' in html
    assert not is_hidden(html, "job-cancel")
    assert is_hidden(html, "job-retry")
    assert 'data-after="1"' in html and 'data-state="queued"' in html


# --- Cancel and Retry -----------------------------------------------------------------------


def csrf_client(user) -> tuple[Client, str]:
    client = client_for(user, enforce_csrf_checks=True)
    page = client.get(JOBS)
    assert page.status_code == 200
    return client, client.cookies["csrftoken"].value


def test_cancel_needs_post_and_csrf_then_cancels(editor, queued):
    staff(editor)
    client, token = csrf_client(editor)
    url = f"{JOBS}{queued.pk}/cancel/"

    assert client.get(url).status_code == 405
    assert client.post(url).status_code == 403
    queued.refresh_from_db()
    assert queued.state == JobState.QUEUED

    response = client.post(url, {"csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == job_page(queued)
    queued.refresh_from_db()
    assert queued.state == JobState.CANCELLED
    assert "Export cancelled." in messages_of(client.get(job_page(queued)))

    again = client.post(url, {"csrfmiddlewaretoken": token}, follow=True)
    assert any("only a queued or running job can be cancelled" in m for m in messages_of(again))


def test_retry_needs_csrf_and_opens_the_new_job(editor, failed):
    staff(editor)
    client, token = csrf_client(editor)
    url = f"{JOBS}{failed.pk}/retry/"

    assert client.post(url).status_code == 403
    assert not ExportJob.objects.filter(retry_of=failed).exists()

    response = client.post(url, {"csrfmiddlewaretoken": token})
    retry = ExportJob.objects.get(retry_of=failed)
    assert response.status_code == 302 and response["Location"] == job_page(retry)
    assert retry.created_by == editor and retry.libraries == "merge"
    page = client.get(job_page(failed)).content.decode()
    assert f"Retried as {str(retry.pk)[:8]}" in page


def test_retry_of_a_succeeded_export_is_refused_with_a_message(admin_client, succeeded):
    response = admin_client.post(f"{JOBS}{succeeded.pk}/retry/", follow=True)
    (message,) = messages_of(response)
    assert message.startswith("Only a failed or cancelled export can be retried")
    assert not ExportJob.objects.filter(retry_of=succeeded).exists()


# --- who sees what --------------------------------------------------------------------------


def test_staff_outside_the_team_get_404_and_an_empty_list(make_user, queued):
    stranger = staff(make_user("stan"))
    client = client_for(stranger)
    assert client.get(job_page(queued)).status_code == 404
    assert client.post(f"{JOBS}{queued.pk}/cancel/").status_code == 404
    assert client.post(f"{JOBS}{queued.pk}/retry/").status_code == 404
    assert rows(client.get(JOBS)) == []
    queued.refresh_from_db()
    assert queued.state == JobState.QUEUED


def test_non_staff_are_sent_to_the_login(editor, queued):
    client = client_for(editor)  # the job's owner, but not staff
    response = client.get(job_page(queued))
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert client.post(f"{JOBS}{queued.pk}/cancel/").status_code == 302
    queued.refresh_from_db()
    assert queued.state == JobState.QUEUED


def test_staff_in_the_team_do_not_see_a_teammates_job(viewer, queued):
    """Jobs follow one rule in the admin and the API: their creator's, and superusers'."""
    client = client_for(staff(viewer))
    assert client.get(job_page(queued)).status_code == 404
    assert str(queued.pk)[:8] not in client.get(JOBS).content.decode()
    before = store_state()
    assert client.post(f"{JOBS}{queued.pk}/cancel/").status_code == 404
    assert store_state() == before


def test_a_bad_id_is_a_404(admin_client):
    assert admin_client.get(f"{JOBS}not-a-uuid/change/").status_code == 404
    missing = "00000000-0000-0000-0000-000000000000"
    assert admin_client.get(f"{JOBS}{missing}/change/").status_code == 404


# --- "Export as binfile" on files and projects -------------------------------------------


def test_file_action_asks_for_the_libraries_mode_then_opens_the_job(editor, workspace):
    client = client_for(staff(editor))
    chosen = [str(d.pk) for d in workspace.designs]

    form = client.post(FILES, {"action": "export_files_as_binfile", "_selected_action": chosen})
    assert form.status_code == 200
    html = form.content.decode()
    assert form.templates[0].name == "admin/exports/export_form.html"
    for mode in ("all", "merge", "detach"):
        assert f'value="{mode}"' in html
    assert "Merge used library assets into each file" in html
    assert sorted(re.findall(r'name="_selected_action" value="([^"]+)"', html)) == sorted(chosen)
    assert 'name="action" value="export_files_as_binfile"' in html
    assert not ExportJob.objects.exists()

    done = client.post(
        FILES,
        {
            "action": "export_files_as_binfile",
            "_selected_action": chosen,
            "libraries": "detach",
            "confirm": "yes",
        },
    )
    job = ExportJob.objects.get()
    assert done.status_code == 302 and done["Location"] == job_page(job)
    assert job.created_by == editor and job.libraries == "detach"
    assert {str(p.file_id) for p in job.pinned.all()} == set(chosen)
    page = client.get(job_page(job))
    assert page.status_code == 200 and "Export queued." in messages_of(page)


def test_file_action_with_a_bad_mode_shows_the_form_again(admin_client, workspace):
    response = admin_client.post(
        FILES,
        {
            "action": "export_files_as_binfile",
            "_selected_action": [str(workspace.designs[0].pk)],
            "libraries": "everything",
            "confirm": "yes",
        },
    )
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not ExportJob.objects.exists()


def test_file_action_turns_service_refusals_into_messages(admin_client, workspace):
    filesync_services.soft_delete_file(file=workspace.designs[0])
    response = admin_client.post(
        FILES,
        {
            "action": "export_files_as_binfile",
            "_selected_action": [str(workspace.designs[0].pk)],
            "libraries": "all",
            "confirm": "yes",
        },
        follow=True,
    )
    assert response.redirect_chain[-1][0].startswith(FILES)
    assert any("No such file" in m for m in messages_of(response))
    assert not ExportJob.objects.exists()


def test_an_outsiders_file_is_never_exported(make_user, workspace):
    stranger = staff(make_user("stan"))
    client = client_for(stranger)
    design = workspace.designs[0]
    response = client.post(
        FILES,
        {
            "action": "export_files_as_binfile",
            "_selected_action": [str(design.pk)],
            "libraries": "all",
            "confirm": "yes",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert messages_of(response) == ["There is nothing here you can export."]
    assert not ExportJob.objects.exists()

    # Handed the file anyway, the action reports the service's 404 and makes no job.
    request = RequestFactory().post(FILES, {"libraries": "all", "confirm": "yes"})
    request.user = stranger
    request.session = SessionStore()
    request._messages = FallbackStorage(request)
    answer = export_files_as_binfile(
        FileAdmin(File, admin.site), request, File.objects.filter(pk=design.pk)
    )
    assert answer is None
    assert [str(m) for m in request._messages] == [
        "You cannot read some of these files; nothing was exported."
    ]
    assert not ExportJob.objects.exists()


def test_project_action_makes_one_job_and_opens_it(admin_client, admin_user, workspace):
    chosen = [str(workspace.project.pk)]
    form = admin_client.post(
        PROJECTS, {"action": "export_projects_as_binfile", "_selected_action": chosen}
    )
    assert form.status_code == 200 and "one export per project" in form.content.decode()
    done = admin_client.post(
        PROJECTS,
        {
            "action": "export_projects_as_binfile",
            "_selected_action": chosen,
            "libraries": "all",
            "confirm": "yes",
        },
    )
    job = ExportJob.objects.get()
    assert done["Location"] == job_page(job)
    assert job.project == workspace.project and job.created_by == admin_user
    assert job.pinned.count() == 3  # two designs and their library


def test_project_action_on_several_projects_lists_the_jobs(admin_client, workspace, team):
    other = filesync_services.create_project(team=team, name="Print")
    filesync_services.create_file(project=other, name="Poster")
    response = admin_client.post(
        PROJECTS,
        {
            "action": "export_projects_as_binfile",
            "_selected_action": [str(workspace.project.pk), str(other.pk)],
            "libraries": "all",
            "confirm": "yes",
        },
        follow=True,
    )
    assert response.redirect_chain[-1][0] == JOBS
    assert "2 exports queued." in messages_of(response)
    assert {job.project for job in ExportJob.objects.all()} == {workspace.project, other}


def test_project_action_exports_none_if_one_project_cannot_be(admin_client, workspace, team):
    empty = filesync_services.create_project(team=team, name="Empty")
    response = admin_client.post(
        PROJECTS,
        {
            "action": "export_projects_as_binfile",
            "_selected_action": [str(workspace.project.pk), str(empty.pk)],
            "libraries": "all",
            "confirm": "yes",
        },
        follow=True,
    )
    assert "Empty: The project has no files to export." in messages_of(response)
    assert not ExportJob.objects.exists()
    assert Project.objects.count() == 2


def test_a_viewer_may_export_what_they_read(workspace, viewer):
    html = client_for(staff(viewer)).get(FILES).content.decode()
    assert '<option value="export_files_as_binfile">Export as binfile</option>' in html
    html = client_for(staff(viewer)).get(PROJECTS).content.decode()
    assert '<option value="export_projects_as_binfile">Export as binfile</option>' in html
    client_for(viewer).post(
        FILES,
        {
            "action": "export_files_as_binfile",
            "_selected_action": [str(workspace.designs[0].pk)],
            "libraries": "all",
            "confirm": "yes",
        },
    )
    assert ExportJob.objects.get().created_by == viewer
