"""The admin's export and import pages in a real browser (Debian's chromium, driven by
Playwright).

uvicorn serves Ferry and a `manage.py qcluster` runs the exports, both sharing the test
database and storages (`live_env`). The cluster is started only once the job page is
open, so what the page shows after its first render came through job.js: the WebSocket,
or the API polled when the socket is down.
"""

import hashlib
import io
import json
import os
import re
import zipfile

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from exports import services
from exports.admin.jobs import percent_done
from exports.models import ExportJob, ImportJob, JobState
from filesync import services as filesync_services
from filesync.blobstore import delete_blob
from filesync.models import File
from tests.exports.conftest import artifact_bytes, run_to_end
from tests.waiting import patience

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
JOB_PAGE = re.compile(r"/admin/exports/exportjob/([0-9a-f-]{36})/change/$")
IMPORT_PAGE = re.compile(r"/admin/exports/importjob/([0-9a-f-]{36})/change/$")
PASSWORD = "a browser's password"
#: How long an expect() or a page action waits for what it expects: a bound for a hang.
EXPECT_SECONDS = 30
#: How long an expect() waits for a job to end, which takes a qcluster's start and its work.
JOB_SECONDS = 90


def milliseconds(seconds: float) -> float:
    """A playwright timeout: `seconds`, stretched by FERRY_TEST_PATIENCE, in ms."""
    return patience(seconds) * 1000


@pytest.fixture
def browser(live_env, monkeypatch):
    """Chromium, headless. Without it these tests skip, saying why; with
    FERRY_REQUIRE_BROWSER=1 (CI) they fail, so a missing browser never passes for green.

    Playwright's sync API runs an event loop in this thread, so the test's own ORM calls
    need DJANGO_ALLOW_ASYNC_UNSAFE (set after `live_env` was taken: the servers never see
    it). Every expect() waits up to EXPECT_SECONDS unless it says otherwise."""
    if not os.path.exists(CHROMIUM):
        missing = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("FERRY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{missing}, and FERRY_REQUIRE_BROWSER=1 requires it")
        pytest.skip(missing)
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    expect.set_options(timeout=milliseconds(EXPECT_SECONDS))
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def root_user(settings, db):
    """A superuser whose password the server can check (tests hash with MD5 elsewhere)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    return get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)


def logged_in_page(browser, base: str, user):
    from playwright.sync_api import expect

    page = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = page.new_page()
    page.set_default_timeout(milliseconds(EXPECT_SECONDS))
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(f"{base}/admin/")
    return page


def socket_frames(page) -> list[dict]:
    """Every message the page's WebSockets receive, parsed."""
    frames: list[dict] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))),
    )
    return frames


def run_action(page, base: str, changelist: str, objects, action: str, libraries: str):
    """Tick the objects, pick the action, choose the mode, submit: the job page opens."""
    from playwright.sync_api import expect

    page.goto(f"{base}{changelist}")
    for obj in objects:
        page.check(f'input.action-select[value="{obj.pk}"]')
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")
    expect(page.locator("h1")).to_have_text("Export as binfile")
    page.check(f'input[name=libraries][value="{libraries}"]')
    page.click('input[type=submit][value="Export"]')
    expect(page).to_have_url(JOB_PAGE)
    return ExportJob.objects.get(pk=JOB_PAGE.search(page.url)[1])


def test_export_files_from_the_admin_watch_it_live_and_download_it(
    asgi_server, start_qcluster, browser, root_user, workspace, tmp_path
):
    from playwright.sync_api import expect

    page = logged_in_page(browser, asgi_server, root_user)
    frames = socket_frames(page)
    job = run_action(
        page,
        asgi_server,
        "/admin/filesync/file/",
        workspace.designs,
        "export_files_as_binfile",
        libraries="merge",
    )
    expect(page.locator(".messagelist")).to_contain_text("Export queued.")
    expect(page.locator("#job-state")).to_have_text("queued")
    expect(page.locator("#job-percent")).to_have_text("0 %")
    expect(page.locator("#job-live")).to_have_text("live")

    start_qcluster()

    expect(page.locator("#job-percent")).to_have_text("100 %", timeout=milliseconds(JOB_SECONDS))
    expect(page.locator("#job-state")).to_have_text("succeeded")
    expect(page.locator("#job-events li").last).to_contain_text("end")
    expect(page.locator("#job-download")).to_be_visible()
    expect(page.locator("#job-cancel")).to_be_hidden()
    expect(page.locator("#job-retry")).to_be_hidden()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.libraries == "merge"
    assert page.locator("#job-progress").evaluate("bar => bar.value") == 100
    assert page.locator("#job-items").inner_text() == f"{job.items_total} / {job.items_total}"
    kinds = [frame["kind"] for frame in frames if frame["kind"] != "heartbeat"]
    assert kinds and kinds[-1] == "end" and "progress" in kinds  # it came over the socket
    seqs = [
        int(s)
        for s in page.locator("#job-events li").evaluate_all(
            "items => items.map(item => item.dataset.seq)"
        )
    ]
    assert seqs == list(range(1, job.event_seq + 1))
    expect(page.locator("#job-finished")).to_contain_text(" UTC")  # fetched after the end
    expect(page.locator("#job-sha256")).to_have_text(job.artifact_sha256)
    page.screenshot(path=tmp_path / "job-succeeded.png", full_page=True)

    with page.expect_download() as download:
        page.click("#job-download")
    saved = tmp_path / "export.zip"
    download.value.save_as(saved)
    assert zipfile.ZipFile(saved).testzip() is None
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == job.artifact_sha256

    page.goto(f"{asgi_server}/admin/exports/exportjob/")
    expect(page.locator(f"tr:has-text('{str(job.pk)[:8]}') .export-badge")).to_have_css(
        "background-color",
        "rgb(46, 125, 50)",  # job.css's green: the list loads it too
    )
    page.screenshot(path=tmp_path / "job-list.png", full_page=True)


def test_an_export_that_fails_half_way_shows_its_error(
    asgi_server, start_qcluster, browser, root_user, workspace, tmp_path
):
    from playwright.sync_api import expect

    page = logged_in_page(browser, asgi_server, root_user)
    job = run_action(
        page,
        asgi_server,
        "/admin/filesync/project/",
        [workspace.project],
        "export_projects_as_binfile",
        libraries="all",
    )
    # Blobs go into the archive last, by sha256: losing the second photo fails the job
    # after the first is written.
    missing = max(media.blob_id for media in workspace.media)
    delete_blob(missing)
    start_qcluster()

    expect(page.locator("#job-state")).to_have_text("failed", timeout=milliseconds(JOB_SECONDS))
    expect(page.locator("#job-error")).to_be_visible()
    expect(page.locator("#job-error-code")).to_have_text("blob_missing")
    job.refresh_from_db()
    assert job.error_code == "blob_missing"
    expect(page.locator("#job-error-message")).to_have_text(job.error_message)
    assert missing in job.error_message
    expect(page.locator("#job-events li").last).to_contain_text("blob_missing")
    assert page.locator("#job-percent").inner_text() == f"{percent_done(job)} %"
    if not django_settings.AWS_STORAGE_BUCKET_NAME:  # 64 KiB parts: checkpoints before the failure
        assert 0 < percent_done(job) < 100
        expect(page.locator("#job-events li.export-event--progress").first).to_be_visible()
    expect(page.locator("#job-retry")).to_be_visible()
    expect(page.locator("#job-cancel")).to_be_hidden()
    expect(page.locator("#job-download")).to_be_hidden()
    page.screenshot(path=tmp_path / "job-failed.png", full_page=True)

    # Retry opens the new job's page (it fails again: the blob is still missing).
    page.click("#job-retry button")
    expect(page).to_have_url(JOB_PAGE)
    expect(page.locator(".messagelist")).to_contain_text("Retrying as a new export.")
    assert ExportJob.objects.get(pk=JOB_PAGE.search(page.url)[1]).retry_of_id == job.pk
    expect(page.locator("#job-error-code")).to_have_text(
        "blob_missing", timeout=milliseconds(JOB_SECONDS)
    )


def test_the_page_polls_the_api_while_the_socket_is_down(
    asgi_server, start_qcluster, browser, root_user, workspace, tmp_path
):
    from playwright.sync_api import expect

    job = services.create_export_job(user=root_user, project=workspace.project)
    page = logged_in_page(browser, asgi_server, root_user)
    page.route_web_socket(re.compile(r"/ws/exports/"), lambda socket: socket.close())
    polled = []
    page.on("request", lambda r: polled.append(r.url) if "/api/exports/" in r.url else None)

    page.goto(f"{asgi_server}/admin/exports/exportjob/{job.pk}/change/")
    expect(page.locator("#job-live")).to_have_text("connection lost: polling")
    start_qcluster()

    expect(page.locator("#job-percent")).to_have_text("100 %", timeout=milliseconds(JOB_SECONDS))
    expect(page.locator("#job-state")).to_have_text("succeeded")
    expect(page.locator("#job-download")).to_be_visible()
    assert f"{asgi_server}/api/exports/{job.pk}/" in polled
    with page.expect_download() as download:
        page.click("#job-download")
    saved = tmp_path / "polled.zip"
    download.value.save_as(saved)
    assert zipfile.ZipFile(saved).testzip() is None


@pytest.fixture
def binfile(workspace, editor) -> bytes:
    """The workspace's project exported (made before the browser's event loop runs)."""
    job = services.create_export_job(user=editor, project=workspace.project, enqueue=False)
    return artifact_bytes(run_to_end(job))


@pytest.fixture
def staff_editor(settings, editor):
    """The team's editor as staff (not superuser) with the filesync admin permissions."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    editor.set_password(PASSWORD)
    editor.is_staff = True
    editor.save()
    editor.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="filesync", codename__regex=r"^(view|change)_"
        )
    )
    return editor


def test_import_a_binfile_from_the_project_page_and_watch_it_live(
    asgi_server, start_qcluster, binfile, staff_editor, team, browser, tmp_path
):
    """A staff editor imports a binfile into another project of the team, from that
    project's page, and follows the job over the WebSocket to its new files."""
    from playwright.sync_api import expect

    archive, editor = binfile, staff_editor
    target = filesync_services.create_project(team=team, name="Restored")

    page = logged_in_page(browser, asgi_server, editor)
    frames = socket_frames(page)
    page.goto(f"{asgi_server}/admin/filesync/project/{target.pk}/change/")
    page.click("a.import-binfile-link")
    expect(page.locator("h1")).to_have_text("Import binfile")
    page.set_input_files(
        "input[name=archive]",
        files=[{"name": "website.zip", "mimeType": "application/zip", "buffer": archive}],
    )
    page.click('input[type=submit][value="Import"]')
    expect(page).to_have_url(IMPORT_PAGE)
    job = ImportJob.objects.get(pk=IMPORT_PAGE.search(page.url)[1])
    assert (job.project_id, job.created_by_id) == (target.pk, editor.pk)
    expect(page.locator(".messagelist")).to_contain_text("Import queued.")
    expect(page.locator("h1")).to_have_text(f"Import {str(job.pk)[:8]}")
    expect(page.locator("#job-state")).to_have_text("queued")
    expect(page.locator("#job-live")).to_have_text("live")
    expect(page.locator("#job-files")).to_be_hidden()
    expect(page.locator("#job-cancel")).to_be_visible()

    start_qcluster()

    expect(page.locator("#job-percent")).to_have_text("100 %", timeout=milliseconds(JOB_SECONDS))
    expect(page.locator("#job-state")).to_have_text("succeeded")
    expect(page.locator("#job-events li").last).to_contain_text("end 3 files imported")
    expect(page.locator("#job-cancel")).to_be_hidden()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    copies = {str(f.pk): f.name for f in File.objects.filter(project=target)}
    assert set(job.files.values()) == set(copies)
    links = page.locator("#job-files a")
    expect(links).to_have_count(3)
    expect(page.locator("#job-files")).to_contain_text("Design 1")  # named, once they exist
    hrefs = links.evaluate_all("links => links.map(link => link.getAttribute('href'))")
    assert sorted(hrefs) == sorted(f"/admin/filesync/file/{pk}/change/" for pk in copies)
    assert sorted(links.all_inner_texts()) == sorted(copies.values())
    kinds = [frame["kind"] for frame in frames if frame["kind"] != "heartbeat"]
    assert kinds and kinds[-1] == "end"  # it came over the socket
    phases = {frame["data"]["phase"] for frame in frames if frame["kind"] == "progress"}
    assert {"check", "write"} <= phases
    expect(page.locator("#job-events li.export-event--progress").first).to_contain_text("check: ")
    expect(page.locator("#job-finished")).to_contain_text(" UTC")  # fetched after the end
    page.screenshot(path=tmp_path / "import-succeeded.png", full_page=True)

    # A link opens the new file's admin page, in the project it was imported into.
    page.locator("#job-files a", has_text="Design 0").click()
    expect(page.locator("#id_name")).to_have_value("Design 0")
    assert (
        File.objects.get(pk=re.search(r"/file/([0-9a-f-]{36})/change/", page.url)[1]).project
        == target
    )


def test_the_import_page_polls_the_api_while_the_socket_is_down(
    asgi_server, start_qcluster, binfile, staff_editor, team, browser
):
    from playwright.sync_api import expect

    target = filesync_services.create_project(team=team, name="Restored")
    job = services.create_import_job(user=staff_editor, project=target, upload=io.BytesIO(binfile))
    page = logged_in_page(browser, asgi_server, staff_editor)
    page.route_web_socket(re.compile(r"/ws/imports/"), lambda socket: socket.close())
    polled = []
    page.on("request", lambda r: polled.append(r.url) if "/api/imports/" in r.url else None)

    page.goto(f"{asgi_server}/admin/exports/importjob/{job.pk}/change/")
    expect(page.locator("#job-live")).to_have_text("connection lost: polling")
    start_qcluster()

    expect(page.locator("#job-percent")).to_have_text("100 %", timeout=milliseconds(JOB_SECONDS))
    expect(page.locator("#job-state")).to_have_text("succeeded")
    expect(page.locator("#job-files a")).to_have_count(3)
    expect(page.locator("#job-files")).to_contain_text("Brand library")
    assert f"{asgi_server}/api/imports/{job.pk}/" in polled
    job.refresh_from_db()
    hrefs = page.locator("#job-files a").evaluate_all("links => links.map(a => a.pathname)")
    assert sorted(hrefs) == sorted(
        f"/admin/filesync/file/{pk}/change/" for pk in job.files.values()
    )
